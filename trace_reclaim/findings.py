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

from trace_reclaim import gfp

__all__ = ["findings", "SEVERITIES", "KINDS"]

SEVERITIES = ("critical", "warning", "info")
KINDS = (
    "oom_kill", "zone_below_min", "direct_reclaim_kswapd_awake",
    "direct_reclaim_kswapd_asleep", "kswapd_re_wakes", "shrinker_frees_nothing",
    "cache_never_drains", "vmalloc_huge_fallback", "memory_shortage",
    "low_free_high_available", "cgroup_memory_high", "cgroup_memory_max",
    "cgroup_own_limit", "cgroup_machine_shortage", "cgroup_below_low_reclaimed",
)
# A cgroup's stalls count as "mostly one cause" when it has this share of them.
DOMINANT_SHARE = 0.8
# Cgroups with less reclaim time than this get no own-limit/shortage finding.
CGROUP_MIN_NS = 1_000_000

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


def _memcg_oom(doc: Dict[str, Any], v: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The finding for a kill by the memcg OOM killer, or None for a global one.

    The memcg tracer remembers each task's last reclaim: a kill whose killing
    task had just reclaimed its own cgroup at its limit was made by
    mem_cgroup_out_of_memory(), whatever global episode was open then.
    """
    memcg = doc.get("memcg") or {}
    kill = next((k for k in memcg.get("oom_kills", [])
                 if (k["ts_ns"], k["victim_pid"]) == (v["ts_ns"], v["pid"])), None)
    if kill is None or not kill["memcg_oom"]:
        return None
    cg = kill["cgroup"]
    row = next((r for r in doc.get("cgroups", [])
                if (r["hierarchy"], r["id"]) == (cg["hierarchy"], cg["id"])), None)
    where = row["path"] or row["name"] if row else f"memcg id {cg['id']}"
    trig = kill["trigger"]
    evidence = {"victim_pid": v["pid"], "victim_comm": v["comm"],
                "anon_rss_kb": v["anon_rss_kb"], "file_rss_kb": v["file_rss_kb"],
                "oom_score_adj": v["oom_score_adj"],
                "chosen_by": f"{v['by_pid']} ({v['by_comm']})",
                "cgroup": where, "cgroup_id": cg["id"],
                "trigger_gfp": f"{gfp.names(trig['gfp_flags'])} ({trig['gfp_flags']:#x})",
                "trigger_order": trig["order"],
                "last_memcg_reclaim_before_kill_ns": trig["before_kill_ns"]}
    if row is not None:
        evidence.update({"cgroup_memcg_reclaims": row["memcg_reclaims"],
                         "cgroup_memcg_reclaim_ns": row["memcg_reclaim_ns"],
                         "cgroup_pages_reclaimed": row["memcg_pages"]})
    return _f("oom_kill", "critical",
              f"memcg OOM killer killed pid {v['pid']} ({v['comm']}) in {where}, "
              f"anon-rss {v['anon_rss_kb'] // 1024} MiB: an order-{trig['order']} charge "
              "could not be reclaimed below the cgroup's limit",
              evidence,
              "A charge found the cgroup at its limit (memory.max, v1 "
              "memory.limit_in_bytes); try_charge_memcg() reclaimed the cgroup's own "
              "pages (try_to_free_mem_cgroup_pages()) MAX_RECLAIM_RETRIES (16) times "
              "without making room, then mem_cgroup_out_of_memory() killed the task "
              "with the highest oom_badness() inside that cgroup. The machine was not "
              "short of memory: raise the limit or shrink the workload, not the "
              "machine's watermarks.")


def _oom(doc: Dict[str, Any], eps: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    seen = set()
    for v in (doc.get("oom") or {}).get("victims", []):
        f = _memcg_oom(doc, v)
        if f is not None:
            seen.add((v["ts_ns"], v["pid"]))
            out.append(f)
    for ep in eps:
        for v in ep.get("oom_kills", []):
            if (v["ts_ns"], v["pid"]) in seen:
                continue
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
    out += _cgroups(doc)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    out.sort(key=lambda f: rank[f["severity"]])  # stable: order above within a severity
    return out


def _limit_bytes(row: Dict[str, Any]) -> Optional[int]:
    c = row.get("counters") or {}
    for k in ("max_bytes", "limit_bytes"):
        v = c.get(k)
        if v is not None and v < (1 << 60):
            return int(v)
    return None


def _cgroups(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Findings per cgroup from the top-level ``cgroups`` list (memcg tracer).

    Evidence the trace could not read (a cgroup gone before its counters
    were sampled) is left out rather than shown as None.
    """
    out = [_known(f) for f in _cgroup_findings(doc)]
    return out


def _known(f: Dict[str, Any]) -> Dict[str, Any]:
    f["evidence"] = {k: v for k, v in f["evidence"].items() if v is not None}
    return f


def _cgroup_findings(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for r in doc.get("cgroups") or []:
        by = r.get("memcg_by_limit") or {}
        ev = r.get("limit_events") or {}
        c = r.get("counters") or {}
        who = f"{r['name']} ({r['kind']})"
        base = {"cgroup": r["path"], "id": r["id"], "name": r["name"], "kind": r["kind"]}
        high = by.get("high", 0)
        if high or ev.get("high"):
            out.append(_f(
                "cgroup_memory_high", "warning",
                f"{who} was throttled at memory.high: {high} reclaims over it, "
                f"memory.events high +{ev.get('high', 0)}",
                {**base, "high_reclaims": high, "memory_events_high": ev.get("high", 0),
                 "high_bytes": c.get("high_bytes"), "memcg_reclaim_ns": r["memcg_reclaim_ns"],
                 "memory_pressure_us": c.get("pressure_us")},
                "Each charge above memory.high makes the task reclaim from its cgroup on "
                "its way back to user space (mem_cgroup_handle_over_high() -> "
                "reclaim_high()); if it stays above, the task also sleeps up to 2 s "
                "per return (MEMCG_MAX_HIGH_DELAY_JIFFIES), which no tracepoint shows: "
                "it is in the cgroup's memory.pressure. The cgroup is slowed, not "
                "killed: raise memory.high or shrink its working set."))
        mx = by.get("max", 0)
        if mx or ev.get("max") or ev.get("failcnt"):
            limit = _limit_bytes(r)
            usage = c.get("current_bytes", c.get("usage_bytes"))
            peak = c.get("max_usage_bytes", c.get("peak_bytes"))
            close = ""
            if limit and peak is not None:
                close = f", peak usage {peak * 1000 // limit / 10}% of the limit"
            elif limit and usage is not None:
                close = f", usage {usage * 1000 // limit / 10}% of the limit"
            kills = r.get("oom_kills", 0) + ev.get("oom_kill", 0)
            out.append(_f(
                "cgroup_memory_max", "critical" if kills or ev.get("oom") else "warning",
                f"{who} reclaimed at its hard limit {mx} times "
                f"({_ms(r['memcg_reclaim_ns'])}, p99 {_ms(r['memcg_p99_ns'])}){close}",
                {**base, "max_reclaims": mx, "limit_bytes": limit, "usage_bytes": usage,
                 "max_usage_bytes": peak, "pages_reclaimed": r["memcg_pages"],
                 "failcnt": ev.get("failcnt"), "memory_events_max": ev.get("max"),
                 "memory_events_oom": ev.get("oom"), "oom_kills": kills},
                "A charge found the cgroup at memory.max (v1 memory.limit_in_bytes), so "
                "the charging task reclaimed the cgroup's own pages in "
                "try_charge_memcg() -> try_to_free_mem_cgroup_pages(). If 16 such "
                "passes (MAX_RECLAIM_RETRIES) cannot make room, the memcg OOM killer "
                "kills a task in the cgroup: the closer usage stays to the limit "
                "with reclaim getting fewer pages, the nearer that is."))
        memcg_ns, direct_ns = r.get("memcg_reclaim_ns", 0), r.get("direct_stall_ns", 0)
        total = memcg_ns + direct_ns
        if total >= CGROUP_MIN_NS:
            ev_ = {**base, "memcg_reclaim_ns": memcg_ns, "direct_stall_ns": direct_ns,
                   "memcg_reclaims": r["memcg_reclaims"], "direct_stalls": r["direct_stalls"],
                   "own_limit_share": round(memcg_ns / total, 3)}
            if memcg_ns >= DOMINANT_SHARE * total:
                out.append(_f(
                    "cgroup_own_limit", "info",
                    f"{who}: its reclaim stalls come from its own limit "
                    f"({_ms(memcg_ns)} memcg reclaim vs {_ms(direct_ns)} direct reclaim)",
                    ev_,
                    "The cgroup's tasks reclaimed because the cgroup hit its limit, not "
                    "because the machine was short: memcg reclaim is not in "
                    "allocstall_* or /proc/vmstat pgsteal_*. The remedy is the cgroup's: "
                    "a higher limit or a smaller working set; more machine memory would "
                    "not help."))
            elif direct_ns >= DOMINANT_SHARE * total:
                out.append(_f(
                    "cgroup_machine_shortage", "info",
                    f"{who}: its reclaim stalls come from the machine running short "
                    f"({_ms(direct_ns)} direct reclaim vs {_ms(memcg_ns)} memcg reclaim)",
                    ev_,
                    "The cgroup's tasks entered global direct reclaim "
                    "(__alloc_pages_direct_reclaim()): free memory was below the zone "
                    "watermarks for everyone. Raising this cgroup's limit would not "
                    "help; the remedy is machine-wide (watermarks, other cgroups' "
                    "usage, more memory)."))
        if ev.get("low"):
            out.append(_f(
                "cgroup_below_low_reclaimed", "warning",
                f"{who} was reclaimed below its memory.low protection "
                f"(memory.events low +{ev['low']})",
                {**base, "memory_events_low": ev["low"], "low_bytes": c.get("low_bytes")},
                "Reclaim found no unprotected memory to take and broke memory.low "
                "(shrink_node_memcgs() raises MEMCG_LOW when it reclaims a cgroup "
                "below its low boundary): the protected working set is being evicted. "
                "The machine or the parent is overcommitted for the protection given."))
    return out
