"""The report's batched hot paths add up to what one event at a time adds.

``LatencyStats.add_many``, the reclaim aggregator's folded direct-reclaim
stalls and the compaction statistics' batched run times are checked against
the same figures fed one at a time (batch size 1), on random inputs; the
episode builder's dropped episodes (past MAX_EPISODES) must leave the kept
ones and the summary's counts as they are.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trace_reclaim import abi, events, kswapd, tracers
from trace_reclaim.correlate import Correlator
from trace_reclaim.episodes import builder as episode_builder
from trace_reclaim.episodes import EpisodeBuilder
from trace_reclaim.stats import EXACT_CAP, LatencyStats
from trace_reclaim.tracer import Window
from trace_reclaim.report import render_json
from trace_reclaim.tracers import compaction, reclaim

from tests import synth

values = st.lists(st.integers(min_value=-5, max_value=1 << 40), max_size=200)


def _state(s: LatencyStats) -> tuple:
    return (s.count, s.total, s.min, s.max, s.exact,
            sorted(s._exact) if s._exact is not None else None, dict(sorted(s._hist.items())),
            [s.percentile(p) for p in (1, 50, 90, 99, 100)])


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(values, max_size=6), st.integers(min_value=0, max_value=EXACT_CAP + 10))
def test_add_many_is_add_one_at_a_time(batches, prefill):
    one, many = LatencyStats(), LatencyStats()
    for s in (one, many):
        for v in range(prefill):
            s.add(v * 7919)
    for b in batches:
        for v in b:
            one.add(v)
        many.add_many(list(b))
    assert _state(one) == _state(many)


def _stalls(seed: int, n: int = 3000):
    rnd = random.Random(seed)
    recs = []
    ts = 10_000_000
    for _ in range(n):
        ts += rnd.randint(1, 50_000)
        pid = rnd.choice(range(100, 100 + rnd.choice((3, 40))))
        recs.append(synth.direct_reclaim(ts, rnd.randint(0, 3_000_000),
                                         pages=rnd.randint(0, 64), order=rnd.randint(0, 9),
                                         gfp=rnd.randint(0, 90), retries=rnd.randint(0, 2),
                                         pid=pid))
    return [events.decode(t, p) for t, p in recs]


def _reclaim_run(evs, batch, monkeypatch, max_procs):
    monkeypatch.setattr(reclaim, "STALL_BATCH", batch)
    monkeypatch.setattr(reclaim, "MAX_PROCESSES", max_procs)
    agg = reclaim.ReclaimAggregator(Window(start_ns=5_000_000))
    rows = []
    for i, ev in enumerate(evs):
        agg.feed(ev)
        if i % 700 == 699:
            rows.append(agg.on_tick(ev.ts_ns))
    return agg.report(), rows, agg.on_tick(evs[-1].ts_ns + 1)


def test_folded_stalls_are_the_stalls_one_at_a_time(monkeypatch):
    for seed in range(4):
        evs = _stalls(seed)
        for max_procs in (2, 512):
            want = _reclaim_run(evs, 1, monkeypatch, max_procs)
            for batch in (7, 4096):
                assert _reclaim_run(evs, batch, monkeypatch, max_procs) == want
        # What the report says, from the events themselves: each process's
        # stalls and pages, and its first 64 gfp flag sets in order of arrival.
        procs = {p["pid"]: p for p in want[0]["direct_reclaim"]["processes"]}
        for pid, p in procs.items():
            mine = [e for e in evs if e.tgid == pid and e.ts_ns - e.delta_ns >= 5_000_000]
            assert p["stalls"] == len(mine)
            assert p["pages_reclaimed"] == sum(e.nr_reclaimed_pages for e in mine)
            first = list(dict.fromkeys(e.gfp_flags for e in mine))[:64]
            assert len(p["gfp_flags"]) == len(first)
            assert sum(p["gfp_flags"].values()) == sum(e.gfp_flags in first for e in mine)


def _compaction(ts: int, comm: str, delta_ns: int, status: int):
    t = compaction.EV_COMPACTION
    return events.decode(t, synth.record("compaction_event", t, ts, comm=comm,
                                         delta_ns=delta_ns, status=status))


def test_batched_compaction_runs_are_runs_one_at_a_time(monkeypatch):
    rnd = random.Random(3)
    runs = [_compaction(1000 + i, rnd.choice(("kcompactd0", "dd")), rnd.randint(0, 1 << 30),
                        rnd.randint(0, 12))
            for i in range(EXACT_CAP * 2 + 5)]
    out = []
    for batch in (1, 10, 4096):
        monkeypatch.setattr(compaction, "RUN_BATCH", batch)
        c = compaction.CompactionStats()
        for ev in runs:
            c.add_compaction(ev)
        out.append((c.compaction(), {w: _state(s) for w, s in c.lat.items()}))
    assert out[0] == out[1] == out[2]


def _episodes(max_episodes, monkeypatch):
    monkeypatch.setattr(episode_builder, "MAX_EPISODES", max_episodes)
    recs = []
    ts = 1_000_000_000
    rnd = random.Random(5)
    for _ in range(40):  # kswapd spans and direct-reclaim bursts, alternating
        recs.append(synth.kswapd_wake(ts))
        for _ in range(5):
            ts += 1_000_000
            recs.append(synth.wakeup_kswapd(ts, pid=rnd.randint(100, 110)))
            recs.append(synth.direct_reclaim(ts, 500_000, pid=rnd.randint(100, 110)))
            recs.append(synth.kswapd_wake(ts))  # a re-wake
        ts += 1_000_000
        recs.append(synth.kswapd_sleep(ts))
        ts += 500_000_000
        for _ in range(3):
            ts += 1_000_000
            recs.append(synth.direct_reclaim(ts, 300_000, pid=rnd.randint(100, 110)))
        ts += 500_000_000
    b = EpisodeBuilder(Window(start_ns=1))
    for t, p in recs:
        ev = events.decode(t, p)
        b.feed(ev)
        if t == synth.abi.EV_DIRECT_RECLAIM:
            b.feed(_compaction(ev.ts_ns, "dd", 1000, 2))
    b.close(ts)
    docs = b.report()
    return docs, b.summary(docs)


def test_dropped_episodes_leave_the_kept_ones_and_the_counts(monkeypatch):
    all_docs, all_summary = _episodes(10_000, monkeypatch)
    docs, summary = _episodes(7, monkeypatch)
    assert docs == all_docs[:7]
    assert summary["count"] == all_summary["count"] == 80
    assert summary["dropped"] == 73 and all_summary["dropped"] == 0
    kept_stalls = sum(d["direct_reclaim_stalls"] for d in docs)
    assert summary["direct_reclaim_stalls"] == kept_stalls
    assert summary["dropped_stalls"] == all_summary["direct_reclaim_stalls"] - kept_stalls


def _held_records(seed: int, n: int = 4000):
    """Random reclaim and oom records over many nodes, zones and orders, with
    ticks and a window: what the handlers only hold until ``flush``."""
    rnd = random.Random(seed)
    t_cr, t_rz = compaction.EV_COMPACT_RETRY, abi.EV_RECLAIM_RETRY_ZONE
    recs = [synth.vmstat_snapshot(1_000_000, "start")]
    ts = 1_000_000
    for i in range(n):
        ts += rnd.randint(1, 50_000)
        nid = rnd.choice((0, 0, 0, 1, rnd.randint(2, 40)))
        kind = rnd.randint(0, 9)
        if kind < 4:
            recs.append(synth.wakeup_kswapd(ts, nid=nid, zid=rnd.randint(0, 24),
                                            order=rnd.randint(0, 14), pid=rnd.randint(1, 9)))
        elif kind == 4:
            recs.append(synth.kswapd_wake(ts, nid=nid, order=rnd.randint(0, 9)))
        elif kind == 5:
            recs.append(synth.kswapd_sleep(ts, nid=nid))
        elif kind == 6:
            t = compaction.EV_COMPACTION
            recs.append((t, synth.record("compaction_event", t, ts,
                                         comm=rnd.choice(("kcompactd0", "dd", "kcompact")),
                                         delta_ns=rnd.randint(0, 1 << 30),
                                         status=rnd.randint(0, 12))))
        elif kind == 7:
            recs.append((t_cr, synth.record("compact_retry_event", t_cr, ts,
                                            result=rnd.randint(0, 12),
                                            retry=rnd.choice((0, 1, 7)))))
        elif kind == 8:
            recs.append((t_rz, synth.record("reclaim_retry_zone_event", t_rz, ts, nid=nid,
                                            no_progress_loops=rnd.randint(0, 16),
                                            wmark_check=rnd.choice((0, 1)))))
        else:
            recs.append(synth.direct_reclaim(ts, rnd.randint(0, 3_000_000), pid=rnd.randint(1, 9)))
        if i % 500 == 499:
            recs.append(synth.user(events.Tick(ts, i // 500, {})))
    recs.append(synth.user(events.End(ts, "duration")))
    return recs


@pytest.mark.parametrize("seed", range(3))
def test_held_records_count_as_one_at_a_time(monkeypatch, seed):
    """Aggregators whose handlers hold records (``Aggregator.flush``) report
    the same whether the correlator flushes after every record or after one
    batch of all of them: node registration past MAX_NODES, the 256 requests
    kept per node, interval rows and every total included."""
    monkeypatch.setattr(kswapd, "MAX_NODES", 3)
    recs = _held_records(seed)
    header = {"plan": {"tracers": ["reclaim", "oom"]}}
    docs = []
    for one_at_a_time in (True, False):
        corr = Correlator(header, [tracers.registry()[n] for n in ("reclaim", "oom")])
        if one_at_a_time:
            for t, p in recs:
                corr.feed_record(t, p)
        else:
            corr.feed_records(recs)
        docs.append(render_json(corr.report()))
    assert docs[0] == docs[1]
    doc = json.loads(docs[0])
    nids = [n["nid"] for n in doc["reclaim"]["kswapd"]]
    assert len(nids) == 4 and nids[0] == -1  # three nodes, then the rest folded into -1
    assert max(len(n["requests"]) for n in doc["reclaim"]["kswapd"]) == 256
