"""The tracer API's declared hooks: abstract where they must be, wired by the core."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from trace_reclaim import events
from trace_reclaim.correlate import Correlator
from trace_reclaim.tracer import Aggregator, Options, Tracer, Window
from trace_reclaim.tracers import registry
from trace_reclaim.tracers.reclaim import KswapdSleep, KswapdWake
from trace_reclaim.tracers.slab import EV_KMEM_CACHE_CREATE, EV_SHRINK_SLAB, KmemCacheEvent, \
    ShrinkSlab
from trace_reclaim.tracers.vmalloc import EV_ALLOC_VMAP_AREA, EV_KMALLOC_LARGE, \
    AllocVmapArea, KmallocLarge

MS = 1_000_000
SUPER_CACHE_SCAN = 0xFFFFFFFF81234560


def test_aggregator_and_tracer_must_implement_their_abstract_hooks():
    class NoReport(Aggregator):
        def feed(self, ev: Any) -> None:
            pass

    class NoAggregator(Tracer):
        name = "x"

    with pytest.raises(TypeError, match="report"):
        NoReport(Window())  # type: ignore[abstract]
    with pytest.raises(TypeError, match="aggregator"):
        NoAggregator()  # type: ignore[abstract]


def test_the_abstract_hooks_refused_by_hand_are_the_abcs():
    """Compiled, Aggregator and Tracer refuse a missing hook by hand (their
    ABSTRACT lists): the lists name exactly the methods the source marks
    ``@abc.abstractmethod`` (read from the source: compiled, abc keeps none)."""
    import ast
    import os

    import trace_reclaim

    # (not tracer.__file__: compiled, mypyc names the module's file wrongly)
    with open(os.path.join(os.path.dirname(trace_reclaim.__file__), "tracer.py")) as f:
        tree = ast.parse(f.read())
    marked = {node.name: {fn.name for fn in node.body if isinstance(fn, ast.FunctionDef)
                          and any(ast.unparse(d) == "abc.abstractmethod"
                                  for d in fn.decorator_list)}
              for node in tree.body if isinstance(node, ast.ClassDef)}
    for base in (Aggregator, Tracer):
        assert set(base.ABSTRACT) == marked[base.__name__], base.__name__


def test_live_totals_cannot_be_overridden_and_are_the_report_totals():
    """Every aggregator's live totals come from its own report code."""
    for t in registry().values():
        agg = t.aggregator(Window(header={}))
        assert type(agg).live_totals is Aggregator.live_totals, t.name
        assert agg.live_totals() == agg.totals(agg.report())


def test_options_configure_a_copy_and_leave_the_shared_tracer():
    slab = registry()["slab"]
    assert slab.configured(Options()) is slab
    off = slab.configured(Options(slab_cache_accounting=False))
    assert off is not slab and not off.options.slab_cache_accounting
    assert slab.options.slab_cache_accounting and registry()["slab"] is slab


def shrink(ts: int, freed: int, scanned: int = 128, delta_ns: int = 40_000) -> ShrinkSlab:
    return ShrinkSlab(ts, EV_SHRINK_SLAB, 90, 90, 0, "kswapd0", delta_ns, 0xFFFF888000001000,
                      SUPER_CACHE_SCAN, 5000, 0, scanned, 0, 0, 0, 0xCC0, freed, 0, 12, 0, 0)


def correlate(evs: Any, tracer_names: Any) -> Dict[str, Any]:
    reg = registry()
    corr = Correlator({"plan": {"tracers": tracer_names}}, [reg[n] for n in tracer_names])
    corr.feed(events.Snapshot(1_000 * MS, "vmstat", "start", {}))
    for ev in evs:
        corr.feed(ev)
    corr.feed(events.End(2_000 * MS, "duration"))
    return corr.report()


def test_slab_shrinker_rows_come_from_its_hooks_and_are_named_by_its_symbols():
    wake = KswapdWake(1_100 * MS, 2, 90, 90, 0, "kswapd0", 0, 2, 0)
    sleep = KswapdSleep(1_300 * MS, 3, 90, 90, 0, "kswapd0", 0, -1, -1)
    create = KmemCacheEvent(1_150 * MS, EV_KMEM_CACHE_CREATE, 1, 1, 0, "x", 1, 1, 0, "c", "c")
    # The symbol arrives in a later sample than the shrinker's calls.
    symbols = events.Sample(1_500 * MS, "slab",
                            {"symbols": {f"{SUPER_CACHE_SCAN:x}": "super_cache_scan"}})
    doc = correlate([wake, shrink(1_120 * MS, 7), shrink(1_140 * MS, -1), create, sleep,
                     symbols], ["reclaim", "slab"])
    (ep,) = doc["episodes"]
    sh = ep["shrinkers"]
    assert (sh["calls"], sh["scanned"], sh["freed"], sh["time_ns"]) == (2, 256, 7, 80_000)
    assert [s["name"] for s in sh["top_by_time"]] == ["super_cache_scan"]
    # A cache creation adds no episode row: counted as "other", not dropped.
    assert doc["episode_summary"]["outside_episodes"]["other"] == 1


def test_vmalloc_rows_come_from_its_hooks():
    wake = KswapdWake(1_100 * MS, 2, 90, 90, 0, "kswapd0", 0, 2, 0)
    huge = AllocVmapArea(1_110 * MS, EV_ALLOC_VMAP_AREA, 7, 7, 0, "bpf", 0xFFFFC90000000000,
                         6295552, 2 << 20, 0, 0, 0, 0, 0, 0, 0)
    small = AllocVmapArea(1_120 * MS, EV_ALLOC_VMAP_AREA, 7, 7, 0, "bpf", 0xFFFFC90000800000,
                          8192, 4096, 0, 0, 0, 0, 0, 1, 0)
    kml = KmallocLarge(1_130 * MS, EV_KMALLOC_LARGE, 7, 7, 0, "bpf", 4_800_000, 8 << 20, 0, 0)
    sleep = KswapdSleep(1_300 * MS, 3, 90, 90, 0, "kswapd0", 0, -1, -1)
    doc = correlate([wake, huge, small, kml, sleep], ["reclaim", "vmalloc"])
    (ep,) = doc["episodes"]
    assert ep["vmalloc"]["alloc_vmap_area"] == {"count": 2, "bytes": 6295552 + 8192,
                                                "failed": 1, "huge_attempts": 1}
    assert ep["vmalloc"]["kmalloc_large"] == {"count": 1, "bytes": 8 << 20, "failed": 0,
                                              "huge_attempts": 0}
