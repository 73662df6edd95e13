"""Render the report document as text or JSON.

Text is derived from the JSON document only, so ``report -j`` and the text
report cannot disagree, and a replay renders exactly what the live run did.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Mapping, Sequence

from tabulate import tabulate

from trace_reclaim.tracer import Aggregator

__all__ = ["fmt_ns", "fmt_bytes", "table", "render_text", "render_json",
           "interval_line", "interval_header", "render_findings", "render_episodes"]


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
        n /= 1024
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


def render_text(doc: Dict[str, Any], tracers: Mapping[str, Aggregator]) -> str:
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
    for agg in tracers.values():
        rows += agg.vmstat_rows(t, vm)
    out += table(["", "TRACED", "KERNEL", "COUNTER"], rows)
    out.append("")

    if "findings" in doc:
        out += render_findings(doc)
        out.append("")
    if "episodes" in doc:
        out += render_episodes(doc)
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


SEVERITY_MARK = {"critical": "CRIT", "warning": "WARN", "info": "INFO"}


def compact_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                  indent: str = "  ", gap: int = 2) -> List[str]:
    """A table with two-space gaps (tabulate's plain format uses four)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    out = []
    for r in [list(headers)] + rows:
        out.append((indent + (" " * gap).join(c.ljust(w) for c, w in zip(r, widths))).rstrip())
    return out


def _wrap(text: str, indent: str, width: int = 79, hang: str = "") -> List[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent,
                         subsequent_indent=hang or " " * len(indent),
                         break_on_hyphens=False) or [indent]


def _evidence(ev: Dict[str, Any]) -> str:
    parts = []
    for k, v in ev.items():
        if isinstance(v, (list, dict)):
            if not v:
                continue
            v = ", ".join(map(str, v)) if isinstance(v, list) else \
                ", ".join(f"{a}:{b}" for a, b in v.items())
        elif k.endswith("_ns") and isinstance(v, int):
            v = fmt_ns(v)
        parts.append(f"{k}={v}")
    return "; ".join(parts)


def render_findings(doc: Dict[str, Any]) -> List[str]:
    fs = doc.get("findings") or []
    out = [f"Findings: {len(fs)}" + ("" if fs else " (nothing unusual)")]
    for i, f in enumerate(fs, 1):
        out += _wrap(f"[{SEVERITY_MARK.get(f['severity'], '?')}] {f['title']}", f"{i:>2}. ")
        out += _wrap("evidence: " + _evidence(f["evidence"]), "      ")
        out += _wrap("meaning: " + f["meaning"], "      ")
    return out


def _zones_brief(ep: Dict[str, Any]) -> str:
    wm = ep.get("watermarks") or {}
    bad = [f"{z['zone']}:{z['state'].replace('below_', '<')}"
           for z in wm.get("zones", []) if z["state"] != "ok"]
    if not wm:
        return "-"
    return " ".join(bad) or "ok"


def _psi_brief(ep: Dict[str, Any]) -> str:
    p = ep.get("psi")
    if not p:
        return "-"
    return f"{p['some_us'] / 1000:.1f}/{p['full_us'] / 1000:.1f}ms"


def render_episodes(doc: Dict[str, Any], limit: int = 20, detail: int = 3) -> List[str]:
    eps = doc.get("episodes") or []
    s = doc.get("episode_summary") or {}
    w0 = doc["window"]["start_ns"]
    da = doc.get("delayacct") or {}
    out = [f"Episodes: {s.get('count', len(eps))} ({s.get('kswapd', 0)} kswapd wake-to-sleep, "
           f"{s.get('direct', 0)} direct-reclaim bursts; burst gap "
           f"{fmt_ns(s.get('burst_gap_ns'))})"]
    if not eps:
        out.append("  no reclaim episodes")
        return out
    rows = []
    for e in eps[:limit]:
        flag = "<" if e["began_before_trace"] else ""
        flag += ">" if e["open_at_end"] else ""
        rows.append([e["id"], e["node"], e["kind"][:6] + flag,
                     "+" + fmt_ns(max(0, e["start_ns"] - w0)), fmt_ns(e["duration_ns"]),
                     e["kswapd_wakes"], e["direct_reclaim_stalls"],
                     fmt_ns(e["direct_reclaim_ns"]), e["pages_reclaimed"],
                     _zones_brief(e), _psi_brief(e)])
    out += compact_table(["#", "NODE", "KIND", "START", "DUR", "RUNS", "STALLS", "STALLED",
                          "PAGES", "ZONES", "PSI S/F"], rows, gap=1)
    if len(eps) > limit:
        out.append(f"  ... {len(eps) - limit} more episodes (see -j)")
    out.append("  (RUNS: kswapd balance_pgdat() runs; PAGES: reclaimed by direct reclaim;")
    out.append("   <: began before the trace, >: open at its end; PSI: memory some/full)")
    if not da.get("on"):
        out.append("  per-task delay accounting: off (kernel.task_delayacct=0; "
                   "--delayacct)")
    worst = sorted((e for e in eps if e["direct_reclaim_stalls"] or e["oom_kills"]
                    or e["compaction"]["runs"]),
                   key=lambda e: (-len(e["oom_kills"]), -e["direct_reclaim_ns"], e["id"]))
    for e in worst[:detail]:
        out.append("")
        out += _episode_detail(e, w0)
    return out


def _episode_detail(e: Dict[str, Any], w0: int) -> List[str]:
    out = [f"Episode {e['id']} (node {e['node']}, {e['kind']}, "
           f"+{fmt_ns(max(0, e['start_ns'] - w0))} for {fmt_ns(e['duration_ns'])}):"]
    seq = " -> ".join(f"{p}@{'-' if off < 0 else '+'}{fmt_ns(abs(off))}"
                      for p, off in e["sequence"])
    out += _wrap("order: " + (seq or "-"), "  ", hang="    ")
    wm = e.get("watermarks")
    if wm:
        where = "inside the episode" if wm["inside_episode"] else "before it"
        out.append(f"  watermarks ({wm['when']} snapshot, {where}):")
        out += ["  " + ln for ln in compact_table(
            ["ZONE", "FREE", "MIN", "LOW", "HIGH", "STATE"],
            [[z["zone"], z["free"], z["min"], z["low"], z["high"], z["state"]]
             for z in wm["zones"]])]
    if e["stalls"]:
        out += _wrap(f"direct-reclaim stalls: {e['direct_reclaim_stalls']} "
                     f"({e['stalls_while_kswapd_awake']} while kswapd awake), "
                     f"{fmt_ns(e['direct_reclaim_ns'])}, max "
                     f"{fmt_ns(e['direct_reclaim_max_ns'])}, {e['pages_reclaimed']} pages",
                     "  ", hang="    ")
        rows = []
        for t in e["stalls"][:5]:
            d = t.get("delays") or {}
            rows.append([t["tid"], t["comm"], t["stalls"], fmt_ns(t["total_ns"]),
                         fmt_ns(t["max_ns"]), t["pages_reclaimed"],
                         fmt_ns(d.get("freepages_delay_total")) if d else "-",
                         fmt_ns(d.get("thrashing_delay_total")) if d else "-",
                         fmt_ns(d.get("compact_delay_total")) if d else "-"])
        out += ["  " + ln for ln in compact_table(
            ["TID", "COMM", "STALLS", "TOTAL", "MAX", "PAGES", "D:RECLAIM", "D:THRASH",
             "D:COMPACT"], rows)]
    sh = e["shrinkers"]
    if sh["calls"]:
        out.append(f"  shrinkers: {sh['calls']} calls, {sh['scanned']} scanned, "
                   f"{sh['freed']} freed, {fmt_ns(sh['time_ns'])}")
        out += _wrap("by time: " + ", ".join(
            f"{s['name']} {fmt_ns(s['time_ns'])}" for s in sh["top_by_time"]), "    ")
        out += _wrap("by freed: " + ", ".join(
            f"{s['name']} {s['freed']}" for s in sh["top_by_freed"]), "    ")
    if e["vmalloc"]:
        out += _wrap("vmalloc: " + ", ".join(
            f"{k} x{v['count']} ({fmt_bytes(v['bytes'])}, {v['failed']} failed, "
            f"{v['huge_attempts']} huge)" for k, v in e["vmalloc"].items()), "  ")
    c = e["compaction"]
    if c["runs"] or e["compact_retry"] or e["reclaim_retry_zone"]:
        st = ", ".join(f"{k} x{v}" for k, v in c["status"].items())
        out += _wrap(f"compaction: {c['runs']} runs ({c['direct_runs']} direct), "
                     f"{fmt_ns(c['total_ns'])}" + (f": {st}" if st else "")
                     + f"; should_reclaim_retry {e['reclaim_retry_zone']}, "
                     f"should_compact_retry {e['compact_retry']}", "  ")
    for v in e["oom_kills"]:
        out.append(f"  OOM kill: pid {v['pid']} ({v['comm']}), anon-rss "
                   f"{v['anon_rss_kb']}kB, by {v['by_pid']} ({v['by_comm']})")
    return out
