"""The LRU counts per reclaimer, as /proc/vmstat attributes them."""

from __future__ import annotations

from typing import Any, Dict, Optional

from trace_reclaim import events
from trace_reclaim.tracer import Window
from trace_reclaim.tracers.reclaim import RECLAIMERS, ReclaimAggregator


def _lru(direct: int, khugepaged: int) -> Dict[str, Dict[str, int]]:
    pages = {"direct": direct, "khugepaged": khugepaged, "kswapd": 1000}
    return {who: {"calls": 1, "nr_scanned": pages.get(who, 0) + 10,
                  "nr_reclaimed": pages.get(who, 0), "nr_taken": 0} for who in RECLAIMERS}


def _section(counted: Optional[bool]) -> Dict[str, Any]:
    agg = ReclaimAggregator(Window(start_ns=0))
    start: Dict[str, Any] = {"lru": _lru(0, 0), "lru_gen": None}
    if counted is not None:
        start["khugepaged_counted"] = counted
    agg.on_sample(events.Sample(1, "reclaim", start))
    agg.on_sample(events.Sample(2, "reclaim", {"lru": _lru(38, 47), "lru_gen": None}))
    return agg.report()


def test_direct_includes_khugepaged_where_vmstat_does():
    # Debian's 6.1: no pgsteal_khugepaged; khugepaged's reclaim is pgsteal_direct.
    sec = _section(counted=False)
    assert sec["lru"]["direct"]["nr_reclaimed"] == 38 + 47
    assert sec["lru"]["khugepaged"]["nr_reclaimed"] == 47
    assert sec["lru_direct_includes_khugepaged"] is True


def test_direct_is_direct_where_vmstat_counts_khugepaged_apart():
    for counted in (True, None):  # None: a recording made before the flag
        sec = _section(counted)
        assert sec["lru"]["direct"]["nr_reclaimed"] == 38
        assert sec["lru_direct_includes_khugepaged"] is False
