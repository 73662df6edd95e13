"""Turn the report document into findings an SRE can act on.

Each finding has a ``kind``, a ``severity`` (info, warning, critical), a
one-line ``title``, its ``evidence`` (numbers taken from the trace, never
guessed) and ``meaning``: what the kernel was doing, in its own terms.

Pure: reads the report document (including ``episodes``) only.  Findings
over the ``slab`` and ``vmalloc`` sections read the field names those
tracers publish (``slab.shrinkers[]`` name/calls/scanned/freed/time_ns,
``slab.caches[]`` name/never_drains/reason, ``vmalloc.areas[]`` verdict) and
do nothing when a section is absent.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

__all__ = ["findings", "SEVERITIES", "KINDS"]

SEVERITIES = ("critical", "warning", "info")
KINDS = (
    "oom_kill", "zone_below_min", "direct_reclaim_kswapd_awake",
    "direct_reclaim_kswapd_asleep", "kswapd_re_wakes", "shrinker_frees_nothing",
    "cache_never_drains", "vmalloc_huge_fallback", "memory_shortage",
    "low_free_high_available",
)

# A kswapd episode with this many balance_pgdat() runs is "repeated re-waking".
RE_WAKES_PER_EPISODE = 5
# Free pages under this fraction of usable memory count as "low free".
LOW_FREE_FRACTION = 0.10
# MemAvailable under this fraction of usable memory is a real shortage.
SHORTAGE_FRACTION = 0.05


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms"


def _f(kind: str, severity: str, title: str, evidence: Dict[str, Any], meaning: str,
       episodes: Optional[List[int]] = None) -> Dict[str, Any]:
    return {"kind": kind, "severity": severity, "title": title, "evidence": evidence,
            "meaning": meaning, "episodes": episodes or []}


def _oom(doc: Dict[str, Any], eps: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    seen = set()
    for ep in eps:
        for v in ep.get("oom_kills", []):
            seen.add((v["ts_ns"], v["pid"]))
            seq = " -> ".join(p for p, _ in ep.get("sequence", []))
            out.append(_f(
                "oom_kill", "critical",
                f"OOM killer killed pid {v['pid']} ({v['comm']}), "
                f"anon-rss {v['anon_rss_kb'] // 1024} MiB, after episode {ep['id']}",
                {"victim_pid": v["pid"], "victim_comm": v["comm"],
                 "anon_rss_kb": v["anon_rss_kb"], "file_rss_kb": v["file_rss_kb"],
                 "shmem_rss_kb": v["shmem_rss_kb"], "oom_score_adj": v["oom_score_adj"],
                 "chosen_by": f"{v['by_pid']} ({v['by_comm']})", "episode": ep["id"],
                 "episode_direct_reclaim_stalls": ep["direct_reclaim_stalls"],
                 "episode_pages_reclaimed": ep["pages_reclaimed"],
                 "reclaim_retry_zone": ep.get("reclaim_retry_zone", 0),
                 "max_no_progress_loops": ep.get("reclaim_retry_max_no_progress_loops", 0),
                 "compact_retry": ep.get("compact_retry", 0),
                 "sequence": seq},
                "The allocator's slow path ran out of options in this order: it woke "
                "kswapd, reclaimed directly (direct reclaim), tried compaction for "
                "high orders, and should_reclaim_retry() gave up after "
                "MAX_RECLAIM_RETRIES (16) passes without progress with no zone able "
                "to reach its min watermark even counting all reclaimable pages; "
                "then out_of_memory() chose the task with the highest oom_badness() "
                "(rss + swap + page tables, scaled by oom_score_adj).",
                [ep["id"]]))
    for v in (doc.get("oom") or {}).get("victims", []):
        if (v["ts_ns"], v["pid"]) in seen:
            continue
        out.append(_f("oom_kill", "critical",
                      f"OOM killer killed pid {v['pid']} ({v['comm']}) outside any "
                      "traced reclaim episode",
                      {"victim_pid": v["pid"], "victim_comm": v["comm"],
                       "anon_rss_kb": v["anon_rss_kb"]},
                      "An OOM kill with no traced reclaim before it is usually a memcg "
                      "limit (memory.max) or a constrained cpuset/mempolicy OOM, not "
                      "global exhaustion."))
    return out


def _zone_below_min(doc: Dict[str, Any], eps: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    worst: Dict[Any, Dict[str, Any]] = {}
    for snap in doc.get("zones", []):
        for z in snap.get("zones", []):
            if z.get("free", 0) < z.get("min", 0):
                key = (z["node"], z["zone"])
                if key not in worst or z["free"] < worst[key]["free"]:
                    worst[key] = {"free": z["free"], "min": z["min"], "low": z.get("low"),
                                  "high": z.get("high"), "ts_ns": snap["ts_ns"],
                                  "episode": None}
    for ep in eps:
        wm = ep.get("watermarks") or {}
        for z in wm.get("zones", []):
            if z.get("state") == "below_min":
                key = (ep["node"], z["zone"])
                if key not in worst or z["free"] < worst[key]["free"]:
                    worst[key] = {"free": z["free"], "min": z["min"], "low": z.get("low"),
                                  "high": z.get("high"), "ts_ns": wm["ts_ns"],
                                  "episode": ep["id"]}
    out = []
    for (node, zone), w in sorted(worst.items()):
        out.append(_f(
            "zone_below_min", "critical",
            f"Node {node} zone {zone}: {w['free']} free pages, below min {w['min']}",
            {"node": node, "zone": zone, **w},
            "Below the min watermark only allocations allowed to dig into the "
            "reserves succeed (ALLOC_MIN_RESERVE for __GFP_HIGH, ALLOC_NON_BLOCK for "
            "atomic, ALLOC_OOM and PF_MEMALLOC reclaimers; before 6.3 ALLOC_HARDER); every "
            "other allocation that reaches __alloc_pages_slowpath() reclaims directly "
            "and stalls. kswapd was woken at the low watermark and keeps reclaiming "
            "until the high one.",
            [w["episode"]] if w["episode"] is not None else []))
    return out


def _direct_reclaim(eps: List[Dict[str, Any]], summary: Dict[str, Any]
                    ) -> List[Dict[str, Any]]:
    out = []
    awake = [e for e in eps if e["stalls_while_kswapd_awake"]]
    if awake:
        # The summary counts every episode, the list only those reported.
        n = summary.get("stalls_while_kswapd_awake") or \
            sum(e["stalls_while_kswapd_awake"] for e in awake)
        ns = sum(e["direct_reclaim_ns"] for e in awake)
        mx = max(e["direct_reclaim_max_ns"] for e in awake)
        pages = sum(e["pages_reclaimed"] for e in awake)
        tasks: Dict[str, int] = {}
        for e in awake:
            for s in e["stalls"]:
                key = f"{s['pid']} ({s['comm']})"
                tasks[key] = tasks.get(key, 0) + s["stalls"]
        top = sorted(tasks.items(), key=lambda kv: -kv[1])[:3]
        sev = "critical" if ns >= 1_000_000_000 or mx >= 100_000_000 else "warning"
        out.append(_f(
            "direct_reclaim_kswapd_awake", sev,
            f"{n} direct-reclaim stalls while kswapd was awake "
            f"({_ms(ns)} stalled, max {_ms(mx)}): kswapd is not keeping up",
            {"stalls": n, "stall_ns": ns, "max_stall_ns": mx, "pages_reclaimed": pages,
             "episodes": len(awake),
             "kswapd_wakes": sum(e["kswapd_wakes"] for e in awake),
             "top_tasks": [f"{k} x{v}" for k, v in top]},
            "kswapd was reclaiming, yet free pages still fell below the min "
            "watermark (or no free block of the requested order existed), so "
            "allocating tasks reclaimed synchronously in "
            "__alloc_pages_direct_reclaim() and paid the latency themselves. The "
            "allocation rate exceeds kswapd's reclaim rate: raise "
            "vm.watermark_scale_factor (wakes kswapd earlier, gives it a wider "
            "low-high gap) or vm.min_free_kbytes, or reduce the allocation burst.",
            [e["id"] for e in awake]))
    asleep = [e for e in eps if e["kind"] == "direct" and e["direct_reclaim_stalls"]]
    if asleep:
        n = sum(e["direct_reclaim_stalls"] for e in asleep)
        ns = sum(e["direct_reclaim_ns"] for e in asleep)
        out.append(_f(
            "direct_reclaim_kswapd_asleep", "info",
            f"{n} direct-reclaim stalls in {len(asleep)} bursts while kswapd slept "
            f"({_ms(ns)} stalled)",
            {"stalls": n, "stall_ns": ns, "bursts": len(asleep),
             "pages_reclaimed": sum(e["pages_reclaimed"] for e in asleep)},
            "Direct reclaim without kswapd running: the allocation did not wake kswapd "
            "(no __GFP_KSWAPD_RECLAIM), kswapd had given up on the node "
            "(kswapd_failures reached MAX_RECLAIM_RETRIES), or the request was a "
            "high-order one that kswapd balanced for order 0 only.",
            [e["id"] for e in asleep]))
    return out


def _re_wakes(doc: Dict[str, Any], eps: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    hot = [e for e in eps if e["kind"] == "kswapd" and e["kswapd_wakes"] >= RE_WAKES_PER_EPISODE]
    if not hot:
        return []
    nodes = sorted({e["node"] for e in hot})
    worst = max(hot, key=lambda e: e["kswapd_wakes"])
    total = sum(e["kswapd_re_wakes"] for e in hot)
    req = {}
    for n in (doc.get("reclaim") or {}).get("kswapd", []):
        if n["nid"] in nodes:
            req = {f"{r['zone']}/o{r['order']}": r["count"] for r in n["requests"][:6]}
    return [_f(
        "kswapd_re_wakes", "warning",
        f"kswapd re-woken {total} times without sleeping in {len(hot)} episodes "
        f"(up to {worst['kswapd_wakes']} balance_pgdat() runs in episode {worst['id']})",
        {"nodes": nodes, "re_wakes": total, "episodes": len(hot),
         "max_runs_in_episode": worst["kswapd_wakes"],
         "max_order": max(e["max_order"] for e in hot),
         "requests_by_zone_order": req},
        "kswapd_try_to_sleep() found the node still unbalanced (a zone under its "
        "high watermark, or no free block of the order kswapd was woken for) and "
        "ran balance_pgdat() again instead of sleeping. High-order wakeups "
        "(order > 0, e.g. THP or hugetlb at order 9) keep kswapd busy until "
        "compaction can produce the block; constant allocation keeps it under high.",
        [e["id"] for e in hot])]


def _slab(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    slab = doc.get("slab")
    if not isinstance(slab, dict):
        return []
    out = []
    for s in slab.get("shrinkers", []) or []:
        if s.get("scanned", 0) > 0 and s.get("freed", 0) == 0:
            out.append(_f(
                "shrinker_frees_nothing", "warning",
                f"Shrinker {s.get('name')} scanned {s['scanned']} objects in "
                f"{s.get('calls', 0)} calls and freed none",
                {"name": s.get("name"), "calls": s.get("calls", 0),
                 "scanned": s["scanned"], "freed": 0, "time_ns": s.get("time_ns", 0)},
                "do_shrink_slab() asked this shrinker's scan_objects() to free objects "
                "its count_objects() reported, and every pass returned 0: the objects "
                "are in use (pinned dentries/inodes, referenced entries) or the "
                "shrinker bailed out (GFP_NOFS context, lock contention). Its time is "
                "pure reclaim overhead, and the memory it counts is not reclaimable."))
    for c in slab.get("caches", []) or []:
        if c.get("never_drains"):
            out.append(_f(
                "cache_never_drains", "warning",
                f"Slab cache {c.get('name')} never drains"
                + (f": {c['reason']}" if c.get("reason") else ""),
                _scalars(c),
                "Objects in this kmem_cache are not given back under pressure: "
                "either no shrinker covers it, or its objects stay referenced. Its "
                "slab pages count as SUnreclaim (or stay in SReclaimable without "
                "being freed); reclaim cannot help, only freeing the owners can."))
    return out


def _scalars(d: Dict[str, Any]) -> Dict[str, Any]:
    """A section item's plain fields, as a finding's evidence."""
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool))}


def _vmalloc(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    vm = doc.get("vmalloc")
    if not isinstance(vm, dict):
        return []
    out = []
    for a in vm.get("areas", []) or []:
        if a.get("verdict") != "fallback":
            continue
        size = a.get("size") or 0
        who = a.get("comm") or a.get("caller") or "?"
        out.append(_f(
            "vmalloc_huge_fallback", "warning",
            f"Huge vmalloc of {size} bytes by {who} fell back to 4 KiB pages",
            _scalars(a),
            "__vmalloc_node_range() tried a PMD (2 MiB, order-9) mapping for a "
            "VM_ALLOW_HUGE_VMAP request, could not get the order-9 pages, freed the "
            "area and mapped it again with order-0 pages: more TLB misses for the "
            "user, and a sign that free memory is fragmented (no free order-9 "
            "blocks; see /proc/buddyinfo)."))
    return out


def _meminfo(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    snaps = [m for m in doc.get("meminfo", []) if m.get("MemTotal")]
    if not snaps:
        return []

    def usable(m: Dict[str, Any]) -> int:
        return max(1, m["MemTotal"] - m.get("Hugetlb", 0))

    low = min(snaps, key=lambda m: m.get("MemFree", 0) / usable(m))
    u = usable(low)
    free, avail = low.get("MemFree", 0), low.get("MemAvailable", 0)
    ev = {"when": low.get("when"), "ts_ns": low.get("ts_ns"), "MemTotal_kB": low["MemTotal"],
          "Hugetlb_kB": low.get("Hugetlb", 0), "MemFree_kB": free,
          "MemAvailable_kB": avail, "Cached_kB": low.get("Cached", 0),
          "Inactive_file_kB": low.get("Inactive(file)", 0),
          "SReclaimable_kB": low.get("SReclaimable", 0),
          "free_pct_of_usable": round(100 * free / u, 1),
          "available_pct_of_usable": round(100 * avail / u, 1)}
    t = doc.get("totals", {})
    ev["direct_reclaim_stalls"] = t.get("direct_reclaim_stalls", 0)
    if avail < SHORTAGE_FRACTION * u:
        return [_f(
            "memory_shortage", "critical",
            f"Real shortage: MemAvailable {avail // 1024} MiB is "
            f"{ev['available_pct_of_usable']}% of usable memory",
            ev,
            "MemAvailable (si_mem_available(): free pages above the low watermarks "
            "plus the reclaimable halves of page cache and reclaimable slab) is "
            "nearly gone: reclaim has little left to take, so the next step is "
            "swap, thrashing (workingset refaults) and finally the OOM killer.")]
    if free < LOW_FREE_FRACTION * u and avail >= 2 * free:
        return [_f(
            "low_free_high_available", "info",
            f"Low free memory ({free // 1024} MiB) but MemAvailable "
            f"{avail // 1024} MiB: page cache, not a shortage",
            ev,
            "MemFree is low because the page cache uses the memory; MemAvailable "
            "counts the clean, reclaimable cache the kernel can take back. kswapd "
            "reclaims it from the low watermark on; only when reclaim cannot keep up "
            "do tasks stall in direct reclaim (see direct_reclaim_* findings). "
            "Killing processes would only throw away cache. hugetlb pages (Hugetlb) "
            "are neither free nor available.")]
    return []


def findings(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """All findings for a report document, most severe first."""
    eps = doc.get("episodes") or []
    out: List[Dict[str, Any]] = []
    out += _oom(doc, eps)
    out += _zone_below_min(doc, eps)
    out += _direct_reclaim(eps, doc.get("episode_summary") or {})
    out += _re_wakes(doc, eps)
    out += _slab(doc)
    out += _vmalloc(doc)
    out += _meminfo(doc)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    out.sort(key=lambda f: rank[f["severity"]])  # stable: order above within a severity
    return out
