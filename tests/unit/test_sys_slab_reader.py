"""read_sys_slab(): the structure from the listing, aliases re-read only where they can change."""

from __future__ import annotations

import os

import pytest

from trace_reclaim.tracers.slab import sysfs


@pytest.fixture
def root(tmp_path):
    for d, aliases in ((":0000056", 6), ("dentry", 0), ("inode_cache", 0)):
        (tmp_path / d).mkdir()
        (tmp_path / d / "aliases").write_text(f"{aliases}\n")
    os.symlink(":0000056", tmp_path / "kmalloc-rnd-56")
    os.symlink(":0000056", tmp_path / "ext4_groupinfo")
    return tmp_path


@pytest.fixture
def opened(monkeypatch):
    seen: list = []
    real = sysfs._read_int

    def read_int(path: str):
        seen.append(os.path.relpath(path, os.path.dirname(os.path.dirname(path))))
        return real(path)
    monkeypatch.setattr(sysfs, "_read_int", read_int)
    return seen


def _structure(doc):
    return ({d: (c["ino"], c["aliases"]) for d, c in doc["caches"].items()}, doc["links"])


def test_the_same_snapshot_as_reading_everything(root):
    first = sysfs.read_sys_slab(str(root))
    again = sysfs.read_sys_slab(str(root), prev=first)
    assert _structure(again) == _structure(first)
    assert first["caches"]["dentry"]["ino"] == os.lstat(root / "dentry").st_ino
    assert first["links"]["ext4_groupinfo"] == [":0000056",
                                                os.lstat(root / "ext4_groupinfo").st_ino]


def test_an_unchanged_listing_rereads_only_merge_targets(root, opened):
    first = sysfs.read_sys_slab(str(root))
    opened.clear()
    # An alias destroyed: its link stays, the target's count drops.
    (root / ":0000056" / "aliases").write_text("5\n")
    again = sysfs.read_sys_slab(str(root), prev=first)
    assert opened == [":0000056/aliases"]
    assert again["caches"][":0000056"]["aliases"] == 5
    assert again["caches"]["dentry"]["aliases"] == 0


def test_a_changed_listing_rereads_everything(root, opened):
    first = sysfs.read_sys_slab(str(root))
    opened.clear()
    # A cache merged into dentry's directory: a new link, and its count rises.
    os.symlink("dentry", root / "my_dentry_alias")
    (root / "dentry" / "aliases").write_text("1\n")
    again = sysfs.read_sys_slab(str(root), prev=first)
    assert sorted(opened) == [":0000056/aliases", "dentry/aliases", "inode_cache/aliases"]
    assert again["caches"]["dentry"]["aliases"] == 1
    assert again["links"]["my_dentry_alias"][0] == "dentry"


def test_a_link_with_a_new_inode_is_read_again(root):
    first = sysfs.read_sys_slab(str(root))
    stale = {"caches": first["caches"],
             "links": dict(first["links"], ext4_groupinfo=["dentry", -1])}
    again = sysfs.read_sys_slab(str(root), prev=stale)
    assert again["links"]["ext4_groupinfo"][0] == ":0000056"   # read, not kept


def test_full_reads_every_attribute(root, opened):
    first = sysfs.read_sys_slab(str(root))
    opened.clear()
    sysfs.read_sys_slab(str(root), full=True, prev=first)
    assert "dentry/aliases" in opened and "dentry/objects" in opened


def test_unreadable_root(tmp_path):
    assert sysfs.read_sys_slab(str(tmp_path / "missing"))["readable"] is False
