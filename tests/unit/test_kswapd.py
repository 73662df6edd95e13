"""kswapd's state machine, and its two consumers agreeing (pure, no root)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from trace_reclaim import events
from trace_reclaim.correlate import Correlator
from trace_reclaim.kswapd import ASLEEP, AWAKE, MAX_NODES, UNKNOWN, Kswapd
from trace_reclaim.tracer import Window
from trace_reclaim.tracers import registry
from trace_reclaim.tracers.reclaim import KswapdSleep, KswapdWake, WakeupKswapd

MS = 1_000_000
START = 1_000 * MS


def wake(ts: int, nid: int = 0, order: int = 0) -> KswapdWake:
    return KswapdWake(ts, 2, 100 + nid, 100 + nid, 0, f"kswapd{nid}", nid, 2, order)


def sleep(ts: int, nid: int = 0) -> KswapdSleep:
    return KswapdSleep(ts, 3, 100 + nid, 100 + nid, 0, f"kswapd{nid}", nid, -1, -1)


def request(ts: int, nid: int = 0, tid: int = 500) -> WakeupKswapd:
    return WakeupKswapd(ts, 1, tid, tid, 0, "dd", 0, nid, 2, 0)


def machine() -> Kswapd:
    return Kswapd(Window(start_ns=START))


# -- the machine itself -------------------------------------------------------

def test_wake_opens_a_span_re_wakes_stay_in_it_sleep_closes_it():
    k = machine()
    n, opened = k.wake(0, START + 10, 3)
    assert opened and n.state == AWAKE and k.awake() == [0]
    n, opened = k.wake(0, START + 20, 9)
    assert not opened and n.re_wakes == 1
    span = k.sleep(0, START + 50)
    assert span is not None
    assert (span.start_ns, span.end_ns, span.wakes, span.re_wakes, span.max_order) == \
        (START + 10, START + 50, 2, 1, 9)
    assert not span.began_before_trace and not span.open_at_end
    assert (n.wakes, n.re_wakes, n.sleeps, n.spans, n.awake_ns, n.max_order) == (2, 1, 1, 1, 40, 9)
    assert n.state == ASLEEP and k.awake() == []


def test_first_sleep_means_awake_since_before_the_trace():
    k = machine()
    span = k.sleep(1, START + 500)
    assert span is not None and span.began_before_trace
    assert (span.start_ns, span.end_ns, span.wakes) == (START, START + 500, 0)
    assert k.nodes[1].awake_ns == 500 and k.nodes[1].spans == 1


def test_sleep_while_asleep_closes_nothing():
    k = machine()
    k.wake(0, START + 10, 0)
    k.sleep(0, START + 20)
    assert k.sleep(0, START + 90) is None
    n = k.nodes[0]
    assert (n.sleeps, n.spans, n.awake_ns) == (2, 1, 10)


def test_sleep_while_asleep_without_any_wake_closes_nothing():
    # The first sleep found kswapd awake since the start; the second cannot.
    k = machine()
    assert k.sleep(0, START + 100) is not None
    assert k.sleep(0, START + 300) is None
    assert k.nodes[0].awake_ns == 100


def test_close_ends_open_spans_at_the_window_end():
    k = machine()
    k.wake(0, START + 10, 0)
    k.wake(1, START + 20, 0)
    k.sleep(1, START + 30)
    spans = k.close(START + 100)
    assert [(s.nid, s.start_ns, s.end_ns, s.open_at_end) for s in spans] == \
        [(0, START + 10, START + 100, True)]
    assert k.nodes[0].awake_ns == 90 and k.awake() == []
    # After the window: kswapd counts as asleep, a late sleep closes nothing.
    assert k.sleep(0, START + 200) is None


def test_wakeup_request_registers_the_node_without_a_state():
    k = machine()
    assert k.node(3).state == UNKNOWN
    assert k.sleep(3, START + 5) is not None  # still the first kswapd event


def test_node_ids_beyond_max_numnodes_fold_into_one():
    k = machine()
    for nid in range(MAX_NODES):
        k.node(nid)
    assert k.key(MAX_NODES + 5) == -1 and k.key(7) == 7
    n, _ = k.wake(MAX_NODES + 5, START + 1, 0)
    assert n.nid == -1 and len(k.nodes) == MAX_NODES + 1
    assert k.node(MAX_NODES + 9) is n


# -- both consumers -----------------------------------------------------------

def correlate(evs: List[Any], end: Optional[int]) -> Correlator:
    reg = registry()
    c = Correlator({"plan": {"tracers": ["reclaim"]}}, [reg["reclaim"]])
    c.feed(events.Snapshot(START, "vmstat", "start", {}))
    for e in evs:
        c.feed(e)
    if end is not None:
        c.feed(events.End(end, "duration"))
    return c


def per_node(doc: Dict[str, Any]) -> Dict[int, Dict[str, int]]:
    """What the episodes say about each node's kswapd."""
    out: Dict[int, Dict[str, int]] = {}
    for e in doc["episodes"]:
        row = out.setdefault(e["node"], {"episodes": 0, "wakes": 0, "re_wakes": 0,
                                         "awake_ns": 0})
        if e["kind"] != "kswapd":
            continue
        row["episodes"] += 1
        row["wakes"] += e["kswapd_wakes"]
        row["re_wakes"] += e["kswapd_re_wakes"]
        row["awake_ns"] += e["duration_ns"]
    return out


def test_awake_at_start_counts_from_the_window_even_after_a_tick():
    # The tick comes before we know kswapd was awake; the total still starts
    # at the window start, as the episode does.  The interval rows cannot
    # give the first interval back: only the sleep's interval gets it.
    c = correlate([events.Tick(START + 100, 1, {}), sleep(START + 300),
                   events.Tick(START + 1_000, 2, {})], end=START + 1_000)
    doc = c.report()
    node = doc["reclaim"]["kswapd"][0]
    ep = doc["episodes"][0]
    assert node["awake_ns"] == 300 == ep["duration_ns"]
    assert ep["began_before_trace"] and ep["start_ns"] == START
    assert [r["reclaim"]["kswapd_awake_ns"] for r in doc["intervals"]] == [{}, {0: 200}]


def test_double_sleep_without_a_wake_is_not_counted_twice():
    c = correlate([sleep(START + 300), sleep(START + 700)], end=START + 1_000)
    doc = c.report()
    node = doc["reclaim"]["kswapd"][0]
    assert (node["awake_ns"], node["kswapd_sleeps"]) == (300, 2)
    assert [e["duration_ns"] for e in doc["episodes"]] == [300]


def test_live_state_names_the_nodes_kswapd_is_awake_on():
    c = correlate([wake(START + 10, nid=1), wake(START + 20, nid=0), sleep(START + 30, nid=0)],
                  end=None)
    assert c.live_state()["kswapd_awake"] == [1]
    assert c.live_state()["totals"]["kswapd_wakes"] == 2


# Random per-node streams: (gap_ns, what, node, order).
STEP = st.tuples(st.integers(1, 50 * MS),
                 st.sampled_from(["wake", "wake", "sleep", "request", "tick"]),
                 st.integers(0, 2), st.integers(0, 10))


def stream(steps: List[Tuple[int, str, int, int]]) -> Tuple[List[Any], int]:
    evs: List[Any] = []
    ts = START
    tick = 0
    for gap, what, nid, order in steps:
        ts += gap
        if what == "wake":
            evs.append(wake(ts, nid, order))
        elif what == "sleep":
            evs.append(sleep(ts, nid))
        elif what == "request":
            evs.append(request(ts, nid))
        else:
            tick += 1
            evs.append(events.Tick(ts, tick, {}))
    return evs, ts + 1


def reference(evs: List[Any], end: Optional[int]) -> Dict[int, Dict[str, int]]:
    """kswapd per node straight from the kernel's loop (see trace_reclaim/kswapd.py)."""
    out: Dict[int, Dict[str, int]] = {}
    since: Dict[int, Optional[int]] = {}  # missing: nothing seen; None: asleep
    for e in evs:
        if isinstance(e, KswapdWake):
            r = out.setdefault(e.nid, {"wakes": 0, "re_wakes": 0, "awake_ns": 0, "spans": 0})
            r["wakes"] += 1
            if since.get(e.nid) is not None:
                r["re_wakes"] += 1
            else:
                since[e.nid] = e.ts_ns
                r["spans"] += 1
        elif isinstance(e, KswapdSleep):
            r = out.setdefault(e.nid, {"wakes": 0, "re_wakes": 0, "awake_ns": 0, "spans": 0})
            if e.nid not in since:
                r["awake_ns"] += e.ts_ns - START
                r["spans"] += 1
            elif since[e.nid] is not None:
                r["awake_ns"] += e.ts_ns - since[e.nid]  # type: ignore[operator]
            since[e.nid] = None
    if end is not None:
        for nid, s in since.items():
            if s is not None:
                out[nid]["awake_ns"] += end - s
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=80), st.booleans())
def test_both_consumers_agree_with_the_kernel_loop(steps, ended):
    evs, end_ts = stream(steps)
    end = end_ts if ended else None
    doc = correlate(evs, end).report()
    ref = reference(evs, end)
    eps = per_node(doc)
    agg = {n["nid"]: n for n in doc["reclaim"]["kswapd"]}
    for nid, r in ref.items():
        a, e = agg[nid], eps.get(nid, {"episodes": 0, "wakes": 0, "re_wakes": 0, "awake_ns": 0})
        assert a["kswapd_wakes"] == e["wakes"] == r["wakes"]
        assert a["re_wakes"] == e["re_wakes"] == r["re_wakes"]
        assert e["episodes"] == r["spans"]
        # Without an End, spans still open count nowhere.
        assert a["awake_ns"] == e["awake_ns"] == r["awake_ns"]
    assert doc["totals"]["kswapd_wakes"] == doc["episode_summary"]["kswapd_wakes"]
    if ended:
        assert doc["totals"]["kswapd_awake_ns"] == sum(
            x["duration_ns"] for x in doc["episodes"] if x["kind"] == "kswapd")


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=80))
def test_interval_rows_add_up_to_the_awake_total(steps):
    """With every node's first kswapd record a wake, the interval rows plus the
    stretch after the last tick are exactly the awake total."""
    evs, end = stream(steps)
    seen: Dict[int, bool] = {}
    kept = []
    for e in evs:
        if isinstance(e, (KswapdWake, KswapdSleep)):
            if e.nid not in seen and isinstance(e, KswapdSleep):
                continue
            seen[e.nid] = True
        kept.append(e)
    doc = correlate(kept, end).report()
    ticks = [e.ts_ns for e in kept if isinstance(e, events.Tick)]
    last_tick = ticks[-1] if ticks else 0
    for n in doc["reclaim"]["kswapd"]:
        nid = n["nid"]
        in_rows = sum(r["reclaim"]["kswapd_awake_ns"].get(nid, 0) for r in doc["intervals"])
        after = sum(max(0, x["end_ns"] - max(x["start_ns"], last_tick))
                    for x in doc["episodes"] if x["node"] == nid and x["kind"] == "kswapd")
        assert in_rows + after == n["awake_ns"]
