"""Episode grouping: pure unit tests on synthetic events (no root)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trace_reclaim import events
from trace_reclaim.correlate import Correlator
from trace_reclaim.episodes import BURST_GAP_NS, EpisodeBuilder, EpisodeFact
from trace_reclaim.tracer import Window
from trace_reclaim.tracers import registry
from trace_reclaim.tracers.compaction import Compaction
from trace_reclaim.tracers.oom import MarkVictim
from trace_reclaim.tracers.reclaim import DirectReclaim, KswapdSleep, KswapdWake, WakeupKswapd

MS = 1_000_000


def wake(ts, nid=0, order=0):
    return KswapdWake(ts, 2, 100 + nid, 100 + nid, 0, f"kswapd{nid}", nid, 2, order)


def sleep(ts, nid=0):
    return KswapdSleep(ts, 3, 100 + nid, 100 + nid, 0, f"kswapd{nid}", nid, -1, -1)


def request(ts, tid, nid=0):
    return WakeupKswapd(ts, 1, tid, tid, 0, "dd", 0, nid, 2, 0)


def stall(end, delta, tid=500, pages=32):
    return DirectReclaim(end, 4, tid, tid, 1, "dd", delta, 0, pages, 0, 0)


def build(evs, start=1_000 * MS, end=0, facts=None):
    b = EpisodeBuilder(Window(start_ns=start), facts=facts)
    for e in evs:
        b.feed(e)
    if end:
        b.window.end_ns = end
        b.close(end)
    return b.report(), b


def test_kswapd_wake_to_sleep_is_one_episode_with_re_wakes():
    eps, _ = build([wake(1_010 * MS), wake(1_020 * MS), wake(1_030 * MS), sleep(1_050 * MS)],
                   end=2_000 * MS)
    assert len(eps) == 1
    e = eps[0]
    assert (e["kind"], e["start_ns"], e["end_ns"]) == ("kswapd", 1_010 * MS, 1_050 * MS)
    assert e["kswapd_wakes"] == 3 and e["kswapd_re_wakes"] == 2
    assert not e["open_at_end"] and not e["began_before_trace"]


def test_kswapd_awake_at_trace_start():
    eps, _ = build([stall(1_005 * MS, MS), sleep(1_020 * MS), wake(1_100 * MS),
                    sleep(1_200 * MS)], end=2_000 * MS)
    assert len(eps) == 2
    first = eps[0]
    assert first["began_before_trace"] and first["kind"] == "kswapd"
    assert first["start_ns"] == 1_000 * MS and first["end_ns"] == 1_020 * MS
    # The stall before the first sleep was inside that episode, kswapd awake.
    assert first["direct_reclaim_stalls"] == 1 and first["stalls_while_kswapd_awake"] == 1


def test_kswapd_never_sleeps():
    eps, _ = build([wake(1_100 * MS), stall(1_200 * MS, MS)], end=3_000 * MS)
    assert len(eps) == 1
    assert eps[0]["open_at_end"] and eps[0]["end_ns"] == 3_000 * MS
    assert eps[0]["stalls_while_kswapd_awake"] == 1


def test_direct_reclaim_while_kswapd_asleep_makes_bursts():
    gap = BURST_GAP_NS
    evs = [stall(1_100 * MS, MS), stall(1_100 * MS + gap // 2, MS),
           stall(1_100 * MS + 3 * gap, MS)]
    eps, _ = build(evs, end=3_000 * MS)
    assert [e["kind"] for e in eps] == ["direct", "direct"]
    assert [e["direct_reclaim_stalls"] for e in eps] == [2, 1]
    assert eps[0]["start_ns"] == 1_099 * MS and eps[0]["end_ns"] == 1_100 * MS + gap // 2
    assert all(e["stalls_while_kswapd_awake"] == 0 for e in eps)


def test_stall_that_began_while_kswapd_awake_joins_that_episode():
    eps, _ = build([wake(1_100 * MS), sleep(1_200 * MS), stall(1_210 * MS, 20 * MS)],
                   end=2_000 * MS)
    assert len(eps) == 1 and eps[0]["direct_reclaim_stalls"] == 1
    assert eps[0]["stalls_while_kswapd_awake"] == 1


def test_multiple_nodes_are_separate():
    evs = [wake(1_100 * MS, 0), wake(1_110 * MS, 1), request(1_120 * MS, 600, nid=1),
           stall(1_130 * MS, MS, tid=600), sleep(1_150 * MS, 1), sleep(1_300 * MS, 0)]
    eps, _ = build(evs, end=2_000 * MS)
    by_node = {e["node"]: e for e in eps}
    assert set(by_node) == {0, 1}
    assert by_node[1]["direct_reclaim_stalls"] == 1
    assert by_node[0]["direct_reclaim_stalls"] == 0
    assert by_node[1]["end_ns"] == 1_150 * MS


def test_stall_begun_before_window_is_not_counted():
    eps, b = build([stall(1_001 * MS, 5 * MS)], end=2_000 * MS)
    assert eps == [] and b.stalls_before_window == 1


def test_compaction_and_oom_attach_with_sequence():
    comp = Compaction(1_150 * MS, 49, 500, 500, 0, "dd", MS, 0, 0, 0, 0, 3, 1)
    victim = MarkVictim(1_180 * MS, 48, 500, 500, 0, "dd", 1000, 900, 10, 0, 4, 777, 0, 0,
                        "hog")
    eps, _ = build([wake(1_100 * MS), stall(1_140 * MS, 10 * MS), comp, victim,
                    sleep(1_300 * MS)], end=2_000 * MS)
    e = eps[0]
    assert e["compaction"]["direct_runs"] == 1
    assert e["compaction"]["status"] == {"no_suitable_page": 1}
    assert e["oom_kills"][0]["pid"] == 777 and e["oom_kills"][0]["comm"] == "hog"
    phases = [p for p, _ in e["sequence"]]
    assert phases == ["kswapd_wake", "direct_reclaim", "direct_compaction", "oom_kill",
                      "kswapd_sleep"]


class ShrinkSlab(events.Event):
    """Another tracer's record: only its tracer's episode_fact hook reads it."""

    def __init__(self, ts, nid, name, scanned, freed, delta_ns):
        super().__init__(ts, 32, 100, 100, 0, "kswapd0")
        self.nid, self.name, self.scanned = nid, name, scanned
        self.freed, self.delta_ns = freed, delta_ns


def shrinker_fact(ev):
    return EpisodeFact("shrinker", ev.name, ev.nid, {
        "calls": 1, "scanned": ev.scanned, "freed": ev.freed, "time_ns": ev.delta_ns})


def vmalloc_fact(ev):
    return EpisodeFact("vmalloc", "alloc_vmap_area", 0,
                       {"count": 1, "bytes": 6 << 20, "failed": 0, "huge_attempts": 1})


def test_other_tracers_events_by_their_declared_facts():
    s1 = ShrinkSlab(1_120 * MS, 0, "super_cache_scan", 100, 0, 50_000)
    s2 = ShrinkSlab(1_130 * MS, 0, "scan_shadow_nodes", 10, 10, 5_000)
    v = events.Event(1_140 * MS, 16, 100, 100, 0, "x")
    nofact = events.Event(1_150 * MS, 17, 100, 100, 0, "x")
    unknown = events.Event(1_160 * MS, 30, 100, 100, 0, "x")
    eps, b = build([wake(1_100 * MS), s1, s2, v, nofact, unknown, sleep(1_200 * MS),
                    ShrinkSlab(1_500 * MS, 0, "late", 1, 1, 1)], end=2_000 * MS,
                   facts={32: shrinker_fact, 16: vmalloc_fact, 17: lambda ev: None})
    sh = eps[0]["shrinkers"]
    assert sh["calls"] == 2 and sh["scanned"] == 110 and sh["freed"] == 10
    assert sh["top_by_time"][0]["name"] == "super_cache_scan"
    assert sh["top_by_freed"][0]["name"] == "scan_shadow_nodes"
    assert eps[0]["vmalloc"]["alloc_vmap_area"]["huge_attempts"] == 1
    assert b.outside["shrinker_calls"] == 1
    # No fact (the hook said none, or no tracer declared the type): counted, not lost.
    assert b.outside["other"] == 2
    # The hot path's cached handlers do the same as feed().
    b2 = EpisodeBuilder(Window(start_ns=1_000 * MS),
                        facts={32: shrinker_fact, 16: vmalloc_fact, 17: lambda ev: None})
    for e in [wake(1_100 * MS), s1, s2, v, nofact, unknown, sleep(1_200 * MS)]:
        b2.handler(e.type)(e)
    assert b2.report()[0]["shrinkers"] == sh and b2.outside["other"] == 2


def test_psi_and_watermarks_from_snapshots():
    b = EpisodeBuilder(Window(start_ns=1_000 * MS))
    zone = {"node": 0, "zone": "Normal", "free": 90, "min": 100, "low": 120, "high": 140,
            "managed": 1000}
    b.on_snapshot(events.Snapshot(1_000 * MS, "psi", "start",
                                  {"some": {"total": 10, "avg10": 0.0},
                                   "full": {"total": 5, "avg10": 0.0}}))
    b.on_snapshot(events.Snapshot(1_000 * MS, "zoneinfo", "start", [zone]))
    b.feed(wake(1_100 * MS))
    b.on_snapshot(events.Snapshot(1_500 * MS, "psi", "tick",
                                  {"some": {"total": 4010, "avg10": 1.5},
                                   "full": {"total": 1005, "avg10": 0.5}}))
    b.feed(sleep(1_200 * MS))
    e = b.report()[0]
    assert e["psi"]["some_us"] == 4000 and e["psi"]["full_us"] == 1000
    assert e["psi"]["some_avg10_max"] == 1.5
    assert e["watermarks"]["zones"][0]["state"] == "below_min"
    assert not e["watermarks"]["inside_episode"]


ev_strategy = st.lists(st.tuples(st.sampled_from(["wake", "sleep", "stall"]),
                                 st.integers(0, 3_000), st.integers(1, 400),
                                 st.integers(0, 1)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ev_strategy)
def test_every_stall_lands_in_exactly_one_episode(spec):
    evs = []
    tid_node = {}
    for kind, t, d, nid in spec:
        ts = 1_000 * MS + t * MS
        if kind == "wake":
            evs.append(wake(ts, nid))
        elif kind == "sleep":
            evs.append(sleep(ts, nid))
        else:
            tid = 700 + nid
            if tid not in tid_node:
                evs.append(request(ts - 1, tid, nid))
                tid_node[tid] = nid
            evs.append(stall(ts, d * MS // 10, tid=tid))
    evs.sort(key=lambda e: e.ts_ns)
    eps, b = build(evs, end=5_000 * MS)
    in_window = sum(1 for e in evs if isinstance(e, DirectReclaim)
                    and e.ts_ns - e.delta_ns >= 1_000 * MS)
    assert sum(e["direct_reclaim_stalls"] for e in eps) == in_window
    for e in eps:
        assert e["end_ns"] >= e["start_ns"]


def test_correlator_puts_episodes_and_findings_in_the_report():
    reg = registry()
    c = Correlator({"plan": {"tracers": list(reg)}}, reg.values())
    c.feed(events.Snapshot(1_000 * MS, "vmstat", "start", {}))
    for e in [wake(1_100 * MS), stall(1_150 * MS, 10 * MS), sleep(1_200 * MS)]:
        c.feed(e)
    c.feed(events.End(2_000 * MS, "duration"))
    doc = c.report()
    assert doc["episodes"][0]["direct_reclaim_stalls"] == 1
    assert doc["episodes"][0]["pages_reclaimed"] == 32
    assert {"node", "start_ns", "end_ns", "direct_reclaim_stalls",
            "pages_reclaimed"} <= set(doc["episodes"][0])
    assert [f["kind"] for f in doc["findings"]] == ["direct_reclaim_kswapd_awake"]
    assert doc["delayacct"]["on"] is False
