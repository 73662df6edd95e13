"""The memcg tracer's decoding, per-cgroup aggregation, report, findings and render (pure)."""

import json

from tests import synth
from trace_reclaim import abi, events
from trace_reclaim.correlate import Correlator
from trace_reclaim.report import render_text
from trace_reclaim.tracers import memcg, registry

BASE = 1_000_000_000
TRY_CHARGE, HIGH = 0xffffffff81200010, 0xffffffff81200990
registry()  # every tracer's decoders registered
MEM = {"memory": {"path": "/sys/fs/cgroup/memory", "version": 1, "hierarchy_id": 4},
       "unified": "/sys/fs/cgroup/unified"}


def memcg_reclaim(end, delta, pages, memcg_id, cgroup_id=1, ip=TRY_CHARGE, kind=0, pid=500,
                  comm="worker"):
    t = abi.EV_MEMCG_RECLAIM
    return t, synth.record("memcg_reclaim_event", t, end, pid=pid, comm=comm, delta_ns=delta,
                           gfp_flags=0xcc0, nr_reclaimed_pages=pages, cgroup_id=cgroup_id,
                           memcg_id=memcg_id, caller0_ip=ip, order=0, kind=kind)


def mkdir(ts, cgid, path, root=4):
    t = abi.EV_CGROUP_MKDIR
    return t, synth.record("cgroup_mkdir_event", t, ts, pid=1, comm="mkdir", id=cgid, root=root,
                           level=path.count("/"), path=path)


def sample(ts, data):
    return synth.user(events.Sample(ts, "memcg", data))


def correlate(records, names=("reclaim", "slab", "oom", "vmalloc", "memcg")):
    reg = registry()
    c = Correlator({"plan": {"tracers": list(names)}}, [reg[n] for n in names])
    for t, p in records:
        c.feed_record(t, p)
    return c


def story():
    v1 = {"failcnt": 0, "limit_bytes": 64 << 20, "usage_bytes": 60 << 20, "version": 1,
          "stat": {"pgpgout": 0}}
    return [
        sample(BASE - 10, {"mounts": MEM, "memcg": {"77": {"path": "/box", "counters": {
            **v1, "failcnt": 5}}}}),
        synth.vmstat_snapshot(BASE, "start", allocstall_normal=0),
        mkdir(BASE + 1_000, 88, "/trace-reclaim-test-1-x"),
        memcg_reclaim(BASE + 2_000_000, 1_000_000, 32, 88),
        memcg_reclaim(BASE + 4_000_000, 3_000_000, 20, 88, ip=HIGH),
        memcg_reclaim(BASE + 5_000_000, 500_000, 10, 77, comm="boxed"),
        synth.direct_reclaim(BASE + 6_000_000, 2_000_000, pages=40, memcg_id=77, cgroup_id=1,
                             pid=600, comm="boxed"),
        synth.direct_reclaim(BASE + 7_000_000, 5_000_000, pages=12, memcg_id=1, cgroup_id=1,
                             pid=700, comm="free"),
        # recorded before attribution: counted by the reclaim tracer, no cgroup row
        synth.direct_reclaim(BASE + 7_500_000, 1_000, pages=1, pid=701, comm="old"),
        sample(BASE + 8_000_000, {
            "callers": {f"{TRY_CHARGE:x}": "try_charge_memcg+0x10",
                        f"{HIGH:x}": "mem_cgroup_handle_over_high+0x90"},
            "memcg": {"88": {"path": "/trace-reclaim-test-1-x", "counters": {
                **v1, "failcnt": 9, "usage_bytes": 63 << 20, "stat": {"pgpgout": 40}}},
                      "77": {"path": "/box", "counters": {**v1, "failcnt": 6}},
                      "1": {"path": "/"}}}),
        synth.vmstat_snapshot(BASE + 9_000_000, "end", allocstall_normal=2),
        synth.user(events.End(BASE + 9_000_000, "duration")),
    ]


def test_records_decode_and_old_shorter_records_still_decode():
    t, p = memcg_reclaim(BASE, 5, 7, 88)
    ev = events.decode(t, p)
    assert (ev.memcg_id, ev.nr_reclaimed_pages, ev.caller0_ip) == (88, 7, TRY_CHARGE)
    t, p = synth.direct_reclaim(BASE, 10, pages=3, memcg_id=5, cgroup_id=6)
    full = events.decode(t, p)
    assert (full.memcg_id, full.cgroup_id) == (5, 6)
    old = events.decode(t, p[:abi.layout("direct_reclaim_event").field("cgroup_id").offset])
    assert (old.memcg_id, old.cgroup_id, old.nr_reclaimed_pages) == (0, 0, 3)


def test_limit_of_callers():
    assert memcg.limit_of_callers(["try_charge_memcg+0x1f"], 0) == "max"
    assert memcg.limit_of_callers([None, "reclaim_high+0x4"], 0) == "high"
    assert memcg.limit_of_callers(["memory_reclaim+0x4"], 0) == "proactive"
    assert memcg.limit_of_callers(["foo"], 0) == "unknown"
    assert memcg.limit_of_callers([], abi.MEMCG_RECLAIM_SOFTLIMIT) == "softlimit"


def test_per_cgroup_rows_limits_names_and_counter_deltas():
    doc = correlate(story()).report()
    rows = {(r["hierarchy"], r["id"]): r for r in doc["cgroups"]}
    assert "cgroups" not in doc["memcg"]          # lifted to the top level
    x = rows["memory", 88]
    assert x["path"] == "/trace-reclaim-test-1-x" and x["kind"] == "cgroup"
    assert (x["memcg_reclaims"], x["memcg_reclaim_ns"], x["memcg_pages"]) == (2, 4_000_000, 52)
    # named after the callers' symbols arrived (the sample follows the records)
    assert x["memcg_by_limit"] == {"max": 1, "high": 1}
    # created in the window: its baseline is zero, not the first sample
    assert x["limit_events"] == {"failcnt": 9} and x["counters"]["baseline"] == "created"
    assert x["counters"]["stat_delta"] == {"pgpgout": 40}
    box = rows["memory", 77]
    assert box["limit_events"] == {"failcnt": 1} and box["counters"]["baseline"] == "sampled"
    assert (box["direct_stalls"], box["direct_stall_ns"], box["direct_pages"]) == \
        (1, 2_000_000, 40)
    assert box["comms"] == {"boxed": 2}
    root = rows["memory", 1]
    assert root["direct_stalls"] == 1 and root["kind"] == "root"
    assert doc["memcg"]["memcg_reclaim"]["reclaims"] == 3
    assert doc["memcg"]["memcg_reclaim"]["by_limit"] == {"max": 2, "high": 1}
    assert doc["totals"]["memcg_reclaims"] == 3
    # the stall recorded before attribution is in the reclaim section only
    assert doc["reclaim"]["direct_reclaim"]["stalls"] == 3
    assert sum(r["direct_stalls"] for r in doc["cgroups"]) == 2
    json.dumps(doc)


def test_findings_say_which_limit_and_which_cause():
    doc = correlate(story()).report()
    by = {}
    for f in doc["findings"]:
        by.setdefault(f["kind"], []).append(f)
    (mx,) = [f for f in by["cgroup_memory_max"] if f["evidence"]["id"] == 88]
    assert "usage 98.4% of the limit" in mx["title"] and mx["evidence"]["failcnt"] == 9
    assert [f["evidence"]["id"] for f in by["cgroup_memory_high"]] == [88]
    assert [f["evidence"]["id"] for f in by["cgroup_own_limit"]] == [88]
    # box: 2 ms direct reclaim vs 0.5 ms memcg reclaim (80%); the root: direct only
    assert [f["evidence"]["id"] for f in by["cgroup_machine_shortage"]] == [1, 77]
    assert all(v is not None for f in doc["findings"] for v in f["evidence"].values()
               if f["kind"].startswith("cgroup_"))


def test_text_section_fits_80_columns():
    c = correlate(story())
    text = render_text(c.report(), c.aggs)
    assert "== memcg ==" in text and "trace-rec" in text
    assert all(len(ln) <= 80 for ln in text.splitlines()), \
        [ln for ln in text.splitlines() if len(ln) > 80]


def test_replay_of_a_recording_without_the_memcg_tracer_has_no_cgroups():
    doc = correlate(story()[1:], names=("reclaim",)).report()
    assert "cgroups" not in doc and "memcg" not in doc


def test_interval_row_names_the_top_cgroups():
    c = correlate(story()[:-2])
    row = c.feed(events.Tick(BASE + 8_500_000, 1))
    top = row["memcg"]["top"]
    assert [t["name"] for t in top] == ["/", "trace-reclaim-test-1-x", "box"]
    assert row["memcg"]["memcg_reclaims"] == 3


def test_episodes_list_the_cgroups_whose_tasks_stalled():
    doc = correlate(story()).report()
    (ep,) = [e for e in doc["episodes"] if e.get("cgroups")]
    assert [(c["hierarchy"], c["id"], c["name"], c["stalls"]) for c in ep["cgroups"]] == \
        [("memory", 1, "/", 1), ("memory", 77, "box", 1)]


def test_diff_compares_per_cgroup_with_our_test_cgroups_pid_elided():
    from trace_reclaim.compare.metrics import cgroup_key, run_metrics

    m = run_metrics(correlate(story()).report())
    assert m["memcg.reclaims"] == 3
    assert m["cgroup.trace-reclaim-test-*-x.memcg_reclaims"] == 2
    assert m["cgroup.trace-reclaim-test-*-x.memcg_pages"] == 52
    assert m["cgroup.box.direct_stall_ns"] == 2_000_000
    assert "cgroup./.memcg_reclaims" not in m       # no memcg reclaim there: not compared
    assert cgroup_key({"name": "trace-reclaim-test-42-pressure"}) == \
        "trace-reclaim-test-*-pressure"


def test_damaged_memcg_samples_are_counted_and_skipped_not_fatal():
    """A memcg sample of the wrong shape is damage (its declared schema), so the
    aggregator never sees it; the report still renders and counts it."""
    damaged = [
        sample(BASE + 100, {"memcg": {"88": {"path": 5}}}),
        sample(BASE + 101, {"memcg": {"88": {"path": "/x", "counters": {"version": 1,
                                                                       "failcnt": "9"}}}}),
        sample(BASE + 102, {"memcg": {"not-an-id": {"path": "/x"}}}),
        sample(BASE + 103, {"memcg": ["88"]}),
        sample(BASE + 104, {"callers": {"zz": "try_charge_memcg"}}),
        sample(BASE + 105, {"mounts": {"memory": {"path": "/m", "version": "1"}}}),
    ]
    good = story()
    c = correlate(good[:2] + damaged + good[2:])
    doc = c.report()
    assert doc["lost"]["undecodable_records"] == len(damaged)
    assert doc == {**correlate(good).report(), "lost": doc["lost"]}
    assert "records were damaged and skipped" in render_text(doc, c.aggs)


def mark_victim(ts, victim, by_pid, memcg_id, comm="worker"):
    t = abi.EV_MARK_VICTIM
    return t, synth.record("mark_victim_event", t, ts, pid=by_pid, comm=comm,
                           anon_rss_kb=65536, victim_pid=victim, victim_comm=comm,
                           cgroup_id=1, memcg_id=memcg_id)


def test_an_oom_kill_right_after_its_tasks_memcg_reclaim_is_the_memcg_oom_killers():
    """The killing task's last reclaim was its own cgroup's, just before: a memcg
    OOM kill, with the charge that triggered it.  A kill by a task whose last
    reclaim was direct (global) reclaim, or long ago, is not."""
    good = story()
    kills = [
        memcg_reclaim(BASE + 7_600_000, 100_000, 0, 88, pid=900, comm="hog"),
        mark_victim(BASE + 7_700_000, 900, 900, 88, comm="hog"),
        mark_victim(BASE + 7_800_000, 701, 700, 1, comm="free"),      # after direct reclaim
    ]
    doc = correlate(good[:-3] + kills + good[-3:]).report()
    by_victim = {k["victim_pid"]: k for k in doc["memcg"]["oom_kills"]}
    hog, free = by_victim[900], by_victim[701]
    assert hog["memcg_oom"] and hog["cgroup"] == {"hierarchy": "memory", "id": 88}
    assert hog["trigger"] == {"reclaim": "memcg", "ts_ns": BASE + 7_600_000,
                              "before_kill_ns": 100_000, "gfp_flags": 0xcc0, "order": 0}
    assert not free["memcg_oom"] and free["trigger"]["reclaim"] == "direct"
    oom = {f["evidence"]["victim_pid"]: f for f in doc["findings"] if f["kind"] == "oom_kill"}
    assert oom[900]["title"].startswith("memcg OOM killer killed pid 900 (hog) in "
                                        "/trace-reclaim-test-1-x")
    assert oom[900]["evidence"]["trigger_order"] == 0
    assert not oom[701]["title"].startswith("memcg OOM")
