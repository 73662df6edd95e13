"""Never-drains: did a reclaimable slab cache fall after shrinker pressure, and why not.

A cache with SLAB_RECLAIM_ACCOUNT (``reclaim_account`` in /sys/kernel/slab)
is expected to shrink when do_shrink_slab() runs (vmscan:mm_shrink_slab_*).
``never_drains()`` judges one cache's /proc/slabinfo active_objs samples
against the pressure episodes; ``drain_reason()`` names the likeliest cause
from /proc/sys/fs/{dentry,inode}-state, the cache's sysfs attributes, the
kernel log and what the shrinkers counted.  Pure: recorded samples in,
verdicts out.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["never_drains", "drain_reason", "DRAIN_FRACTION", "MIN_GROWTH", "MIN_HELD",
           "SETTLE_NS"]

# Never-drains: the cache fell by less than this fraction after pressure ...
DRAIN_FRACTION = 0.10
# ... and either grew by at least this many objects in the window before the
# pressure, or held this many (objects of a large, long-lived leak).
MIN_GROWTH = 1000
MIN_HELD = 200_000
# A sample this long after the last shrink counts as settled (dentries and
# inodes are freed after an RCU grace period, see d_free()/i_callback()).
SETTLE_NS = 500_000_000


def never_drains(series: List[Tuple[int, int]], pressure: List[Tuple[int, int]],
                 ) -> Optional[Dict[str, Any]]:
    """Decide from one cache's (ts_ns, active_objs) samples and the pressure
    episodes [(first_ns, last_ns)] whether it failed to drain.

    Returns the evidence (before, after, growth, fell) when the cache did not
    fall by DRAIN_FRACTION after the pressure although it had grown (or was
    large) before it; None when it drained, or there is nothing to judge.
    """
    if not pressure or not series:
        return None
    first, last = pressure[0][0], pressure[-1][1]
    before = [a for t, a in series if t <= first]
    if not before:
        return None
    b = before[-1]
    # The first sample after the pressure settled (RCU frees done) judges
    # it; later falls have other causes (the holder let go).
    settled = [a for t, a in series if t >= last + SETTLE_NS]
    after = settled[:1] or [a for t, a in series if t > last][-1:]
    if not after:
        return None
    a_after = after[0]
    fell = b - a_after
    growth = b - min(before)
    ev = {"before": b, "after": a_after, "fell": fell,
          "growth_before": growth, "settled": bool(settled)}
    if fell >= DRAIN_FRACTION * b:
        return None          # it drained: never flag it
    if growth < MIN_GROWTH and b < MIN_HELD:
        return None          # nothing built up that should have gone
    return ev


def drain_reason(name: str, info: Dict[str, Any], evidence: Dict[str, Any],
                 destroyed: Dict[str, Dict[str, Any]],
                 fs_state: Dict[str, Dict[str, Dict[str, int]]],
                 freeable: Sequence[int]) -> Tuple[str, str]:
    """Return (reason, detail) for a cache that did not drain.

    ``info`` is the cache's /sys/kernel/slab attributes, ``fs_state`` the
    recorded dentry/inode-state by when, ``freeable`` each shrinker's last
    count of freeable objects.
    """
    if name in destroyed:
        return ("destroyed_with_objects",
                "destroyed with live objects: {}".format(destroyed[name].get("why", "")))
    aliases = info.get("aliases") or 0
    fs_last = fs_state.get("end") or fs_state.get("last", {})
    if name == "dentry" and "dentry_state" in fs_last:
        st = fs_last["dentry_state"]
        used = st["nr_dentry"] - st["nr_unused"]
        if st["nr_dentry"] and used >= 0.5 * st["nr_dentry"]:
            return ("pinned", f"objects pinned: {used} of {st['nr_dentry']} dentries in use "
                    "(not on the LRU: held by open files, cwd or mounts)")
    if "inode" in name and "inode_state" in fs_last:
        st = fs_last["inode_state"]
        used = st["nr_inodes"] - st["nr_unused"]
        if st["nr_inodes"] and used >= 0.5 * st["nr_inodes"]:
            return ("pinned", f"objects pinned: {used} of {st['nr_inodes']} inodes in use "
                    "(referenced: open files, dentries still holding them)")
    if not evidence.get("settled") and (info.get("destroy_by_rcu") or
                                        name in ("dentry",) or "inode" in name):
        return ("rcu", "objects waiting for an RCU grace period: no sample came "
                "%.1fs after the last shrink" % (SETTLE_NS / 1e9))
    if name == "buffer_head":
        # try_to_free_buffers() runs when the page cache page goes; no
        # shrinker frees buffer heads, so drop_caches=2 leaves them
        return ("page_cache", "buffer heads are freed with the page-cache pages "
                "they map (drop_caches 1, LRU reclaim), not by any shrinker")
    if aliases > 0:
        return ("merged", f"merged cache shared with {aliases} other caches: their "
                "objects keep it from draining")
    if freeable and evidence["before"] and max(freeable) < 0.1 * evidence["before"]:
        return ("pinned", f"objects pinned: no shrinker counted more than {max(freeable)} "
                "freeable objects")
    return ("in_use", "objects in use (no shrinker could free them)")
