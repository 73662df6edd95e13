"""The end of the allocator's slow path: compaction, retry decisions, OOM kills.

Kernel side: ``bpf/oom.bpf.c`` on ``compaction:mm_compaction_begin/end``
(compact_zone(), paired per thread in the kernel), ``oom:reclaim_retry_zone``
(should_reclaim_retry(), per zone), ``oom:compact_retry``
(should_compact_retry()) and ``oom:mark_victim`` (the OOM killer's choice).
The oom events exist since Linux 4.10 (commit 5e4ad6dfd6a1 has
reclaim_retry_zone and compact_retry; mark_victim since 4.7); mark_victim's
rss fields since 6.2.  Read in that order they are the allocator's last
steps before an OOM kill: reclaim made no progress, compaction gave up,
then a victim was marked.

Compaction's records and counts live in ``tracers.compaction``; this module
holds the reclaim retry decisions, the OOM victims, and the tracer that loads
``bpf/oom.bpf.c`` for all of them (named ``oom`` in recordings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List

from trace_reclaim import events
from trace_reclaim.abi import EV_MARK_VICTIM, EV_RECLAIM_RETRY_ZONE
from trace_reclaim.report import wrap
from trace_reclaim.stats import LatencyStats
from trace_reclaim.tracer import Aggregator, Tracer, Window
from trace_reclaim.tracers.compaction import (EV_COMPACT_RETRY, EV_COMPACTION, RUN_BATCH,
                                              CompactionStats, render_compact_retry,
                                              render_compaction)

__all__ = [
    "EV_MARK_VICTIM", "EV_RECLAIM_RETRY_ZONE", "MarkVictim", "ReclaimRetryZone",
    "OomTracer", "OomAggregator", "TRACER",
]

MAX_VICTIMS = 256


@dataclass(slots=True)
class MarkVictim(events.Event):
    """The OOM killer marked ``victim_pid``; the header is the killing task."""

    total_vm_kb: int
    anon_rss_kb: int
    file_rss_kb: int
    shmem_rss_kb: int
    pgtables_kb: int
    victim_pid: int
    uid: int
    oom_score_adj: int
    victim_comm: str
    cgroup_id: int = 0   # of the killing task (0: recorded before attribution)
    memcg_id: int = 0

    def as_json(self) -> Dict[str, Any]:
        """The victim as the report and the episodes list it."""
        return {"ts_ns": self.ts_ns, "pid": self.victim_pid, "comm": self.victim_comm,
                "total_vm_kb": self.total_vm_kb, "anon_rss_kb": self.anon_rss_kb,
                "file_rss_kb": self.file_rss_kb, "shmem_rss_kb": self.shmem_rss_kb,
                "pgtables_kb": self.pgtables_kb, "uid": self.uid,
                "oom_score_adj": self.oom_score_adj, "by_pid": self.pid, "by_comm": self.comm}


@dataclass(slots=True)
class ReclaimRetryZone(events.Event):
    reclaimable_pages: int
    available_pages: int
    min_wmark_pages: int
    nid: int
    zid: int
    order: int
    no_progress_loops: int
    wmark_check: int


events.register(EV_MARK_VICTIM, events.struct_decoder(MarkVictim, "mark_victim_event",
                                                                   since="cgroup_id"))
events.register(EV_RECLAIM_RETRY_ZONE,
                events.struct_decoder(ReclaimRetryZone, "reclaim_retry_zone_event"))


class OomAggregator(Aggregator):
    """Compaction runs by result, the allocator's retry decisions, OOM victims."""

    section: ClassVar[str] = "oom"

    def __init__(self, window: Window) -> None:
        super().__init__(window)
        self.victims: List[Dict[str, Any]] = []
        self.victims_dropped = 0
        self.compaction = CompactionStats()
        self.reclaim_retries = 0
        self.reclaim_retry_max_loops = 0
        self.reclaim_retry_wmark_fail = 0
        self._retry_zones: List[ReclaimRetryZone] = []  # not counted yet (``flush``)

    @property
    def compaction_lat(self) -> Dict[str, LatencyStats]:
        """compact_zone() latency by who ran it (direct, kcompactd)."""
        return self.compaction.lat

    def handlers(self) -> Dict[int, Any]:
        """The function for each record type (the correlator calls them directly)."""
        # Each only keeps its record; ``flush`` counts them (the correlator
        # calls it after every batch of records).
        return {EV_COMPACTION: self.compaction.runs.append,
                EV_RECLAIM_RETRY_ZONE: self._retry_zones.append,
                EV_COMPACT_RETRY: self.compaction.retries.append}

    def flush(self) -> None:
        self.compaction.flush()
        evs = self._retry_zones
        if evs:
            self.reclaim_retries += len(evs)
            loops = self.reclaim_retry_max_loops
            for e in evs:
                if e.no_progress_loops > loops:
                    loops = e.no_progress_loops
                if not e.wmark_check:
                    self.reclaim_retry_wmark_fail += 1
            self.reclaim_retry_max_loops = loops
            evs.clear()

    def _reclaim_retry_zone(self, ev: Any) -> None:
        self._retry_zones.append(ev)
        if len(self._retry_zones) >= RUN_BATCH:
            self.flush()

    def feed(self, ev: Any) -> None:
        t = ev.type
        if t == EV_COMPACTION:
            self.compaction.add_compaction(ev)
        elif t == EV_RECLAIM_RETRY_ZONE:
            self._reclaim_retry_zone(ev)
        elif t == EV_COMPACT_RETRY:
            self.compaction.add_compact_retry(ev)
        elif t == EV_MARK_VICTIM:
            if len(self.victims) >= MAX_VICTIMS:
                self.victims_dropped += 1
                return
            self.victims.append(ev.as_json())

    def report(self) -> Dict[str, Any]:
        self.flush()
        return {
            "compaction": self.compaction.compaction(),
            "reclaim_retry_zone": {"calls": self.reclaim_retries,
                                   "max_no_progress_loops": self.reclaim_retry_max_loops,
                                   "wmark_check_failed": self.reclaim_retry_wmark_fail},
            "compact_retry": self.compaction.compact_retry(),
            "victims": self.victims,
            "victims_dropped": self.victims_dropped,
        }

    def totals(self, section: Dict[str, Any]) -> Dict[str, Any]:
        c = section["compaction"]
        return {
            "oom_kills": len(section["victims"]) + section["victims_dropped"],
            "compaction_runs_direct": c["direct"]["runs"],
            "compaction_runs_kcompactd": c["kcompactd"]["runs"],
            "compaction_ns_direct": c["direct"]["total_ns"],
            "reclaim_retry_zone": section["reclaim_retry_zone"]["calls"],
            "compact_retry": section["compact_retry"]["calls"],
        }

    def vmstat_rows(self, t: Dict[str, Any], vm: Dict[str, int]) -> List[List[Any]]:
        return [["OOM kills", t.get("oom_kills", "-"),
                 str(vm["oom_kill"]) if "oom_kill" in vm else "-", "oom_kill"]]

    def render(self, section: Dict[str, Any]) -> List[str]:
        out = render_compaction(section["compaction"])
        r = section["reclaim_retry_zone"]
        out += wrap(f"should_reclaim_retry: {r['calls']} zone checks "
                    f"(max {r['max_no_progress_loops']} no-progress loops)", hang="  ")
        out += render_compact_retry(section["compact_retry"])
        if not section["victims"]:
            out.append("OOM kills: none")
        for v in section["victims"]:
            out += wrap(f"OOM kill: pid {v['pid']} ({v['comm']}) anon-rss {v['anon_rss_kb']}kB "
                        f"file-rss {v['file_rss_kb']}kB oom_score_adj {v['oom_score_adj']}, "
                        f"chosen by pid {v['by_pid']} ({v['by_comm']})", hang="  ")
        return out


class OomTracer(Tracer):
    """Compaction runs, should_*_retry decisions and OOM victims."""

    name: ClassVar[str] = "oom"
    bpf_source: ClassVar[str] = "oom.bpf.c"
    cflag: ClassVar[str] = "WITH_OOM"
    tracepoints: ClassVar[Any] = (
        ("oom", "mark_victim"),
        ("oom", "reclaim_retry_zone"),
        ("oom", "compact_retry"),
        ("compaction", "mm_compaction_begin"),
        ("compaction", "mm_compaction_end"),
    )
    event_types: ClassVar[Any] = (EV_MARK_VICTIM, EV_COMPACTION, EV_RECLAIM_RETRY_ZONE,
                                  EV_COMPACT_RETRY)

    def aggregator(self, window: Window) -> OomAggregator:
        return OomAggregator(window)


TRACER = OomTracer()
