"""Compaction: compact_zone() runs by result, and the allocator's should_compact_retry().

Kernel side: ``bpf/oom.bpf.c`` (the ``oom`` tracer loads it; recordings name
that tracer) on ``compaction:mm_compaction_begin/end`` (compact_zone(),
paired per thread in the kernel, CONFIG_COMPACTION) and ``oom:compact_retry``
(should_compact_retry() in the page allocator's slow path; since Linux 4.10,
commit 5e4ad6dfd6a1).  kcompactd's runs are told from direct compaction by
the task's comm.  Result names come from include/trace/events/compaction.h
(``mmenums``).  Pure: events in, the ``oom`` section's compaction parts out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List

from trace_reclaim import events
from trace_reclaim.abi import EV_COMPACT_RETRY, EV_COMPACTION
from trace_reclaim.mmenums import COMPACT_RETRY_RESULT, COMPACT_STATUS
from trace_reclaim.report import fmt_ns, wrap
from trace_reclaim.stats import LatencyStats

__all__ = [
    "EV_COMPACTION", "EV_COMPACT_RETRY", "Compaction", "CompactRetry",
    "CompactionStats", "is_kcompactd", "render_compaction", "render_compact_retry",
]

@dataclass(slots=True)
class Compaction(events.Event):
    """One compact_zone() run; ``ts_ns`` is when it ended."""

    delta_ns: int
    zone_start_pfn: int
    zone_end_pfn: int
    migrate_pfn: int
    free_pfn: int
    status: int
    sync: int

    @property
    def start_ns(self) -> int:
        return self.ts_ns - self.delta_ns


@dataclass(slots=True)
class CompactRetry(events.Event):
    order: int
    priority: int
    result: int
    retries: int
    max_retries: int
    retry: int


events.register(EV_COMPACTION, events.struct_decoder(Compaction, "compaction_event"))
events.register(EV_COMPACT_RETRY, events.struct_decoder(CompactRetry, "compact_retry_event"))


def is_kcompactd(comm: str) -> bool:
    return comm.startswith("kcompactd")


# compact_zone() run times held before they are added to the statistics in
# one go (``LatencyStats.add_many``): a bound on memory.
RUN_BATCH = 4096


class CompactionStats:
    """Compaction runs (direct and kcompactd) by result; should_compact_retry() calls."""

    def __init__(self) -> None:
        self._lat = {"direct": LatencyStats(), "kcompactd": LatencyStats()}
        self._runs: Dict[str, List[int]] = {"direct": [], "kcompactd": []}  # not added yet
        self.status: Counter[str] = Counter()
        self.retries = 0
        self.retry_gave_up = 0
        self.retry_results: Counter[str] = Counter()

    @property
    def lat(self) -> Dict[str, LatencyStats]:
        """compact_zone() run times by who ran it, every run so far added."""
        self._add_runs()
        return self._lat

    def _add_runs(self) -> None:
        for who, runs in self._runs.items():
            self._lat[who].add_many(runs)
            runs.clear()

    def add_compaction(self, ev: Compaction) -> None:
        runs = self._runs["kcompactd" if is_kcompactd(ev.comm) else "direct"]
        runs.append(ev.delta_ns)
        if len(runs) >= RUN_BATCH:
            self._add_runs()
        # A per-event path: the number's str() only when the name is unknown.
        name = COMPACT_STATUS.get(ev.status)
        self.status[str(ev.status) if name is None else name] += 1

    def add_compact_retry(self, ev: CompactRetry) -> None:
        self.retries += 1
        if not ev.retry:
            self.retry_gave_up += 1
        name = COMPACT_RETRY_RESULT.get(ev.result)
        self.retry_results[str(ev.result) if name is None else name] += 1

    def compaction(self) -> Dict[str, Any]:
        """The section's ``compaction``: runs and latency by who, results."""
        comp = {}
        for who, lat in self.lat.items():
            s = lat.summary()
            comp[who] = {"runs": s["count"], "total_ns": s["total"], "p50_ns": s["p50"],
                         "p99_ns": s["p99"], "max_ns": s["max"]}
        return {**comp, "status": dict(sorted(self.status.items()))}

    def compact_retry(self) -> Dict[str, Any]:
        """The section's ``compact_retry``: should_compact_retry() calls and results."""
        return {"calls": self.retries, "gave_up": self.retry_gave_up,
                "results": dict(sorted(self.retry_results.items()))}


def render_compaction(c: Dict[str, Any]) -> List[str]:
    """Text lines for a section's ``compaction``."""
    out = []
    for who in ("direct", "kcompactd"):
        s = c[who]
        out += wrap(f"Compaction ({who}): {s['runs']} runs, {fmt_ns(s['total_ns'])}, "
                    f"p99 {fmt_ns(s['p99_ns'])}, max {fmt_ns(s['max_ns'])}", hang="  ")
    if c["status"]:
        out += wrap("results: " + ", ".join(f"{k} x{v}" for k, v in c["status"].items()),
                    "  ", hang="    ")
    return out


def render_compact_retry(cr: Dict[str, Any]) -> List[str]:
    """Text line for a section's ``compact_retry``."""
    return wrap(f"should_compact_retry: {cr['calls']} ({cr['gave_up']} gave up)", hang="  ")
