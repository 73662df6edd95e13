"""Live: shrinkers named by what they shrink, checked against the kernel's own view.

``echo 2 > drop_caches`` runs every shrinker with objects; the slab tracer
reads each one's owner in the kernel.  The names must match what
/proc/self/mountinfo says about the same superblocks (the root filesystem
by its device, pseudo filesystems by their anonymous device number), the
zram pool's shrinker must carry the device's name and free exactly what
zram's own ``mm_stat`` counts as compacted, and two runs must give the
same names so ``diff`` matches them.
"""

from __future__ import annotations

import json
import os
import time

from trace_reclaim.examples import _proc, zram_lifecycle
from tests.livetools import Trace, run_cli

INTERVAL = ["-i", "0.5"]


def mountinfo():
    """(major:minor, fs type, source, mount point) of every mount, as the kernel lists them."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out.append((fields[2], fields[sep + 1], fields[sep + 2], fields[4]))
    return out


def root_device_name():
    """The root filesystem's type and its s_id: the block device's kernel name."""
    for _dev, fstype, source, mnt in mountinfo():
        if mnt == "/":
            return fstype, os.path.basename(os.path.realpath(source))
    raise AssertionError("no / in mountinfo")


def drop_slab_trace(tmp_path):
    os.listdir("/usr/lib")      # unused dentries on the root fs for its shrinker
    with Trace(str(tmp_path), INTERVAL) as t:
        time.sleep(0.5)
        _proc.drop_caches(2)
        time.sleep(1.0)
    return t


def test_superblock_shrinkers_named_as_mountinfo_shows(live, tmp_path):
    fstype, dev = root_device_name()
    t = drop_slab_trace(tmp_path)
    rows = t.report["slab"]["shrinkers"]
    print("\n".join(f"{r['name']}: {r['calls']} calls" for r in rows))
    names = {r["name"] for r in rows}
    assert f"super_cache_scan ({fstype} {dev})" in names, names
    if fstype == "ext4" and any(r["callback"] == "ext4_es_scan" for r in rows):
        assert f"ext4_es_scan (ext4 {dev})" in names, names
    # Every superblock shrinker is named, never numbered; pseudo filesystems
    # (s_id is the type's own name) by the major:minor mountinfo gives them.
    mounts = {(m[1], m[0]) for m in mountinfo()} | {(m[1], m[2]) for m in mountinfo()}
    supers = [r for r in rows if r["callback"] == "super_cache_scan"]
    assert len(supers) >= 2
    for r in supers:
        assert r["owner"] and "#" not in r["name"], r["name"]
        fs, ident = r["owner"].split(" ", 1)
        assert (fs, ident) in mounts or (fs, "/dev/" + ident) in mounts or \
            any(m[1] == fs and os.path.basename(os.path.realpath(m[2])) == ident
                for m in mountinfo()), (r["owner"], sorted(mounts))
    # Shrinkers the kernel gives nothing more for stay function-only.
    for r in rows:
        if r["callback"] in ("kfree_rcu_shrink_scan", "vmap_node_shrink_scan",
                             "deferred_split_scan", "scan_shadow_nodes"):
            assert r["name"] == r["callback"] and r["owner"] is None, r
    text = run_cli(["report", t.path])
    assert text.returncode == 0, text.stderr
    # (how much of a long name fits in the text table is the renderer's choice)
    assert "super_cache_scan (" in text.stdout and "super_cache_scan#" not in text.stdout


def test_names_are_stable_so_diff_matches_them(live, tmp_path):
    fstype, dev = root_device_name()
    a = drop_slab_trace(tmp_path)
    b = drop_slab_trace(tmp_path)
    name_a = {r["name"] for r in a.report["slab"]["shrinkers"] if r["owner"]}
    name_b = {r["name"] for r in b.report["slab"]["shrinkers"] if r["owner"]}
    root = f"super_cache_scan ({fstype} {dev})"
    assert root in name_a and root in name_b
    r = run_cli(["diff", "-j", a.path, "--", b.path])
    assert r.returncode == 0, r.stderr
    items = {it["name"]: it for it in json.loads(r.stdout)["metrics"]}
    it = items[f"shrinker.{root}.time_ns"]
    assert (it["n_base"], it["n_new"]) == (1, 1), it
    assert not any(k.startswith("shrinker.super_cache_scan.") for k in items)


def test_zram_pool_shrinker_named_after_its_device(live, tmp_path):
    with zram_lifecycle.zram_device() as z:
        n = z["n"]
        zram_lifecycle.set_disksize(n, "64M")
        before = zram_lifecycle.write_fragmented(n, 16)
        with Trace(str(tmp_path), INTERVAL) as t:
            time.sleep(0.5)
            _proc.drop_caches(2)
            time.sleep(1.0)
        after = zram_lifecycle.mm_stat(n)
    rows = [r for r in t.report["slab"]["shrinkers"] if r["callback"] == "zs_shrinker_scan"]
    compacted = after["pages_compacted"] - before["pages_compacted"]
    print(rows, compacted)
    assert compacted > 0, "the workload left nothing for the pool's shrinker"
    mine = [r for r in rows if r["name"] == f"zs_shrinker_scan (zram{n})"]
    assert len(mine) == 1, [r["name"] for r in rows]
    assert mine[0]["owner"] == f"zram{n}"
    # zs_shrinker_scan() returns the pages compaction freed; zram counts them
    assert mine[0]["freed"] == compacted
