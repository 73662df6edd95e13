"""Memory cgroups: the memcg tracer (BPF program, attach plan, live sampling).

Kernel side: ``bpf/memcg.bpf.c``; what it records and how it is summed per
cgroup is described in ``trace_reclaim.tracers.memcg_aggregate`` (pure),
the text section in ``memcg_render``.  Here: the plan (the BTF offsets
that identify a task's memory cgroup, the -c filter) and ``sample()``,
which names cgroup ids, reads the cgroups' own memory counters and
symbolizes the callers of memcg reclaim, so a replay needs no kernel.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Dict, List, Set, Tuple

from trace_reclaim import cgroupfs, events
from trace_reclaim.tracer import Attach, Tracer, Window
from trace_reclaim.tracers.memcg_aggregate import (EV_CGROUP_MKDIR, EV_MEMCG_RECLAIM,
                                                   MAX_CALLERS, MAX_CGROUPS, MAX_COUNTED,
                                                   RECENT_SAMPLES, CgroupMkdir,
                                                   MemcgAggregator, MemcgReclaim,
                                                   limit_of_callers, slim_counters)

__all__ = [
    "EV_MEMCG_RECLAIM", "EV_CGROUP_MKDIR", "MemcgReclaim", "CgroupMkdir", "MemcgTracer",
    "MemcgAggregator", "TRACER", "limit_of_callers", "MAX_CGROUPS",
]


class MemcgTracer(Tracer):
    """Memcg limit reclaim; names and counters of the cgroups events came from."""

    name: ClassVar[str] = "memcg"
    bpf_source: ClassVar[str] = "memcg.bpf.c"
    cflag: ClassVar[str] = "WITH_MEMCG"
    tracepoints: ClassVar[Any] = (
        ("vmscan", "mm_vmscan_memcg_reclaim_begin"),
        ("vmscan", "mm_vmscan_memcg_reclaim_end"),
        ("vmscan", "mm_vmscan_memcg_softlimit_reclaim_begin"),
        ("vmscan", "mm_vmscan_memcg_softlimit_reclaim_end"),
        # Since Linux 4.13 ("cgroup: add tracepoints for basic operations")
        ("cgroup", "cgroup_mkdir"),
    )
    event_types: ClassVar[Any] = (EV_MEMCG_RECLAIM, EV_CGROUP_MKDIR)

    def __init__(self) -> None:
        super().__init__()
        self._live: Dict[str, Any] = {}

    def plan(self, probe: Any) -> Tuple[List[Attach], List[str]]:
        attaches, cflags = super().plan(probe)
        offs, why = cgroupfs.memcg_id_cflags(probe.btf_types)
        cflags += offs
        attaches.append(Attach(
            "cgroup attribution (stalls, memcg reclaim, shrinkers, vmalloc, OOM)",
            "bpf_get_current_cgroup_id() (cgroup v2) and task->cgroups->subsys"
            "[memory_cgrp_id]->cgroup->kn->id (memcg; offsets from BTF)" if offs else
            "bpf_get_current_cgroup_id() (cgroup v2) only",
            [] if offs else [("the memcg of the task", why)], ok=True))
        if self.options.cgroups:
            cflags.append("-DCGROUP_FILTER")
        return attaches, cflags

    def aggregator(self, window: Window) -> MemcgAggregator:
        return MemcgAggregator(window)

    def header(self, probe: Any) -> Dict[str, Any]:
        return {"cgroups": list(self.options.cgroups)}

    # -- live -------------------------------------------------------------------
    def _setup(self, bpf: Any) -> None:
        mounts = cgroupfs.cgroup_mounts()
        mem = cgroupfs.memory_mount(mounts)
        uni = cgroupfs.unified_mount(mounts)
        self._live = {
            "mem": cgroupfs.CgroupResolver(mem.path if mem else None),
            "mem_version": mem.version if mem else None,
            "uni": cgroupfs.CgroupResolver(uni.path if uni else None),
            "counted": set(), "sent": {"memcg": set(), "cgroup": set()},
            "recent": {}, "samples": 0,
            "callers": set(),
            "mounts": {"memory": {"path": mem.path, "version": mem.version,
                                  "hierarchy_id": cgroupfs.hierarchy_id("memory")
                                  if mem.version == cgroupfs.V1 else 0} if mem else None,
                       "unified": uni.path if uni else None},
        }
        if self.options.cgroups:
            sel = cgroupfs.select_cgroups(self.options.cgroups, self._live["mem"],
                                          self._live["uni"])
            for hier, mapname in (("memcg", "memcg_filter"), ("cgroup", "cgroup_filter")):
                table = bpf[mapname]
                for cgid in sel[hier]:
                    table[table.Key(cgid)] = table.Leaf(1)
            self._live["filter"] = sel

    def _read(self, hier: str, cgid: int) -> Dict[str, Any]:
        res = self._live["mem" if hier == "memcg" else "uni"]
        rel = res.lookup(cgid, rescan=False)
        info: Dict[str, Any] = {}
        if rel is None:
            return info
        info["path"] = rel
        if hier == "memcg" or self._live["mem_version"] == cgroupfs.V2:
            version = self._live["mem_version"] if hier == "memcg" else cgroupfs.V2
            c = cgroupfs.read_memory_counters(os.path.join(res.mount, rel.lstrip("/")),
                                              version)
            if len(c) > 1:
                info["counters"] = slim_counters(c)
        return info

    def sample(self, bpf: Any, procfs: Any, ts_ns: int, when: str) -> List[Any]:
        """Name new cgroup ids, read memory counters, symbolize memcg reclaim callers.

        Counters are read for every memory cgroup that exists at the start
        and as each new one appears (its baseline), and again for those seen
        in records each interval, and for all at the end: the first and last
        reading of each make its delta.
        """
        if when == "start" or not self._live:
            self._setup(bpf)
        live = self._live
        mem, uni = live["mem"], live["uni"]
        data: Dict[str, Any] = {"mounts": live["mounts"]}
        if when == "start" and "filter" in live:
            data["filter"] = list(self.options.cgroups)
        before = set(mem.paths)
        mem.rescan()
        uni.rescan()
        due: Dict[str, Set[int]] = {"memcg": set(), "cgroup": set()}
        # Baselines: every memory cgroup at the start, each new one as it appears.
        new = set(mem.paths) if when == "start" else set(mem.paths) - before
        for cgid in list(new)[:MAX_COUNTED]:
            due["memcg"].add(cgid)
        for hier, mapname in (("memcg", "memcg_seen"), ("cgroup", "cgroup_seen")):
            try:
                table = bpf[mapname]
                seen = [k.value for k in table.keys()]
                table.clear()
            except KeyError:
                seen = []
            for cgid in seen:
                if cgid:
                    due[hier].add(cgid)
                    if len(live["counted"]) < 4 * MAX_CGROUPS:
                        live["counted"].add((hier, cgid))
                    live["recent"][(hier, cgid)] = live["samples"]
        # Read again for RECENT_SAMPLES more samples after a cgroup's last
        # record: its counters move on without records (a charge that fails
        # its batch and then succeeds counts in failcnt but reclaims nothing),
        # and its tasks may exit and the cgroup go away soon after.
        for (hier, cgid), n in list(live["recent"].items()):
            if live["samples"] - n > RECENT_SAMPLES:
                del live["recent"][(hier, cgid)]
            else:
                due[hier].add(cgid)
        live["samples"] += 1
        if when == "end":
            for hier, cgid in live["counted"]:
                due[hier].add(cgid)
            for cgid in live["sent"]["memcg"]:
                due["memcg"].add(cgid)
        for hier in ("memcg", "cgroup"):
            out: Dict[str, Any] = {}
            # Cgroups with records first: they are what the report is about.
            counted = live["counted"]
            order = sorted(due[hier], key=lambda i: ((hier, i) not in counted, i))
            for cgid in order[:MAX_COUNTED]:
                sent = live["sent"][hier]
                info = self._read(hier, cgid)
                if not info or (cgid in sent and "counters" not in info):
                    continue
                out[str(cgid)] = info
                if len(sent) < 4 * MAX_CGROUPS:
                    sent.add(cgid)
            if out:
                data[hier] = out
        callers: Dict[str, str] = {}
        for ip in self._caller_ips(bpf):
            if ip in live["callers"] or len(live["callers"]) >= MAX_CALLERS:
                continue
            live["callers"].add(ip)
            sym = bpf.ksym(ip, show_offset=True)
            callers[f"{ip:x}"] = sym.decode("utf-8", "replace") if isinstance(sym, bytes) \
                else str(sym)
        if callers:
            data["callers"] = callers
        return [events.Sample(ts_ns, self.name, data)]

    @staticmethod
    def _caller_ips(bpf: Any) -> List[int]:
        try:
            table = bpf["memcg_callers"]
        except KeyError:
            return []
        ips = [k.value for k in table.keys()]
        return [ip for ip in ips if ip]


TRACER = MemcgTracer()
