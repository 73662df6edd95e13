"""Render a comparison: the 80-column table and the JSON document of ``diff``."""

from __future__ import annotations

import json
from typing import List, Optional

from trace_reclaim.compare.core import Comparison, Item
from trace_reclaim.compare.metrics import fmt_value as _fmt
from trace_reclaim.compare.stats import BOOTSTRAP, MWU

__all__ = ["render_table", "render_json"]


def _fmt_change(it: Item) -> str:
    if it.change is None:
        return "-"
    if it.change == 0:
        return "0"
    if it.change_pct is not None:
        return f"{it.change_pct:+.0f}%"
    return "+" + _fmt(it.change, it.unit) if it.change > 0 else _fmt(it.change, it.unit)


def _fmt_p(p: Optional[float]) -> str:
    if p is None:
        return "-"
    return "<.001" if p < 0.001 else f"{p:.3f}"


def _short(name: str, width: int) -> str:
    """Shorten the middle of a metric name; the last part says what it counts."""
    if len(name) <= width:
        return name
    head, _, last = name.rpartition(".")
    keep = width - len(last) - 3
    return f"{head[:keep]}...{last}" if keep > 4 else name[:width - 2] + ".."


def _wrap(text: str, indent: str = "  ") -> List[str]:
    import textwrap

    return textwrap.wrap(text, 79, initial_indent=indent, subsequent_indent=indent + "  ")


def render_table(c: Comparison) -> str:
    """The diff as text, under 80 columns."""
    out = [f"base: {c.n_base} run(s), new: {c.n_new} run(s); BASE and NEW are each "
           "side's median run", ""]
    w = 28
    out.append(f"{'METRIC':<{w}} {'BASE':>9} {'NEW':>9} {'CHANGE':>7} {'P':>7} SIGNIF")
    for it in c.items:
        ptxt = _fmt_p(it.p_adjusted)
        if it.p_adjusted is None and it.p_value is not None:
            ptxt = f"({_fmt_p(it.p_value).lstrip('0')})"
        out.append(f"{_short(it.name, w):<{w}} {_fmt(it.base, it.unit):>9} "
                   f"{_fmt(it.new, it.unit):>9} {_fmt_change(it):>7} {ptxt:>7} {it.verdict}")
    out.append("")
    out += _wrap(f"test: {MWU}, exact for small run counts; P is Holm-adjusted over the "
                 f"{c.family} comparisons that could reach p < {c.alpha:g} (family-wise "
                 "alpha); (P) in parentheses: raw p of a comparison that could not. "
                 "-j has both.", "")
    few = [it for it in c.items if it.verdict == "no: few runs"]
    if few:
        out += _wrap(f"no: few runs = {few[0].note}; use >= 6 runs per side.")
    if any(it.verdict == "n/a: n<2" for it in c.items):
        out += _wrap("n/a: n<2 = fewer than 2 runs with this metric on a side: never "
                     "called significant.")
    for it in c.items:
        if it.pooled:
            out += _wrap(f"{it.name}: every stall pooled per side; {BOOTSTRAP}"
                         + (f"; {it.note}" if it.note else ""), "")
    if c.base_never_drain or c.new_never_drain:
        gone = sorted(set(c.base_never_drain) - set(c.new_never_drain))
        came = sorted(set(c.new_never_drain) - set(c.base_never_drain))
        out.append(f"caches that never drain: base {len(c.base_never_drain)}, "
                   f"new {len(c.new_never_drain)}")
        if came:
            out += _wrap("only in new: " + ", ".join(came))
        if gone:
            out += _wrap("only in base: " + ", ".join(gone))
    if c.notes:
        out.append("settings that differ between the sides:")
        for n in c.notes:
            out += _wrap(n)
    return "\n".join(out) + "\n"


def render_json(c: Comparison) -> str:
    doc = {
        "alpha": c.alpha,
        "correction": "holm",
        "family_size": c.family,
        "runs": {"base": c.n_base, "new": c.n_new},
        "metrics": [it.as_json() for it in c.items],
        "never_drain_caches": {"base": c.base_never_drain, "new": c.new_never_drain},
        "warnings": c.warnings,
        "setting_differences": c.notes,
    }
    return json.dumps(doc, indent=2) + "\n"
