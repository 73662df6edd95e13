"""The exporter's counters, fed once per interval, against the report of the
same recording (no root): what Prometheus scrapes is what the report says.

Each real recording in tests/fixtures is replayed twice through the
correlator: once as ``report`` does, once as ``serve`` does (the observed
reclaim tracer, no history, the exporter updated at every interval row).
"""

from __future__ import annotations

import glob
import json
import os

import pytest

from tests import FIXTURES
from trace_reclaim import tracers
from trace_reclaim.correlate import Correlator
from trace_reclaim.exporter import Exporter, ObservedReclaimTracer
from trace_reclaim.recording import Reader

RECORDINGS = sorted(glob.glob(os.path.join(FIXTURES, "*.trc")))


def _has_shrinker_calls(path):
    with open(path[:-len(".trc")] + ".report.json") as f:  # its golden report
        return bool((json.load(f).get("slab") or {}).get("shrinkers"))


# Recordings whose shrinkers ran: they have shrinker rows to label.
SLAB_RECORDINGS = [p for p in RECORDINGS if _has_shrinker_calls(p)]
STALLS = "trace_reclaim_direct_reclaim_stall_seconds"


def NO_TIME():
    """A clock that never moves: every refresh looks free, so each interval refreshes."""
    return 0.0


def replay(path, exporter=None, history=True, on_update=None):
    with open(path, "rb") as f:
        r = Reader(f)
        reg = tracers.registry()
        if exporter is not None:
            reg["reclaim"] = ObservedReclaimTracer(exporter)
        corr = Correlator(r.header, [reg[n] for n in r.header["plan"]["tracers"]],
                          history=history)
        for t, p in r.records():
            row = corr.feed_record(t, p)
            if row is not None and exporter is not None:
                exporter.update(corr.aggs, row)
                if on_update is not None:
                    on_update(exporter.snapshot())
    return corr


def total(snap, name):
    return sum(snap.get(name, {}).values())


@pytest.mark.parametrize("path", RECORDINGS, ids=os.path.basename)
def test_counters_are_the_reports_totals(path):
    check_counters_against_report(path)


def check_counters_against_report(path):
    """Replay ``path`` as report and as serve; the counters are the totals.

    Also run by tests/live/test_serve_prometheus.py on the recording serve
    made (every tracer, real events)."""
    doc = replay(path).report()
    exp = Exporter(clock=NO_TIME)
    seen = []
    corr = replay(path, exp, history=False, on_update=seen.append)
    snap = exp.snapshot()
    t = doc["totals"]
    # Serving changes nothing the aggregators count (a section's keys that the
    # report lifts to the top level, Aggregator.top_level, put back in).
    assert {n: a.report() for n, a in corr.aggs.items()} == \
        {n: {**doc[n], **{k: doc[k] for k in a.top_level}} for n, a in corr.aggs.items()}
    # Nothing kept per tick: no rows, no episodes, no PSI or zoneinfo series.
    assert corr.rows == [] and corr.episodes.episodes == []
    assert corr.episodes.psi == [] and corr.episodes.zoneinfo == []
    assert total(snap, "trace_reclaim_direct_reclaim_stalls") == t["direct_reclaim_stalls"]
    assert total(snap, "trace_reclaim_direct_reclaim_retries") == t["direct_reclaim_retries"]
    assert total(snap, "trace_reclaim_direct_reclaim_reclaimed_pages") == \
        t["direct_reclaim_pages"]
    # The histogram saw every stall the aggregator counted, and only those.
    assert total(snap, STALLS + "_count") == t["direct_reclaim_stalls"]
    assert total(snap, STALLS + "_sum") == pytest.approx(t["direct_reclaim_ns"] / 1e9)
    assert total(snap, "trace_reclaim_kswapd_wakes") == t["kswapd_wakes"]
    assert total(snap, "trace_reclaim_kswapd_wakeup_requests") == t["kswapd_wakeup_requests"]
    for who in ("kswapd", "direct"):
        assert snap["trace_reclaim_lru_reclaimed_pages"][(who,)] == t[f"lru_reclaimed_{who}"]
        assert snap["trace_reclaim_lru_scanned_pages"][(who,)] == t[f"lru_scanned_{who}"]
    if "shrink_slab_calls" in t:
        assert total(snap, "trace_reclaim_shrinker_calls") == t["shrink_slab_calls"]
        assert total(snap, "trace_reclaim_shrinker_scanned_objects") == t["shrink_slab_scanned"]
        assert total(snap, "trace_reclaim_shrinker_freed_objects") == t["shrink_slab_freed"]
        assert total(snap, "trace_reclaim_shrinker_seconds") == \
            pytest.approx(t["shrink_slab_ns"] / 1e9)
        assert len(snap["trace_reclaim_shrinker_calls"]) <= exp.top_shrinkers + 1
    if "oom_kills" in t:
        assert total(snap, "trace_reclaim_oom_kills") == t["oom_kills"]
        assert snap["trace_reclaim_compaction_runs"][("direct",)] == t["compaction_runs_direct"]
    if "vmalloc_areas" in t:
        assert total(snap, "trace_reclaim_vmalloc_areas") == t["vmalloc_areas"]
        assert total(snap, "trace_reclaim_vmalloc_huge_pages") == t["vmalloc_huge_pages"]
    if "cgroups" in doc:
        check_cgroup_counters(doc["cgroups"], snap, exp.top_cgroups)
    assert total(snap, "trace_reclaim_lost_events") == t["lost_events"]
    # kswapd's awake time by interval adds up to the report's (which stops
    # at the end snapshot, a moment before the last tick).
    awake = total(snap, "trace_reclaim_kswapd_awake_seconds")
    assert awake == pytest.approx(t["kswapd_awake_ns"] / 1e9, abs=0.05)
    assert exp.held == 0
    # Counters never go down, interval after interval.
    for a, b in zip(seen, seen[1:]):
        for name, series in a.items():
            if name == "trace_reclaim_slab_caches_never_draining":
                continue  # a gauge
            for labels, v in series.items():
                assert b[name][labels] >= v, (name, labels)
    return doc, snap


def check_cgroup_counters(rows, snap, top):
    """The cgroup counters add up to the report's cgroup rows, reclaim kind by
    kind; a cgroup with its own label has exactly its row's counts (the
    fixtures name every cgroup before its first reclaim); at most ``top``
    labels besides "other" per hierarchy."""
    for reclaim, n, ns, pages in (("direct", "direct_stalls", "direct_stall_ns", "direct_pages"),
                                  ("memcg", "memcg_reclaims", "memcg_reclaim_ns", "memcg_pages")):
        for name, key, scale in (("trace_reclaim_cgroup_reclaims", n, 1),
                                 ("trace_reclaim_cgroup_reclaim_seconds", ns, 1e9),
                                 ("trace_reclaim_cgroup_reclaimed_pages", pages, 1)):
            series = {lb: v for lb, v in snap.get(name, {}).items() if lb[2] == reclaim}
            assert sum(series.values()) == pytest.approx(sum(r[key] for r in rows) / scale)
            for r in rows:
                if r["path"] and (r["path"], r["hierarchy"], reclaim) in series:
                    assert series[(r["path"], r["hierarchy"], reclaim)] == \
                        pytest.approx(r[key] / scale), (name, r["path"])
    assert total(snap, "trace_reclaim_cgroup_oom_kills") == sum(r["oom_kills"] for r in rows)
    named = {lb[:2] for lb in snap.get("trace_reclaim_cgroup_reclaims", {}) if lb[0] != "other"}
    assert len(named) <= top


def test_cgroup_labels_go_to_the_most_reclaim_time_and_keep_the_totals():
    """With room for one cgroup, the one with the most reclaim time when first
    ranked gets the label; the rest are "other", the sums stay."""
    path = os.path.join(FIXTURES, "cgroup_pressure.trc")
    doc = replay(path).report()
    one = Exporter(top_cgroups=1, clock=NO_TIME)
    replay(path, one)
    snap = one.snapshot()
    check_cgroup_counters(doc["cgroups"], snap, 1)
    labels = set(snap["trace_reclaim_cgroup_reclaims"])
    named = {lb[:2] for lb in labels if lb[0] != "other"}
    assert len(named) == 1 and any(lb[0] == "other" for lb in labels), labels
    # the limited cgroup: its memcg reclaims outweigh the other's stalls here
    top = max(doc["cgroups"], key=lambda r: r["direct_stall_ns"] + r["memcg_reclaim_ns"])
    assert named == {(top["path"], top["hierarchy"])}
    assert snap["trace_reclaim_cgroup_reclaims"][(top["path"], top["hierarchy"], "memcg")] \
        == top["memcg_reclaims"] > 0


def test_the_fixtures_exercise_every_family():
    """Not a vacuous comparison: across the recordings, each kind of count is
    non-zero somewhere."""
    seen = {}
    for path in RECORDINGS:
        t = replay(path).report()["totals"]
        for k in ("direct_reclaim_stalls", "kswapd_wakes", "shrink_slab_calls",
                  "compaction_runs_direct", "vmalloc_huge_pages", "vmalloc_areas",
                  "memcg_reclaims"):
            seen[k] = seen.get(k, 0) + t.get(k, 0)
    assert all(seen.values()), seen


@pytest.mark.parametrize("path", SLAB_RECORDINGS, ids=os.path.basename)
def test_one_shrinker_label_keeps_the_totals(path):
    """With room for one function, the rest fold into 'other': the sums stay,
    and the named function is the one with the most time when first ranked."""
    exp = Exporter(top_shrinkers=1, clock=NO_TIME)
    labels_seen = []
    replay(path, exp, on_update=lambda s: labels_seen.append(
        set(s.get("trace_reclaim_shrinker_calls", {}))))
    full = Exporter(clock=NO_TIME)
    replay(path, full)
    snap, ref = exp.snapshot(), full.snapshot()
    assert ref.get("trace_reclaim_shrinker_calls"), "its golden report has shrinkers"
    assert len(snap["trace_reclaim_shrinker_calls"]) <= 2
    assert ("other",) in snap["trace_reclaim_shrinker_calls"]
    for name in ("trace_reclaim_shrinker_calls", "trace_reclaim_shrinker_freed_objects",
                 "trace_reclaim_shrinker_scanned_objects"):
        assert total(snap, name) == total(ref, name)
    # A label, once given, is never taken back (its counter would stop).
    for a, b in zip(labels_seen, labels_seen[1:]):
        assert a <= b
