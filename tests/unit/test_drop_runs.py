"""drop_caches runs: exact from drop_slab()'s returns, else a lower bound said as such."""

from __future__ import annotations

import io

import pytest

from tests import synth
from trace_reclaim import abi, events
from trace_reclaim.env import Environment
from trace_reclaim.replay import replay
from trace_reclaim.report import render_text
from trace_reclaim import tracers

BASE = 10_000_000_000
SEC = 1_000_000_000


def _shrink(ts: int, pid: int = 100) -> tuple:
    # drop_slab(): priority 0, outside any reclaim (context "other")
    return abi.EV_SHRINK_SLAB, synth.record(
        "shrink_slab_event", abi.EV_SHRINK_SLAB, ts, pid=pid, delta_ns=1000, shr=0x1000,
        shrink=0x2000, total_scan=10, freed=5, priority=0, context=abi.SLAB_CTX_OTHER)


def _drop(ts: int, pid: int = 100) -> tuple:
    return abi.EV_DROP_SLAB, synth.record("drop_slab_event", abi.EV_DROP_SLAB, ts, pid=pid)


def _recording(tmp_path, drop_runs_from: str) -> str:
    # Three runs by one task, 0.1 s apart: the shrinker calls alone see one.
    recs = [synth.vmstat_snapshot(BASE, "start", drop_slab=7, slabs_scanned=0)]
    for i in range(3):
        t = BASE + SEC + i * SEC // 10
        recs += [_shrink(t + 10), _shrink(t + 20), _drop(t + 30)]
    recs += [synth.vmstat_snapshot(BASE + 3 * SEC, "end", drop_slab=10, slabs_scanned=30),
             synth.user(events.End(BASE + 3 * SEC, "duration"))]
    path = tmp_path / f"{drop_runs_from}.trc"
    path.write_bytes(synth.recording(recs, {
        "tool": "trace-reclaim", "plan": {"tracers": ["slab"]},
        "tracers": {"slab": {"drop_runs_from": drop_runs_from}}}))
    return str(path)


@pytest.mark.parametrize("how", ["fexit", "kretprobe"])
def test_runs_from_drop_slab_returns_are_the_kernels_count(tmp_path, how):
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    corr = replay(_recording(tmp_path, how), env, tracers.registry())
    doc = corr.report()
    assert doc["totals"]["drop_caches_runs"] == 3 == doc["totals"]["vmstat_delta"]["drop_slab"]
    assert doc["totals"]["drop_caches_runs_exact"] is True
    text = render_text(doc, corr.aggs)
    assert "drop_caches (slab) runs      3         3" in text


def test_inferred_runs_are_a_lower_bound_and_shown_so(tmp_path):
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    corr = replay(_recording(tmp_path, "inferred"), env, tracers.registry())
    doc = corr.report()
    # The EV_DROP_SLAB records of this synthetic recording are still decoded,
    # but an inferred plan never has them: the count is the shrinker calls'.
    assert doc["totals"]["drop_caches_runs"] == 1
    assert doc["totals"]["drop_caches_runs_exact"] is False
    text = render_text(doc, corr.aggs)
    assert "drop_caches (slab) runs      >=1       3" in text
    assert "drop_caches runs >=1" in text
