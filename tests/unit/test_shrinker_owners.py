"""Shrinkers named by what they shrink: the plan's cflags, decoding, names, diff, labels."""

from __future__ import annotations

import os

import pytest

from trace_reclaim import compare, events
from trace_reclaim.exporter import Exporter, shrinker_label
from trace_reclaim.tracer import Window
from trace_reclaim.tracers.slab import SlabAggregator, owners
from trace_reclaim.tracers.slab.records import EV_SHRINK_SLAB, ShrinkSlab
from trace_reclaim.tracers.slab.shrinkers import owner_text

SUPER, ES, ZS, MB, RCU = 0xa000, 0xb000, 0xc000, 0xd000, 0xe000
SYMBOLS = {"super_cache_scan": SUPER, "ext4_es_scan": ES, "zs_shrinker_scan": ZS,
           "mb_cache_scan": MB, "kfree_rcu_shrink_scan": RCU}


# -- the plan: cflags from BTF and kallsyms ----------------------------------------

class FakeBTF:
    """member() answers from a table, as btf.BTF.member does from the kernel's BTF."""

    def __init__(self, members):
        self.members = members

    def member(self, struct, member):
        return self.members.get((struct, member))


NAMES = {("super_block", "s_type"): (40, "struct file_system_type *"),
         ("super_block", "s_id"): (936, "char[32]"),
         ("super_block", "s_dev"): (16, "dev_t"),
         ("file_system_type", "name"): (0, "const char *"),
         ("ext4_sb_info", "s_sb"): (568, "struct super_block *"),
         ("zs_pool", "name"): (0, "const char *"),
         ("journal_s", "j_devname"): (968, "char[56]")}
# Since 6.7: every owner holds a pointer, the shrinker points back (private_data).
SINCE_6_7 = {**NAMES, **{("shrinker", "private_data"): (88, "void *"),
                          ("super_block", "s_shrink"): (1080, "struct shrinker *"),
                          ("ext4_sb_info", "s_es_shrinker"): (1304, "struct shrinker *"),
                          ("zs_pool", "shrinker"): (2080, "struct shrinker *"),
                          ("journal_s", "j_shrinker"): (824, "struct shrinker *")}}
# Before 6.7: the shrinker is embedded in its owner; no private_data.
BEFORE_6_7 = {**NAMES, **{("super_block", "s_shrink"): (800, "struct shrinker"),
                            ("ext4_sb_info", "s_es_shrinker"): (1200, "struct shrinker"),
                            ("zs_pool", "shrinker"): (1900, "struct shrinker"),
                            ("journal_s", "j_shrinker"): (700, "struct shrinker")}}


def ksym(name):
    return {"super_cache_scan": 0xffffffff816bf630, "ext4_es_scan": 0xffffffff817a7500,
            "zs_shrinker_scan": 0xffffffff81699010,
            "jbd2_journal_shrink_scan": 0xffffffff81821190}.get(name)


def test_cflags_pointer_layout_reads_private_data():
    cflags, named, skipped = owners.owner_cflags(FakeBTF(SINCE_6_7), ksym)
    assert cflags[0] == "-DSHRINKER_OWNERS"
    assert "-DSHRINKER_PRIVATE_DATA_OFF=88" in cflags
    assert "-DSUPER_CACHE_SCAN=0xffffffff816bf630ULL" in cflags
    assert "-DSB_SHRINK_EMBED_OFF=-1" in cflags and "-DEXT4_ES_EMBED_OFF=-1" in cflags
    assert {"-DSB_S_ID_OFF=936", "-DSB_S_DEV_OFF=16", "-DSB_S_TYPE_OFF=40",
            "-DFS_TYPE_NAME_OFF=0", "-DEXT4_SBI_SB_OFF=568", "-DZS_POOL_NAME_OFF=0",
            "-DJBD2_DEVNAME_OFF=968"} <= set(cflags)
    assert not any(f.startswith("-DSHRINKER_NAME_OFF") for f in cflags)
    assert named == ["super_cache_scan", "ext4_es_scan", "zs_shrinker_scan",
                     "jbd2_journal_shrink_scan"]
    assert skipped == []


def test_cflags_embedded_layout_uses_container_of():
    cflags, named, _ = owners.owner_cflags(FakeBTF(BEFORE_6_7), ksym)
    assert not any(f.startswith("-DSHRINKER_PRIVATE_DATA_OFF") for f in cflags)
    assert {"-DSB_SHRINK_EMBED_OFF=800", "-DEXT4_ES_EMBED_OFF=1200",
            "-DZS_POOL_EMBED_OFF=1900", "-DJBD2_EMBED_OFF=700"} <= set(cflags)
    assert len(named) == 4


def test_cflags_pointer_without_private_data_is_refused():
    table = dict(SINCE_6_7)
    del table[("shrinker", "private_data")]
    cflags, named, skipped = owners.owner_cflags(FakeBTF(table), ksym)
    assert cflags == [] and named == []
    assert all("private_data" in why for _cb, why in skipped)


def test_cflags_skip_what_the_kernel_lacks():
    table = dict(SINCE_6_7)
    del table[("zs_pool", "shrinker")]        # no zsmalloc
    del table[("super_block", "s_id")]        # no superblock names: ext4_es too
    cflags, named, skipped = owners.owner_cflags(
        FakeBTF(table), lambda n: None if n == "jbd2_journal_shrink_scan" else ksym(n))
    assert named == []
    why = dict(skipped)
    assert "zs_pool.shrinker" in why["zs_shrinker_scan"]
    assert "s_id" in why["super_cache_scan"] and "s_id" in why["ext4_es_scan"]
    assert "kallsyms" in why["jbd2_journal_shrink_scan"]
    assert cflags == []


def test_cflags_shrinker_debug_name_alone():
    table = {("shrinker", "name"): (96, "const char *")}
    cflags, named, _ = owners.owner_cflags(FakeBTF(table), ksym)
    assert cflags == ["-DSHRINKER_OWNERS", "-DSHRINKER_NAME_OFF=96"] and named == []


def test_no_btf_no_owners():
    assert owners.owner_cflags(None, ksym)[:2] == ([], [])


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"),
                    reason="needs the running kernel's BTF")
def test_running_kernel_layout_is_one_of_the_two():
    """Whatever the kernel, s_shrink is a pointer or an embedded struct shrinker."""
    from trace_reclaim.btf import load_btf

    btf = load_btf()
    assert btf is not None
    off, ctype = btf.member("super_block", "s_shrink")
    assert ctype in ("struct shrinker *", "struct shrinker") and off > 0
    assert btf.member("super_block", "s_id")[1] == "char[32]"
    if ctype.endswith("*"):
        assert btf.member("shrinker", "private_data") is not None


# -- decoding the map, naming ------------------------------------------------------

def test_decode_owner_kernel_dev_t():
    d = owners.decode_owner(owners.SHRINKER_OWNER_SUPER, (254 << 20) | 1, "", "ext4", "vda1")
    assert d == {"fs_type": "ext4", "s_id": "vda1", "s_dev": "254:1"}
    assert owners.decode_owner(owners.SHRINKER_OWNER_ZS_POOL, 0, "", "", "zram1") == \
        {"zs_pool": "zram1"}
    assert owners.decode_owner(0, 0, "mm-shadow", "", "") == {"name": "mm-shadow"}
    assert owners.decode_owner(0, 0, "", "", "") == {}


@pytest.mark.parametrize("owner,want", [
    ({"fs_type": "ext4", "s_id": "vda1", "s_dev": "254:1"}, "ext4 vda1"),
    # alloc_super() sets s_id to the type's name; only block filesystems change it
    ({"fs_type": "tmpfs", "s_id": "tmpfs", "s_dev": "0:25"}, "tmpfs 0:25"),
    ({"zs_pool": "zram1"}, "zram1"),
    ({"journal": "vda-8"}, "vda-8"),
    ({"name": "sb-ext4", "fs_type": "ext4", "s_id": "vda", "s_dev": "254:0"}, "ext4 vda"),
    ({"name": "mm-shadow"}, "mm-shadow"),
    ({}, None), (None, None),
])
def test_owner_text(owner, want):
    assert owner_text(owner) == want


def shrink(ts, shr, fn, ns=1000, freed=5):
    return ShrinkSlab(ts, EV_SHRINK_SLAB, 7, 7, 0, "kswapd0", ns, shr, fn, 100, 10, 64, 0,
                      0, 0, 0xcc0, freed, 0, 12, 0, 0)


def sample(ts, owners_by_shr=None):
    d = {"when": "tick", "symbols": {f"{a:x}": n for n, a in SYMBOLS.items()}}
    if owners_by_shr is not None:
        d["shrinker_owners"] = {f"{k:x}": v for k, v in owners_by_shr.items()}
    return events.Sample(ts, "slab", d)


ROOT_SB = {"fs_type": "ext4", "s_id": "vda", "s_dev": "254:0"}
OWNERS = {0x1: ROOT_SB, 0x2: {"fs_type": "tmpfs", "s_id": "tmpfs", "s_dev": "0:25"},
          0x3: ROOT_SB, 0x4: {"zs_pool": "zram1"}, 0x5: {}, 0x6: {}, 0x7: {}}
CALLS = [(0x1, SUPER, 500), (0x2, SUPER, 300), (0x3, ES, 200), (0x4, ZS, 100),
         (0x5, MB, 50), (0x6, MB, 40), (0x7, RCU, 30)]


def report(owners_by_shr, calls=CALLS):
    a = SlabAggregator(Window(start_ns=1))
    a.on_sample(sample(2, owners_by_shr))
    for i, (shr, fn, ns) in enumerate(calls):
        a.feed(shrink(1000 + i, shr, fn, ns))
    return a.report()


def test_names_from_owners():
    rows = {r["shr"]: r for r in report(OWNERS)["shrinkers"]}
    assert rows["0x1"]["name"] == "super_cache_scan (ext4 vda)"
    assert rows["0x2"]["name"] == "super_cache_scan (tmpfs 0:25)"
    assert rows["0x3"]["name"] == "ext4_es_scan (ext4 vda)"
    assert rows["0x4"]["name"] == "zs_shrinker_scan (zram1)"
    # nothing more from the kernel: function-only, numbered among themselves
    assert (rows["0x5"]["name"], rows["0x6"]["name"]) == ("mb_cache_scan#1", "mb_cache_scan#2")
    assert rows["0x7"]["name"] == "kfree_rcu_shrink_scan"
    assert rows["0x1"]["owner"] == "ext4 vda" and rows["0x7"]["owner"] is None
    assert rows["0x1"]["callback"] == "super_cache_scan"


def test_recordings_without_owners_keep_their_names_and_shape():
    rows = {r["shr"]: r for r in report(None)["shrinkers"]}
    assert rows["0x1"]["name"] == "super_cache_scan#1"
    assert rows["0x2"]["name"] == "super_cache_scan#2"
    assert rows["0x3"]["name"] == "ext4_es_scan"
    assert all("owner" not in r for r in rows.values())


def test_names_do_not_depend_on_pointers():
    """The same superblocks at other addresses (another boot) get the same names."""
    moved = {0x90 + k: v for k, v in OWNERS.items()}
    calls = [(0x90 + shr, fn, ns) for shr, fn, ns in CALLS]
    a = sorted(r["name"] for r in report(OWNERS)["shrinkers"])
    b = sorted(r["name"] for r in report(moved, calls)["shrinkers"])
    assert a == b


# -- diff: matched by stable name -----------------------------------------------

def doc(rows):
    return {"slab": {"shrinkers": rows, "caches": []}}


def row(name, time_ns, owner=..., freed=1):
    r = {"name": name, "time_ns": time_ns, "freed": freed}
    if owner is not ...:
        r["owner"] = owner
    return r


def test_diff_matches_named_shrinkers_by_name():
    named = [compare.run_metrics(doc([row("super_cache_scan (ext4 vda)", 100, "ext4 vda"),
                                      row("super_cache_scan (proc 0:21)", 5, "proc 0:21"),
                                      row("kfree_rcu_shrink_scan", 7, None)]))
             for _ in range(2)]
    out = compare.fold_shrinkers(named)
    assert out == named
    assert out[0]["shrinker.super_cache_scan (ext4 vda).time_ns"] == 100
    assert out[0]["shrinker.kfree_rcu_shrink_scan.time_ns"] == 7


def test_diff_folds_a_callback_an_old_run_knows_only_as_a_whole():
    old = compare.run_metrics(doc([row("super_cache_scan#1", 60), row("super_cache_scan#2", 40),
                                   row("ext4_es_scan", 3)]))
    new = compare.run_metrics(doc([row("super_cache_scan (ext4 vda)", 100, "ext4 vda"),
                                   row("super_cache_scan (proc 0:21)", 5, "proc 0:21"),
                                   row("ext4_es_scan (ext4 vda)", 4, "ext4 vda"),
                                   row("zs_shrinker_scan (zram1)", 9, "zram1")]))
    f_old, f_new = compare.fold_shrinkers([old, new])
    assert f_old["shrinker.super_cache_scan.time_ns"] == 100
    assert f_new["shrinker.super_cache_scan.time_ns"] == 105
    assert f_new["shrinker.ext4_es_scan.time_ns"] == 4
    assert not any(" (" in k for k in f_old)
    # only in the new run, and never known as a whole: stays named
    assert f_new["shrinker.zs_shrinker_scan (zram1).time_ns"] == 9
    assert "shrinker.super_cache_scan (ext4 vda).time_ns" not in f_new


def test_diff_compares_per_named_shrinker_end_to_end():
    def run(path, ext4_ns, proc_ns):
        return compare.Run(path, {}, doc([row("super_cache_scan (ext4 vda)", ext4_ns, "ext4 vda"),
                                          row("super_cache_scan (proc 0:21)", proc_ns,
                                              "proc 0:21")]))
    base = [run(f"b{i}", 100 + i, 50) for i in range(3)]
    new = [run(f"n{i}", 400 + i, 50) for i in range(3)]
    c = compare.compare(base, new, bootstrap=False)
    items = {it.name: it for it in c.items}
    ext4 = items["shrinker.super_cache_scan (ext4 vda).time_ns"]
    assert (ext4.base, ext4.new) == (101, 401)
    assert items["shrinker.super_cache_scan (proc 0:21).time_ns"].change == 0
    assert "shrinker.super_cache_scan.time_ns" not in items


# -- exporter labels ----------------------------------------------------------

def test_label_is_the_stable_name():
    assert shrinker_label({"name": "super_cache_scan (ext4 vda)", "owner": "ext4 vda",
                           "callback": "super_cache_scan"}) == "super_cache_scan (ext4 vda)"
    assert shrinker_label({"name": "mb_cache_scan#2", "owner": None,
                           "callback": "mb_cache_scan"}) == "mb_cache_scan"
    assert shrinker_label({"name": "super_cache_scan#1", "callback": "super_cache_scan"}) == \
        "super_cache_scan"
    assert shrinker_label({"name": "0xd000", "callback": None}) is None


def test_exporter_labels_named_shrinkers_top_n_then_other():
    exp = Exporter(top_shrinkers=3, clock=lambda: 0.0)
    a = SlabAggregator(Window(start_ns=1))
    a.on_sample(sample(2, OWNERS))
    for i, (shr, fn, ns) in enumerate(CALLS):
        a.feed(shrink(1000 + i, shr, fn, ns))
    exp.update({"slab": a}, {"slab": a.on_tick(5000)})
    calls = exp.snapshot()["trace_reclaim_shrinker_calls"]
    assert calls == {("super_cache_scan (ext4 vda)",): 1, ("super_cache_scan (tmpfs 0:25)",): 1,
                     ("ext4_es_scan (ext4 vda)",): 1, ("other",): 4}
    t = a.totals(a.report())
    assert sum(calls.values()) == t["shrink_slab_calls"]
