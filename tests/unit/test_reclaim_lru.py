"""The LRU counts per reclaimer, as /proc/vmstat attributes them."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from trace_reclaim import events
from trace_reclaim.tracer import Attach, Window
from trace_reclaim.tracers.reclaim import RECLAIMERS, ReclaimAggregator, ReclaimTracer


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


def _memcg_section(lru_memcg: Optional[bool]) -> Dict[str, Any]:
    header: Dict[str, Any] = {}
    if lru_memcg is not None:
        header = {"tracers": {"reclaim": {"retries_from": "inferred", "lru_memcg": lru_memcg}}}
    agg = ReclaimAggregator(Window(start_ns=0, header=header))
    zero = {who: {"calls": 0, "nr_scanned": 0, "nr_reclaimed": 0, "nr_taken": 0}
            for who in RECLAIMERS}
    later = {**zero, "direct": {"calls": 2, "nr_scanned": 70, "nr_reclaimed": 64, "nr_taken": 0},
             "memcg": {"calls": 9, "nr_scanned": 300, "nr_reclaimed": 288, "nr_taken": 0}}
    agg.on_sample(events.Sample(1, "reclaim", {"lru": zero, "lru_gen": None,
                                               "khugepaged_counted": True}))
    agg.on_sample(events.Sample(2, "reclaim", {"lru": later, "lru_gen": None}))
    return agg.report()


def test_memcg_reclaim_has_its_own_row_where_the_plan_told_it_apart():
    sec = _memcg_section(True)
    assert sec["lru"]["direct"]["nr_reclaimed"] == 64   # what pgsteal_direct counts
    assert sec["lru"]["memcg"] == {"calls": 9, "nr_scanned": 300, "nr_reclaimed": 288}
    agg = ReclaimAggregator(Window(start_ns=0))
    t = agg.totals(sec)
    assert (t["lru_reclaimed_memcg"], t["lru_scanned_memcg"]) == (288, 300)
    text = "\n".join(agg.render(sec))
    flat = " ".join(line.strip() for line in text.splitlines())
    assert "Memcg reclaim (cgroups at their limits): 300 LRU pages scanned, " \
           "288 reclaimed;" in flat


def test_without_the_split_there_is_no_memcg_row():
    # An older recording, or a plan without the memcg tracepoints: memcg
    # reclaim is in "direct", and no "memcg" figure pretends otherwise.
    for flag in (None, False):
        sec = _memcg_section(flag)
        assert "memcg" not in sec["lru"]
        agg = ReclaimAggregator(Window(start_ns=0))
        assert "lru_reclaimed_memcg" not in agg.totals(sec)
        assert "Memcg reclaim" not in "\n".join(agg.render(sec))


class _Probe:
    def __init__(self, missing: Tuple[str, ...] = ()) -> None:
        self.missing = missing

    def tracepoint_exists(self, cat: str, ev: str) -> bool:
        return ev not in self.missing

    def tracing_attach(self, func: str, kind: str = "fentry") -> Tuple[bool, str]:
        return False, "no"

    kprobes = (False, "no")

    def btf_func_params(self, name: str) -> Optional[List[str]]:
        return None

    def raw_tracepoint_params(self, ev: str) -> Optional[List[str]]:
        return None


def _memcg_plan(probe: _Probe) -> Tuple[Attach, List[str]]:
    attaches, cflags = ReclaimTracer().plan(probe)
    (a,) = [a for a in attaches if a.family.startswith("LRU pages of memcg reclaim")]
    return a, [c for c in cflags if "MEMCG" in c]


def test_the_plan_takes_the_brackets_the_kernel_has():
    a, flags = _memcg_plan(_Probe())
    assert flags == ["-DRECLAIM_MEMCG_LRU", "-DRECLAIM_MEMCG_SOFTLIMIT_LRU"]
    assert a.ok and "mm_vmscan_memcg_softlimit_reclaim_begin/end" in a.chosen
    a, flags = _memcg_plan(_Probe(("mm_vmscan_memcg_softlimit_reclaim_end",)))
    assert flags == ["-DRECLAIM_MEMCG_LRU"] and "softlimit" not in a.chosen
    # Without the limit's bracket (no CONFIG_MEMCG), none: counted as direct.
    a, flags = _memcg_plan(_Probe(("mm_vmscan_memcg_reclaim_begin",)))
    assert flags == [] and a.ok and a.chosen.startswith("none")
    assert ReclaimTracer().header(_Probe(("mm_vmscan_memcg_reclaim_end",)))["lru_memcg"] is False
