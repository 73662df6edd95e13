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


# compact_zone() runs held before they are counted in one go (``flush``):
# a bound on memory where nothing calls ``flush`` sooner.
RUN_BATCH = 4096


class CompactionStats:
    """Compaction runs (direct and kcompactd) by result; should_compact_retry() calls.

    ``runs`` and ``retries`` hold the records until ``flush`` counts them
    in one loop each; aggregators use their ``append`` as the handler.
    """

    def __init__(self) -> None:
        self._lat = {"direct": LatencyStats(), "kcompactd": LatencyStats()}
        self.status: Counter[str] = Counter()
        self.retry_calls = 0
        self.retry_gave_up = 0
        self.retry_results: Counter[str] = Counter()
        self.runs: List[Compaction] = []       # not counted yet
        self.retries: List[CompactRetry] = []  # not counted yet

    @property
    def lat(self) -> Dict[str, LatencyStats]:
        """compact_zone() run times by who ran it, every run so far added."""
        self.flush()
        return self._lat

    def flush(self) -> None:
        """Count the runs and retry decisions held so far.

        What one record at a time would count: run times go to who ran
        them in the order they came (LatencyStats keeps no order anyway),
        results are counted by name.
        """
        runs = self.runs
        if runs:
            by_kcompactd: List[int] = []
            by_direct: List[int] = []
            by_status: Dict[int, int] = {}
            for r in runs:
                (by_kcompactd if is_kcompactd(r.comm) else by_direct).append(r.delta_ns)
                st = r.status
                by_status[st] = by_status.get(st, 0) + 1
            self._lat["kcompactd"].add_many(by_kcompactd)
            self._lat["direct"].add_many(by_direct)
            status = self.status
            for st, c in by_status.items():
                # the number's str() only when the name is unknown
                name = COMPACT_STATUS.get(st)
                status[str(st) if name is None else name] += c
            runs.clear()
        retries = self.retries
        if retries:
            self.retry_calls += len(retries)
            by_result: Dict[int, int] = {}
            for q in retries:
                if not q.retry:
                    self.retry_gave_up += 1
                res = q.result
                by_result[res] = by_result.get(res, 0) + 1
            results = self.retry_results
            for res, c in by_result.items():
                name = COMPACT_RETRY_RESULT.get(res)
                results[str(res) if name is None else name] += c
            retries.clear()

    def add_compaction(self, ev: Compaction) -> None:
        self.runs.append(ev)
        if len(self.runs) >= RUN_BATCH:
            self.flush()

    def add_compact_retry(self, ev: CompactRetry) -> None:
        self.retries.append(ev)
        if len(self.retries) >= RUN_BATCH:
            self.flush()

    def compaction(self) -> Dict[str, Any]:
        """The section's ``compaction``: runs and latency by who, results."""
        self.flush()
        comp = {}
        for who, lat in self.lat.items():
            s = lat.summary()
            comp[who] = {"runs": s["count"], "total_ns": s["total"], "p50_ns": s["p50"],
                         "p99_ns": s["p99"], "max_ns": s["max"]}
        return {**comp, "status": dict(sorted(self.status.items()))}

    def compact_retry(self) -> Dict[str, Any]:
        """The section's ``compact_retry``: should_compact_retry() calls and results."""
        self.flush()
        return {"calls": self.retry_calls, "gave_up": self.retry_gave_up,
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
