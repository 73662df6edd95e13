"""Live: episodes under the pressure workload, checked against the kernel's own events.

Needs root and bcc (skips otherwise, fails under TRACE_RECLAIM_REQUIRE_LIVE=1).
"""

from __future__ import annotations

import json
import time

from trace_reclaim.examples import pressure
from tests.livetools import Trace
from tests.replay.test_episodes_replay import replay


def wake_sleep_pairs(path):
    """Count kswapd wake->sleep pairs straight from the recorded kernel events."""
    from trace_reclaim import tracers
    from trace_reclaim import events
    from trace_reclaim.recording import Reader

    tracers.registry()  # registers the decoders

    pairs = opened = 0
    awake = {}
    with open(path, "rb") as f:
        for t, p in Reader(f).records():
            if t in (2, 3):
                ev = events.decode(t, p)
                if t == 2 and not awake.get(ev.nid):
                    awake[ev.nid] = True
                    opened += 1
                elif t == 3 and awake.get(ev.nid):
                    awake[ev.nid] = False
                    pairs += 1
    return pairs, opened


def _allocstall() -> int:
    with open("/proc/vmstat") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("allocstall_"))


def test_episodes_under_pressure(live, tmp_path):
    with Trace(str(tmp_path), args=["-i", "0.5", "--delayacct"]) as t:
        # In-process: the live fixture holds the workloads' (re-entrant) lock.
        # Repeat until the kernel itself counted direct reclaim: that is the
        # workload's precondition, not the tracer's (its count is checked below).
        stalls0 = _allocstall()
        for _ in range(3):
            pressure.run(seconds=4, log=None)
            if _allocstall() > stalls0:
                break
        stalled = _allocstall() - stalls0
        time.sleep(1.5)  # let kswapd go back to sleep inside the trace
    assert open("/proc/sys/kernel/task_delayacct").read().strip() == "0"
    # The workload's precondition, told apart from what the tracer saw (below).
    assert stalled > 0, "pressure made no direct reclaim in 3 runs (allocstall did not move)"
    doc = t.report
    eps = doc["episodes"]
    kswapd = [e for e in eps if e["kind"] == "kswapd"]
    pairs, opened = wake_sleep_pairs(t.path)
    # one kswapd episode per first wake after a sleep; all but those still
    # open at the end closed with a kswapd_sleep
    assert len(kswapd) == opened
    assert sum(1 for e in kswapd if not e["open_at_end"] and not e["began_before_trace"]) \
        == pairs - sum(1 for e in kswapd if e["began_before_trace"])
    assert doc["episode_summary"]["reported"] == len(eps)
    # every direct-reclaim stall is in exactly one episode
    assert sum(e["direct_reclaim_stalls"] for e in eps) == doc["totals"]["direct_reclaim_stalls"]
    assert sum(e["pages_reclaimed"] for e in eps) == doc["totals"]["direct_reclaim_pages"]
    assert doc["totals"]["direct_reclaim_stalls"] > 0
    # kswapd runs: episodes == tracer == the kernel's pageoutrun
    runs = sum(e["kswapd_wakes"] for e in eps)
    assert runs == doc["totals"]["kswapd_wakes"] == doc["totals"]["vmstat_delta"]["pageoutrun"]
    assert doc["delayacct"]["on"] and doc["delayacct"]["turned_on_for_run"]
    kinds = {f["kind"] for f in doc["findings"]}
    assert "direct_reclaim_kswapd_awake" in kinds
    # the recording replays to the same document (as JSON, as `report -j` prints it)
    assert json.loads(json.dumps(replay(t.path).report())) == doc
    print(f"episodes={len(eps)} kswapd_episodes={len(kswapd)} wake_sleep_pairs={pairs} "
          f"opened={opened} stalls={doc['totals']['direct_reclaim_stalls']} runs={runs}")
