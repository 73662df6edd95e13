"""Render the slab section of the text report (under 80 columns).

Pure: the section ``SlabAggregator.report()`` built (also what ``report -j``
prints) in, lines out.  Three parts: shrinkers (vmscan:mm_shrink_slab_*),
per-cache kmem_cache_alloc/free counts and never-drains verdicts, and the
kmem_cache lifecycle with merged caches and the kernel's warnings.
"""

from __future__ import annotations

from typing import Any, Dict, List

from trace_reclaim.report import fmt_ns, table
from trace_reclaim.tracers.slab.drain import BASIS_DENTRY_STATE

__all__ = ["render"]


def render(section: Dict[str, Any]) -> List[str]:
    """Return the slab section's text lines."""
    return (shrinker_lines(section) + [""] + cache_lines(section) + [""]
            + lifecycle_lines(section))


def shrinker_lines(section: Dict[str, Any]) -> List[str]:
    """Shrinkers by time spent, who ran them, and the ones that free nothing."""
    out: List[str] = []
    sh = section["shrinkers"]
    ctx = ", ".join(f"{k} {v}" for k, v in section["contexts"].items()) or "none"
    out.append(f"Shrinkers: {sum(s['calls'] for s in sh)} calls "
               f"({ctx}); drop_caches runs {section['drop_caches_runs']}")
    if sh:
        rows = []
        for s in sh[:15]:
            who = ",".join(s["contexts"]) or "-"
            rows.append([s["name"][:26], s["calls"], s["objects"], s["scanned"],
                         s["freed"], fmt_ns(s["time_ns"]), fmt_ns(s["p99_ns"]),
                         s["min_priority"], who[:18]])
        out += table(["SHRINKER", "CALLS", "OBJS", "SCANNED", "FREED", "TIME",
                      "P99", "PRIO", "CONTEXT"], rows)
        if len(sh) > 15:
            out.append(f"  ... {len(sh) - 15} more shrinkers (see -j)")
        for s in sh:
            if s["direct_reclaim_by"]:
                out.append(f"  {s['name']}: direct reclaim by pid "
                           + ", ".join(s["direct_reclaim_by"]))
            if s["frees_nothing"]:
                out.append(f"  ! {s['name']}: asked {s['calls']} times to scan "
                           f"{s['asked']} objects, freed nothing")
    return out


def cache_lines(section: Dict[str, Any]) -> List[str]:
    """Caches that never drained, then per-cache alloc/free against /proc/slabinfo."""
    out: List[str] = []
    nd = [c for c in section["caches"] if c["never_drains"]]
    out.append(f"Caches that never drained: {len(nd) or 'none'}")
    for c in nd:
        ev = c["evidence"] or {}
        if ev.get("basis") == BASIS_DENTRY_STATE:
            out.append(f"  ! {c['name']}: {ev['before']} in use before shrink -> "
                       f"{ev['after']} after (fell {ev['fell']}; dentry-state)")
            out.append(f"      active_objs {ev.get('active_before', '-')} -> "
                       f"{ev.get('active_after', '-')}: only unused dentries went")
        else:
            out.append(f"  ! {c['name']}: active {ev.get('before', c['active_start'])} "
                       f"before shrink -> {ev.get('after', c['active_end'])} after"
                       f" (fell {ev.get('fell', '-')})")
        out.append(f"      {c['reason']}: {c['reason_detail']}")
    grew = [c for c in section["caches"] if c["counted"]][:10]
    if grew:
        out.append("Per-cache kmem_cache_alloc/free (largest net change):")
        rows = [[c["name"][:22], c["allocs"], c["frees"], c["net"],
                 "-" if c["active_start"] is None else c["active_start"],
                 "-" if c["active_end"] is None else c["active_end"],
                 "-" if c["slabinfo_delta"] is None else c["slabinfo_delta"]]
                for c in grew]
        out += table(["CACHE", "ALLOCS", "FREES", "NET", "ACT START", "ACT END",
                      "SLAB DELTA"], rows)
    out += untraced_lines(section)
    if section["caches_not_counted_map_full"]:
        out.append(f"  {section['caches_not_counted_map_full']} events not counted "
                   "(per-cache map full)")
    return out


def untraced_lines(section: Dict[str, Any]) -> List[str]:
    """Caches whose traced net and /proc/slabinfo disagree beyond the per-CPU slack."""
    out: List[str] = []
    for flag, head, why in (
            ("frees_untraced", "net above /proc/slabinfo: frees no kmem_cache_free "
             "reported", "(kfree, kfree_rcu, kmem_cache_free_bulk)"),
            ("allocs_untraced", "net below /proc/slabinfo: allocations no "
             "kmem_cache_alloc reported", "(kmem_cache_alloc_bulk, or tasks tracing "
             "cannot see)")):
        caches = [c for c in section["caches"] if c.get(flag)]
        if caches:
            out.append("  " + head)
            out.append(f"    {why}:")
            line = ""
            for c in caches[:6]:
                item = f"{c['name']} {c['net_minus_slabinfo']:+d}"
                if line and len(line) + len(item) + 2 > 78:
                    out.append(line + ",")
                    line = ""
                line = f"{line}, {item}" if line else f"      {item}"
            out.append(line)
    return out


def lifecycle_lines(section: Dict[str, Any]) -> List[str]:
    """kmem_cache creations and destructions, merged caches, kernel warnings."""
    out: List[str] = []
    lc = section["lifecycle"]
    out.append(f"kmem_cache lifecycle: {len(lc) or 'none'} "
               f"({section['lifecycle_method']})")
    for ev in lc[:30]:
        what = ev["event"]
        extra = []
        if ev.get("alias_of"):
            extra.append(f"alias of {ev['alias_of']} ({ev['merged_dir']}, "
                         f"shared by {ev['shared_by']})")
        elif ev.get("merged_dir"):
            extra.append(f"merged dir {ev['merged_dir']}")
        if ev.get("objects_last_seen"):
            extra.append(f"{ev['objects_last_seen']} objects at the last sample, "
                         f"{ev['objects_at_destroy']} at destroy")
        if ev.get("note"):
            extra.append(ev["note"])
        out.append(f"  {what:<7} {ev['name']}: " + "; ".join(extra))
    for m in section["merged"]:
        state = "still exists" if m["exists"] else "is gone"
        out.append(f"  merged cache {m['dir']} ({m['name']}) {state}: "
                   f"{m['aliases'] if m['aliases'] is not None else '-'} aliases; "
                   f"{m['links_total']} names link to it")
    if any(ev.get("stale_link") for ev in lc):
        out.append("  Destroying a merged alias only drops the merged cache's "
                   "refcount: the cache and the alias's /sys/kernel/slab link stay.")
    for line in section["kmsg"]:
        out.append(f"  kernel: {line[:74]}")
    return out
