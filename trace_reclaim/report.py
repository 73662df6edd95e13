"""Render the report document as text or JSON.

Text is derived from the JSON document only, so ``report -j`` and the text
report cannot disagree, and a replay renders exactly what the live run did.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Sequence

from tabulate import tabulate

__all__ = ["fmt_ns", "fmt_bytes", "table", "render_text", "render_json",
           "interval_line", "interval_header"]


def fmt_ns(ns: Any) -> str:
    if ns is None:
        return "-"
    ns = int(ns)
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 999_950:  # so that rounding never prints 1000.0us
        return f"{ns / 1e3:.1f}us"
    if ns < 999_950_000:
        return f"{ns / 1e6:.1f}ms"
    return f"{ns / 1e9:.2f}s"


def fmt_bytes(n: Any) -> str:
    n = int(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> List[str]:
    text = tabulate(list(rows), headers=list(headers), tablefmt="plain",
                    disable_numparse=True)
    return ["  " + line.rstrip() for line in text.splitlines()]


def render_json(doc: Dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def _sum(t: Dict[str, Any], *keys: str) -> Any:
    if not all(k in t for k in keys):
        return "-"
    return sum(t[k] for k in keys)


def _vm(delta: Dict[str, int], *keys: str) -> str:
    have = [k for k in keys if k in delta]
    if not have:
        return "-"
    return f"{sum(delta[k] for k in have)}"


def render_text(doc: Dict[str, Any], tracers: Dict[str, Any]) -> str:
    """The human report: summary, lost events, kernel cross-check, sections."""
    w, t, lost = doc["window"], doc["totals"], doc["lost"]
    out: List[str] = []
    sysinfo = doc["system"]
    dur = fmt_ns(w["duration_ns"]) if w["duration_ns"] is not None else "unfinished"
    out.append(f"trace-reclaim report: Linux {sysinfo.get('kernel') or '?'}, {dur}, "
               f"{w['intervals']} intervals, ended by {w['ended_by'] or 'unknown'}")
    if sysinfo.get("workload"):
        out.append(f"workload: {sysinfo['workload']}")
    extra = []
    if lost["events_outside_window"]:
        extra.append(f"{lost['events_outside_window']} outside the window")
    if lost["unknown_records"]:
        extra.append(f"{lost['unknown_records']} of unknown type skipped")
    if lost["undecodable_records"]:
        extra.append(f"{lost['undecodable_records']} undecodable")
    out.append(f"Lost events: {lost['total']} (ring buffer full)"
               + ("; records " + ", ".join(extra) if extra else ""))
    out.append("")

    vm = t.get("vmstat_delta", {})
    out.append("Traced vs the kernel's own counters (/proc/vmstat delta):")
    rows = [
        ["direct reclaim passes", _sum(t, "direct_reclaim_stalls", "direct_reclaim_retries"),
         _vm(vm, "allocstall_dma", "allocstall_dma32", "allocstall_normal",
             "allocstall_movable", "allocstall_device"), "allocstall_*"],
        ["LRU pages reclaimed, direct", t.get("lru_reclaimed_direct", "-"),
         _vm(vm, "pgsteal_direct"), "pgsteal_direct"],
        ["LRU pages scanned, direct", t.get("lru_scanned_direct", "-"),
         _vm(vm, "pgscan_direct"), "pgscan_direct"],
        ["kswapd wakes", t.get("kswapd_wakes", "-"), _vm(vm, "pageoutrun"), "pageoutrun"],
        ["LRU pages reclaimed, kswapd", t.get("lru_reclaimed_kswapd", "-"),
         _vm(vm, "pgsteal_kswapd"), "pgsteal_kswapd"],
        ["LRU pages scanned, kswapd", t.get("lru_scanned_kswapd", "-"),
         _vm(vm, "pgscan_kswapd"), "pgscan_kswapd"],
    ]
    for name in tracers:
        extra_rows = getattr(tracers[name], "vmstat_rows", None)
        if extra_rows is not None:
            rows += extra_rows(t, vm)
    out += table(["", "TRACED", "KERNEL", "COUNTER"], rows)
    out.append("")

    for agg in tracers.values():
        section = doc.get(agg.section)
        if section is None:
            continue
        lines = agg.render(section)
        if lines:
            out.append(f"== {agg.section} ==")
            out += lines
            out.append("")

    if doc["zones"]:
        first = doc["zones"][0]
        out.append(f"Zone watermarks at {first['when']} (pages; from /proc/zoneinfo):")
        zrows = []
        for z in first["zones"]:
            state = "ok"
            if z.get("free", 0) < z.get("min", 0):
                state = "BELOW MIN"
            elif z.get("free", 0) < z.get("low", 0):
                state = "below low"
            elif z.get("free", 0) < z.get("high", 0):
                state = "below high"
            zrows.append([z["node"], z["zone"], z.get("free"), z.get("min"), z.get("low"),
                          z.get("high"), z.get("boost", 0), z.get("managed"), state])
        out += table(["NODE", "ZONE", "FREE", "MIN", "LOW", "HIGH", "BOOST", "MANAGED",
                      "STATE"], zrows)
        if len(doc["zones"]) > 1:
            out.append(f"  ({len(doc['zones']) - 1} later snapshots in -j output)")
    return "\n".join(out).rstrip() + "\n"


def interval_header() -> str:
    return (f"{'TIME':>8} {'WKREQ':>6} {'WAKES':>5} {'AWAKE':>8} {'STALLS':>6} "
            f"{'STALL':>8} {'MAX':>8} {'PAGES':>7} {'HUGE':>4} {'FB':>2} {'LOST':>5}")


def interval_line(row: Dict[str, Any], clock: str) -> str:
    """One live row: reclaim, then huge vmalloc areas and fallbacks (FB)."""
    r = row.get("reclaim", {})
    v = row.get("vmalloc")
    awake = sum(r.get("kswapd_awake_ns", {}).values())
    huge = f"{v.get('huge_areas', 0):>4} {v.get('fallbacks', 0):>2}" if v else f"{'-':>4} {'-':>2}"
    return (f"{clock:>8} {r.get('wakeup_requests', 0):>6} {r.get('kswapd_wakes', 0):>5} "
            f"{fmt_ns(awake):>8} {r.get('stalls', 0):>6} {fmt_ns(r.get('stall_ns', 0)):>8} "
            f"{fmt_ns(r.get('stall_max_ns', 0)):>8} {r.get('pages', 0):>7} {huge} "
            f"{row.get('lost_events', 0):>5}")
