"""The slab aggregator: shrinkers, per-cache counts joined with slabinfo, lifecycle.

Consumes the slab tracer's records (``ShrinkSlab``, ``KmemCacheEvent``) and
its recorded samples (in-kernel per-cache kmem_cache_alloc/free counts,
/proc/slabinfo, /sys/kernel/slab, dentry/inode-state, kernel log lines) and
builds the report's ``slab`` section.  Pure: the same code runs live and on
replay; nothing here reads the kernel.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any, ClassVar, Dict, List, Optional, Set, Tuple

from trace_reclaim.tracer import Aggregator, EpisodeFact, Window
from trace_reclaim.tracers.slab.drain import (MIN_GROWTH, drain_reason, never_drains,
                                              pinned_never_drains)
from trace_reclaim.tracers.slab.kmsg import MAX_KMSG_LINES, destroyed_with_objects
from trace_reclaim.tracers.slab.lifecycle import ExactLifecycle, diff_lifecycle, root_name
from trace_reclaim.tracers.slab.records import (EV_DROP_SLAB, EV_KMEM_CACHE_CREATE,
                                                EV_KMEM_CACHE_DESTROY,
                                                EV_KMEM_CACHE_SHUTDOWN, EV_SHRINK_SLAB,
                                                ShrinkSlab)
from trace_reclaim.tracers.slab.render import drop_runs_text
from trace_reclaim.tracers.slab.render import render as render_section
from trace_reclaim.tracers.slab.shrinkers import (MAX_DIRECT_PIDS, Shrinker, owner_text,
                                                  shrink_context, shrinker_name, shrinker_row)
from trace_reclaim.tracers.slab.slabinfo import slabinfo_tolerance

__all__ = ["SlabAggregator", "MAX_SLAB_CACHES", "MAX_SHRINKERS", "MAX_LIFECYCLE", "MAX_SERIES"]

# Bounds: caches counted in the kernel, shrinkers and caches kept here.
MAX_SLAB_CACHES = 2048
MAX_SHRINKERS = 1024
MAX_LIFECYCLE = 512
MAX_SERIES = 512          # active_objs samples kept per cache (decimated beyond)


def _append_bounded(series: List[Tuple[int, int]], item: Tuple[int, int]) -> List[Tuple[int, int]]:
    """Append a sample; past MAX_SERIES keep the first and the recent half, thin the middle."""
    series.append(item)
    if len(series) > MAX_SERIES:
        return series[:1] + series[1:-MAX_SERIES // 2:2] + series[-MAX_SERIES // 2:]
    return series


class _Series:
    """(ts, active_objs) samples of one cache, thinned like ``_append_bounded``.

    Two arrays of 64-bit integers: 16 bytes a sample where a list of tuples
    takes ~130 (the tuple, two ints, the slot).  A cache is sampled every
    interval and a machine has ~250 of them: at MAX_SERIES samples each,
    2 MiB instead of ~16 MiB, reached after MAX_SERIES intervals (the slow
    RSS climb of a 10-minute soak).
    """

    __slots__ = ("ts", "val")

    def __init__(self) -> None:
        self.ts = array("q")
        self.val = array("q")

    def append(self, ts: int, val: int) -> None:
        self.ts.append(ts)
        self.val.append(val)
        if len(self.ts) > MAX_SERIES:
            h = MAX_SERIES // 2
            self.ts = self.ts[:1] + self.ts[1:-h:2] + self.ts[-h:]
            self.val = self.val[:1] + self.val[1:-h:2] + self.val[-h:]

    def pairs(self) -> List[Tuple[int, int]]:
        return list(zip(self.ts, self.val))

    def __len__(self) -> int:
        return len(self.ts)


class _Cache:
    """One cache's counts, /proc/slabinfo ends and active_objs series."""

    __slots__ = ("name", "allocs", "frees", "iv_allocs", "iv_frees", "series",
                 "active_start", "active_end", "num_start", "num_end", "seen_counts",
                 "slab_start_ts", "slab_end_ts")

    def __init__(self, name: str) -> None:
        self.name = name
        self.allocs = self.frees = self.iv_allocs = self.iv_frees = 0
        self.series = _Series()
        self.active_start: Optional[int] = None
        self.active_end: Optional[int] = None
        self.num_start: Optional[int] = None
        self.num_end: Optional[int] = None
        self.seen_counts = False

    def add_sample(self, ts: int, active: int) -> None:
        self.series.append(ts, active)


class SlabAggregator(Aggregator):
    """Shrinkers, per-cache counts joined with slabinfo, lifecycle, never-drains."""

    section: ClassVar[str] = "slab"

    def __init__(self, window: Window) -> None:
        super().__init__(window)
        self.shrinkers: Dict[int, Shrinker] = {}
        self.symbols: Dict[int, str] = {}
        # What each shrinker shrinks (by shr); None: a recording made without
        # them, whose shrinkers keep their old names.
        self.owners: Optional[Dict[int, Dict[str, str]]] = None
        self.caches: Dict[str, _Cache] = {}
        self.caches_dropped = 0
        self.overflow = 0
        self.lifecycle: List[Dict[str, Any]] = []
        self.lifecycle_dropped = 0
        self.kmsg: List[str] = []
        self.sys_slab: Optional[Dict[str, Any]] = None
        self.sys_slab_start: Optional[Dict[str, Any]] = None
        self.sys_ts = 0
        self.cache_info: Dict[str, Dict[str, Any]] = {}   # slabinfo name -> sysfs attrs
        # every cache's sysfs attributes at the first full snapshot, by slabinfo name
        self.sys_attrs: Dict[str, Dict[str, Any]] = {}
        self.slabinfo_names: Set[str] = set()
        self.slabinfo_last: Dict[str, List[int]] = {}
        self.counts_prev: Dict[str, List[int]] = {}
        self.destroyed_aliases: Set[Tuple[str, int]] = set()
        self.fs_state: Dict[str, Dict[str, Dict[str, int]]] = {}  # when -> what -> data
        self.dentry_in_use: List[Tuple[int, int]] = []  # (ts, nr_dentry - nr_unused)
        self.pressure: List[List[int]] = []      # shrink episodes [first, last]
        self.drop_episodes = 0
        self._last_drop: Tuple[int, int] = (0, 0)
        self.contexts: Counter[str] = Counter()
        self.before_window = 0
        hdr = window.header.get("tracers", {}).get("slab", {})
        # fentry/kprobe plans see the kernel's calls: no sysfs inference then.
        self.exact_lifecycle = bool(hdr.get("lifecycle_exact"))
        # drop_caches runs: one EV_DROP_SLAB per drop_slab() return where fexit
        # or a kretprobe reached it; else inferred (drop_episodes), a lower bound.
        self.drop_runs_exact = hdr.get("drop_runs_from") in ("fexit", "kretprobe")
        self.drop_returns = 0
        self.exact = ExactLifecycle(str(hdr.get("lifecycle_method") or "fentry/kprobe"),
                                    self._add_lifecycle)
        self.ncpus = int(hdr.get("ncpus") or 1)
        self.vm_start: Dict[str, int] = {}
        self.vm_end: Dict[str, int] = {}
        self._iv = self._new_interval()

    @staticmethod
    def _new_interval() -> Dict[str, int]:
        return {"shrink_calls": 0, "scanned": 0, "freed": 0, "shrink_ns": 0,
                "allocs": 0, "frees": 0, "creates": 0, "destroys": 0}

    # -- events ----------------------------------------------------------
    def feed(self, ev: Any) -> None:
        if ev.type == EV_SHRINK_SLAB:
            self._shrink(ev)
        elif ev.type == EV_KMEM_CACHE_CREATE:
            self.exact_lifecycle = True
            self.exact.create(ev)
        elif ev.type == EV_KMEM_CACHE_DESTROY:
            self.exact_lifecycle = True
            row = self.slabinfo_last.get(ev.name)
            self.exact.destroy(ev, row[0] if row else None)
        elif ev.type == EV_KMEM_CACHE_SHUTDOWN:
            self.exact.shutdown(ev, self._net_count)
        elif ev.type == EV_DROP_SLAB:
            self.drop_returns += 1

    def _net_count(self, name: str) -> Optional[int]:
        """kmem_cache_alloc - kmem_cache_free counted for ``name`` in the window."""
        c = self.caches.get(name)
        return max(0, c.allocs - c.frees) if c is not None and c.seen_counts else None

    def _shrink(self, ev: ShrinkSlab) -> None:
        if ev.ts_ns - ev.delta_ns < self.window.start_ns:
            self.before_window += 1
            return
        s = self.shrinkers.get(ev.shr)
        if s is None:
            if len(self.shrinkers) >= MAX_SHRINKERS:
                s = self.shrinkers.setdefault(0, Shrinker(0, 0))
            else:
                s = self.shrinkers[ev.shr] = Shrinker(ev.shr, ev.shrink)
        ctx = shrink_context(ev)
        scanned = ev.scanned
        freed = max(0, ev.freed)
        s.calls += 1
        s.asked += ev.total_scan
        s.scanned += scanned
        s.freed += freed
        s.lat.add(ev.delta_ns)
        s.contexts[ctx] += 1
        self.contexts[ctx] += 1
        if ctx == "direct" and len(s.direct_pids) < MAX_DIRECT_PIDS:
            s.direct_pids[f"{ev.tgid} ({ev.comm})"] += 1
        if ctx == "drop_caches" and len(s.drop_comms) < MAX_DIRECT_PIDS:
            s.drop_comms[f"{ev.tgid} ({ev.comm})"] += 1
            # A pause between two calls, not the calls' own length: one call
            # freeing 50,000 dentries took over a second under emulation.
            if ev.pid != self._last_drop[0] or \
                    ev.ts_ns - ev.delta_ns - self._last_drop[1] > 1_000_000_000:
                self.drop_episodes += 1
            self._last_drop = (ev.pid, ev.ts_ns)
        s.nids.add(ev.nid)
        s.min_priority = min(s.min_priority, ev.priority)
        s.items_last = ev.cache_items
        s.items_max = max(s.items_max, ev.cache_items)
        if ev.total_scan > 0 and freed == 0:
            s.futile += 1
            s.futile_run += 1
            s.futile_run_max = max(s.futile_run_max, s.futile_run)
        elif freed > 0:
            s.futile_run = 0
        s.iv_calls += 1
        s.iv_freed += freed
        iv = self._iv
        iv["shrink_calls"] += 1
        iv["scanned"] += scanned
        iv["freed"] += freed
        iv["shrink_ns"] += ev.delta_ns
        start = ev.ts_ns - ev.delta_ns
        if self.pressure and start - self.pressure[-1][1] < 1_000_000_000:
            self.pressure[-1][1] = max(self.pressure[-1][1], ev.ts_ns)
        elif len(self.pressure) < 256:
            self.pressure.append([start, ev.ts_ns])
        else:
            self.pressure[-1][1] = ev.ts_ns

    def _add_lifecycle(self, d: Dict[str, Any]) -> None:
        if len(self.lifecycle) >= MAX_LIFECYCLE:
            self.lifecycle_dropped += 1
            return
        self.lifecycle.append(d)
        self._iv["creates" if d["event"] == "create" else "destroys"] += 1

    # -- what the episode builder asks -----------------------------------------
    def episode_fact(self, ev: Any) -> Optional[EpisodeFact]:
        """A shrink_slab call adds to its episode's row for the shrinker's
        callback, keyed by address (named at report time by ``symbolize``)."""
        if ev.type != EV_SHRINK_SLAB:
            return None
        return EpisodeFact("shrinker", f"{ev.shrink:#x}", ev.nid, {
            "calls": 1, "scanned": ev.scanned, "freed": max(0, ev.freed),
            "time_ns": ev.delta_ns})

    def symbolize(self, addr: int) -> Optional[str]:
        """Shrinker callbacks, symbolized live by ``SlabTracer.sample``."""
        return self.symbols.get(addr)

    # -- samples (recorded by SlabTracer.sample) ----------------------------
    def _cache(self, name: str) -> Optional[_Cache]:
        c = self.caches.get(name)
        if c is None:
            if len(self.caches) >= MAX_SLAB_CACHES:
                self.caches_dropped += 1
                return None
            c = self.caches[name] = _Cache(name)
        return c

    def on_snapshot(self, snap: Any) -> None:
        if snap.what == "vmstat":
            if snap.when == "start":
                self.vm_start = snap.data
            elif snap.when == "end":
                self.vm_end = snap.data

    def on_sample(self, sample: Any) -> None:
        d = sample.data
        ts = sample.ts_ns
        when = d.get("when", "tick")
        for k, v in d.get("symbols", {}).items():
            if len(self.symbols) < MAX_SHRINKERS * 2:
                self.symbols[int(k, 16)] = v
        own = d.get("shrinker_owners")
        if own is not None:
            if self.owners is None:
                self.owners = {}
            for k, v in own.items():
                if len(self.owners) < MAX_SHRINKERS * 2:
                    self.owners[int(k, 16)] = v
        self.overflow = max(self.overflow, int(d.get("overflow", 0)))
        for line in d.get("kmsg", []):
            if len(self.kmsg) < MAX_KMSG_LINES:
                self.kmsg.append(line)
        for what in ("dentry_state", "inode_state"):
            if what in d:
                self.fs_state.setdefault(when, {})[what] = d[what]
                self.fs_state.setdefault("last", {})[what] = d[what]
        ds = d.get("dentry_state")
        if ds and "nr_dentry" in ds and "nr_unused" in ds:
            self.dentry_in_use = _append_bounded(
                self.dentry_in_use, (ts, ds["nr_dentry"] - ds["nr_unused"]))
        self._add_counts(d.get("caches", {}), when)
        si = d.get("slabinfo")
        if si is not None:
            if d.get("slabinfo_full"):
                self.slabinfo_names = set(si)
            else:
                self.slabinfo_names |= set(si)
            self.slabinfo_last.update(si)
        sysfs = d.get("sys_slab")
        if sysfs is not None:
            self._add_sys_slab(sysfs, ts)
        if si is not None:
            self._add_active(si, ts, when)

    def _add_counts(self, caches: Dict[str, List[int]], when: str) -> None:
        """Per-cache kmem_cache_alloc/free counts, cumulative since attach."""
        for name, (a, f) in caches.items():
            c = self._cache(name)
            if c is None:
                continue
            pa, pf = self.counts_prev.get(name, (0, 0))
            if when != "start":
                da, df = max(0, a - pa), max(0, f - pf)
                c.allocs += da
                c.frees += df
                c.iv_allocs += da
                c.iv_frees += df
                self._iv["allocs"] += da
                self._iv["frees"] += df
            c.seen_counts = True
            self.counts_prev[name] = [a, f]

    def _add_sys_slab(self, sysfs: Dict[str, Any], ts: int) -> None:
        """/sys/kernel/slab: structure, and attributes of the reclaimable caches."""
        if self.sys_slab is None:
            self.sys_slab_start = sysfs
            self._learn_caches(sysfs)
        elif self.exact_lifecycle:
            self.exact.resolve(sysfs)
        else:
            for ev in diff_lifecycle(self.sys_slab, sysfs, ts, self.sys_ts,
                                     self.slabinfo_names, self.destroyed_aliases):
                if ev["event"] == "destroy" and not ev["alias_of"]:
                    # kmem_cache_destroy() removes the sysfs directory only
                    # after __kmem_cache_shutdown() found the cache empty;
                    # with objects left it warns and keeps the cache.
                    row = self.slabinfo_last.get(ev["name"])
                    ev["objects_last_seen"] = row[0] if row else ev["objects_at_destroy"]
                    ev["objects_at_destroy"] = 0
                self._add_lifecycle(ev)
        self._merge_attrs(sysfs)
        self.sys_slab = sysfs
        self.sys_ts = ts

    def _add_active(self, si: Dict[str, List[int]], ts: int, when: str) -> None:
        """/proc/slabinfo active_objs: each cache's ends, and reclaimable caches' series."""
        names = set(si) | set(self.cache_info) if when == "tick" else self.slabinfo_names
        for name in sorted(names):  # a set: its order varies per process (str hash seed)
            row = self.slabinfo_last.get(name)
            if row is None or name not in self.slabinfo_names:
                continue
            c = self.caches.get(name)
            if c is None and (when == "start" or name in self.cache_info):
                c = self._cache(name)
            if c is None:
                continue
            if c.active_start is None:
                c.active_start, c.num_start = row[0], row[1]
            if when != "start":
                c.active_end, c.num_end = row[0], row[1]
            if name in self.cache_info:
                c.add_sample(ts, row[0])

    def _learn_caches(self, sysfs: Dict[str, Any]) -> None:
        """Reclaimable caches (SLAB_RECLAIM_ACCOUNT), by their slabinfo name;
        every cache's per-CPU slab sizes, for its slabinfo tolerance."""
        for d, attrs in sysfs.get("caches", {}).items():
            name = root_name(sysfs, d, self.slabinfo_names)
            if attrs.get("objs_per_slab"):
                self.sys_attrs[name] = dict(attrs, dir=d)
            if attrs.get("reclaim_account") == 1:
                self.cache_info[name] = dict(attrs, dir=d)

    def _merge_attrs(self, sysfs: Dict[str, Any]) -> None:
        for _name, info in self.cache_info.items():
            attrs = sysfs.get("caches", {}).get(info["dir"])
            if attrs:
                info.update({k: v for k, v in attrs.items() if v is not None})

    def on_tick(self, ts_ns: int) -> Dict[str, Any]:
        row: Dict[str, Any] = dict(self._iv)
        top = sorted((c for c in self.caches.values() if c.iv_allocs or c.iv_frees),
                     key=lambda c: -abs(c.iv_allocs - c.iv_frees))[:5]
        row["top_net"] = {c.name: c.iv_allocs - c.iv_frees for c in top}
        for c in self.caches.values():
            c.iv_allocs = c.iv_frees = 0
        for s in self.shrinkers.values():
            s.iv_calls = s.iv_freed = 0
        self._iv = self._new_interval()
        return row

    # -- report ----------------------------------------------------------
    def report(self) -> Dict[str, Any]:
        shrinkers = []
        for s in sorted(self.shrinkers.values(), key=lambda s: (-s.lat.total, s.shr)):
            srow = shrinker_row(s, shrinker_name(s, self.shrinkers, self.symbols, self.owners),
                                self.symbols)
            if self.owners is not None:
                # present only in recordings that read owners: older reports keep their shape
                srow["owner"] = owner_text(self.owners.get(s.shr)) if s.shr else None
            shrinkers.append(srow)
        pressure = [(a, b) for a, b in self.pressure]
        destroyed = self._destroyed()
        freeable = [s.items_last for s in self.shrinkers.values()]
        caches: List[Dict[str, Any]] = []
        for c in self.caches.values():
            row = self._cache_row(c, pressure, destroyed, freeable)
            if row is not None:
                caches.append(row)
        caches.sort(key=lambda x: (not x["never_drains"], -abs(x["net"]), x["name"]))
        merged = self._merged_summary()
        vm = self.vm_end and self.vm_start
        return {
            "shrinkers": shrinkers,
            "caches": caches,
            "lifecycle": self.lifecycle,
            "lifecycle_method": (self.exact.method if self.exact_lifecycle else
                                 "/sys/kernel/slab and /proc/slabinfo compared between "
                                 "intervals: times are approximate (between after_ns and "
                                 "ts_ns)"),
            "merged": merged,
            "kmsg": self.kmsg,
            "contexts": dict(self.contexts.most_common()),
            "drop_caches_runs": self.drop_returns if self.drop_runs_exact
            else self.drop_episodes,
            "drop_caches_runs_exact": self.drop_runs_exact,
            "drop_slab_vmstat": (self.vm_end.get("drop_slab", 0) -
                                 self.vm_start.get("drop_slab", 0)) if vm else None,
            "pressure_episodes": [{"start_ns": a, "end_ns": b} for a, b in pressure[:32]],
            "shrinks_begun_before_window": self.before_window,
            "caches_not_counted_map_full": self.overflow,
            "caches_dropped": self.caches_dropped + self.lifecycle_dropped,
            "ncpus": self.ncpus,
        }

    def _destroyed(self) -> Dict[str, Dict[str, Any]]:
        """Caches destroyed with live objects: from the kernel log, or the
        lifecycle (whose destroy events this flags)."""
        destroyed = destroyed_with_objects(self.kmsg)
        for ev in self.lifecycle:
            if ev["event"] == "destroy" and (ev.get("objects_at_destroy") or 0) > 0 \
                    and not ev.get("alias_of"):
                ev["flag"] = f"destroyed with {ev['objects_at_destroy']} objects"
                destroyed.setdefault(ev["name"], {"why": ev["flag"]})
            elif ev["event"] == "destroy" and ev.get("shutdown_ok") is False:
                ev["flag"] = "destroyed with objects left (__kmem_cache_shutdown failed)"
                destroyed.setdefault(ev["name"], {"why": ev["flag"]})
        return destroyed

    def _cache_row(self, c: _Cache, pressure: List[Tuple[int, int]],
                   destroyed: Dict[str, Dict[str, Any]],
                   freeable: List[int]) -> Optional[Dict[str, Any]]:
        """The cache as the report lists it; None when it has nothing to show."""
        info = self.cache_info.get(c.name, {})
        evid = never_drains(c.series.pairs(), pressure) if info else None
        if info and c.name == "dentry":
            # Judged on the dentries in use as well: active_objs also holds
            # unused dentries that drop_caches frees, and with enough of them
            # a cache full of pinned dentries falls by DRAIN_FRACTION.
            pinned = pinned_never_drains(self.dentry_in_use, c.series.pairs(), pressure)
            if pinned is not None:
                evid = pinned
        nd = evid is not None or c.name in destroyed
        reason = detail = None
        if nd:
            reason, detail = drain_reason(c.name, info, evid or {}, destroyed,
                                          self.fs_state, freeable)
        net = c.allocs - c.frees
        slab_delta = (c.active_end - c.active_start) if (
            c.active_end is not None and c.active_start is not None) else None
        attrs = info if info.get("objs_per_slab") else self.sys_attrs.get(c.name, {})
        tol = slabinfo_tolerance(attrs, self.ncpus) if attrs.get("objs_per_slab") else None
        diff = (net - slab_delta) if (slab_delta is not None and c.seen_counts) else None
        # Past the per-CPU slack /proc/slabinfo moved by objects that no
        # kmem_cache_alloc/free tracepoint reported (bpftrace counting the
        # same tracepoints by name misses the same objects).
        beyond = max(tol or 0, MIN_GROWTH)
        interesting = nd or (c.allocs or c.frees) or (
            slab_delta is not None and abs(slab_delta) >= MIN_GROWTH)
        if not interesting:
            return None
        return {
            "name": c.name, "allocs": c.allocs, "frees": c.frees, "net": net,
            "counted": c.seen_counts,
            "active_start": c.active_start, "active_end": c.active_end,
            "num_start": c.num_start, "num_end": c.num_end,
            "slabinfo_delta": slab_delta,
            "net_minus_slabinfo": diff,
            "tolerance": tol,
            # kfree(), kfree_rcu() and kmem_cache_free_bulk() free without
            # the kmem_cache_free tracepoint: the net then overstates
            "frees_untraced": diff is not None and diff > beyond,
            # kmem_cache_alloc_bulk() allocates without kmem_cache_alloc, and
            # a task in whose context no tracepoint fires (seen: the sandbox
            # init of the development VM, looking up /proc/PID/fd/N) allocates
            # dentries and proc inodes unseen: the net then understates
            "allocs_untraced": diff is not None and diff < -beyond,
            "reclaimable": bool(info),
            "aliases": info.get("aliases"),
            "never_drains": nd, "reason": reason, "reason_detail": detail,
            "evidence": evid,
        }

    def _merged_summary(self) -> List[Dict[str, Any]]:
        """Merged caches that lifecycle events touched: who shares them."""
        out = []
        sysfs = self.sys_slab or {}
        dirs = sorted({ev["merged_dir"] for ev in self.lifecycle if ev.get("merged_dir")})
        for d in dirs[:32]:
            links = sorted(n for n, (t, _i) in sysfs.get("links", {}).items() if t == d)
            attrs = sysfs.get("caches", {}).get(d)
            out.append({"dir": d, "exists": attrs is not None,
                        "name": root_name(sysfs, d, self.slabinfo_names),
                        "aliases": attrs.get("aliases") if attrs else None,
                        "links": links[:32], "links_total": len(links)})
        return out

    def totals(self, section: Dict[str, Any]) -> Dict[str, Any]:
        sh = section["shrinkers"]
        return {
            "shrink_slab_calls": sum(s["calls"] for s in sh),
            "shrink_slab_scanned": sum(s["scanned"] for s in sh),
            "shrink_slab_freed": sum(s["freed"] for s in sh),
            "shrink_slab_ns": sum(s["time_ns"] for s in sh),
            "slab_caches_never_drain": sum(1 for c in section["caches"] if c["never_drains"]),
            "kmem_cache_lifecycle_events": len(section["lifecycle"]),
            "drop_caches_runs": section["drop_caches_runs"],
            "drop_caches_runs_exact": section["drop_caches_runs_exact"],
        }

    def vmstat_rows(self, totals: Dict[str, Any], vm: Dict[str, int]) -> List[List[Any]]:
        """Traced vs /proc/vmstat.  do_shrink_slab() adds shrinkctl->nr_scanned
        to SLABS_SCANNED after each scan_objects() batch and subtracts the same
        from total_scan, so start.total_scan - end.total_scan per call sums to
        exactly slabs_scanned (calls that straddle the window edges aside)."""
        return [
            ["shrinker objects scanned", totals.get("shrink_slab_scanned", "-"),
             vm.get("slabs_scanned", "-"), "slabs_scanned"],
            ["drop_caches (slab) runs",
             drop_runs_text(totals["drop_caches_runs"], totals["drop_caches_runs_exact"])
             if "drop_caches_runs" in totals else "-",
             vm.get("drop_slab", "-"), "drop_slab"],
        ]

    def render(self, section: Dict[str, Any]) -> List[str]:
        return render_section(section)
