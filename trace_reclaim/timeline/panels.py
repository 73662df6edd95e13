"""The timeline's panels: one function per panel, each drawing on one Axes.

``Ctx`` carries the report document, the collector and the time origin;
every panel reads what it needs from it and records what it drew in
``ctx.drawn`` (the tests compare that, and the SVG's element ids, with the
report).  matplotlib is imported inside the functions only.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

from trace_reclaim.mmenums import COMPACT_STATUS
from trace_reclaim.report import fmt_ns
from trace_reclaim.timeline.collect import OTHER, TimelineCollector

__all__ = ["Ctx", "strip", "zones_of", "free_pages", "kswapd", "stalls", "shrinkers",
           "compaction", "psi", "vmalloc", "episode_shading", "SEVERITY_COLOR",
           "MAX_FINDINGS_DRAWN"]

EPISODE_COLOR = {"kswapd": "#fdae6b", "direct": "#fb6a4a"}
SEVERITY_COLOR = {"critical": "#b2182b", "warning": "#e66101", "info": "#4393c3"}
ZONE_COLORS = {"DMA": "#8c564b", "DMA32": "#1f77b4", "Normal": "#2ca02c",
               "Movable": "#9467bd", "Device": "#7f7f7f"}
ORDER0_COLOR, HIGH_ORDER_COLOR = "#3182bd", "#de2d26"
DIRECT_COMPACT_COLOR, KCOMPACTD_COLOR = "#756bb1", "#31a354"
SHRINKER_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#bdbdbd")
TOP_SHRINKERS = 5
DISPLAY_BARS = 240         # shrinker bars across the run, at most
OUTLINED_EPISODES = 60     # more episodes than this are drawn without edges
DENSE_MARKS = 2_000        # more marks than this are drawn smaller and fainter
MIN_ZONE_SHARE = 0.01      # zones under this share of a node's pages are not drawn
MAX_FINDINGS_DRAWN = 12
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.07, 1.0), "fontsize": 8,
          "frameon": False, "borderaxespad": 0.0}


def plain_log(ax: Any, fmt: Any = None) -> None:
    """Label a log axis 0.1, 1, 10 (not 1e-01); minor ticks only when it spans little."""
    from matplotlib.ticker import FuncFormatter

    label = fmt or (lambda v, _pos: f"{v:g}")

    def minor(v: float, pos: Any) -> str:
        lo, hi = ax.get_ylim()
        if lo > 0 and hi / lo < 20 and f"{v:.1e}"[0] in "2345":
            return str(label(v, pos))
        return ""

    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def count_formatter(v: float, _pos: Any = None) -> str:
    """1k, 20k, 1.5M: page counts as people say them."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def _s(ns: float, t0: int) -> float:
    return (ns - t0) / 1e9


class Ctx:
    """What every panel needs: the report, the collector, the time origin."""

    def __init__(self, doc: Dict[str, Any], col: TimelineCollector) -> None:
        self.doc = doc
        self.col = col
        w = doc.get("window") or {}
        self.t0 = int(w.get("start_ns") or col.window.start_ns or col.bins.t0 or 0)
        end = w.get("end_ns") or col.window.end_ns
        self.t1 = int(end) if end else self._last_time()
        self.duration = max(1e-3, _s(self.t1, self.t0))
        self.drawn: Dict[str, Any] = {}

    def _last_time(self) -> int:
        col = self.col
        b = col.bins
        last = (b.t0 or 0) + b.used() * b.width
        return max([last] + [s[-1][1] for k in col.kswapd.values() for s in [k.spans] if s])

    def x(self, ns: float) -> float:
        return _s(ns, self.t0)


def episode_shading(ax: Any, ctx: Ctx) -> None:
    """Shade the episodes behind a panel: one collection per kind, not a patch each."""
    spans: Dict[str, List[Tuple[float, float]]] = {}
    for ep in ctx.doc.get("episodes") or []:
        x0 = ctx.x(ep["start_ns"])
        spans.setdefault(ep["kind"], []).append((x0, max(0.0, ctx.x(ep["end_ns"]) - x0)))
    for kind, xr in spans.items():
        ax.broken_barh(xr, (0, 1), transform=ax.get_xaxis_transform(), lw=0, zorder=0,
                       facecolors=EPISODE_COLOR.get(kind, "#dddddd"), alpha=0.22)
    for v in (ctx.doc.get("oom") or {}).get("victims") or []:
        ax.axvline(ctx.x(v["ts_ns"]), color=SEVERITY_COLOR["critical"], lw=1.4, zorder=5)


def finding_place(f: Dict[str, Any], eps: Dict[int, Dict[str, Any]],
                   ctx: Ctx) -> Tuple[float, float, str]:
    """(start, end, how) in seconds: where a finding happened."""
    ts = (f.get("evidence") or {}).get("ts_ns")
    if isinstance(ts, (int, float)) and ts > 0:
        return ctx.x(ts), ctx.x(ts), "at"
    mine = [eps[i] for i in f.get("episodes") or [] if i in eps]
    if mine:
        return (ctx.x(min(e["start_ns"] for e in mine)),
                ctx.x(max(e["end_ns"] for e in mine)), "episodes")
    return 0.0, ctx.duration, "run"


def strip(ax: Any, ctx: Ctx, findings: List[Dict[str, Any]]) -> None:
    from matplotlib.patches import Rectangle

    eps = ctx.doc.get("episodes") or []
    by_id = {e["id"]: e for e in eps}
    drawn = []
    char_w = ctx.duration * 0.0075   # one label character at this figure width
    last_label = {0: -1e18, 1: -1e18}
    few = len(eps) <= OUTLINED_EPISODES
    for ep in eps:
        x0 = ctx.x(ep["start_ns"])
        width = max(ctx.x(ep["end_ns"]) - x0, 0.0)
        # Outlined when few, so that a one-stall burst (no width) still shows.
        ax.add_patch(Rectangle(
            (x0, 0.1), width, 0.8, facecolor=EPISODE_COLOR.get(ep["kind"], "#ccc"),
            edgecolor=("#7f2704" if ep["kind"] == "kswapd" else "#a50f15") if few else "none",
            lw=1.5 if width < ctx.duration / 500 else 0.8, gid=f"episode-{ep['id']}"))
        drawn.append((ep["id"], x0, x0 + width))
        # Centred in its bar, or above it when it would cover the last label;
        # no label where both places are taken.
        xc = x0 + width / 2
        label_w = char_w * (len(str(ep["id"])) + 3)
        row = next((r for r in (0, 1) if xc - last_label[r] >= label_w), None)
        if row is not None:
            last_label[row] = xc
            ax.text(xc, (0.5, 1.2)[row], f"#{ep['id']}", ha="center", va="center",
                    fontsize=7, fontweight="bold", clip_on=True)
    ctx.drawn["episodes"] = drawn
    for v in (ctx.doc.get("oom") or {}).get("victims") or []:
        ax.text(ctx.x(v["ts_ns"]), 0.5, f" OOM kill {v['pid']} ({v['comm']})", fontsize=7,
                color=SEVERITY_COLOR["critical"], va="center", ha="left")
    places = []
    for i, f in enumerate(findings):
        x0, x1, how = finding_place(f, by_id, ctx)
        y = 1.5 + i
        color = SEVERITY_COLOR.get(f.get("severity", "info"), "#777777")
        if how != "at":
            ax.plot([x0, x1], [y, y], color=color, lw=2.2, alpha=0.6,
                    ls="--" if how == "run" else "-", solid_capstyle="butt")
            xs: List[float] = []
            for e in (by_id[j] for j in f.get("episodes") or [] if j in by_id):
                xs += [ctx.x(e["start_ns"]), ctx.x(e["end_ns"]), math.nan]
            if xs:
                ax.plot(xs, [y] * len(xs), color=color, lw=5, solid_capstyle="butt")
        ax.plot([x0], [y], marker="v", ms=8, color=color, ls="none", gid=f"finding-{i + 1}")
        if how == "run":
            ax.text(ctx.duration / 2, y, "whole run", fontsize=7, va="bottom", ha="center",
                    color=color)
        places.append((i + 1, x0, x1, how))
    ctx.drawn["findings"] = places
    ax.set_ylim(0, 1.5 + max(1, len(findings)))
    ax.set_yticks([0.5] + [1.5 + i for i in range(len(findings))],
                  ["episodes" if eps else "no episodes"] +
                  [f"F{i + 1}" for i in range(len(findings))], fontsize=8)
    for i, lab in enumerate(ax.get_yticklabels()[1:]):
        lab.set_color(SEVERITY_COLOR.get(findings[i].get("severity", "info"), "#444"))
        lab.set_fontweight("bold")
    ax.tick_params(axis="y", length=0)
    ax.grid(False)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=EPISODE_COLOR["kswapd"], label="kswapd episode (wake..sleep)"),
               Patch(facecolor=EPISODE_COLOR["direct"], label="direct-reclaim burst"),
               *[Patch(facecolor=c, label=f"{s} finding") for s, c in SEVERITY_COLOR.items()]]
    ax.legend(handles=handles, **LEGEND)
    summ = ctx.doc.get("episode_summary") or {}
    more = f" (the report's {len(eps)} of {summ['count']})" \
        if summ.get("count", 0) > len(eps) else ""
    ax.set_title(f"Episodes{more}, numbered as in the report, and findings (listed below)",
                 loc="left", fontsize=9)


def zones_of(ctx: Ctx) -> Dict[int, Dict[str, List[Tuple[float, ...]]]]:
    """node -> zone -> [(t, free, min, low, high, managed)]."""
    out: Dict[int, Dict[str, List[Tuple[float, ...]]]] = {}
    for ts, _when, zones in ctx.col.zoneinfo.all():
        for node, zone, free, zmin, low, high, managed in zones:
            if None in (free, zmin, low, high):
                continue
            out.setdefault(int(node), {}).setdefault(zone, []).append(
                (ctx.x(ts), free, zmin, low, high, managed or 0))
    return out


def free_pages(ax: Any, ctx: Ctx, node: int, zones: Dict[str, List[Tuple[float, ...]]],
                page_kib: int, gap_s: float) -> None:
    from matplotlib.lines import Line2D

    total = sum(max(r[5] for r in rows) for rows in zones.values()) or 1
    shown, hidden = [], []
    for zone, rows in sorted(zones.items(), key=lambda kv: -max(r[5] for r in kv[1])):
        if max(r[5] for r in rows) < MIN_ZONE_SHARE * total:
            hidden.append(zone)
            continue
        shown.append(zone)
        c = ZONE_COLORS.get(zone, "#555555")
        t = [r[0] for r in rows]
        free = [max(r[1], 1) for r in rows]
        # Readings are taken at the start, at ticks after kswapd woke and at
        # the end: join them solid only where they are a tick or two apart,
        # so a long stretch without readings does not look like a slow slope.
        ax.plot(t, free, color=c, lw=1.0, alpha=0.35)
        run_x: List[float] = []
        run_y: List[float] = []
        for x, y in zip(t, free):
            if run_x and x - run_x[-1] > 2.5 * gap_s:
                ax.plot(run_x, run_y, color=c, lw=1.8)
                run_x, run_y = [], []
            run_x.append(x)
            run_y.append(y)
        ax.plot(run_x, run_y, color=c, lw=1.8)
        ax.plot(t, free, color=c, ls="none", marker="o", ms=3.5, gid=f"free-node{node}-{zone}")
        for k, ls in ((4, "--"), (3, "-."), (2, ":")):
            ax.plot(t, [max(r[k], 1) for r in rows], color=c, lw=1.0, ls=ls, drawstyle="steps-post")
    ax.set_yscale("log")
    plain_log(ax, count_formatter)
    ax.set_ylabel(f"pages ({page_kib} KiB)", fontsize=8)
    handles = [Line2D([], [], color=ZONE_COLORS.get(z, "#555"), lw=2, label=f"zone {z}")
               for z in shown]
    handles += [Line2D([], [], color="#444", lw=1.8, marker="o", ms=3.5,
                       label="free (a reading per dot)"),
                Line2D([], [], color="#444", lw=1.0, alpha=0.35,
                       label="free, no readings between"),
                Line2D([], [], color="#444", lw=1, ls="--", label="high watermark"),
                Line2D([], [], color="#444", lw=1, ls="-.", label="low watermark"),
                Line2D([], [], color="#444", lw=1, ls=":", label="min watermark")]
    ax.legend(handles=handles, **LEGEND)
    note = f"; zones under {MIN_ZONE_SHARE:.0%} of the node not drawn: " + \
        ", ".join(hidden) if hidden else ""
    ax.set_title(f"Node {node}: free pages against the watermarks (/proc/zoneinfo at "
                 f"start, after kswapd woke, at end{note})", loc="left", fontsize=9)
    ctx.drawn.setdefault("zones", {})[node] = shown


def kswapd(ax: Any, ctx: Ctx) -> None:
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D

    col = ctx.col
    nodes = sorted(col.kswapd) or [0]
    b = col.bins
    awake: Dict[int, int] = {}
    for row, nid in enumerate(nodes):
        k = col.kswapd.get(nid)
        if k is None:
            continue
        if k.spans_dropped:
            # Too many spans to keep: the share of each bin kswapd was awake.
            a = b.series.get(("kswapd_awake_ns", nid))
            if a is not None:
                n = b.used()
                xs = [ctx.x((b.t0 or 0) + i * b.width) for i in range(n + 1)]
                frac = [min(1.0, a[i] / b.width) for i in range(n)]
                ax.stairs([row - 0.35 + 0.7 * f for f in frac], xs, baseline=row - 0.35,
                          fill=True, color="#e6550d", gid=f"kswapd-node{nid}")
                awake[nid] = int(sum(a[:n]))
        else:
            bars = [(ctx.x(s), (e - s) / 1e9) for s, e in k.spans]
            ax.broken_barh(bars, (row - 0.35, 0.7), facecolors="#e6550d",
                           gid=f"kswapd-node{nid}")
            awake[nid] = sum(e - s for s, e in k.spans)
    ctx.drawn["kswapd_awake_ns"] = awake
    ctx.drawn["kswapd_spans"] = {nid: len(k.spans) for nid, k in col.kswapd.items()}
    ax.set_ylim(-0.6, len(nodes) - 0.4)
    ax.set_yticks(range(len(nodes)), [f"node {n}" for n in nodes], fontsize=8)
    handles: List[Any] = [Patch(facecolor="#e6550d", label="kswapd awake")]
    w = b.series.get("wakeup_kswapd")
    if w is not None:
        n = b.used()
        group = max(1, math.ceil(n / DISPLAY_BARS))
        tw = ax.twinx()
        xs = [ctx.x((b.t0 or 0) + i * b.width) for i in range(0, n, group)]
        xs.append(ctx.x((b.t0 or 0) + (len(xs)) * group * b.width))
        tw.stairs([v / (group * b.width / 1e9) for v in rebinned(w, n, group)], xs,
                  color="#252525", lw=0.9, alpha=0.8)
        tw.set_ylabel("wakeups/s", fontsize=8)
        tw.set_ylim(bottom=0)
        tw.tick_params(labelsize=7)
        handles.append(Line2D([], [], color="#636363", lw=0.9,
                              label="wakeup_kswapd requests/s\n(right axis)"))
    ax.legend(handles=handles, **LEGEND)
    total = sum(n.get("kswapd_wakes", 0) for n in (ctx.doc.get("reclaim") or {}).get("kswapd", []))
    ax.set_title(f"kswapd: awake spans per node (mm_vmscan_kswapd_wake .. _sleep); "
                 f"{total} balance_pgdat() runs", loc="left", fontsize=9)


def stall_area(delta_ns: int) -> float:
    """A stall mark's area in points^2: the same latency, the same mark, in any run.

    Grows with log2(1 + ms): 0.05 ms is a dot, 1 ms about 70, 10 ms about 220.
    """
    return min(400.0, 8.0 + 60.0 * math.log2(1.0 + delta_ns / 1e6))


def stalls(ax: Any, ctx: Ctx) -> None:
    from matplotlib.lines import Line2D

    col = ctx.col
    marks = sorted(col.stalls.items, key=lambda m: m[1])
    d = ((ctx.doc.get("reclaim") or {}).get("direct_reclaim")) or {}
    if marks:
        dense = len(marks) > DENSE_MARKS
        ax.scatter([ctx.x(m[1]) for m in marks], [m[0] / 1e6 for m in marks],
                   s=[stall_area(m[0]) * (0.35 if dense else 1.0) for m in marks],
                   c=[HIGH_ORDER_COLOR if m[2] else ORDER0_COLOR for m in marks],
                   alpha=0.35 if dense else 0.65, linewidths=0 if dense else 0.4,
                   edgecolors="#222222", gid="stall-marks", zorder=3)
        ax.set_yscale("log")
        plain_log(ax)
    else:
        ax.text(0.5, 0.5, "no direct-reclaim stalls", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color="#555")
        ax.set_yticks([])
    ctx.drawn["stall_marks"] = len(marks)
    ax.set_ylabel("stall (ms)", fontsize=8)
    handles = [Line2D([], [], marker="o", ls="none", color=ORDER0_COLOR, label="order 0"),
               Line2D([], [], marker="o", ls="none", color=HIGH_ORDER_COLOR,
                      label="order > 0 (high order)")]
    handles += [Line2D([], [], marker="o", ls="none", mfc="none", mec="#444444",
                       ms=math.sqrt(stall_area(int(ms * 1e6))), label=f"{ms:g} ms stall")
                for ms in (0.1, 1, 10)]
    title = (f"Direct reclaim: {col.stalls.count} stalls, {fmt_ns(d.get('total_ns'))} "
             f"stalled, p99 {fmt_ns(d.get('p99_ns'))}, max {fmt_ns(d.get('max_ns'))}; "
             "one mark per stall at its start, its area by latency")
    if col.stalls.capped:
        title += f" (the {len(marks)} longest drawn)"
        b = col.bins
        a = b.series.get("stalls")
        if a is not None:
            n = b.used()
            group = max(1, math.ceil(n / DISPLAY_BARS))
            tw = ax.twinx()
            xs = [ctx.x((b.t0 or 0) + i * b.width) for i in range(0, n, group)]
            xs.append(ctx.x((b.t0 or 0) + len(xs) * group * b.width))
            tw.stairs([v / (group * b.width / 1e9) for v in rebinned(a, n, group)], xs,
                      color="#636363", lw=0.9)
            tw.set_ylabel("stalls/s", fontsize=8)
            tw.tick_params(labelsize=7)
            handles.append(Line2D([], [], color="#636363", lw=0.9, label="all stalls/s"))
    ax.legend(handles=handles, **LEGEND)
    ax.set_title(title, loc="left", fontsize=9)


def rebinned(values: Sequence[float], n: int, group: int) -> List[float]:
    return [sum(values[i:i + group]) for i in range(0, n, group)]


def shrinkers(ax: Any, ctx: Ctx) -> None:
    col = ctx.col
    b = col.bins
    names: Dict[int, str] = {}
    for s in (ctx.doc.get("slab") or {}).get("shrinkers") or []:
        try:
            names[int(s.get("shr", "0"), 16)] = s["name"]
        except (TypeError, ValueError, KeyError):
            continue
    series = {k[1]: a for k, a in b.series.items()
              if isinstance(k, tuple) and k[0] == "shrink_ns"}
    freed = {k[1]: a for k, a in b.series.items()
             if isinstance(k, tuple) and k[0] == "shrink_freed"}
    n = b.used()
    if not series or n == 0:
        ax.text(0.5, 0.5, "no shrinker calls in the window", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color="#555")
        ax.set_yticks([])
        ctx.drawn["shrinker_series"] = []
        ax.set_title("Shrinkers (do_shrink_slab)", loc="left", fontsize=9)
        return
    ranked = sorted(series, key=lambda k: -sum(series[k]))
    top = [k for k in ranked if k != OTHER][:TOP_SHRINKERS]
    rest = [k for k in ranked if k not in top]
    group = max(1, math.ceil(n / DISPLAY_BARS))
    width_s = b.width * group / 1e9
    xs = [ctx.x((b.t0 or 0) + i * b.width) for i in range(0, n, group)]
    bottom = [0.0] * len(xs)
    rows: List[Tuple[str, List[float], float, float]] = []
    for k in top:
        rows.append((names.get(k, f"{k:#x}"), rebinned(series[k], n, group),
                     sum(series[k]), sum(freed.get(k, ()))))
    if rest:
        acc = [0.0] * len(xs)
        tot = fr = 0.0
        for k in rest:
            for i, v in enumerate(rebinned(series[k], n, group)):
                acc[i] += v
            tot += sum(series[k])
            fr += sum(freed.get(k, ()))
        rows.append((f"{len(rest)} other shrinker" + ("s" if len(rest) > 1 else ""),
                     acc, tot, fr))
    for (label, vals, tot, fr), color in zip(rows, SHRINKER_COLORS):
        h = [v / (width_s * 1e9) * 1e3 for v in vals]   # ms of shrinker time per s
        ax.bar(xs, h, width=width_s, bottom=bottom, align="edge", color=color, lw=0,
               label=f"{label}: {fmt_ns(tot)}, {int(fr)} freed")
        bottom = [a + c for a, c in zip(bottom, h)]
    ctx.drawn["shrinker_series"] = [r[0] for r in rows]
    ax.set_ylabel("ms per s", fontsize=8)
    ax.legend(**LEGEND)
    ax.set_title(f"Shrinkers: time in do_shrink_slab() per second of the run, "
                 f"{col.shrinker_calls} calls (mm_shrink_slab_start .. _end)",
                 loc="left", fontsize=9)


def compaction(ax: Any, ctx: Ctx) -> None:
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    marks = sorted(ctx.col.compactions.items, key=lambda m: m[1])
    if marks:
        ok = [COMPACT_STATUS.get(m[3]) == "success" for m in marks]
        colors = [KCOMPACTD_COLOR if m[2] else DIRECT_COMPACT_COLOR for m in marks]
        dense = len(marks) > DENSE_MARKS
        # Alpha baked into the colours: scatter(alpha=...) fills marks whose
        # faces are all transparent (matplotlib 3.11).
        alpha = 0.5 if dense else 1.0
        edges = [to_rgba(c, alpha) for c in colors]
        ax.scatter([ctx.x(m[1]) for m in marks], [m[0] / 1e6 for m in marks],
                   s=6 if dense else 16,
                   facecolors=[e if s else (0.0, 0.0, 0.0, 0.0) for e, s in zip(edges, ok)],
                   edgecolors=edges, linewidths=0.6 if dense else 0.9,
                   gid="compaction-marks", zorder=3)
        ax.set_yscale("log")
        plain_log(ax)
    else:
        ax.text(0.5, 0.5, "no compaction runs", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color="#555")
        ax.set_yticks([])
    ctx.drawn["compaction_marks"] = len(marks)
    ax.set_ylabel("run (ms)", fontsize=8)
    handles = [Line2D([], [], marker="o", ls="none", color=DIRECT_COMPACT_COLOR,
                      label="direct compaction"),
               Line2D([], [], marker="o", ls="none", color=KCOMPACTD_COLOR, label="kcompactd"),
               Line2D([], [], marker="o", ls="none", mfc="none", mec="#444",
                      label="hollow: not COMPACT_SUCCESS")]
    ax.legend(handles=handles, **LEGEND)
    c = ctx.col.compactions
    extra = f" (the {len(marks)} longest drawn)" if c.capped else ""
    ax.set_title(f"Compaction: {c.count} compact_zone() runs{extra}, one mark per run "
                 "at its start (mm_compaction_begin .. _end)", loc="left", fontsize=9)


def psi(ax: Any, ctx: Ctx) -> None:
    pts = ctx.col.psi.all()
    edges = [ctx.x(p[0]) for p in pts]
    some, full = [], []
    for a, b in zip(pts, pts[1:]):
        dt_us = (b[0] - a[0]) / 1e3
        some.append(max(0.0, (b[1] - a[1]) / dt_us * 100) if dt_us > 0 else 0.0)
        if a[2] is not None and b[2] is not None and dt_us > 0:
            full.append(max(0.0, (b[2] - a[2]) / dt_us * 100))
    ax.stairs(some, edges, color="#fd8d3c", fill=True, alpha=0.45,
              label="some: at least one task stalled", gid="psi-some")
    if len(full) == len(some):
        ax.stairs(full, edges, color="#bd0026", lw=1.4, label="full: all tasks stalled",
                  gid="psi-full")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("% of time", fontsize=8)
    ax.legend(**LEGEND)
    ax.set_title("PSI memory (/proc/pressure/memory): share of each interval tasks "
                 "waited for memory", loc="left", fontsize=9)
    ctx.drawn["psi_intervals"] = len(some)


def vmalloc(ax: Any, ctx: Ctx) -> None:
    v = ctx.doc.get("vmalloc") or {}
    areas = v.get("areas") or []
    byv = v.get("by_verdict") or {}
    hb = int(v.get("huge_page_bytes") or 2 << 20)
    drawn = {}
    for verdict, marker, color, label in (
            ("huge", "^", "#238b45", "huge: {} MiB pages"),
            ("fallback", "X", "#cb181d", "fallback to small pages")):
        pts = [a for a in areas if a.get("verdict") == verdict]
        n = (byv.get(verdict) or {}).get("areas", len(pts))
        drawn[verdict] = len(pts)
        if pts:
            ax.scatter([ctx.x(a["ts_ns"]) for a in pts], [a["size"] / (1 << 20) for a in pts],
                       marker=marker, s=60, color=color, gid=f"vmalloc-{verdict}", zorder=3,
                       label=label.format(hb >> 20) + f" ({n})")
        else:
            ax.scatter([], [], marker=marker, s=60, color=color,
                       label=label.format(hb >> 20) + f" ({n})")
    ctx.drawn["vmalloc"] = drawn
    sizes = [a["size"] / (1 << 20) for a in areas if a.get("verdict") in ("huge", "fallback")]
    ax.set_ylim(0, max(sizes + [1.0]) * 1.3)
    ax.set_ylabel("area (MiB)", fontsize=8)
    ax.legend(**LEGEND)
    if not any(drawn.values()):
        ax.text(0.5, 0.5, "no huge vmalloc attempts", transform=ax.transAxes, ha="center",
                va="center", fontsize=9, color="#555")
    ax.set_title("vmalloc: huge-page areas and fallbacks, at alloc_vmap_area "
                 f"({(byv.get('not_eligible') or {}).get('areas', 0)} areas not eligible)",
                 loc="left", fontsize=9)
