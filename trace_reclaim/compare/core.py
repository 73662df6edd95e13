"""Compare two sides run by run: one Item per metric, Holm-corrected.

Part of ``trace-reclaim diff`` (see the package docstring).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from trace_reclaim.compare.metrics import (Run, doc_get, fmt_value, fold_shrinkers, metric_order,
                                           metric_unit, never_drain_caches)
from trace_reclaim.compare.stats import BOOTSTRAP, MWU, cluster_bootstrap_median, holm, mwu
from trace_reclaim.env import ExitStatus, UserError

__all__ = ["DEFAULT_ALPHA", "Item", "Comparison", "compare", "header_differences",
           "split_sides"]

DEFAULT_ALPHA = 0.05


@dataclass
class Item:
    """One metric compared across the two sides."""

    name: str
    unit: str
    base_values: List[float]
    new_values: List[float]
    base: Optional[float] = None
    new: Optional[float] = None
    change: Optional[float] = None
    change_pct: Optional[float] = None
    test: Optional[str] = None
    p_value: Optional[float] = None          # raw
    p_adjusted: Optional[float] = None       # Holm
    min_p: Optional[float] = None            # the smallest p these run counts allow
    ci: Optional[Tuple[float, float]] = None
    significant: bool = False
    verdict: str = "n/a"
    note: str = ""
    pooled: bool = False                     # pooled stalls, not per-run values
    in_family: bool = True                   # counted in the Holm correction

    def as_json(self) -> Dict[str, Any]:
        return {
            "name": self.name, "unit": self.unit, "base": self.base, "new": self.new,
            "change": self.change, "change_pct": self.change_pct,
            "direction": _direction(self.change),
            "significant": self.significant, "verdict": self.verdict,
            "test": self.test, "p_value": self.p_value, "p_adjusted": self.p_adjusted,
            "min_possible_p": self.min_p,
            "ci95": list(self.ci) if self.ci is not None else None,
            "n_base": len(self.base_values), "n_new": len(self.new_values),
            "base_values": self.base_values, "new_values": self.new_values,
            "note": self.note,
        }


def _direction(change: Optional[float]) -> Optional[str]:
    if change is None:
        return None
    return "up" if change > 0 else "down" if change < 0 else "same"


@dataclass
class Comparison:
    items: List[Item]
    alpha: float
    n_base: int
    n_new: int
    family: int
    base_never_drain: List[str]
    new_never_drain: List[str]
    warnings: List[str]
    notes: List[str]


def _median(vals: Sequence[float]) -> Optional[float]:
    return float(statistics.median(vals)) if vals else None


def compare(base: Sequence[Run], new: Sequence[Run], alpha: float = DEFAULT_ALPHA,
            bootstrap: bool = True) -> Comparison:
    """Compare every metric; the verdicts are Holm-corrected over the family."""
    folded = fold_shrinkers([r.metrics for r in list(base) + list(new)])
    bm, nm = folded[:len(base)], folded[len(base):]
    names = sorted({k for m in bm + nm for k in m}, key=metric_order)
    items: List[Item] = []
    for name in names:
        bv = [float(v) for m in bm if (v := m.get(name)) is not None]
        nv = [float(v) for m in nm if (v := m.get(name)) is not None]
        # A shrinker that never ran in a run that had the slab section freed 0.
        if name.startswith("shrinker."):
            bv = [float(m.get(name) or 0) for m in bm if _has_slab(m)]
            nv = [float(m.get(name) or 0) for m in nm if _has_slab(m)]
        it = Item(name, metric_unit(name), bv, nv, base=_median(bv), new=_median(nv))
        if it.base is not None and it.new is not None:
            it.change = it.new - it.base
            it.change_pct = (100.0 * it.change / it.base) if it.base else None
        if not bv and not nv:
            it.verdict, it.note = "n/a", "no data on either side"
        elif len(bv) < 2 or len(nv) < 2:
            it.test = MWU
            it.verdict = "n/a: n<2"
            it.note = (f"needs >= 2 runs per side with this metric "
                       f"(base {len(bv)}, new {len(nv)})")
        else:
            it.test = MWU
            it.p_value, how, it.min_p = mwu(bv, nv)
            it.test = f"{MWU}, {how}"
        items.append(it)
    if bootstrap:
        pooled = _pooled_latency(base, new)
        if pooled is not None:
            items.insert(4, pooled)
    tested = [it for it in items if it.p_value is not None]
    for it in tested:
        if not it.pooled and len(set(it.base_values) | set(it.new_values)) == 1:
            it.verdict, it.in_family = "same", False
        elif it.min_p is not None and it.min_p >= alpha:
            it.verdict, it.in_family = "no: few runs", False
            it.note = (f"{len(it.base_values)}+{len(it.new_values)} runs cannot give "
                       f"p < {alpha:g} (smallest possible p {it.min_p:.3g})")
    # Tarone (1990): a test that cannot reach alpha whatever the labels (every
    # value equal, or too few runs) cannot give a false positive, so it does
    # not enlarge the family.  Which tests those are depends only on the run
    # counts and the pooled values, never on which side a value came from.
    family = [it for it in tested if it.in_family]
    for it, adj in zip(family, holm([it.p_value for it in family])):  # type: ignore[misc]
        it.p_adjusted = adj
        it.significant = adj < alpha
        it.verdict = "yes" if it.significant else "no"
    warnings, notes = header_differences(base, new)
    for r in list(base) + list(new):
        lost = doc_get(r.doc, "totals", "lost_events")
        if lost:
            warnings.append(f"{r.path}: {lost} events were lost (ring buffer full); its "
                            "counts are low")
    return Comparison(items, alpha, len(base), len(new), len(family),
                      _union_never_drain(base), _union_never_drain(new), warnings, notes)


def _has_slab(m: Dict[str, Optional[float]]) -> bool:
    return "slab.never_drain_caches" in m or any(k.startswith("shrinker.") for k in m)


def _union_never_drain(runs: Sequence[Run]) -> List[str]:
    out: set = set()
    for r in runs:
        out.update(never_drain_caches(r.doc))
    return sorted(out)


def _pooled_latency(base: Sequence[Run], new: Sequence[Run]) -> Optional[Item]:
    bl = [r.latencies_ns for r in base]
    nl = [r.latencies_ns for r in new]
    ball = [v for r in bl for v in r]
    nall = [v for r in nl for v in r]
    if not ball and not nall:
        return None
    it = Item("direct_reclaim.pooled_p50_ns", "ns", [], [], pooled=True,
              base=_median(ball), new=_median(nall))
    it.base_values = [float(len(r)) for r in bl]   # stalls per run, for the record
    it.new_values = [float(len(r)) for r in nl]
    if it.base is not None and it.new is not None:
        it.change = it.new - it.base
        it.change_pct = 100.0 * it.change / it.base if it.base else None
    it.test = BOOTSTRAP
    runs_b = sum(1 for r in bl if r)
    runs_n = sum(1 for r in nl if r)
    if runs_b < 2 or runs_n < 2:
        it.verdict = "n/a: n<2"
        it.note = ("needs >= 2 runs with stalls per side "
                   f"(base {runs_b}, new {runs_n})")
        return it
    lo, hi, it.p_value = cluster_bootstrap_median(bl, nl)
    it.ci = (lo, hi)
    it.note = f"95% CI of the change {fmt_value(lo, 'ns')} .. {fmt_value(hi, 'ns')}"
    return it


def _workload(h: Dict[str, Any]) -> Dict[str, Any]:
    w = h.get("workload")
    return w if isinstance(w, dict) else {}


def _cmdline(h: Dict[str, Any]) -> Optional[str]:
    """The kernel command line without what virtme-ng adds for each boot.

    A kernel booted by ``run --kernel`` gets its mounts, its command and
    virtme's init as parameters (``virtme_initmount0=tmp/trace-reclaim-vm-
    q2nxv5mf``, ``virtme.exec=...``, ``init=.../virtme-ng-init``) naming
    each boot's temporary directory and output directory: two boots of one
    kernel differ in them and nothing else.
    """
    cmdline = h.get("cmdline")
    if not isinstance(cmdline, str):
        return cmdline
    return " ".join(p for p in cmdline.split() if "virtme" not in p)


_SAME = (
    ("workload", lambda h: _workload(h).get("name", "(not recorded)")),
    ("workload parameters", lambda h: json.dumps(_workload(h).get("params", {}),
                                                 sort_keys=True)),
    ("kernel", lambda h: h.get("kernel_release")),
    ("kernel build", lambda h: h.get("kernel_version")),
    ("kernel command line", _cmdline),
    ("machine", lambda h: h.get("hostname")),
    ("CPU count", lambda h: doc_get(_workload(h), "machine", "cpus")),
    ("memory size", lambda h: doc_get(_workload(h), "machine", "mem_total_bytes")),
    ("trace-reclaim version", lambda h: h.get("tool_version")),
)


def _values(runs: Sequence[Run], get: Callable[[Dict[str, Any]], Any]) -> List[str]:
    return sorted({str(get(r.header)) for r in runs})


def header_differences(base: Sequence[Run], new: Sequence[Run]) -> Tuple[List[str], List[str]]:
    """What the headers say differs: (warnings, notes).

    Different workloads, parameters, kernels or machines make the comparison
    doubtful: warnings.  Different reclaim sysctls are usually the point of
    the comparison: notes, so the reader sees what the sides ran with.
    """
    warnings: List[str] = []
    for what, get in _SAME:
        b, n = _values(base, get), _values(new, get)
        if b != n:
            warnings.append(f"the sides ran different {what}s: base {', '.join(b)}; "
                            f"new {', '.join(n)}")
        for side, vals in (("base", b), ("new", n)):
            if len(vals) > 1:
                warnings.append(f"the {side} runs differ among themselves in {what}: "
                                f"{', '.join(vals)}")
    notes: List[str] = []
    keys = sorted({k for r in list(base) + list(new)
                   for k in (_workload(r.header).get("vm") or {})})
    for k in keys:
        def get(h: Dict[str, Any], k: str = k) -> Any:
            return (_workload(h).get("vm") or {}).get(k)
        b, n = _values(base, get), _values(new, get)
        if b != n:
            notes.append(f"{k}: base {', '.join(b)}; new {', '.join(n)}")
    return warnings, notes


def split_sides(tokens: List[str]) -> Tuple[List[str], List[str]]:
    """Split ``BASE... -- NEW...``; raise UserError when a side is missing."""
    if "--" not in tokens:
        raise UserError("diff needs '--' between the base and the new recordings",
                            "e.g. trace-reclaim diff base/*.trc -- new/*.trc",
                            ExitStatus.USAGE)
    i = tokens.index("--")
    base, new = tokens[:i], tokens[i + 1:]
    if not base or not new:
        side = "base (before --)" if not base else "new (after --)"
        raise UserError(f"diff has no {side} recordings",
                            "give one or more recordings on each side of '--'",
                            ExitStatus.USAGE)
    return base, new
