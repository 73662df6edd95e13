"""Never-drains: did a reclaimable slab cache fall after shrinker pressure, and why not.

A cache with SLAB_RECLAIM_ACCOUNT (``reclaim_account`` in /sys/kernel/slab)
is expected to shrink when do_shrink_slab() runs (vmscan:mm_shrink_slab_*).
``never_drains()`` judges one cache's /proc/slabinfo active_objs samples
against the pressure episodes; ``drain_reason()`` names the likeliest cause
from /proc/sys/fs/{dentry,inode}-state, the cache's sysfs attributes, the
kernel log and what the shrinkers counted.  Pure: recorded samples in,
verdicts out.

``dentry`` is also judged on the dentries in use (dentry-state nr_dentry -
nr_unused: not on the LRU, so no shrinker may free them), by
``pinned_never_drains()``.  The cache's active_objs mixes pinned dentries
with unused ones that drop_caches does free: on the development VM every
file a process holds open soon has an unused /proc/PID/fd/N dentry and proc
inode too (the sandbox's init looks every fd up), so a cache holding N pinned
dentries fell by half and passed for drained.  The in-use count isolates the
pinned ones.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["never_drains", "pinned_never_drains", "around_pressure", "drain_reason",
           "DRAIN_FRACTION", "MIN_GROWTH", "MIN_HELD", "SETTLE_NS", "BASIS_SLABINFO",
           "BASIS_DENTRY_STATE"]

# Never-drains: the cache fell by less than this fraction after pressure ...
DRAIN_FRACTION = 0.10
# ... and either kept at least this many of the objects it gained in the
# window before the pressure (gained minus fell), or held this many (objects
# of a large, long-lived leak).  What was kept, not what was gained: a cache
# with a large permanent base (6.1's inode_cache: ~11,800 objects at rest)
# that gave back most of its gain fell by less than DRAIN_FRACTION of its
# level and yet drained (Debian 6.1: gained 1,979, fell 1,224).
MIN_GROWTH = 1000
MIN_HELD = 200_000
# A sample this long after the last shrink counts as settled (dentries and
# inodes are freed after an RCU grace period, see d_free()/i_callback()).
SETTLE_NS = 500_000_000
# What a verdict's evidence was judged on.
BASIS_SLABINFO = "slabinfo"          # /proc/slabinfo active_objs of the cache
BASIS_DENTRY_STATE = "dentry-state"  # dentries in use: nr_dentry - nr_unused


def around_pressure(series: List[Tuple[int, int]], pressure: List[Tuple[int, int]],
                    ) -> Optional[Dict[str, Any]]:
    """Return one (ts_ns, count) series' level before and after the pressure
    episodes [(first_ns, last_ns)]: before, after, fell, growth_before, settled.

    None when there is no pressure, or no sample before or after it.
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
    return {"before": b, "after": a_after, "fell": b - a_after,
            "growth_before": b - min(before), "settled": bool(settled)}


def never_drains(series: List[Tuple[int, int]], pressure: List[Tuple[int, int]],
                 ) -> Optional[Dict[str, Any]]:
    """Decide from one cache's (ts_ns, active_objs) samples and the pressure
    episodes [(first_ns, last_ns)] whether it failed to drain.

    Returns the evidence (before, after, growth, fell, basis) when the cache
    did not fall by DRAIN_FRACTION after the pressure and kept MIN_GROWTH of
    what it gained before it (or is large); None when it drained, or there
    is nothing to judge.
    """
    ev = around_pressure(series, pressure)
    if ev is None:
        return None
    if ev["fell"] >= DRAIN_FRACTION * ev["before"]:
        return None          # it drained: never flag it
    if ev["growth_before"] - ev["fell"] < MIN_GROWTH and ev["before"] < MIN_HELD:
        return None          # it gave back what it built up (or built up little)
    ev["basis"] = BASIS_SLABINFO
    return ev


def pinned_never_drains(in_use: List[Tuple[int, int]], active: List[Tuple[int, int]],
                        pressure: List[Tuple[int, int]]) -> Optional[Dict[str, Any]]:
    """Decide whether dentries that built up before the pressure stayed pinned.

    ``in_use`` is (ts_ns, nr_dentry - nr_unused) from /proc/sys/fs/dentry-state
    (fs/dcache.c: nr_unused counts the dentries on the LRU, the only ones
    prune_dcache_sb() may free), ``active`` the cache's active_objs samples.
    Flags at least MIN_GROWTH in-use dentries gained before the pressure that
    did not fall by DRAIN_FRACTION after it; a large steady in-use count
    alone is not flagged (every busy machine has one).  The evidence has the
    in-use before/after and the cache's active_objs before/after.
    """
    ev = around_pressure(in_use, pressure)
    if ev is None or ev["growth_before"] < MIN_GROWTH:
        return None
    if ev["fell"] >= DRAIN_FRACTION * ev["before"]:
        return None
    ev["basis"] = BASIS_DENTRY_STATE
    act = around_pressure(active, pressure)
    ev["active_before"] = act["before"] if act else None
    ev["active_after"] = act["after"] if act else None
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
    if evidence.get("basis") == BASIS_DENTRY_STATE:
        return ("pinned", f"objects pinned: {evidence['after']} dentries in use after "
                f"the shrink, {evidence['growth_before']} of them gained before it "
                "(dentry-state nr_dentry - nr_unused: not on the LRU, held by open "
                "files, cwd or mounts)")
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
