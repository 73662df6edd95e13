"""Shrinkers: one do_shrink_slab() caller each, who ran it and what it freed.

Fed by ``vmscan:mm_shrink_slab_start/end`` (``ShrinkSlab`` records).  A
shrinker is keyed by its ``struct shrinker *`` (``shr``) and named by its
``scan_objects`` callback (``shrink``), symbolized live, and by what it
shrinks where the kernel says (``owners``): ``super_cache_scan (ext4 vda)``,
``zs_shrinker_scan (zram1)``.  Those names are stable across runs, so
``diff`` and the exporter match shrinkers by them.  The reclaim that
called it comes from the BPF side's reclaim context, kswapd's comm, or
priority 0 outside any reclaim: drop_slab() (``echo 2 > drop_caches``).
Pure: events in, per-shrinker report rows out.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Optional, Set

from trace_reclaim.stats import LatencyStats
from trace_reclaim.tracers.slab.records import (SLAB_CTX_DIRECT, SLAB_CTX_MEMCG, SLAB_CTX_NODE,
                                                ShrinkSlab)

__all__ = ["Shrinker", "shrink_context", "owner_text", "shrinker_name", "shrinker_row",
           "FUTILE_CALLS", "MAX_DIRECT_PIDS", "OTHER"]

MAX_DIRECT_PIDS = 16
# The row that gathers shrinkers beyond MAX_SHRINKERS.
OTHER = "[other]"
# A shrinker "asked again and again that frees nothing": this many calls
# with objects to scan and not one object freed.
FUTILE_CALLS = 10


def shrink_context(ev: ShrinkSlab) -> str:
    """Return the reclaim that called the shrinker (kswapd, direct, drop_caches, ...)."""
    if ev.comm.startswith("kswapd"):
        return "kswapd"
    if ev.context == SLAB_CTX_DIRECT:
        return "direct"
    if ev.context == SLAB_CTX_MEMCG:
        return "memcg"
    if ev.context == SLAB_CTX_NODE:
        return "node_reclaim"
    # drop_slab() calls shrink_slab() at priority 0 outside any reclaim;
    # reclaim only reaches priority 0 after 12 failed passes, inside
    # direct/memcg reclaim or kswapd, which are all matched above.
    if ev.priority == 0:
        return "drop_caches"
    return "other"


class Shrinker:
    """One shrinker's counts over the window (and the current interval)."""

    __slots__ = ("shr", "shrink", "calls", "asked", "scanned", "freed", "lat",
                 "contexts", "direct_pids", "nids", "min_priority", "items_last",
                 "items_max", "futile", "futile_run", "futile_run_max", "iv_calls",
                 "iv_freed", "drop_comms")

    def __init__(self, shr: int, shrink: int) -> None:
        self.shr = shr
        self.shrink = shrink
        self.calls = self.asked = self.scanned = self.freed = 0
        self.lat = LatencyStats()
        self.contexts: Counter[str] = Counter()
        self.direct_pids: Counter[str] = Counter()
        self.drop_comms: Counter[str] = Counter()
        self.nids: Set[int] = set()
        self.min_priority = 99
        self.items_last = self.items_max = 0
        self.futile = self.futile_run = self.futile_run_max = 0
        self.iv_calls = self.iv_freed = 0


def owner_text(owner: Optional[Dict[str, str]]) -> Optional[str]:
    """What a shrinker shrinks, as recorded by the slab tracer (tracers/slab/owners.py).

    A superblock is "<fs type> <s_id>": ``ext4 vda``.  alloc_super() sets
    s_id to the type's name and only block filesystems replace it with
    their device, so a superblock whose s_id is its type's name (tmpfs,
    proc, cgroup) is told apart by its anonymous device, as
    /proc/self/mountinfo shows it: ``tmpfs 0:25``.
    """
    if not owner:
        return None
    if "fs_type" in owner or "s_id" in owner:
        fs, ident = owner.get("fs_type") or "?", owner.get("s_id") or ""
        if not ident or ident == fs:
            ident = owner.get("s_dev") or "?"
        return f"{fs} {ident}"
    for key in ("zs_pool", "journal", "name"):
        if owner.get(key):
            return owner[key]
    return None


def shrinker_name(s: Shrinker, shrinkers: Dict[int, Shrinker], symbols: Dict[int, str],
                  owners: Optional[Dict[int, Dict[str, str]]] = None) -> str:
    """The callback's symbol and what it shrinks: ``super_cache_scan (ext4 vda)``.

    Shrinkers the kernel gives no owner for (and every shrinker of a
    recording made without ``owners``) go by their callback, numbered when
    several share it: ``mb_cache_scan#2`` (numbers that change from run to
    run: they follow the pointers' order).
    """
    if s.shr == 0:
        return OTHER
    sym = symbols.get(s.shrink) or f"0x{s.shrink:x}"
    if owners is not None:
        text = owner_text(owners.get(s.shr))
        if text:
            return f"{sym} ({text})"
    same = [x for x in shrinkers.values() if x.shrink == s.shrink and x.shr and (
        owners is None or not owner_text(owners.get(x.shr)))]
    if len(same) > 1:
        # several unnamed instances (super_cache_scan: one per superblock)
        idx = sorted(x.shr for x in same).index(s.shr) + 1
        return f"{sym}#{idx}"
    return sym


def shrinker_row(s: Shrinker, name: str, symbols: Dict[int, str]) -> Dict[str, Any]:
    """The shrinker as the report lists it."""
    summ = s.lat.summary()
    futile = s.calls >= FUTILE_CALLS and s.freed == 0 and s.asked > 0
    return {
        "name": name, "callback": symbols.get(s.shrink),
        "shrink_addr": f"0x{s.shrink:x}", "shr": f"0x{s.shr:x}",
        "calls": s.calls, "objects": s.items_last, "objects_max": s.items_max,
        "asked": s.asked, "scanned": s.scanned, "freed": s.freed,
        "time_ns": summ["total"], "p50_ns": summ["p50"], "p99_ns": summ["p99"],
        "max_ns": summ["max"], "percentiles_exact": s.lat.exact,
        "nids": sorted(s.nids), "min_priority": s.min_priority,
        "contexts": dict(s.contexts.most_common()),
        "direct_reclaim_by": dict(s.direct_pids.most_common()),
        "drop_caches_by": dict(s.drop_comms.most_common()),
        "futile_calls": s.futile, "futile_run_max": s.futile_run_max,
        "frees_nothing": futile,
    }
