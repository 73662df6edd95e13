"""The timeline collector: bounded, and counting what the correlator counts."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import synth
from trace_reclaim import events, tracers
from trace_reclaim.abi import EV_COMPACTION, EV_SHRINK_SLAB
from trace_reclaim.correlate import Correlator
from trace_reclaim.recording import Reader
from trace_reclaim.timeline.collect import Bins, Thinned, TimelineCollector

def shrink_slab(end_ts, delta_ns, shr=0xFFFF888100000000, shrink=0xFFFFFFFF81000000,
                freed=3, **kw):
    return EV_SHRINK_SLAB, synth.record(
        "shrink_slab_event", EV_SHRINK_SLAB, end_ts, delta_ns=delta_ns, shr=shr, shrink=shrink,
        cache_items=100, delta=10, total_scan=20, gfp_flags=0xCC0, freed=freed, priority=12,
        **kw)


def compaction(end_ts, delta_ns, status=8, comm="task"):
    return EV_COMPACTION, synth.record(
        "compaction_event", EV_COMPACTION, end_ts, comm=comm, delta_ns=delta_ns,
        zone_end_pfn=1 << 20, migrate_pfn=10, free_pfn=20, status=status)


def feed(records, header=None, **kw):
    """Replay ``records`` through both the correlator and a collector."""
    data = synth.recording(records, header or {"plan": {"tracers": ["reclaim", "slab", "oom"]}})
    r = Reader(io.BytesIO(data))
    reg = tracers.registry()
    corr = Correlator(r.header, [reg[n] for n in r.header["plan"]["tracers"]])
    col = TimelineCollector(**kw)
    for block in r.blocks_of_records():
        corr.feed_records(block)
        col(block)
    col.finish()
    return corr.report(), col


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10 ** 12), st.integers(0, 10 ** 9)), max_size=300))
def test_bins_keep_every_sum_while_they_coarsen(adds):
    b = Bins(nbins=16, width_ns=1000)
    for ts, dur in adds:
        b.add("n", ts)
        b.spread("ns", ts, ts + dur)
    assert sum(b.series.get("n", [])) == len(adds)
    assert sum(b.series.get("ns", [])) == sum(d for _, d in adds)
    assert all(len(a) == 16 for a in b.series.values())
    if adds:
        last = max(ts + d for ts, d in adds)
        assert (last - b.t0) // b.width < 16 or last == b.t0 + 16 * b.width


def test_spread_puts_time_in_the_bins_it_falls_in():
    b = Bins(nbins=8, width_ns=10)
    b.t0 = 0
    b.spread("x", 5, 27)
    assert list(b.series["x"][:4]) == [5, 10, 7, 0]


def test_thinned_stays_under_its_cap_and_keeps_the_last():
    t = Thinned(cap=10)
    for i in range(1000):
        t.append(i)
    assert len(t.items) <= 10
    assert t.all()[-1] == 999
    gaps = {b - a for a, b in zip(t.items, t.items[1:])}
    assert len(gaps) == 1   # evenly spaced


def test_collector_counts_what_the_correlator_counts():
    base = 1_000_000_000
    recs = [
        # a record read before the start snapshot: the window is not open
        # yet, so the correlator counts it, and so must the collector
        synth.direct_reclaim(base + 50, 100, pid=7),
        synth.vmstat_snapshot(base, "start", pageoutrun=0),
        synth.direct_reclaim(base + 400, 500, pid=8),          # began before the start
        synth.kswapd_wake(base + 1_000),
        synth.direct_reclaim(base + 5_000, 3_000, pid=9),
        shrink_slab(base + 6_000, 2_000),
        shrink_slab(base + 300, 400),                          # began before the start
        compaction(base + 7_000, 1_500),
        compaction(base + 7_500, 900, status=5, comm="kcompactd0"),
        synth.kswapd_sleep(base + 9_000),
        synth.kswapd_sleep(base + 9_500),                      # a second sleep: nothing
        synth.kswapd_wake(base + 20_000),
        synth.user(events.End(base + 50_000, "duration")),
        synth.direct_reclaim(base + 60_000, 1_000, pid=10),    # after the window
        synth.kswapd_sleep(base + 70_000),
    ]
    doc, col = feed(recs)
    assert col.stalls.count == doc["totals"]["direct_reclaim_stalls"] == 2
    assert sorted(m[3] for m in col.stalls.items) == [7, 9]
    assert col.shrinker_calls == sum(s["calls"] for s in doc["slab"]["shrinkers"]) == 1
    assert col.compactions.count == 2
    spans = col.kswapd[0].spans
    assert spans == [(base + 1_000, base + 9_000), (base + 20_000, base + 50_000)]
    assert sum(e - s for s, e in spans) == doc["reclaim"]["kswapd"][0]["awake_ns"]
    assert sum(col.bins.series[("kswapd_awake_ns", 0)]) == sum(e - s for s, e in spans)


def test_kswapd_awake_when_the_trace_began_counts_from_the_start():
    base = 5_000_000
    doc, col = feed([synth.vmstat_snapshot(base, "start"), synth.kswapd_sleep(base + 700),
                     synth.user(events.End(base + 1000, "x"))])
    assert col.kswapd[0].spans == [(base, base + 700)]


def test_marks_past_the_cap_keep_the_longest_and_count_all():
    base = 10 ** 9
    rng = random.Random(1)
    lat = [rng.randrange(1_000, 10 ** 7) for _ in range(5_000)]
    recs = [synth.vmstat_snapshot(base, "start")]
    t = base + 10 ** 7
    for d in lat:
        t += 20_000
        recs.append(synth.direct_reclaim(t, d))
    recs.append(synth.user(events.End(t + 1, "x")))
    doc, col = feed(recs, max_marks=100)
    assert col.stalls.count == len(lat) == doc["totals"]["direct_reclaim_stalls"]
    assert len(col.stalls.items) == 100 and col.stalls.capped
    assert sorted(m[0] for m in col.stalls.items) == sorted(lat)[-100:]
    assert sum(col.bins.series["stalls"]) == len(lat)


def test_kswapd_spans_past_the_cap_are_still_counted_in_the_bins():
    base = 10 ** 9
    recs = [synth.vmstat_snapshot(base, "start")]
    for i in range(40):
        recs += [synth.kswapd_wake(base + i * 1000 + 1), synth.kswapd_sleep(base + i * 1000 + 501)]
    recs.append(synth.user(events.End(base + 50_000, "x")))
    doc, col = feed(recs, max_spans=5)
    k = col.kswapd[0]
    assert len(k.spans) == 5 and k.spans_dropped == 35
    assert sum(col.bins.series[("kswapd_awake_ns", 0)]) == 40 * 500 == \
        doc["reclaim"]["kswapd"][0]["awake_ns"]


def test_a_long_run_stays_in_bounded_memory():
    """200k stalls over a day: marks and bins stay at their caps."""
    base = 10 ** 9
    recs = [synth.vmstat_snapshot(base, "start")]
    step = 86_400 * 10 ** 9 // 200_000
    for i in range(200_000):
        recs.append(synth.direct_reclaim(base + (i + 1) * step, 1_000 + i % 977))
    recs.append(synth.user(events.End(base + 86_401 * 10 ** 9, "x")))
    col = TimelineCollector(max_marks=1_000)
    r = Reader(io.BytesIO(synth.recording(recs)))
    for block in r.blocks_of_records():
        col(block)
    assert len(col.stalls.items) == 1_000 and col.stalls.count == 200_000
    assert all(len(a) == col.bins.nbins for a in col.bins.series.values())
    assert sum(col.bins.series["stalls"]) == 200_000
    assert col.bins.width * col.bins.nbins >= 86_400 * 10 ** 9


def test_capped_picture_says_so(tmp_path):
    pytest.importorskip("matplotlib")
    from trace_reclaim.timeline.draw import render

    base = 10 ** 9
    recs = [synth.vmstat_snapshot(base, "start"), synth.kswapd_wake(base + 10)]
    for i in range(300):
        recs.append(synth.direct_reclaim(base + 10 ** 6 * (i + 1), 1000 + i))
    recs += [synth.kswapd_sleep(base + 10 ** 9), synth.user(events.End(base + 2 * 10 ** 9, "x"))]
    doc, col = feed(recs, max_marks=50)
    out = tmp_path / "t.svg"
    drawn = render(doc, col, str(out), tracers=["reclaim"])
    assert drawn["stall_marks"] == 50
    assert "the 50 longest drawn" in out.read_text()
    assert drawn["panels"] == ["episodes", "kswapd", "stalls"]
