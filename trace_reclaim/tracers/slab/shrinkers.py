"""Shrinkers: one do_shrink_slab() caller each, who ran it and what it freed.

Fed by ``vmscan:mm_shrink_slab_start/end`` (``ShrinkSlab`` records).  A
shrinker is keyed by its ``struct shrinker *`` (``shr``) and named by its
``scan_objects`` callback (``shrink``), symbolized live.  The reclaim that
called it comes from the BPF side's reclaim context, kswapd's comm, or
priority 0 outside any reclaim: drop_slab() (``echo 2 > drop_caches``).
Pure: events in, per-shrinker report rows out.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Set

from trace_reclaim.stats import LatencyStats
from trace_reclaim.tracers.slab.records import (SLAB_CTX_DIRECT, SLAB_CTX_MEMCG, SLAB_CTX_NODE,
                                                ShrinkSlab)

__all__ = ["Shrinker", "shrink_context", "shrinker_name", "shrinker_row", "FUTILE_CALLS",
           "MAX_DIRECT_PIDS", "OTHER"]

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


def shrinker_name(s: Shrinker, shrinkers: Dict[int, Shrinker], symbols: Dict[int, str]) -> str:
    """The callback's symbol, numbered when several shrinkers share it."""
    if s.shr == 0:
        return OTHER
    sym = symbols.get(s.shrink) or f"0x{s.shrink:x}"
    same = [x for x in shrinkers.values() if x.shrink == s.shrink and x.shr]
    if len(same) > 1:
        # several instances (super_cache_scan: one per superblock)
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
