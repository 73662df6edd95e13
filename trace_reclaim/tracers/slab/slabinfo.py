"""What /proc says about slab caches: /proc/slabinfo and the dcache/icache counters.

``read_slabinfo()`` and ``read_fs_state()`` run only inside
``SlabTracer.sample()`` in a live session; what they return is recorded, so
replay needs none of it.  ``slabinfo_tolerance()`` is pure: how far SLUB's
/proc/slabinfo (CONFIG_SLUB, mm/slub.c get_slabinfo()) may lag the traced
kmem_cache_alloc/free counts.  /proc/sys/fs/dentry-state and inode-state
(fs/dcache.c, fs/inode.c) say how many dentries and inodes are in use, which
is what keeps ``dentry`` and the inode caches from draining.
"""

from __future__ import annotations

from typing import Any, Dict

__all__ = ["slabinfo_tolerance", "read_slabinfo", "read_fs_state",
           "parse_dentry_state", "parse_inode_state"]


def slabinfo_tolerance(cache: Dict[str, Any], ncpus: int) -> int:
    """How far /proc/slabinfo active_objs may differ from allocs - frees.

    SLUB's get_slabinfo() reports active_objs = total objects - free objects
    on the *node* partial lists (count_partial_free_approx()).  Free objects
    in each CPU's active slab and on its per-CPU partial list still count as
    active.  Per CPU that is at most one slab (objs_per_slab) plus the per-CPU
    partial slabs, capped by slub_set_cpu_partial() at about 2 * cpu_partial
    objects rounded up to whole slabs; either end of the interval can be
    anywhere in that range.
    """
    per_slab = cache.get("objs_per_slab") or 1
    cpu_partial = cache.get("cpu_partial") or 0
    partial_slabs = -(-2 * cpu_partial // per_slab) if cpu_partial else 0
    return ncpus * per_slab * (1 + partial_slabs)


def read_slabinfo(procfs: Any, when: str, state: Dict[str, Any],
                  data: Dict[str, Any]) -> None:
    """Put /proc/slabinfo into ``data``: every row at start and end, changed rows at ticks.

    ``state["slabinfo"]`` holds the previous read; a cache created or
    destroyed since then makes the read a full one (``slabinfo_full``).
    """
    text = procfs.try_read("/proc/slabinfo")
    if text is None:
        return
    from trace_reclaim.procfs import parse_slabinfo

    si = {n: [r["active_objs"], r["num_objs"], r["objsize"], r["objperslab"]]
          for n, r in parse_slabinfo(text).items()}
    full = when != "tick"
    prev_si = state["slabinfo"]
    data["slabinfo"] = si if full else {
        n: r for n, r in si.items() if prev_si.get(n) != r}
    data["slabinfo_full"] = full or set(si) != set(prev_si)
    if data["slabinfo_full"]:
        data["slabinfo"] = si
    state["slabinfo"] = si


def read_fs_state(procfs: Any, data: Dict[str, Any]) -> None:
    """Put /proc/sys/fs/dentry-state and inode-state into ``data``."""
    for what, path, parse in (
            ("dentry_state", "/proc/sys/fs/dentry-state", parse_dentry_state),
            ("inode_state", "/proc/sys/fs/inode-state", parse_inode_state)):
        t = procfs.try_read(path)
        if t:
            data[what] = parse(t)


def parse_dentry_state(text: str) -> Dict[str, int]:
    """/proc/sys/fs/dentry-state: nr_dentry, nr_unused (on the LRU), nr_negative."""
    v = [int(x) for x in text.split()]
    out = {"nr_dentry": v[0], "nr_unused": v[1]} if len(v) >= 2 else {}
    if len(v) >= 5:
        out["nr_negative"] = v[4]
    return out


def parse_inode_state(text: str) -> Dict[str, int]:
    """/proc/sys/fs/inode-state: nr_inodes, nr_free_inodes (unused)."""
    v = [int(x) for x in text.split()]
    return {"nr_inodes": v[0], "nr_unused": v[1]} if len(v) >= 2 else {}
