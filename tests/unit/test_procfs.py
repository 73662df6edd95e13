"""The one set of /proc parsers, for the tool and the workloads (pure, no root)."""

from __future__ import annotations

import pytest

from trace_reclaim.examples import pressure, slab_dentries, vmalloc_fallback
from trace_reclaim.procfs import ProcFS, parse_buddyinfo, parse_meminfo, vmstat_delta

# Captured on the 6.18 test VM.
BUDDYINFO = """\
Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3 
Node 0, zone    DMA32    191    200    190    158    122    107     92     65     44     53    694 
Node 0, zone   Normal   1005   1970   1771    914    559    173     68     25     17    109   4871 
"""  # noqa: W291 (the kernel ends each buddyinfo line with a space)

MEMINFO = """\
MemTotal:       24684084 kB
MemFree:        23458104 kB
MemAvailable:   24043424 kB
HugePages_Total:       7
HugePages_Free:        0
Hugepagesize:       2048 kB
Hugetlb:           14336 kB
"""

SLABINFO = """\
slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables
dentry 120000 126000 192 21 1 : tunables 0 0 0 : slabdata 6000 6000 0
ext4_inode_cache 3000 3100 1184 27 8 : tunables 0 0 0 : slabdata 115 115 0
"""


def test_parse_buddyinfo():
    info = parse_buddyinfo(BUDDYINFO + "\n")
    assert [(n, z) for n, z, _ in info] == [(0, "DMA"), (0, "DMA32"), (0, "Normal")]
    assert info[2][2] == [1005, 1970, 1771, 914, 559, 173, 68, 25, 17, 109, 4871]
    assert all(len(c) == 11 for _, _, c in info)  # orders 0..MAX_PAGE_ORDER (10)


def test_meminfo_in_kb_or_bytes_hugepage_counts_stay_counts():
    kb, b = parse_meminfo(MEMINFO), parse_meminfo(MEMINFO, in_bytes=True)
    assert kb["MemAvailable"] == 24043424 and b["MemAvailable"] == 24043424 * 1024
    assert kb["HugePages_Total"] == b["HugePages_Total"] == 7
    assert b["Hugepagesize"] == 2 << 20


def test_vmstat_delta_only_names_in_both():
    assert vmstat_delta({"a": 1, "b": 5}, {"a": 4, "c": 9}, ("a", "b", "c")) == {"a": 3}


@pytest.fixture
def root(tmp_path):
    (tmp_path / "proc/sys/vm").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text(MEMINFO)
    (tmp_path / "proc/buddyinfo").write_text(BUDDYINFO)
    (tmp_path / "proc/slabinfo").write_text(SLABINFO)
    (tmp_path / "proc/sys/vm/nr_hugepages").write_text("7\n")
    return ProcFS(str(tmp_path))


def test_procfs_reads_under_its_root(root):
    assert root.value("/proc/sys/vm/nr_hugepages") == "7"
    assert root.nr_hugepages() == 7
    assert root.hugepage_size_bytes() == 2 << 20
    assert root.meminfo()["MemFree"] == 23458104
    assert root.meminfo(in_bytes=True)["MemFree"] == 23458104 * 1024
    assert root.buddyinfo()[1][1] == "DMA32"
    assert root.slabinfo()["dentry"]["active_objs"] == 120000


def test_workloads_read_through_procfs(root, monkeypatch):
    for mod in (pressure, slab_dentries, vmalloc_fallback):
        monkeypatch.setattr(mod, "PROC", root)
    # max(2 GiB, 10% of MemTotal in bytes)
    assert pressure.safe_margin_bytes() == int(24684084 * 1024 * 0.10)
    assert pressure.ballast_pages_for(0, margin=0) == 24043424 * 1024 // (2 << 20)
    assert slab_dentries.snapshot(["dentry", "nope"]) == {"dentry": 120000, "nope": None}


def test_fallback_counts_free_2mib_blocks_where_gfp_kernel_can_take_them():
    bi = [(0, "DMA", [0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 3]),
          (0, "DMA32", [3, 3, 3, 3, 0, 2, 1, 3, 2, 2, 478]),
          (0, "Normal", [108, 105, 55, 25, 14, 8, 5, 4, 4, 2, 193])]
    # order 9 counts once, order 10 twice; ZONE_DMA's blocks are kept back
    assert vmalloc_fallback._order9(bi) == 2 + 2 * 478 + 2 + 2 * 193
    frag = [(0, z, c[:9] + [0, 0]) for _n, z, c in bi]
    assert vmalloc_fallback._order9(frag) == 0
    assert vmalloc_fallback._selected("always defer defer+madvise [madvise] never") == "madvise"


def _pagetypeinfo(rows):
    """/proc/pagetypeinfo as the kernel lays it out, with these free-page rows."""
    lines = ["Page block order: 9", "Pages per block:  512", "",
             "Free pages count per migrate type at order" + "".join("%7d" % o for o in range(11))]
    lines += ["Node    0, zone %8s, type %12s" % (zone, mtype) + "".join("%7d" % c for c in counts)
              for zone, mtype, counts in rows]
    lines += ["", "Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic",
              "Node 0, zone   Normal           72        10659           20            1"]
    return "\n".join(lines) + "\n"


PAGETYPEINFO = _pagetypeinfo([
    ("DMA", "Unmovable", [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]),
    ("DMA", "HighAtomic", [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
    ("DMA32", "Movable", [118, 120, 117, 119, 120, 119, 118, 121, 121, 12, 684]),
    ("DMA32", "Isolate", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    ("Normal", "Movable", [1991, 2315, 2322, 2303, 2264, 2183, 2137, 2081, 2012, 206, 4040]),
    ("Normal", "HighAtomic", [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])])


def test_fallback_counts_the_reserve_no_gfp_kernel_allocation_is_given():
    # HighAtomic and Isolate blocks of order >= 9 in DMA32/Normal/Movable:
    # Normal's reserved order-9 block, DMA32's isolated order-10 (two); not
    # ZONE_DMA's, not the Movable ones, not the block counts below.
    assert vmalloc_fallback._reserved_order9(PAGETYPEINFO) == 1 + 2
    assert vmalloc_fallback._reserved_order9("") == 0


def test_kswapd_pids_are_kthreadds_children_named_kswapd(tmp_path):
    def proc(pid, stat):
        (tmp_path / "proc" / str(pid)).mkdir(parents=True)
        (tmp_path / "proc" / str(pid) / "stat").write_text(stat)

    proc(45, "45 (kswapd0) S 2 0 0 0 -1 10485824 0 0 0 0\n")
    proc(46, "46 (kswapd1) S 2 0 0 0 -1 10485824 0 0 0 0\n")
    proc(900, "900 (kswapd (fake)) R 1 900 900 0 -1 4194304 0 0\n")   # a process, not a kthread
    proc(3, "3 (pool_workqueue_release) S 2 0 0 0 -1 69238880 0\n")
    (tmp_path / "proc" / "7").mkdir()                               # gone while listed
    (tmp_path / "proc" / "meminfo").write_text("MemTotal: 1 kB\n")
    assert ProcFS(str(tmp_path)).kswapd_pids() == [45, 46]
