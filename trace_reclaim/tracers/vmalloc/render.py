"""Render the vmalloc section of the text report (under 80 columns).

Pure: the section ``VmallocAggregator.report()`` built (also what
``report -j`` prints) in, lines out: areas by verdict and by caller, the
huge-eligible areas one by one, what was still mapped at the end, and the
BPF side's own accounting next to /proc/vmallocinfo.
"""

from __future__ import annotations

from typing import Any, Dict, List

from trace_reclaim.report import NBSP, ellipsize, fmt_bytes, table, wrap
from trace_reclaim.tracers.vmalloc.areas import VERDICTS

__all__ = ["render"]


def render(section: Dict[str, Any]) -> List[str]:
    """Return the vmalloc section's text lines."""
    return verdict_lines(section) + notable_lines(section) + end_lines(section)


def verdict_lines(section: Dict[str, Any]) -> List[str]:
    """Areas by verdict, then by caller."""
    hp = section["huge_page_bytes"] >> 20
    v = section["by_verdict"]
    c = section["counts"]
    out = wrap(f"vmalloc areas: {sum(x['areas'] for x in v.values())} allocated, "
               f"{c['frees']} frees ({c['frees_untracked']} of untracked areas), "
               f"{c['purges']} lazy purges", hang="  ")
    out += wrap(f"plan: {section['plan']}", hang="  ")
    rows = []
    for name in VERDICTS:
        x = v[name]
        waste = fmt_bytes(x["waste_known"]) + f" ({x['waste_known_areas']} known)" \
            if x["waste_known_areas"] else "-"
        rows.append([name, x["areas"], fmt_bytes(x["bytes"]),
                     f"{x['huge_pages']} x {hp} MiB" if x["huge_pages"] else "-", waste])
    out += table(["VERDICT", "AREAS", "MAPPED", "HUGE PAGES", "WASTE"], rows)
    out.append("")
    out.append("By caller:")
    crow = [[x["caller"], x["areas"],
             "/".join(str(x[k]) for k in VERDICTS)] for x in section["by_caller"][:12]]
    # A caller chain too long for its column gets a line of its own.
    out += table(["CALLER", "AREAS", "HUGE/FB/NE/UNK"], crow, flex=0, own_line=True)
    return out


def notable_lines(section: Dict[str, Any]) -> List[str]:
    """The huge-eligible areas (huge, fallback, unknown), one by one."""
    out: List[str] = []
    notable = [a for a in section["areas"] if a["verdict"] != "not_eligible"]
    if notable:
        out.append("")
        out.append("Huge-eligible areas:")
        for a in notable[:20]:
            req = fmt_bytes(a["requested"]) if a["requested"] is not None else "?"
            waste = fmt_bytes(a["waste"]) if a["waste"] is not None \
                else a["waste_bound"]
            align = fmt_bytes(a["align"])
            if a.get("attempt"):
                align += f" (attempt {fmt_bytes(a['attempt']['align'])})"
            out += wrap(f"{a['verdict']:<8} {fmt_bytes(a['size']):>9} "
                        f"req {req:>9} align {align} {a['pid']}/{a['comm']}", "  ",
                        hang=" " * 11)
            out += wrap(str(a["why"]), " " * 11)
            out += wrap(f"waste {waste}", " " * 11)
            out += wrap(a["caller"], " " * 11, hang=" " * 13)
        if len(notable) > 20:
            out.append(f"  ... {len(notable) - 20} more (see -j)")
    return out


def end_lines(section: Dict[str, Any]) -> List[str]:
    """Areas live at the end, bounded state, the BPF side's counters, vmallocinfo."""
    out: List[str] = []
    c = section["counts"]
    live = [a for a in section["areas"] if a["live"]]
    out.append("")
    out.append(f"Live at the end: {len(live)} areas allocated in the window, "
               f"{fmt_bytes(sum(a['size'] for a in live))}")
    for a in live[:8]:
        out.append(ellipsize(f"  {a['addr']} {fmt_bytes(a['size']):>9} {a['verdict']:<12} "
                             f"{a['caller']}", 80))
    if len(live) > 8:
        out.append(f"  ... {len(live) - 8} more (see -j)")
    lost = [f"{k} {c[k]}" for k in ("areas_dropped", "areas_not_listed",
                                     "state_dropped", "replaced_unfreed") if c[k]]
    if lost:
        out += wrap("Bounded state: " + ", ".join(lost), hang="  ")
    k = section["kernel"]
    if k:
        n = {key: f"{k.get(key, 0)}{NBSP}" for key in (
            "armed", "arm_full", "disarm_done", "disarm_failed", "disarm_free",
            "disarm_timeout", "disarm_misses", "page_misses", "stale_armed")}
        out += wrap(f"In-kernel: {n['armed']}huge attempts armed, {n['arm_full']}not "
                    f"(table full); disarmed: {n['disarm_done']}complete, "
                    f"{n['disarm_failed']}failed, {n['disarm_free']}freed, "
                    f"{n['disarm_timeout']}timed{NBSP}out, {n['disarm_misses']}after "
                    f"{n['page_misses']}other page allocs; {n['stale_armed']}stale",
                    hang="  ")
    vi = section["vmallocinfo"]
    if "start" in vi and "end" in vi:
        s, e = vi["start"], vi["end"]
        out += wrap(f"/proc/vmallocinfo: {s['areas']} -> {e['areas']} vmalloc'd areas "
                    f"({e['areas'] - s['areas']:+d}); traced allocs - frees "
                    f"{c['allocs'] - c['frees']:+d}", hang="  ")
    out.append("Note: /proc/vmallocinfo cannot show huge mappings: its pages=")
    out.append("  counts 4 KiB pages for a 2 MiB-mapped area too (addresses hashed).")
    return out
