"""Render the slab section of the text report (under 80 columns).

Pure: the section ``SlabAggregator.report()`` built (also what ``report -j``
prints) in, lines out.  Three parts: shrinkers (vmscan:mm_shrink_slab_*),
per-cache kmem_cache_alloc/free counts and never-drains verdicts, and the
kmem_cache lifecycle with merged caches and the kernel's warnings.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Tuple

from trace_reclaim.report import NBSP, fmt_ns, table, wrap
from trace_reclaim.tracers.slab.drain import BASIS_DENTRY_STATE

__all__ = ["render", "context_letters", "CONTEXT_LETTERS"]


def render(section: Dict[str, Any]) -> List[str]:
    """Return the slab section's text lines."""
    return (shrinker_lines(section) + [""] + cache_lines(section) + [""]
            + lifecycle_lines(section))


#: One letter per reclaim context in the shrinker table's CTX column.
CONTEXT_LETTERS = {"kswapd": "k", "direct": "d", "memcg": "m", "node_reclaim": "n",
                   "drop_caches": "c", "other": "o"}


def context_letters(contexts: Dict[str, int]) -> str:
    """The reclaim contexts that called a shrinker, as letters in a fixed order."""
    return "".join(ch for ctx, ch in CONTEXT_LETTERS.items() if contexts.get(ctx)) or "-"


def drop_runs_text(runs: int, exact: bool) -> str:
    """drop_caches runs as counted: inferred ones are a lower bound, ">=N"
    (tracers/slab/__init__.py, DROP_INFERRED); none inferred is exact, as
    every run calls the shrinkers."""
    return f"{runs}" if exact or not runs else f">={runs}"


def shrinker_lines(section: Dict[str, Any]) -> List[str]:
    """Shrinkers by time spent, who ran them, and the ones that free nothing."""
    out: List[str] = []
    sh = section["shrinkers"]
    ctx = ", ".join(f"{k} {v}" for k, v in section["contexts"].items()) or "none"
    runs = drop_runs_text(section["drop_caches_runs"], section.get("drop_caches_runs_exact", True))
    out += wrap(f"Shrinkers: {sum(s['calls'] for s in sh)} calls "
                f"({ctx}); drop_caches{NBSP}runs{NBSP}{runs}", hang="  ")
    if not sh:
        return out
    rows = []
    for s in sh[:15]:
        rows.append([s["name"], s["calls"], s["objects"], s["scanned"], s["freed"],
                     fmt_ns(s["time_ns"]), fmt_ns(s["p99_ns"]), s["min_priority"],
                     context_letters(s["contexts"])])
    # A name too long for its column (super_cache_scan (ext4 vda1)) gets
    # a line of its own rather than losing its end.
    out += table(["SHRINKER", "CALLS", "OBJS", "SCANNED", "FREED", "TIME", "P99", "PR",
                  "CTX"], rows, pad=0, flex=0, own_line=True)
    if len(sh) > 15:
        out.append(f"  ... {len(sh) - 15} more shrinkers (see -j)")
    used = [f"{ch} {c}" for c, ch in CONTEXT_LETTERS.items()
            if any(s["contexts"].get(c) for s in sh[:15])]
    out += wrap("(OBJS: freeable at the last call; PR: lowest reclaim priority; CTX: "
                + ", ".join(used) + ")", "  ", hang="   ")
    out += direct_reclaim_lines(sh)
    for s in sh:
        if s["frees_nothing"]:
            out += wrap(f"! {s['name']}: asked {s['calls']} times to scan "
                        f"{s['asked']} objects, freed nothing", "  ", hang="    ")
    return out


def direct_reclaim_lines(sh: List[Dict[str, Any]]) -> List[str]:
    """Who ran shrinkers from direct reclaim: one line per set of tasks.

    Shrinkers called by the same tasks share a line, so ten superblocks
    reclaimed by one task are one line, not ten; xN is the task's calls
    summed over those shrinkers.
    """
    groups: Dict[Tuple[str, ...], List[Dict[str, Any]]] = {}
    for s in sh:
        if s["direct_reclaim_by"]:
            groups.setdefault(tuple(sorted(s["direct_reclaim_by"])), []).append(s)
    out: List[str] = []
    for members in groups.values():
        calls: Counter[str] = Counter()
        for s in members:
            calls.update(s["direct_reclaim_by"])
        # no-break spaces: a line may end between tasks or names, not inside one
        who = ", ".join(f"{p} x{n}".replace(" ", NBSP) for p, n in calls.most_common())
        out += wrap(f"direct reclaim by pid {who}: "
                    + ", ".join(s["name"].replace(" ", NBSP) for s in members),
                    "  ", hang="    ")
    return out


def cache_lines(section: Dict[str, Any]) -> List[str]:
    """Caches that never drained, then per-cache alloc/free against /proc/slabinfo."""
    out: List[str] = []
    nd = [c for c in section["caches"] if c["never_drains"]]
    out.append(f"Caches that never drained: {len(nd) or 'none'}")
    for c in nd:
        ev = c["evidence"] or {}
        if ev.get("basis") == BASIS_DENTRY_STATE:
            out += wrap(f"! {c['name']}: {ev['before']} in use before shrink -> "
                        f"{ev['after']} after (fell {ev['fell']}; dentry-state)",
                        "  ", hang="    ")
            out += wrap(f"active_objs {ev.get('active_before', '-')} -> "
                        f"{ev.get('active_after', '-')} (unused dentries included)",
                        "      ", hang="        ")
        else:
            out += wrap(f"! {c['name']}: active {ev.get('before', c['active_start'])} "
                        f"before shrink -> {ev.get('after', c['active_end'])} after"
                        f" (fell {ev.get('fell', '-')})", "  ", hang="    ")
        out += wrap(f"{c['reason']}: {c['reason_detail']}", "      ", hang="        ")
    grew = [c for c in section["caches"] if c["counted"]][:10]
    if grew:
        out.append("Per-cache kmem_cache_alloc/free (largest net change):")
        rows = [[c["name"], c["allocs"], c["frees"], c["net"],
                 "-" if c["active_start"] is None else c["active_start"],
                 "-" if c["active_end"] is None else c["active_end"],
                 "-" if c["slabinfo_delta"] is None else c["slabinfo_delta"]]
                for c in grew]
        out += table(["CACHE", "ALLOCS", "FREES", "NET", "ACT START", "ACT END",
                      "SLAB DELTA"], rows, flex=0, own_line=True)
    out += untraced_lines(section)
    if section["caches_not_counted_map_full"]:
        out += wrap(f"{section['caches_not_counted_map_full']} events not counted "
                    "(per-cache map full)", "  ")
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
            out += wrap(f"{head} {why}:", "  ", hang="    ")
            out += wrap(", ".join(f"{c['name']}{NBSP}{c['net_minus_slabinfo']:+d}"
                                  for c in caches[:6]), "      ")
    return out


def lifecycle_lines(section: Dict[str, Any]) -> List[str]:
    """kmem_cache creations and destructions, merged caches, kernel warnings."""
    out: List[str] = []
    lc = section["lifecycle"]
    out += wrap(f"kmem_cache lifecycle: {len(lc) or 'none'} "
                f"({section['lifecycle_method']})", hang="  ")
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
        out += wrap(f"{what:<7} {ev['name']}: " + "; ".join(extra), "  ", hang="          ")
    for m in section["merged"]:
        state = "still exists" if m["exists"] else "is gone"
        out += wrap(f"merged cache {m['dir']} ({m['name']}) {state}: "
                    f"{m['aliases'] if m['aliases'] is not None else '-'} aliases; "
                    f"{m['links_total']} names link to it", "  ", hang="    ")
    if any(ev.get("stale_link") for ev in lc):
        out += wrap("Destroying a merged alias only drops the merged cache's "
                    "refcount: the cache and the alias's /sys/kernel/slab link stay.",
                    "  ")
    for line in section["kmsg"]:
        out += wrap(f"kernel: {line}", "  ", hang="    ")
    return out
