"""How a direct reclaim's retries are seen: the plan, and what the report claims."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from trace_reclaim import events
from trace_reclaim.abi import EV_DIRECT_RECLAIM
from trace_reclaim.tracer import Window
from trace_reclaim.tracers.reclaim import DirectReclaim, ReclaimAggregator, ReclaimTracer

SHRINK_PROTO = ["struct shrinker *", "struct shrink_control *", "long int", "long int",
                "long long unsigned int", "long unsigned int", "int"]


class FakeProbe:
    def __init__(self, fentry: Tuple[bool, str] = (True, "available"),
                 kprobes: Tuple[bool, str] = (True, "available"),
                 proto: Optional[List[str]] = None,
                 shrink: Optional[List[str]] = SHRINK_PROTO) -> None:
        self.fentry = fentry
        self.kprobes = kprobes
        self.proto = list(ReclaimTracer.PASS_PROTO) if proto is None else proto
        self.shrink = shrink
        self.attached: List[Tuple[str, str]] = []

    def tracepoint_exists(self, cat: str, ev: str) -> bool:
        return True

    def tracing_attach(self, func: str, kind: str = "fentry") -> Tuple[bool, str]:
        self.attached.append((func, kind))
        return self.fentry

    def btf_func_params(self, name: str) -> Optional[List[str]]:
        return self.proto if name == "vmpressure_prio" else None

    def raw_tracepoint_params(self, ev: str) -> Optional[List[str]]:
        return self.shrink if ev == "mm_shrink_slab_start" else None


def _retries_plan(probe: FakeProbe):
    attaches, cflags = ReclaimTracer().plan(probe)
    fam = [a for a in attaches if a.family.startswith("direct reclaim retries")]
    assert len(fam) == 1
    return fam[0], cflags


def test_fentry_on_vmpressure_prio_first():
    probe = FakeProbe()
    a, cflags = _retries_plan(probe)
    assert a.chosen == "fentry vmpressure_prio (exact)"
    assert "-DRECLAIM_PASS_FENTRY" in cflags
    assert not any(c.startswith("-DRECLAIM_SHRINK_PRIORITY_ARG") for c in cflags)
    assert ("vmpressure_prio", "fentry") in probe.attached  # the function itself is tried
    assert ReclaimTracer().header(FakeProbe()) == {"retries_from": "fentry", "lru_memcg": True}


def test_kprobe_where_the_trampoline_refuses():
    a, cflags = _retries_plan(FakeProbe(fentry=(False, "not used: --attach kprobe (forced)")))
    assert a.chosen == "kprobe vmpressure_prio (exact)"
    assert a.rejected == [("fentry vmpressure_prio", "not used: --attach kprobe (forced)")]
    assert "-DRECLAIM_PASS_KPROBE" in cflags and "-DRECLAIM_PASS_FENTRY" not in cflags


def test_inferred_from_the_tracepoints_without_either():
    probe = FakeProbe(fentry=(False, "no kernel BTF"), kprobes=(False, "kprobes not compiled in"))
    a, cflags = _retries_plan(probe)
    assert "lower bound" in a.chosen and "mm_shrink_slab_start" in a.chosen
    assert "-DRECLAIM_SHRINK_PRIORITY_ARG=6" in cflags
    assert not any(c.startswith("-DRECLAIM_PASS") for c in cflags)
    assert [opt for opt, _why in a.rejected] == ["fentry vmpressure_prio",
                                                 "kprobe vmpressure_prio"]
    assert ReclaimTracer().header(probe) == {"retries_from": "inferred", "lru_memcg": True}


def test_a_changed_prototype_is_not_probed():
    # A third argument that is no longer the priority would count nonsense.
    probe = FakeProbe(proto=["gfp_t", "struct mem_cgroup *", "bool", "int"])
    a, cflags = _retries_plan(probe)
    assert "lower bound" in a.chosen
    assert not any(c.startswith("-DRECLAIM_PASS") for c in cflags)
    assert probe.attached == []
    assert "not in this kernel's BTF" in a.rejected[0][1]


def test_inferred_without_the_shrink_slab_prototype_says_what_is_missed():
    a, cflags = _retries_plan(FakeProbe(fentry=(False, "x"), kprobes=(False, "y"), shrink=None))
    assert "LRU shrinks' priority" in a.chosen and "missed" in a.chosen
    assert [c for c in cflags if "MEMCG" not in c] == []  # nothing for the retries


def _report(header: Dict[str, Any]) -> Dict[str, Any]:
    agg = ReclaimAggregator(Window(start_ns=0, header=header))
    ev = DirectReclaim(ts_ns=2000, type=EV_DIRECT_RECLAIM, pid=7, tgid=7, cpu=0, comm="w",
                       delta_ns=1000, gfp_flags=0, nr_reclaimed_pages=3, order=9, retries=2)
    agg.feed(ev)
    return agg.report()


def test_the_report_says_whether_retries_are_exact():
    tracer = ReclaimTracer()
    for how, exact in (("fentry", True), ("kprobe", True), ("inferred", False)):
        header = {"tracers": {"reclaim": {"retries_from": how}}}
        events.check_header(header)
        sec = _report(header)
        assert sec["direct_reclaim"]["retries"] == 2
        assert sec["direct_reclaim"]["retries_exact"] is exact
        text = "\n".join(tracer.aggregator(Window()).render(sec))
        assert ("at least 2 retried" in text) is not exact, text
    # A recording made before the header said: inferred, as it was.
    assert _report({})["direct_reclaim"]["retries_exact"] is False


def _end_of_window(in_flight, after=()):
    """A window 1000..9000 whose end counters were read by 9400, with these
    stalls running then and ``after`` ending during the drain."""
    agg = ReclaimAggregator(Window(start_ns=1000, header={}))
    lru = {who: {"calls": 0, "nr_scanned": 0, "nr_reclaimed": 0, "nr_taken": 0}
           for who in ("kswapd", "direct", "khugepaged")}
    agg.on_sample(events.Sample(1000, "reclaim", {"lru": lru, "lru_gen": None}))
    agg.window.end_ns = 9000
    agg.on_sample(events.Sample(9400, "reclaim", {"lru": lru, "lru_gen": None,
                                                  "in_flight": in_flight}))
    for tid, begin, end, retries in after:
        agg.after_window(DirectReclaim(ts_ns=end, type=EV_DIRECT_RECLAIM, pid=tid, tgid=tid,
                                       cpu=0, comm="w", delta_ns=end - begin, gfp_flags=0,
                                       nr_reclaimed_pages=1, order=0, retries=retries))
    agg.close(9000)
    return agg


def test_stalls_still_running_at_the_end_are_counted_apart():
    # Begun before the window (its ALLOCSTALL came before the start counters),
    # inside it with 0 and 2 retries so far, and after the counters were read.
    agg = _end_of_window([[500, 1, 11], [2000, 0, 12], [3000, 2, 13], [9500, 0, 14]])
    sec = agg.report()
    d = sec["direct_reclaim"]
    assert (d["in_flight_at_end"], d["in_flight_retries"]) == (2, 2)
    assert d["begun_during_end_read"] == 0
    tot = agg.totals(sec)
    assert (tot["direct_reclaim_in_flight"], tot["direct_reclaim_in_flight_retries"]) == (2, 2)
    text = "\n".join(agg.render(sec))
    assert "2 more still in direct reclaim when the trace ended" in text


def test_stalls_that_ended_during_the_drain_are_in_flight_once():
    # 12 was running at the reading and ended during the drain: once.  15 ended
    # between the end timestamp and the reading.  16 began after the end
    # timestamp but before the reading was done: the counters may hold it.
    # 17 began and ended during the drain: outside.
    agg = _end_of_window([[2000, 0, 12]],
                         after=[(12, 2000, 9600, 0), (15, 4000, 9100, 1),
                                (16, 9200, 9700, 0), (17, 9800, 9900, 0)])
    d = agg.report()["direct_reclaim"]
    assert (d["in_flight_at_end"], d["in_flight_retries"]) == (2, 1)
    assert d["begun_during_end_read"] == 1


def test_the_end_sample_shape_is_checked():
    from trace_reclaim import schema
    check = events._SAMPLE_DATA["reclaim"]
    schema.check(check, {"in_flight": [[1, 0, 7]]})
    for bad in ({"in_flight": [[1, 0]]}, {"in_flight": [["x", 0, 1]]},
                {"in_flight": [[1, -1, 1]]}):
        try:
            schema.check(check, bad)
        except schema.SchemaError:
            continue
        raise AssertionError(f"accepted {bad}")
