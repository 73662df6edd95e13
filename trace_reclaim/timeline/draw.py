"""Draw one picture of a run: what reclaim did, in which order.

Stacked panels share the time axis (seconds since the trace began):

1. episodes (shaded through every panel, numbered as in the report) and
   the findings, marked where they happened, OOM kills as red lines;
2. per NUMA node, each zone's free pages against its min/low/high
   watermarks (``/proc/zoneinfo`` at the start, after kswapd woke, at the end);
3. kswapd's awake spans per node, and the wakeup_kswapd requests per second;
4. direct-reclaim stalls, one mark each, placed at the stall's start,
   its height and area its latency;
5. shrinker time per second, stacked by shrinker (slab tracer);
6. compaction runs, one mark each, direct and kcompactd (oom tracer);
7. PSI memory some/full: the share of each interval tasks were stalled;
8. huge vmalloc areas and their fallbacks to small pages (vmalloc tracer).

Panels of tracers the recording does not have are left out; a tracer that
was there but saw nothing says so.  matplotlib (the ``diff`` extra) is
imported when drawing, not before; its Agg canvas needs no display.  Artists carry ``gid``s
(``stall-marks``, ``episode-N``, ``finding-N``, ...) that appear as element
ids in the SVG, so tests check what was drawn, not only that a file exists.
"""

from __future__ import annotations

import textwrap
from typing import Any, Dict, List, Optional, Sequence, Tuple

from trace_reclaim.report import fmt_ns
from trace_reclaim.timeline.collect import TimelineCollector
from trace_reclaim.timeline.panels import (MAX_FINDINGS_DRAWN, SEVERITY_COLOR, Ctx, compaction,
                                           episode_shading, free_pages, kswapd, psi, shrinkers,
                                           stalls, strip, vmalloc, zones_of)

__all__ = ["render", "FORMATS"]

FORMATS = (".png", ".svg")


def _findings_text(ax: Any, findings: List[Dict[str, Any]], more: int) -> None:
    ax.axis("off")
    step = 1.0 / max(1, _findings_lines(findings) + (1 if more else 0))
    y = 1.0
    for i, f in enumerate(findings):
        sev = f.get("severity", "info")
        text = _wrapped(f)
        ax.text(0.0, y, f"F{i + 1}", transform=ax.transAxes, va="top", fontsize=8.5,
                fontweight="bold", color=SEVERITY_COLOR.get(sev, "#444"))
        ax.text(0.03, y, "\n".join(text), transform=ax.transAxes, va="top", fontsize=8.5,
                linespacing=1.25)
        y -= step * len(text)
    if more:
        ax.text(0.0, y, f"... {more} more findings: see 'trace-reclaim report'",
                transform=ax.transAxes, va="top", fontsize=8.5)


def _wrapped(f: Dict[str, Any]) -> List[str]:
    return textwrap.wrap(f"[{f.get('severity', 'info')}] {f.get('title') or f.get('kind')}",
                         150) or [""]


def _findings_lines(findings: List[Dict[str, Any]]) -> int:
    return sum(len(_wrapped(f)) for f in findings)


def render(doc: Dict[str, Any], col: TimelineCollector, path: str,
           tracers: Optional[Sequence[str]] = None, page_size: int = 4096,
           interval_s: float = 1.0) -> Dict[str, Any]:
    """Draw the run's timeline to ``path`` (.png or .svg); return what was drawn.

    ``doc`` is the report document, ``col`` the collector fed the same
    records; ``tracers`` names the recording's tracers (panels of absent
    ones are left out); ``interval_s`` is the recording's tick.
    """
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

    ctx = Ctx(doc, col)
    have = set(tracers if tracers is not None else ("reclaim", "slab", "oom", "vmalloc"))
    findings_all = doc.get("findings") or []
    findings = findings_all[:MAX_FINDINGS_DRAWN]
    zones = zones_of(ctx)
    panels: List[Tuple[str, float, Any]] = [
        ("episodes", 0.55 + 0.28 * max(1, len(findings)), None)]
    for node in sorted(zones):
        panels.append((f"free-node{node}", 2.3, node))
    if "reclaim" in have:
        panels.append(("kswapd", 0.75 + 0.3 * max(1, len(col.kswapd)), None))
        panels.append(("stalls", 2.2, None))
    if "slab" in have:
        panels.append(("shrinkers", 1.9, None))
    if "oom" in have:
        panels.append(("compaction", 1.7, None))
    if len(col.psi.all()) >= 2:
        panels.append(("psi", 1.25, None))
    if "vmalloc" in have:
        panels.append(("vmalloc", 1.25, None))
    text_h = 0.2 + 0.17 * (_findings_lines(findings) + (1 if len(findings_all) >
                                                         len(findings) else 0))
    heights = [p[1] for p in panels] + [text_h]
    title_h, bottom_h = 0.75, 0.15
    fig_h = sum(heights) + 0.45 * len(panels) + title_h + bottom_h
    fig = Figure(figsize=(14, fig_h))
    gs = GridSpec(len(heights), 1, figure=fig, height_ratios=heights,
                  hspace=0.45 * len(panels) / sum(heights) * 1.0 + 0.18,
                  left=0.065, right=0.725, top=1 - title_h / fig_h, bottom=bottom_h / fig_h)
    axes: List[Any] = []
    first = None
    for i, (name, _h, arg) in enumerate(panels):
        ax = fig.add_subplot(gs[i], sharex=first)
        first = first or ax
        axes.append(ax)
        ax.tick_params(which="both", labelsize=7.5)
        ax.grid(True, axis="x", alpha=0.25)
        if name != "episodes":
            episode_shading(ax, ctx)
        if name == "episodes":
            strip(ax, ctx, findings)
        elif name.startswith("free-node"):
            free_pages(ax, ctx, arg, zones[arg], page_size // 1024, interval_s)
        elif name == "kswapd":
            kswapd(ax, ctx)
        elif name == "stalls":
            stalls(ax, ctx)
        elif name == "shrinkers":
            shrinkers(ax, ctx)
        elif name == "compaction":
            compaction(ax, ctx)
        elif name == "psi":
            psi(ax, ctx)
        elif name == "vmalloc":
            vmalloc(ax, ctx)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("time since the trace began (s)", fontsize=9)
    axes[0].set_xlim(0, ctx.duration)
    _findings_text(fig.add_subplot(gs[len(panels)]), findings,
                   len(findings_all) - len(findings))
    ctx.drawn["panels"] = [p[0] for p in panels]
    fig.suptitle(_title(doc, ctx), x=0.065, y=1 - 0.12 / fig_h, ha="left", va="top",
                 fontsize=11)
    if path.lower().endswith(".png"):
        _save_png(fig, path)
    else:
        fig.savefig(path)
    return ctx.drawn


def _save_png(fig: Any, path: str) -> None:
    """Write a 256-colour PNG: a third of the bytes of a true-colour one, and
    a chart has far fewer colours than that (Pillow comes with matplotlib)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                                   dither=Image.Dither.NONE).save(
            path, format="PNG", optimize=True)


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _title(doc: Dict[str, Any], ctx: Ctx) -> str:
    s = doc.get("system") or {}
    w = doc.get("window") or {}
    t = doc.get("totals") or {}
    summ = doc.get("episode_summary") or {}
    dur = w.get("duration_ns")
    head = (f"trace-reclaim timeline: Linux {s.get('kernel') or '?'} on "
            f"{s.get('hostname') or '?'}, {dur / 1e9:.1f} s" if dur else
            f"trace-reclaim timeline: Linux {s.get('kernel') or '?'} on "
            f"{s.get('hostname') or '?'}, window not closed")
    if w.get("ended_by"):
        head += f" (ended by {w['ended_by']})"
    wl = s.get("workload")
    name = wl.get("name") if isinstance(wl, dict) else wl
    if isinstance(name, str) and name:
        head += f", workload {name}"
    facts = [f"{t.get('direct_reclaim_stalls', 0)} direct-reclaim stalls "
             f"({fmt_ns(t.get('direct_reclaim_ns', 0))})",
             f"{t.get('kswapd_wakes', 0)} kswapd wakes",
             _plural(summ.get("count", 0), "episode")]
    if "compaction_runs_direct" in t:
        facts.append(f"{t['compaction_runs_direct'] + t.get('compaction_runs_kcompactd', 0)} "
                     "compaction runs")
    if "oom_kills" in t:
        facts.append(f"{t['oom_kills']} OOM kills")
    lost = (doc.get("lost") or {}).get("total", 0)
    facts.append(f"{lost} events lost" if lost else "no events lost")
    return head + "\n" + ", ".join(facts)
