"""The memcg tracer's text section: memcg reclaim by limit, then one row per cgroup."""

from __future__ import annotations

from typing import Any, Dict, List

from trace_reclaim.report import NBSP, ellipsize, fmt_bytes, fmt_ns, table, wrap

__all__ = ["render_memcg", "limit_text", "events_text"]

#: Cgroup rows in the text report (all are in -j).
MAX_ROWS = 15


def limit_text(row: Dict[str, Any]) -> str:
    """The configured limits of a cgroup row, as "max 64.0MiB high 48.0MiB"."""
    c = row.get("counters") or {}
    if not c:
        return "limits not read (gone before a sample)"
    parts = []
    for key, label in (("limit_bytes", "limit"), ("max_bytes", "max"), ("high_bytes", "high"),
                       ("low_bytes", "low"), ("min_bytes", "min")):
        v = c.get(key)
        # v1 "unlimited" is PAGE_COUNTER_MAX pages: far beyond any real machine
        if v is not None and v < (1 << 60) and (v or key in ("limit_bytes", "max_bytes")):
            parts.append(f"{label} {fmt_bytes(v)}")
    return " ".join(parts) or "no limit"


def events_text(row: Dict[str, Any]) -> str:
    """The cgroup's own limit counters over the window: "failcnt +12", "high +3 max +1"."""
    ev = row.get("limit_events") or {}
    return " ".join(f"{k} +{v}" for k, v in ev.items() if v) or "-"


def render_memcg(section: Dict[str, Any]) -> List[str]:
    m = section["memcg_reclaim"]
    out: List[str] = []
    by = ", ".join(f"{k} {v}" for k, v in m["by_limit"].items())
    out += wrap(f"Memcg reclaim: {m['reclaims']} calls, {fmt_ns(m['total_ns'])} total, "
                f"p50 {fmt_ns(m['p50_ns'])}, p99 {fmt_ns(m['p99_ns'])}, "
                f"max {fmt_ns(m['max_ns'])}, {m['pages_reclaimed']}{NBSP}pages{NBSP}reclaimed"
                + (f" (by limit: {by})" if by else ""), hang="  ")
    mounts = section.get("mounts") or {}
    mem = mounts.get("memory") or {}
    if mem:
        out += wrap(f"memory controller: cgroup v{mem.get('version')} at {mem.get('path')}",
                    "  ", hang="    ")
    if section.get("filter"):
        out += wrap("only cgroups: " + ", ".join(section["filter"]), "  ", hang="    ")
    rows = [r for r in section.get("cgroups", [])
            if r["direct_stalls"] or r["memcg_reclaims"] or r["shrinker_calls"]
            or r["vmalloc_areas"] or r["oom_kills"]]
    if not rows:
        out.append("  no attributed events")
        return out
    trows = []
    for r in rows[:MAX_ROWS]:
        trows.append([ellipsize(r["name"], 18, middle=True), r["direct_stalls"],
                      fmt_ns(r["direct_stall_ns"]), r["memcg_reclaims"],
                      fmt_ns(r["memcg_reclaim_ns"]), fmt_ns(r["memcg_p99_ns"]),
                      r["memcg_pages"], r["shrinker_calls"]])
    out += table(["CGROUP", "STALLS", "STALL", "MEMCG", "MEMCG T", "P99", "PAGES",
                  "SHRINK"], trows)
    if len(rows) > MAX_ROWS:
        out.append(f"  ... {len(rows) - MAX_ROWS} more cgroups (see -j)")
    for r in rows[:MAX_ROWS]:
        if not (r["memcg_reclaims"] or any((r["limit_events"] or {}).values())):
            continue
        by = ", ".join(f"{k} {v}" for k, v in r["memcg_by_limit"].items()) or "-"
        psi = (r.get("counters") or {}).get("pressure_us") or {}
        stalled = "; memory.pressure " + ", ".join(
            f"{k} +{fmt_ns(v * 1000)}" for k, v in psi.items()) if psi else ""
        out += wrap(f"{r['name']} ({r['kind']}): {limit_text(r)}; reclaims by limit: {by}; "
                    f"own counters: {events_text(r)}{stalled}; path {r['path'] or '?'}",
                    "  ", hang="    ")
    return out
