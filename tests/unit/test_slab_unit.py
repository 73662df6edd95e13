"""Unit tests of the slab tracer: lifecycle from synthetic /sys/kernel/slab
snapshots, the never-drains decision, shrinker aggregation, the report."""

from __future__ import annotations

import pytest

from tests import synth
from trace_reclaim import events
from trace_reclaim.abi import EV_SHRINK_SLAB
from trace_reclaim.tracer import Window
from trace_reclaim.tracers.slab import (BASIS_DENTRY_STATE, MIN_GROWTH, SETTLE_NS,
                                        SlabAggregator, ShrinkSlab, diff_lifecycle,
                                        never_drains, pinned_never_drains, slabinfo_tolerance)

S = 1_000_000_000


def sysfs(caches, links):
    return {"caches": {d: dict({"ino": 1, "aliases": 0}, **a) for d, a in caches.items()},
            "links": {n: list(v) for n, v in links.items()}, "readable": True}


BASE = sysfs({":0000056": {"ino": 10, "aliases": 6}, "dentry": {"ino": 11}},
             {"ftrace_event_field": (":0000056", 20), "Acpi-Parse": (":0000056", 21)})


def test_alias_create_is_merged_into_existing_cache():
    cur = sysfs({":0000056": {"ino": 10, "aliases": 7}, "dentry": {"ino": 11}},
                {"ftrace_event_field": (":0000056", 20), "Acpi-Parse": (":0000056", 21),
                 "zspage-zram1": (":0000056", 30)})
    out = diff_lifecycle(BASE, cur, 2, 1, {"ftrace_event_field", "dentry"}, set())
    assert len(out) == 1
    e = out[0]
    assert (e["name"], e["event"], e["alias_of"], e["merged_dir"], e["shared_by"]) == \
        ("zspage-zram1", "create", "ftrace_event_field", ":0000056", 8)


def test_alias_destroy_is_inferred_and_link_left_stale():
    cur = sysfs({":0000056": {"ino": 10, "aliases": 7}, "dentry": {"ino": 11}},
                {"ftrace_event_field": (":0000056", 20), "Acpi-Parse": (":0000056", 21),
                 "zspage-zram1": (":0000056", 30)})
    after = sysfs({":0000056": {"ino": 10, "aliases": 6}, "dentry": {"ino": 11}},
                  cur["links"])
    gone = set()
    out = diff_lifecycle(cur, after, 3, 2, {"ftrace_event_field"}, gone)
    assert [(e["name"], e["event"], e["stale_link"]) for e in out] == \
        [("zspage-zram1", "destroy", True)]
    assert ("zspage-zram1", 30) in gone
    # the same link is not blamed twice
    after2 = sysfs({":0000056": {"ino": 10, "aliases": 5}, "dentry": {"ino": 11}},
                   cur["links"])
    out2 = diff_lifecycle(after, after2, 4, 3, {"ftrace_event_field"}, gone)
    assert out2[0]["name"] == "Acpi-Parse"


def test_new_mergeable_cache_then_destroy_leaves_dangling_link():
    cur = sysfs({":0000056": {"ino": 10, "aliases": 6}, "dentry": {"ino": 11},
                 ":0000008": {"ino": 40, "objects": 1024}},
                dict(BASE["links"], **{"zs_handle-zram1": (":0000008", 41)}))
    out = diff_lifecycle(BASE, cur, 2, 1, set(), set())
    assert [(e["name"], e["event"], e["merged_dir"]) for e in out] == \
        [("zs_handle-zram1", "create", ":0000008")]
    after = sysfs({":0000056": {"ino": 10, "aliases": 6}, "dentry": {"ino": 11}},
                  cur["links"])
    out = diff_lifecycle(cur, after, 3, 2, {"zs_handle-zram1"}, set())
    assert len(out) == 1
    e = out[0]
    assert (e["name"], e["event"], e["stale_link"], e["objects_at_destroy"]) == \
        ("zs_handle-zram1", "destroy", True, 1024)


def test_recreated_link_with_same_target_is_a_create():
    before = sysfs({":0000008": {"ino": 40}}, {"x": (":0000008", 41)})
    # directory re-created (new inode) and link re-created
    after = sysfs({":0000008": {"ino": 50}}, {"x": (":0000008", 51)})
    out = diff_lifecycle(before, after, 2, 1, {"x"}, set())
    assert sorted(e["event"] for e in out) == ["create", "destroy"]


def test_unmerged_cache_create_destroy():
    before = sysfs({"dentry": {"ino": 11}}, {})
    after = sysfs({"dentry": {"ino": 11}, "my_cache": {"ino": 12}}, {})
    assert [(e["name"], e["event"], e["alias_of"]) for e in
            diff_lifecycle(before, after, 2, 1, set(), set())] == [("my_cache", "create", None)]
    assert [(e["name"], e["event"]) for e in
            diff_lifecycle(after, before, 3, 2, set(), set())] == [("my_cache", "destroy")]


def test_no_change_no_events():
    assert diff_lifecycle(BASE, BASE, 2, 1, set(), set()) == []


# -- never drains -------------------------------------------------------------

PRESSURE = [(10 * S, 10 * S + 1000)]


def test_pinned_growth_not_freed_is_flagged():
    series = [(0, 5000), (5 * S, 55000), (10 * S + 1000 + SETTLE_NS, 54500), (12 * S, 54000)]
    ev = never_drains(series, PRESSURE)
    assert ev is not None and ev["before"] == 55000 and ev["after"] == 54500
    assert ev["growth_before"] == 50000 and ev["settled"]


def test_drained_cache_is_never_flagged():
    series = [(0, 5000), (5 * S, 55000), (10 * S + SETTLE_NS + 1, 6000)]
    assert never_drains(series, PRESSURE) is None


def test_rcu_delay_judged_on_settled_sample():
    # right after the shrink nothing fell yet (RCU); the settled sample fell
    series = [(0, 5000), (5 * S, 55000), (10 * S + 10, 55000), (10 * S + SETTLE_NS, 6000)]
    assert never_drains(series, PRESSURE) is None


def test_static_cache_without_growth_not_flagged():
    series = [(0, 20000), (5 * S, 20100), (12 * S, 20050)]
    assert never_drains(series, PRESSURE) is None


def test_large_base_that_gave_back_its_gain_drained():
    # Debian 6.1's inode_cache in the VM tier: ~12,700 permanent objects
    # (tracefs), 1,979 gained, 1,224 given back: under DRAIN_FRACTION of the
    # level, yet only 755 of the gain kept.
    series = [(0, 12721), (5 * S, 14700), (10 * S + 1000 + SETTLE_NS, 13476)]
    assert never_drains(series, PRESSURE) is None
    # ... while a gain kept on the same base is flagged
    series = [(0, 12721), (5 * S, 14700), (10 * S + 1000 + SETTLE_NS, 14500)]
    ev = never_drains(series, PRESSURE)
    assert ev is not None and ev["growth_before"] - ev["fell"] == 1779


def test_no_pressure_no_finding():
    assert never_drains([(0, 5000), (5 * S, 55000)], []) is None


def test_later_release_does_not_hide_the_finding():
    series = [(0, 5000), (5 * S, 55000), (11 * S, 54900), (13 * S, 4000)]
    assert never_drains(series, PRESSURE) is not None


@pytest.mark.parametrize("opc,cpu_partial,ncpus,want", [
    (21, 120, 2, 2 * 21 * (1 + 12)), (73, 0, 4, 4 * 73), (1, 2, 1, 5)])
def test_slabinfo_tolerance(opc, cpu_partial, ncpus, want):
    assert slabinfo_tolerance({"objs_per_slab": opc, "cpu_partial": cpu_partial}, ncpus) == want


# -- shrinker aggregation -------------------------------------------------------

def shrink(ts, comm="kswapd0", shr=0x100, shrink_fn=0xffffffff81000000, scanned=128,
           freed=64, total=128, prio=12, ctx=0, delta_ns=5, items=500, pid=77):
    return ShrinkSlab(ts, EV_SHRINK_SLAB, pid, pid, 0, comm, delta_ns, shr, shrink_fn, items,
                      10, total, total - scanned, 0, 0, 0xcc0, freed, 0, prio, ctx, 0)


def agg():
    a = SlabAggregator(Window(start_ns=1, header={"tracers": {"slab": {"ncpus": 2}}}))
    return a


def test_drop_caches_runs_split_on_a_pause_not_a_long_call():
    """One echo to drop_caches is one run however long one shrinker call takes
    (a call freeing 50,000 dentries took over a second under emulation); a
    pause of over a second between two calls starts another."""
    s = 1_000_000_000
    a = agg()
    a.feed(shrink(1 * s, comm="sh", pid=43, prio=0))
    a.feed(shrink(3 * s, comm="sh", pid=43, prio=0, delta_ns=2 * s - 1000))   # 2 s long
    a.feed(shrink(3 * s + 5000, comm="sh", pid=43, prio=0))
    assert a.report()["drop_caches_runs"] == 1
    a.feed(shrink(5 * s, comm="sh", pid=43, prio=0))   # 2 s after the last one ended
    assert a.report()["drop_caches_runs"] == 2


def test_shrinker_aggregation_and_contexts():
    a = agg()
    a.feed(shrink(10))
    a.feed(shrink(20, comm="python3", ctx=1, pid=42))
    a.feed(shrink(30, comm="sh", prio=0, pid=43))
    a.feed(shrink(40, comm="sh", prio=0, pid=43, shr=0x200))
    a.on_sample(events.Sample(50, "slab", {"when": "tick",
                                           "symbols": {"ffffffff81000000": "super_cache_scan"}}))
    r = a.report()
    names = sorted(s["name"] for s in r["shrinkers"])
    assert names == ["super_cache_scan#1", "super_cache_scan#2"]
    s1 = [s for s in r["shrinkers"] if s["shr"] == "0x100"][0]
    assert (s1["calls"], s1["scanned"], s1["freed"], s1["time_ns"]) == (3, 384, 192, 15)
    assert s1["contexts"] == {"kswapd": 1, "direct": 1, "drop_caches": 1}
    assert s1["direct_reclaim_by"] == {"42 (python3)": 1}
    assert r["drop_caches_runs"] == 1
    t = a.totals(r)
    assert t["shrink_slab_calls"] == 4 and t["shrink_slab_scanned"] == 512
    rows = a.vmstat_rows(t, {"slabs_scanned": 512, "drop_slab": 1})
    assert rows[0] == ["shrinker objects scanned", 512, 512, "slabs_scanned"]


def test_futile_shrinker_flagged():
    a = agg()
    for i in range(12):
        a.feed(shrink(10 + i, freed=0))
    r = a.report()
    assert r["shrinkers"][0]["frees_nothing"]
    assert any("freed nothing" in line for line in a.render(r))


def test_shrink_before_window_not_counted():
    a = SlabAggregator(Window(start_ns=10_000))
    a.feed(shrink(10_500, delta_ns=1000))
    assert a.report()["shrinks_begun_before_window"] == 1


def test_decoder_round_trip():
    payload = synth.record("shrink_slab_event", EV_SHRINK_SLAB, 5, pid=1, comm="kswapd0",
                           delta_ns=9, shr=1, shrink=2, cache_items=3, delta=4, total_scan=128,
                           gfp_flags=0xcc0, freed=64, priority=12)
    ev = events.decode(EV_SHRINK_SLAB, payload)
    assert isinstance(ev, ShrinkSlab) and ev.scanned == 128 and ev.freed == 64


# -- samples to findings ------------------------------------------------------------

def _sample(ts, when, dentry_active, state, shrink_dir=None):
    d = {"when": when, "caches": {"dentry": [dentry_active, 0]},
         "slabinfo": {"dentry": [dentry_active, dentry_active + 100, 192, 21]},
         "slabinfo_full": True, "dentry_state": state}
    if when != "tick" or shrink_dir:
        d["sys_slab"] = sysfs({"dentry": {"ino": 11, "reclaim_account": 1,
                                          "objs_per_slab": 21, "cpu_partial": 120}}, {})
    return events.Sample(ts, "slab", d)


@pytest.mark.parametrize("pinned", [True, False])
def test_findings_from_samples(pinned):
    a = agg()
    a.on_sample(_sample(0, "start", 5000, {"nr_dentry": 5000, "nr_unused": 1000}))
    a.on_sample(_sample(2 * S, "tick", 55000, {"nr_dentry": 55000, "nr_unused": 1000}))
    a.feed(shrink(3 * S, comm="sh", prio=0, freed=100 if pinned else 50000))
    after = 54900 if pinned else 5100
    a.on_sample(_sample(4 * S, "tick", after, {"nr_dentry": after, "nr_unused": 10}))
    a.on_sample(_sample(5 * S, "end", after, {"nr_dentry": after, "nr_unused": 10}))
    r = a.report()
    dentry = [c for c in r["caches"] if c["name"] == "dentry"][0]
    assert dentry["never_drains"] is pinned
    assert (dentry["active_start"], dentry["active_end"]) == (5000, after)
    if pinned:
        assert dentry["reason"] == "pinned" and "in use" in dentry["reason_detail"]
    for key in ("name", "allocs", "frees", "active_start", "active_end", "never_drains",
                "reason"):
        assert key in dentry
    text = "\n".join(a.render(r))
    assert ("! dentry" in text) is pinned


def test_kmsg_warning_flags_destroyed_cache():
    a = agg()
    a.on_sample(events.Sample(1, "slab", {
        "when": "tick", "caches": {"leaky": [10, 2]},
        "kmsg": ["kmem_cache_destroy leaky: Slab cache still has objects when called "
                 "from foo+0x10"]}))
    r = a.report()
    leaky = [c for c in r["caches"] if c["name"] == "leaky"][0]
    assert leaky["never_drains"] and leaky["reason"] == "destroyed_with_objects"


# -- exact lifecycle: fentry/fexit or kprobes on the kernel's own calls ---------------

def _kc(type_id, ts, cache, name, refcount=-1, err=0, requested=""):
    payload = synth.record("kmem_cache_event", type_id, ts, pid=9, comm="zram", cache=cache,
                           refcount=refcount, err=err, name=name, requested=requested)
    return events.decode(type_id, payload)


def _exact_agg():
    return SlabAggregator(Window(start_ns=1, header={"tracers": {"slab": {
        "ncpus": 2, "lifecycle_exact": True,
        "lifecycle_method": "fexit __kmem_cache_create_args, fentry kmem_cache_destroy, "
                            "fexit __kmem_cache_shutdown"}}}))


def test_exact_alias_and_new_cache_lifecycle():
    from trace_reclaim.tracers.slab import (EV_KMEM_CACHE_CREATE, EV_KMEM_CACHE_DESTROY,
                                            EV_KMEM_CACHE_SHUTDOWN)
    a = _exact_agg()
    a.on_sample(events.Sample(5, "slab", {"when": "start", "sys_slab": BASE}))
    # a new cache, then an alias merged into ftrace_event_field's cache
    a.feed(_kc(EV_KMEM_CACHE_CREATE, 10, 0xa0, "zs_handle-zram1", 1, requested="zs_handle-zram1"))
    a.feed(_kc(EV_KMEM_CACHE_CREATE, 11, 0xb0, "ftrace_event_field", 8,
               requested="zspage-zram1"))
    links = dict(BASE["links"], **{"zspage-zram1": (":0000056", 30)})
    with_both = sysfs({":0000056": {"ino": 10, "aliases": 7}, "dentry": {"ino": 11},
                       "zs_handle-zram1": {"ino": 50}}, links)
    a.on_sample(events.Sample(12, "slab", {"when": "tick", "sys_slab": with_both}))
    # destroy: the kernel is handed the merged cache, refcount 8 before
    a.feed(_kc(EV_KMEM_CACHE_DESTROY, 20, 0xa0, "zs_handle-zram1", 1))
    a.feed(_kc(EV_KMEM_CACHE_SHUTDOWN, 21, 0xa0, "zs_handle-zram1", err=0))
    a.feed(_kc(EV_KMEM_CACHE_DESTROY, 22, 0xb0, "ftrace_event_field", 8))
    after = sysfs({":0000056": {"ino": 10, "aliases": 6}, "dentry": {"ino": 11}}, links)
    a.on_sample(events.Sample(30, "slab", {"when": "end", "sys_slab": after}))
    r = a.report()
    assert r["lifecycle_method"].startswith("fexit __kmem_cache_create_args")
    lc = {(e["name"], e["event"]): e for e in r["lifecycle"]}
    assert set(lc) == {("zs_handle-zram1", "create"), ("zspage-zram1", "create"),
                       ("zs_handle-zram1", "destroy"), ("zspage-zram1", "destroy")}
    assert all(e["exact"] for e in lc.values())
    c = lc[("zspage-zram1", "create")]
    assert (c["ts_ns"], c["alias_of"], c["merged_dir"], c["shared_by"]) == \
        (11, "ftrace_event_field", ":0000056", 8)
    d = lc[("zspage-zram1", "destroy")]
    assert (d["ts_ns"], d["alias_of"], d["shared_by"], d["stale_link"], d["objects_at_destroy"]) \
        == (22, "ftrace_event_field", 7, True, None)
    h = lc[("zs_handle-zram1", "destroy")]
    assert (h["alias_of"], h["shutdown_ok"], h["objects_at_destroy"]) == (None, True, 0)
    assert not any(c["never_drains"] for c in r["caches"])
    text = "\n".join(a.render(r))
    assert "alias of ftrace_event_field" in text


def test_exact_destroy_with_objects_left_is_flagged():
    from trace_reclaim.tracers.slab import (EV_KMEM_CACHE_CREATE, EV_KMEM_CACHE_DESTROY,
                                            EV_KMEM_CACHE_SHUTDOWN)
    a = _exact_agg()
    a.feed(_kc(EV_KMEM_CACHE_CREATE, 10, 0xa0, "leaky", 1, requested="leaky"))
    a.on_sample(events.Sample(11, "slab", {"when": "start", "caches": {"leaky": [0, 0]}}))
    a.on_sample(events.Sample(12, "slab", {"when": "tick", "caches": {"leaky": [5, 2]}}))
    a.feed(_kc(EV_KMEM_CACHE_DESTROY, 20, 0xa0, "leaky", 1))
    a.feed(_kc(EV_KMEM_CACHE_SHUTDOWN, 21, 0xa0, "leaky", err=1))
    r = a.report()
    (d,) = [e for e in r["lifecycle"] if e["event"] == "destroy"]
    assert d["shutdown_ok"] is False and d["objects_at_destroy"] == 3
    assert d["flag"] == "destroyed with 3 objects"
    (c,) = [c for c in r["caches"] if c["name"] == "leaky"]
    assert c["never_drains"] and c["reason"] == "destroyed_with_objects"


# -- dentries judged on what is in use -------------------------------------------

# Measured on the development VM (50,000 files held, drop_caches 2 while held):
# every held file also had an unused /proc/PID/fd/N dentry, so active_objs
# fell by half while the dentries in use did not move.
MIXED_ACTIVE = [(0, 5486), (10 * S - 1, 118041), (10 * S + 1000 + SETTLE_NS, 54020)]
MIXED_IN_USE = [(0, 2320), (10 * S - 1, 52644), (10 * S + 1000 + SETTLE_NS, 52018)]


def test_pinned_dentries_mixed_with_freeable_ones_are_flagged():
    assert never_drains(MIXED_ACTIVE, PRESSURE) is None   # active_objs alone: "drained"
    ev = pinned_never_drains(MIXED_IN_USE, MIXED_ACTIVE, PRESSURE)
    assert ev is not None and ev["basis"] == BASIS_DENTRY_STATE
    assert (ev["before"], ev["after"], ev["growth_before"]) == (52644, 52018, 50324)
    assert (ev["active_before"], ev["active_after"]) == (118041, 54020)


def test_in_use_that_fell_is_not_pinned():
    in_use = [(0, 2000), (10 * S - 1, 52000), (10 * S + 1000 + SETTLE_NS, 2100)]
    assert pinned_never_drains(in_use, MIXED_ACTIVE, PRESSURE) is None


def test_steady_large_in_use_is_not_pinned_growth():
    # a busy machine's in-use dentries, unchanged by the pressure: nothing built up
    in_use = [(0, 300_000), (10 * S - 1, 300_000 + MIN_GROWTH - 1),
              (10 * S + 1000 + SETTLE_NS, 300_000)]
    assert pinned_never_drains(in_use, MIXED_ACTIVE, PRESSURE) is None


def _dentry_sample(ts, when, active, in_use, counts=None, extra_si=None, extra_sys=None):
    si = {"dentry": [active, active + 100, 192, 21]}
    si.update(extra_si or {})
    d = {"when": when, "caches": counts or {"dentry": [0, 0]}, "slabinfo": si,
         "slabinfo_full": True,
         "dentry_state": {"nr_dentry": active, "nr_unused": active - in_use}}
    if when != "tick":
        caches = {"dentry": {"ino": 11, "reclaim_account": 1, "objs_per_slab": 21,
                             "cpu_partial": 120}}
        caches.update(extra_sys or {})
        d["sys_slab"] = sysfs(caches, {})
    return events.Sample(ts, "slab", d)


def test_aggregator_judges_dentry_on_in_use():
    a = agg()
    for (ts, act), (_t, use) in zip(MIXED_ACTIVE, MIXED_IN_USE):
        a.on_sample(_dentry_sample(ts, "start" if ts == 0 else "tick", act, use))
    a.feed(shrink(10 * S + 1000, comm="sh", prio=0, delta_ns=1000))
    a.on_sample(_dentry_sample(12 * S, "end", 54020, 52018))
    r = a.report()
    dentry = [c for c in r["caches"] if c["name"] == "dentry"][0]
    assert dentry["never_drains"] and dentry["reason"] == "pinned"
    assert dentry["evidence"]["basis"] == BASIS_DENTRY_STATE
    assert "52018 dentries in use" in dentry["reason_detail"]
    text = "\n".join(a.render(r))
    assert "! dentry: 52644 in use before shrink -> 52018 after" in text
    assert "active_objs 118041 -> 54020 (unused dentries included)" in text


# -- traced net against /proc/slabinfo ----------------------------------------------

def test_untraced_allocations_are_flagged_with_their_size():
    """The measured failure: per held file one dentry and one proc inode that no
    kmem_cache_alloc reported, freed by drop_caches with kmem_cache_free."""
    a = agg()
    proc_sys = {"proc_inode_cache": {"ino": 12, "reclaim_account": 1, "objs_per_slab": 23,
                                     "cpu_partial": 52},
                "filp": {"ino": 13, "reclaim_account": 0, "objs_per_slab": 21,
                         "cpu_partial": 120}}
    a.on_sample(_dentry_sample(0, "start", 4956, 2000,
                               {"dentry": [10, 5], "proc_inode_cache": [3, 1], "filp": [0, 0]},
                               {"proc_inode_cache": [874, 900, 696, 23],
                                "filp": [1548, 1600, 256, 21]}, proc_sys))
    a.on_sample(_dentry_sample(5 * S, "end", 54442, 52000,
                               {"dentry": [10 + 53995, 5 + 55279],
                                "proc_inode_cache": [3 + 402, 1 + 50061],
                                "filp": [114622, 65253]},
                               {"proc_inode_cache": [2206, 2300, 696, 23],
                                "filp": [50883, 50900, 256, 21]}, proc_sys))
    r = a.report()
    rows = {c["name"]: c for c in r["caches"]}
    d, p, f = rows["dentry"], rows["proc_inode_cache"], rows["filp"]
    assert (d["net"], d["slabinfo_delta"], d["net_minus_slabinfo"]) == (-1284, 49486, -50770)
    assert d["allocs_untraced"] and not d["frees_untraced"]
    assert p["net_minus_slabinfo"] == -49659 - 1332 and p["allocs_untraced"]
    # filp is not reclaimable: its tolerance comes from the start snapshot
    assert f["tolerance"] == slabinfo_tolerance({"objs_per_slab": 21, "cpu_partial": 120}, 2)
    assert f["net_minus_slabinfo"] == 49369 - 49335
    assert not f["allocs_untraced"] and not f["frees_untraced"]
    text = "\n".join(a.render(r))
    assert "allocations no kmem_cache_alloc reported" in text, text
    assert "dentry -50770" in text and "proc_inode_cache -50991" in text
    assert all(len(line) <= 80 for line in text.splitlines()
               if "kmem_cache_alloc reported" in line or "-50770" in line)


def test_counts_within_the_slack_are_not_flagged():
    a = agg()
    a.on_sample(_dentry_sample(0, "start", 5000, 2000, {"dentry": [0, 0]}))
    a.on_sample(_dentry_sample(5 * S, "end", 55000, 2000, {"dentry": [50400, 0]}))
    d = [c for c in a.report()["caches"] if c["name"] == "dentry"][0]
    assert d["net_minus_slabinfo"] == 400 <= d["tolerance"]
    assert not d["allocs_untraced"] and not d["frees_untraced"]


def test_series_thins_like_the_list_and_stays_bounded():
    from trace_reclaim.tracers.slab.aggregate import MAX_SERIES, _append_bounded, _Series

    ref: list = []
    s = _Series()
    for i in range(5 * MAX_SERIES + 7):
        ref = _append_bounded(ref, (10 * i, i * i))
        s.append(10 * i, i * i)
        assert len(s) <= MAX_SERIES
    assert s.pairs() == ref
