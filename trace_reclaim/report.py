"""Render the report document as text or JSON.

Text is derived from the JSON document only, so ``report -j`` and the text
report cannot disagree, and a replay renders exactly what the live run did.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from trace_reclaim.tracer import Aggregator

__all__ = ["WIDTH", "NBSP", "fmt_ns", "fmt_bytes", "fmt_count", "fit_count", "fit_ns",
           "ellipsize", "wrap", "table", "compact_table", "render_text", "render_json",
           "interval_line", "interval_header", "render_findings", "render_episodes"]

#: Every line of the text report fits this many columns (an 80x24 terminal).
WIDTH = 80
#: Joins two words that wrap() must not split ("0 failed", "ended by SIGINT").
NBSP = "\xa0"


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


def fmt_count(n: int) -> str:
    """Return ``n`` in at most 5 characters: 123456 -> 123k, 1234567 -> 1.23M."""
    if abs(n) < 100_000:
        return str(n)
    for unit, div in (("k", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12), ("P", 10**15)):
        v = n / div
        if abs(v) < 999.5:
            return (f"{v:.3g}" if abs(v) >= 1 else f"{v:.2f}") + unit
    return f"{n / 10**18:.0f}E"


def ellipsize(s: str, n: int, middle: bool = False) -> str:
    """Cut ``s`` to ``n`` columns, marking the cut with ``~``.

    ``middle`` keeps both ends (a shrinker's callback and the filesystem
    its name ends with); otherwise the end goes.
    """
    if len(s) <= n:
        return s
    if n <= 1:
        return "~"[:max(n, 0)]
    if middle:
        tail = (n - 1) // 2
        return s[:n - 1 - tail] + "~" + (s[-tail:] if tail else "")
    return s[:n - 1] + "~"


class _Wrapper(textwrap.TextWrapper):
    """textwrap that may also break after any character of ``breaks``."""

    def __init__(self, breaks: str, **kw: Any) -> None:
        super().__init__(**kw)
        if breaks:
            # Chunks split at whitespace, and right after a break character
            # (GFP_NOFS|__GFP_COMP -> "GFP_NOFS|", "__GFP_COMP"), so a line
            # ends at a "|" and never inside a flag name.
            self.wordsep_simple_re = re.compile(r"(\s+)|(?<=[%s])" % re.escape(breaks))


def wrap(text: str, indent: str = "", width: int = WIDTH - 1, hang: str = "",
         breaks: str = "") -> List[str]:
    """Fill ``text`` to ``width``; later lines start with ``hang``.

    Lines break at spaces, or after a character of ``breaks``; a word
    longer than a whole line is cut (nothing is ever wider than ``width``).
    A no-break space (``NBSP``) keeps two words on one line ("0 failed").
    """
    lines = _Wrapper(breaks, width=width, initial_indent=indent,
                     subsequent_indent=hang or " " * len(indent),
                     break_on_hyphens=False).wrap(text) or [indent.rstrip()]
    return [ln.replace(NBSP, " ") for ln in lines]



_SECONDS = re.compile(r"^(\d{4,})\.\d\ds$")   # fmt_ns of 1000 s and more


def _cell(c: Any, si: bool) -> str:
    if c is None:
        return ""
    if si and isinstance(c, int) and not isinstance(c, bool):
        return fmt_count(c)
    text = str(c)
    m = _SECONDS.match(text) if si else None
    return fit_ns(int(m.group(1)) * 10**9, 6) if m else text


def _cells(rows: Iterable[Sequence[Any]], si: bool) -> List[List[str]]:
    return [[_cell(c, si) for c in r] for r in rows]


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "  ",
          gap: int = 2, pad: int = 2, flex: Optional[int] = None, own_line: bool = False,
          breaks: str = "", width: int = WIDTH) -> List[str]:
    """Left-aligned columns, every line at most ``width`` columns.

    A column is as wide as its widest cell, its header plus ``pad``.  When
    that is too wide, tighten step by step: no header padding, then the
    ``flex`` column narrowed to what is left (a longer cell wraps inside it
    at spaces or ``breaks``, or with ``own_line`` stands on a line of its
    own above its row), then one-space gaps, then big counts as 1.23M with
    a note.  ``None`` prints as an empty cell.
    """
    headers = [str(h) for h in headers]
    rows = list(rows)
    one = min(gap, 1)
    steps = [(pad, gap, False, None), (0, gap, False, None), (0, gap, False, flex),
             (0, one, False, flex), (0, one, True, flex)]
    lines: List[str] = []
    for pad_, gap_, si, flex_ in steps:
        lines = _layout(headers, _cells(rows, si), indent, gap_, pad_, flex_, own_line, breaks,
                        width)
        if all(len(ln) <= width for ln in lines):
            break
    else:
        # Last resort, for headers alone wider than a line: cut each line.
        lines = [ellipsize(ln, width) for ln in lines]
    if si and _cells(rows, True) != _cells(rows, False):
        lines.append(ellipsize(f"{indent}(k/M/G/T/P: 10^3/6/9/12/15; h hours, "
                               "d days; exact in -j)", width))
    return lines


def _layout(headers: List[str], rows: List[List[str]], indent: str, gap: int, pad: int,
            flex: Optional[int], own_line: bool, breaks: str, width: int) -> List[str]:
    widths = [max([len(h) + pad] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    sep = " " * gap
    spill = False
    if flex is not None:
        rest = len(indent) + sum(w for i, w in enumerate(widths) if i != flex) \
            + gap * (len(widths) - 1)
        # Too little room left to wrap inside the column: a cell that does
        # not fit goes on lines of its own below its row, named by its header.
        spill = not own_line and width - rest < max(len(headers[flex]), min(widths[flex], 12))
        widths[flex] = max(len(headers[flex]), min(widths[flex], width - rest))

    def line(cells: Sequence[str]) -> str:
        return (indent + sep.join(c.ljust(w) for c, w in zip(cells, widths))).rstrip()

    def blank(r: List[str]) -> List[str]:
        assert flex is not None
        return r[:flex] + [""] + r[flex + 1:]

    out = [line(headers)]
    if spill and len(out[0]) > width:
        out = [line(blank(headers))]
    for r in rows:
        cell = r[flex] if flex is not None else ""
        if flex is None or len(cell) <= widths[flex]:
            out.append(line(r))
        elif own_line:
            out.append(indent + ellipsize(cell, width - len(indent), middle=True))
            out.append(line(blank(r)))
        elif spill:
            out.append(line(blank(r)))
            out += wrap(f"{headers[flex]}: {cell}", indent + "  ", width=width,
                        hang=indent + "    ", breaks=breaks)
        else:
            parts = wrap(cell, width=widths[flex], breaks=breaks)
            out.append(line(r[:flex] + [parts[0]] + r[flex + 1:]))
            for p in parts[1:]:
                out.append(line(["" for _ in r[:flex]] + [p] + ["" for _ in r[flex + 1:]]))
    return out


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


def render_attach(attach: Dict[str, Any]) -> List[str]:
    """When each tracer began recording, for a trace that attached in parts."""
    parts = [", ".join(attach["at_start"]) + " at the start"]
    parts += [f"{', '.join(p['tracers'])} {fmt_ns(p['after_start_ns'])} later"
              for p in attach["later"]]
    out = wrap("Attached: " + "; ".join(parts)
               + (" (counted from then on)" if attach["later"] else ""), hang="  ")
    if attach["not_attached"]:
        why = (f"their program did not load: {attach['error']}" if attach["error"]
               else "the trace ended first")
        # A tracer's later part ("reclaim.lru") leaves its section, less its counts.
        counting = [n for n in attach["not_attached"] if "." in n]
        missing = ("their sections are empty"
                   if len(counting) < len(attach["not_attached"]) else "")
        if counting:
            missing += (", and " if missing else "") + \
                f"the counts of {', '.join(counting)} are missing"
        out += wrap(f"Not attached: {', '.join(attach['not_attached'])} ({why}); "
                    + missing, hang="  ")
    return out


def _setting(v: Any) -> str:
    """A workload parameter or sysctl as one would type it: lists spaced, objects as JSON."""
    if isinstance(v, list) and all(not isinstance(x, (list, dict)) for x in v):
        return " ".join(map(str, v)) or "[]"
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def _settings(d: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_setting(v)}" for k, v in sorted(d.items()))


def render_workload(wl: Any) -> List[str]:
    """What ran during the trace, as ``trace-reclaim run`` (or whoever) described it.

    Its name and repetition; the parameters and sysctls the run set (with
    what they were before); the vm sysctls in effect and the machine; how
    the run settled the machine first.  Keys a newer writer adds are shown
    as ``key=value``: a recording's workload is free-form beyond its name.
    """
    if not isinstance(wl, dict):
        return wrap(f"workload: {_setting(wl)}", hang="  ")
    wl = dict(wl)
    name = wl.pop("name", None)
    head = _setting(name) if name not in (None, "") else "(unnamed)"
    rep = wl.pop("repetition", None)
    runner = wl.pop("runner", None)
    if rep is not None or runner is not None:
        head += " (" + ", ".join(([f"run {_setting(rep)}"] if rep is not None else [])
                                 + ([f"by {_setting(runner)}"] if runner is not None
                                    else [])) + ")"
    out = wrap("workload: " + head, hang="  ")
    params = wl.pop("params", None)
    if isinstance(params, dict):
        given = {k: v for k, v in params.items() if v not in ([], {}, "", None)}
        if given:
            out += wrap("  params: " + _settings(given), hang="    ")
    elif params is not None:
        out += wrap(f"  params: {_setting(params)}", hang="    ")
    sysctls = wl.pop("sysctls", None)
    before = wl.pop("sysctls_before", None)
    if isinstance(sysctls, dict) and sysctls:
        was = before if isinstance(before, dict) else {}
        out += wrap("  sysctls set for it: " + ", ".join(
            f"{k}={_setting(v)}" + (f" (was {_setting(was[k])})" if k in was else "")
            for k, v in sorted(sysctls.items())), hang="    ")
    vm = wl.pop("vm", None)
    if isinstance(vm, dict) and vm:
        out += wrap("  vm sysctls: " + _settings(
            {k.removeprefix("vm."): v for k, v in vm.items()}), hang="    ")
    machine = wl.pop("machine", None)
    if isinstance(machine, dict) and machine:
        facts = []
        if isinstance(machine.get("cpus"), int):
            facts.append(f"{machine['cpus']} CPUs")
        if isinstance(machine.get("mem_total_bytes"), int):
            facts.append(f"{fmt_bytes(machine['mem_total_bytes'])} RAM")
        if facts:
            out += wrap("  machine: " + ", ".join(facts), hang="    ")
    settle = wl.pop("settle", None)
    if isinstance(settle, dict) and settle:
        done = []
        if settle.get("drop_caches"):
            done.append("caches dropped")
        if settle.get("compact_memory"):
            done.append("memory compacted")
        if "kswapd_asleep" in settle:
            done.append("kswapd asleep" if settle["kswapd_asleep"] else "kswapd still awake")
        took = settle.get("seconds")
        when = (f" in {took:.1f} s" if isinstance(took, (int, float))
                and not isinstance(took, bool) else "")
        out += wrap(f"  settled first{when}: " + ", ".join(done or ["-"]), hang="    ")
    if wl:
        out += wrap("  " + _settings(wl), hang="    ")
    return out


def render_text(doc: Dict[str, Any], tracers: Mapping[str, Aggregator]) -> str:
    """The human report: summary, lost events, kernel cross-check, sections."""
    w, t, lost = doc["window"], doc["totals"], doc["lost"]
    out: List[str] = []
    sysinfo = doc["system"]
    dur = fmt_ns(w["duration_ns"]) if w["duration_ns"] is not None else "unfinished"
    out += wrap(f"trace-reclaim report: Linux {sysinfo.get('kernel') or '?'}, {dur}, "
                f"{w['intervals']} intervals, ended{NBSP}by{NBSP}{w['ended_by'] or 'unknown'}",
                hang="  ")
    if sysinfo.get("workload"):
        out += render_workload(sysinfo["workload"])
    extra = []
    if lost["events_outside_window"]:
        extra.append(f"{lost['events_outside_window']} outside the window")
    if lost["unknown_records"]:
        extra.append(f"{lost['unknown_records']} of unknown type skipped")
    out += wrap(f"Lost events: {lost['total']} (ring buffer full)"
                + ("; records " + ", ".join(extra) if extra else ""), hang="  ")
    if lost["undecodable_records"]:
        out += wrap(f"{lost['undecodable_records']} records were damaged and skipped "
                    "(they do not fit their type's declared layout)", hang="  ")
    if not w["end_ns"] and not w["ended_by"]:
        out += wrap("No end: the recording stops before its window closed (the recorder "
                    "was killed, or could not write it): the counts cover what it holds, "
                    "and the kernel's counters at the end were never read, so nothing "
                    "below is checked against them.", hang="  ")
    attach = doc.get("attach")
    if attach:
        out += render_attach(attach)
    out.append("")

    vm = t.get("vmstat_delta", {})
    out.append("Traced vs the kernel's own counters (/proc/vmstat delta):")
    # A tracer, or a tracer's later part, attached after the start is checked
    # against the kernel's counters from its own start on.
    later = {n: p["vmstat_delta"] for p in (attach or {}).get("later", ())
             for n in p["tracers"]}
    lru_vm = later.get("reclaim.lru", vm)   # reclaim's LRU counts (reclaim_lru.bpf.c)
    rows = [
        # stalls and their retries, and those still in reclaim at the end
        ["direct reclaim passes", _sum(t, "direct_reclaim_stalls", "direct_reclaim_retries",
                                       "direct_reclaim_in_flight",
                                       "direct_reclaim_in_flight_retries"),
         _vm(vm, "allocstall_dma", "allocstall_dma32", "allocstall_normal",
             "allocstall_movable", "allocstall_device"), "allocstall_*"],
        ["LRU pages reclaimed, direct", t.get("lru_reclaimed_direct", "-"),
         _vm(lru_vm, "pgsteal_direct"), "pgsteal_direct"],
        ["LRU pages scanned, direct", t.get("lru_scanned_direct", "-"),
         _vm(lru_vm, "pgscan_direct"), "pgscan_direct"],
        ["kswapd wakes", t.get("kswapd_wakes", "-"), _vm(vm, "pageoutrun"), "pageoutrun"],
        ["LRU pages reclaimed, kswapd", t.get("lru_reclaimed_kswapd", "-"),
         _vm(lru_vm, "pgsteal_kswapd"), "pgsteal_kswapd"],
        ["LRU pages scanned, kswapd", t.get("lru_scanned_kswapd", "-"),
         _vm(lru_vm, "pgscan_kswapd"), "pgscan_kswapd"],
    ]
    for name, agg in tracers.items():
        rows += agg.vmstat_rows(t, later.get(name, vm))
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
        if agg.top_level:  # what the report lifted out of the section, back in
            section = {**section, **{k: doc[k] for k in agg.top_level if k in doc}}
        lines = agg.render(section)
        if lines:
            out.append(f"== {agg.section} ==")
            out += lines
            out.append("")

    if doc["zones"]:
        first = doc["zones"][0]
        out += wrap(f"Zone watermarks at {first['when']} (pages; from /proc/zoneinfo):",
                    hang="  ")
        zrows = []
        for z in first["zones"]:
            state = "ok"
            if z.get("free", 0) < z.get("min", 0):
                state = "BELOW MIN"
            elif z.get("free", 0) < z.get("low", 0):
                state = "below low"
            elif z.get("free", 0) < z.get("high", 0):
                state = "below high"
            zrows.append([str(z["node"]), z["zone"], z.get("free"), z.get("min"), z.get("low"),
                          z.get("high"), z.get("boost", 0), z.get("managed"), state])
        out += table(["NODE", "ZONE", "FREE", "MIN", "LOW", "HIGH", "BOOST", "MANAGED",
                      "STATE"], zrows)
        if len(doc["zones"]) > 1:
            out.append(f"  ({len(doc['zones']) - 1} later snapshots in -j output)")
    return "\n".join(out).rstrip() + "\n"


def fit_count(n: Any, w: int) -> str:
    """Return count ``n`` in at most ``w`` (>= 3) columns: 12345 in 4 -> 12k."""
    text = str(n)
    if len(text) <= w or not isinstance(n, int):
        return text
    for unit, div in (("k", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12),
                      ("P", 10**15), ("E", 10**18)):
        text = f"{round(n / div)}{unit}"
        if len(text) <= w:
            return text
    return "~" * w


def fit_ns(ns: Any, w: int) -> str:
    """Return a duration in at most ``w`` (>= 4) columns: 12345.67s in 8 -> 12346s."""
    text = fmt_ns(ns)
    if len(text) <= w:
        return text
    for unit, div in (("s", 1e9), ("h", 3.6e12), ("d", 8.64e13)):
        text = f"{ns / div:.0f}{unit}"
        if len(text) <= w:
            return text
    return "~" * w


def interval_header() -> str:
    return (f"{'TIME':>8} {'WKREQ':>5} {'WAKES':>5} {'AWAKE':>7} {'STALLS':>6} "
            f"{'STALL':>7} {'MAX':>7} {'PAGES':>6} {'MEMCG':>5} {'HUGE':>4} {'FB':>3} "
            f"{'LOST':>5}")


def interval_line(row: Dict[str, Any], clock: str) -> str:
    """One live row: kswapd, direct reclaim, memcg reclaims (a cgroup at its
    limit: no direct-reclaim stall), then huge vmalloc areas and fallbacks (FB).

    Each field keeps its width at any value (a count too wide becomes 12k,
    a duration 12346s), so the row stays under 80 columns and aligned.
    "-" where the tracer is not loaded.
    """
    r = row.get("reclaim", {})
    v = row.get("vmalloc")
    m = row.get("memcg")
    c, t = fit_count, fit_ns
    awake = sum(r.get("kswapd_awake_ns", {}).values())
    huge = (f"{c(v.get('huge_areas', 0), 4):>4} {c(v.get('fallbacks', 0), 3):>3}" if v
            else f"{'-':>4} {'-':>3}")
    memcg = c(m.get("memcg_reclaims", 0), 5) if m is not None else "-"
    return (f"{clock:>8} {c(r.get('wakeup_requests', 0), 5):>5} "
            f"{c(r.get('kswapd_wakes', 0), 5):>5} {t(awake, 7):>7} "
            f"{c(r.get('stalls', 0), 6):>6} {t(r.get('stall_ns', 0), 7):>7} "
            f"{t(r.get('stall_max_ns', 0), 7):>7} {c(r.get('pages', 0), 6):>6} {memcg:>5} "
            f"{huge} {c(row.get('lost_events', 0), 5):>5}")


SEVERITY_MARK = {"critical": "CRIT", "warning": "WARN", "info": "INFO"}


def compact_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                  indent: str = "  ", gap: int = 2, **kw: Any) -> List[str]:
    """A table with two-space gaps (tabulate's plain format pads headers by two)."""
    return table(headers, rows, indent=indent, gap=gap, pad=0, **kw)


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
        out += wrap(f"[{SEVERITY_MARK.get(f['severity'], '?')}] {f['title']}", f"{i:>2}. ")
        out += wrap("evidence: " + _evidence(f["evidence"]), "      ")
        out += wrap("meaning: " + f["meaning"], "      ")
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
    if max(p["some_us"], p["full_us"]) < 10**6:
        return f"{p['some_us'] / 1000:.1f}/{p['full_us'] / 1000:.1f}ms"
    return f"{p['some_us'] / 10**6:.1f}/{p['full_us'] / 10**6:.1f}s"


def render_episodes(doc: Dict[str, Any], limit: int = 20, detail: int = 3) -> List[str]:
    eps = doc.get("episodes") or []
    s = doc.get("episode_summary") or {}
    w0 = doc["window"]["start_ns"]
    da = doc.get("delayacct") or {}
    out = wrap(f"Episodes: {s.get('count', len(eps))} ({s.get('kswapd', 0)} kswapd "
               f"wake-to-sleep, {s.get('direct', 0)} direct-reclaim bursts; burst{NBSP}gap{NBSP}"
               f"{fmt_ns(s.get('burst_gap_ns'))})", hang="  ")
    if not eps:
        out.append("  no reclaim episodes")
        return out
    rows = []
    for e in eps[:limit]:
        flag = "<" if e["began_before_trace"] else ""
        flag += ">" if e["open_at_end"] else ""
        rows.append([str(e["id"]), str(e["node"]), e["kind"][:6] + flag,
                     "+" + fmt_ns(max(0, e["start_ns"] - w0)), fmt_ns(e["duration_ns"]),
                     e["kswapd_wakes"], e["direct_reclaim_stalls"],
                     fmt_ns(e["direct_reclaim_ns"]), e["pages_reclaimed"],
                     _psi_brief(e), _zones_brief(e)])
    # ZONES last: the one column of open length wraps at its own left edge
    out += compact_table(["#", "NODE", "KIND", "START", "DUR", "RUNS", "STALLS", "STALLED",
                          "PAGES", "PSI S/F", "ZONES"], rows, gap=1, flex=10)
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
    out = wrap(f"Episode {e['id']} (node {e['node']}, {e['kind']}, "
               f"+{fmt_ns(max(0, e['start_ns'] - w0))} for {fmt_ns(e['duration_ns'])}):",
               hang="  ")
    seq = " -> ".join(f"{p}@{'-' if off < 0 else '+'}{fmt_ns(abs(off))}"
                      for p, off in e["sequence"])
    out += wrap("order: " + (seq or "-"), "  ", hang="    ")
    wm = e.get("watermarks")
    if wm:
        where = "inside the episode" if wm["inside_episode"] else "before it"
        out += wrap(f"watermarks ({wm['when']} snapshot, {where}):", "  ", hang="    ")
        out += compact_table(
            ["ZONE", "FREE", "MIN", "LOW", "HIGH", "STATE"],
            [[z["zone"], z["free"], z["min"], z["low"], z["high"], z["state"]]
             for z in wm["zones"]], indent="    ")
    if e["stalls"]:
        out += wrap(f"direct-reclaim stalls: {e['direct_reclaim_stalls']} "
                     f"({e['stalls_while_kswapd_awake']} while kswapd awake), "
                     f"{fmt_ns(e['direct_reclaim_ns'])}, max "
                     f"{fmt_ns(e['direct_reclaim_max_ns'])}, {e['pages_reclaimed']} pages",
                     "  ", hang="    ")
        rows = []
        for t in e["stalls"][:5]:
            d = t.get("delays") or {}
            rows.append([str(t["tid"]), t["comm"], t["stalls"], fmt_ns(t["total_ns"]),
                         fmt_ns(t["max_ns"]), t["pages_reclaimed"],
                         fmt_ns(d.get("freepages_delay_total")) if d else "-",
                         fmt_ns(d.get("thrashing_delay_total")) if d else "-",
                         fmt_ns(d.get("compact_delay_total")) if d else "-"])
        out += compact_table(
            ["TID", "COMM", "STALLS", "TOTAL", "MAX", "PAGES", "D:RECLAIM", "D:THRASH",
             "D:COMPACT"], rows, indent="    ")
        if e.get("cgroups"):
            out += wrap("cgroups: " + ", ".join(
                f"{c['name']} x{c['stalls']} {fmt_ns(c['stall_ns'])}" for c in e["cgroups"]),
                "    ", hang="      ")
    sh = e["shrinkers"]
    if sh["calls"]:
        out += wrap(f"shrinkers: {sh['calls']} calls, {sh['scanned']} scanned, "
                    f"{sh['freed']} freed, {fmt_ns(sh['time_ns'])}", "  ", hang="    ")
        out += wrap("by time: " + ", ".join(
            f"{s['name']} {fmt_ns(s['time_ns'])}" for s in sh["top_by_time"]), "    ")
        out += wrap("by freed: " + ", ".join(
            f"{s['name']} {s['freed']}" for s in sh["top_by_freed"]), "    ")
    if e["vmalloc"]:
        out += wrap("vmalloc: " + ", ".join(
            f"{k} x{v['count']} ({fmt_bytes(v['bytes'])}, {v['failed']} failed, "
            f"{v['huge_attempts']} huge)" for k, v in e["vmalloc"].items()), "  ")
    c = e["compaction"]
    if c["runs"] or e["compact_retry"] or e["reclaim_retry_zone"]:
        st = ", ".join(f"{k} x{v}" for k, v in c["status"].items())
        out += wrap(f"compaction: {c['runs']} runs ({c['direct_runs']} direct), "
                     f"{fmt_ns(c['total_ns'])}" + (f": {st}" if st else "")
                     + f"; should_reclaim_retry {e['reclaim_retry_zone']}, "
                     f"should_compact_retry {e['compact_retry']}", "  ")
    for v in e["oom_kills"]:
        out += wrap(f"OOM kill: pid {v['pid']} ({v['comm']}), anon-rss "
                    f"{v['anon_rss_kb']}kB, by {v['by_pid']} ({v['by_comm']})", "  ",
                    hang="    ")
    return out
