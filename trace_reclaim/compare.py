"""Compare two sets of recordings: what changed, and is it more than noise.

The core of ``trace-reclaim diff BASE... -- NEW...`` (the command is
``trace_reclaim.commands.diff``).

Each recording is replayed through the correlator (the same code ``report``
runs) and reduced to one value per metric per run.  For every metric the
diff shows the median run of each side, the change, and a verdict from a
two-sided Mann-Whitney U test on the per-run values (``scipy.stats``:
exact, or an exact permutation test when values tie, for the run counts a
kernel developer uses; the normal approximation only when the permutations
run into tens of thousands).  The per-run value is the unit of replication:
one recording is one experiment, so the test never treats the thousand
stalls inside one run as a thousand independent observations.

The p-values are corrected for multiple comparisons (Holm's step-down
method over every metric tested in this diff), so a table of twenty metrics
does not show one "significant" change by luck.  A change is never called
significant from fewer than two runs per side, and the table says when the
run counts are too small for any change to reach the threshold (with 3+3
runs the smallest possible two-sided p is 0.10).

Per-stall latencies (for the pooled latency row and the plot) come from
replaying the recording's ``DirectReclaim`` events, not from the report's
percentile summary.  Pooled stalls from the same run are not independent,
so the pooled row uses a cluster bootstrap (resample runs, then stalls
within each run) for a confidence interval of the change in the median,
and it is kept out of the Holm family (it has no p-value).

Sections that other tracers add (``slab``: shrinkers and caches that never
drain; ``vmalloc``: huge mappings and fallbacks) are used when present and
skipped when not.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from trace_reclaim import abi
from trace_reclaim.env import Environment, ExitStatus, UserError
from trace_reclaim.tracer import Tracer

__all__ = ["Run", "Item", "Comparison", "load_run", "run_metrics", "shrinker_key",
           "fold_shrinkers", "compare",
           "holm", "header_differences", "render_table", "render_json",
           "split_sides", "MWU", "BOOTSTRAP", "DEFAULT_ALPHA"]

MWU = "Mann-Whitney U (two-sided, per-run values)"
BOOTSTRAP = "cluster bootstrap 95% CI of the median (runs, then stalls)"
DEFAULT_ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000
#: Up to this many distinct splits of the runs the permutation test is exact.
EXACT_PERMUTATIONS = 20000


@dataclass
class Run:
    """One recording reduced for the diff."""

    path: str
    header: Dict[str, Any]
    doc: Dict[str, Any]
    latencies_ns: List[int] = field(default_factory=list)

    @property
    def metrics(self) -> Dict[str, Optional[float]]:
        return run_metrics(self.doc)


# -- metric extraction --------------------------------------------------------
def _get(doc: Dict[str, Any], *path: str) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        return v
    return None


# (name, unit, where in the document); unit "ns" prints as time.
BASE_METRICS: Tuple[Tuple[str, str, Callable[[Dict[str, Any]], Any]], ...] = (
    ("direct_reclaim.stalls", "count", lambda d: _get(d, "totals", "direct_reclaim_stalls")),
    ("direct_reclaim.p50_ns", "ns", lambda d: _latency(d, "p50_ns")),
    ("direct_reclaim.p99_ns", "ns", lambda d: _latency(d, "p99_ns")),
    ("direct_reclaim.max_ns", "ns", lambda d: _latency(d, "max_ns")),
    ("direct_reclaim.total_ns", "ns", lambda d: _get(d, "totals", "direct_reclaim_ns")),
    ("kswapd.wakes", "count", lambda d: _get(d, "totals", "kswapd_wakes")),
    ("kswapd.awake_ns", "ns", lambda d: _get(d, "totals", "kswapd_awake_ns")),
    ("reclaimed.direct_pages", "pages", lambda d: _reclaimed(d, "direct")),
    ("reclaimed.kswapd_pages", "pages", lambda d: _reclaimed(d, "kswapd")),
)


def _latency(doc: Dict[str, Any], key: str) -> Any:
    # A run without stalls has no latency: missing, not zero.
    if not _get(doc, "reclaim", "direct_reclaim", "stalls"):
        return None
    return _get(doc, "reclaim", "direct_reclaim", key)


def _reclaimed(doc: Dict[str, Any], who: str) -> Any:
    v = _get(doc, "totals", f"lru_reclaimed_{who}")
    if v is None:  # an older recording: the kernel's own count
        v = _get(doc, "totals", "vmstat_delta", f"pgsteal_{who}")
    return v


def run_metrics(doc: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """One run's value of every metric (None where the run has no such data)."""
    out: Dict[str, Optional[float]] = {}
    for name, _unit, get in BASE_METRICS:
        out[name] = _num(get(doc))
    slab = doc.get("slab")
    if isinstance(slab, dict):
        shrinkers = slab.get("shrinkers")
        if isinstance(shrinkers, list):
            for s in shrinkers:
                if not isinstance(s, dict) or not s.get("name"):
                    continue
                n = shrinker_key(s)
                for k in ("time_ns", "freed"):
                    v = _num(s.get(k))
                    if v is not None:
                        key = f"shrinker.{n}.{k}"
                        out[key] = (out.get(key) or 0) + v
        caches = slab.get("caches")
        if isinstance(caches, list):
            out["slab.never_drain_caches"] = float(len(never_drain_caches(doc)))
    vm = doc.get("vmalloc")
    by = vm.get("by_verdict") if isinstance(vm, dict) else None
    if isinstance(by, dict) and all(isinstance(by.get(v), dict) for v in ("huge", "fallback")):
        # Every area counted, including those the (capped) areas list leaves out.
        out["vmalloc.huge"] = _num(by["huge"].get("areas"))
        out["vmalloc.fallback"] = _num(by["fallback"].get("areas"))
        out["vmalloc.huge_pages"] = _num(by["huge"].get("huge_pages"))
    elif isinstance(vm, dict) and isinstance(vm.get("areas"), list):
        areas = [a for a in vm["areas"] if isinstance(a, dict)]
        out["vmalloc.huge"] = float(sum(1 for a in areas if a.get("verdict") == "huge"))
        out["vmalloc.fallback"] = float(sum(1 for a in areas if a.get("verdict") == "fallback"))
        out["vmalloc.huge_pages"] = float(sum(_num(a.get("huge_pages")) or 0 for a in areas))
    return out


def shrinker_key(row: Dict[str, Any]) -> str:
    """What a shrinker row is compared by across runs.

    A shrinker named by what it shrinks (``super_cache_scan (ext4 vda)``:
    the row has an ``owner``) is the same shrinker in every run.  Otherwise
    the name is the callback, numbered when several share it
    (``super_cache_scan#3``, the third superblock in that run's pointer
    order, or an old recording made before shrinkers had owners): those
    numbers are not stable across runs, so the callback is compared, all
    its instances together.
    """
    name = str(row["name"])
    if row.get("owner"):
        return name
    return re.sub(r"#\d+$", "", name)


def _shrinker_function(metric: str) -> Optional[str]:
    """The callback of a ``shrinker.<key>.<value>`` metric: the key up to " (owner)"."""
    if not metric.startswith("shrinker."):
        return None
    key = metric[len("shrinker."):].rsplit(".", 1)[0]
    return key.split(" (", 1)[0]


def fold_shrinkers(runs: Sequence[Dict[str, Optional[float]]],
                   ) -> List[Dict[str, Optional[float]]]:
    """Compare per callback where any run knows a callback's shrinkers only so.

    A run without owners (an old recording, a kernel without BTF) has one
    ``shrinker.super_cache_scan`` metric for every superblock; a run with
    them has ``shrinker.super_cache_scan (ext4 vda)`` and its siblings.
    Comparing those would show every superblock as gone on one side and
    new on the other, so such a callback is compared as a whole in every run.
    """
    whole = {fn for m in runs for k in m
             if (fn := _shrinker_function(k)) is not None and k == _whole_metric(k, fn)}
    out: List[Dict[str, Optional[float]]] = []
    for m in runs:
        folded: Dict[str, Optional[float]] = {}
        for k, v in m.items():
            fn = _shrinker_function(k)
            if fn is not None and fn in whole:
                k = _whole_metric(k, fn)
                if v is not None:
                    folded[k] = (folded.get(k) or 0) + v
                else:
                    folded.setdefault(k, None)
            else:
                folded[k] = v
        out.append(folded)
    return out


def _whole_metric(metric: str, fn: str) -> str:
    return f"shrinker.{fn}.{metric.rsplit('.', 1)[1]}"


def never_drain_caches(doc: Dict[str, Any]) -> List[str]:
    caches = _get(doc, "slab", "caches")
    if not isinstance(caches, list):
        return []
    return sorted({str(c.get("name")) for c in caches
                   if isinstance(c, dict) and c.get("never_drains")})


def metric_unit(name: str) -> str:
    for n, unit, _ in BASE_METRICS:
        if n == name:
            return unit
    if name.endswith("_ns"):
        return "ns"
    if name.endswith(".freed"):
        return "objects"
    if name == "vmalloc.huge_pages":
        return "pages"
    return "count"


def _metric_order(name: str) -> Tuple[int, str]:
    for i, (n, _u, _g) in enumerate(BASE_METRICS):
        if n == name:
            return (i, "")
    return (len(BASE_METRICS), name)


# -- statistics ---------------------------------------------------------------
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


def mwu(base: Sequence[float], new: Sequence[float]) -> Tuple[float, str, float]:
    """Two-sided Mann-Whitney U: (p, how it was computed, smallest possible p).

    Exact for small samples: scipy's exact U distribution when nothing ties,
    else a permutation test over every split of the pooled runs (exact in
    the presence of ties, which whole-number counts often have).
    """
    from scipy import stats

    n1, n2 = len(base), len(new)
    splits = math.comb(n1 + n2, n1)
    min_p = min(1.0, 2.0 / splits)
    ties = len(set(base) | set(new)) < n1 + n2
    if splits <= EXACT_PERMUTATIONS:
        if not ties:
            r = stats.mannwhitneyu(base, new, alternative="two-sided", method="exact")
            how = "exact"
        else:
            r = stats.mannwhitneyu(base, new, alternative="two-sided",
                                   method=stats.PermutationMethod(n_resamples=splits))
            how = f"exact permutation ({splits} splits; ties)"
    else:
        r = stats.mannwhitneyu(base, new, alternative="two-sided", method="asymptotic")
        how = "normal approximation, tie-corrected"
        min_p = 0.0
    p = float(r.pvalue)
    if math.isnan(p):  # every value equal: no evidence of any difference
        p = 1.0
    return min(1.0, p), how, min_p


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values (family-wise error rate)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def cluster_bootstrap_median(base: Sequence[Sequence[int]], new: Sequence[Sequence[int]],
                             resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                             ) -> Tuple[float, float, float]:
    """95% CI and p of median(new stalls) - median(base stalls), resampling runs then stalls.

    Stalls inside one run share that run's conditions; resampling whole runs
    first keeps that dependence, so the interval is as wide as the
    run-to-run spread says it should be.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    b = [np.asarray(r, dtype=float) for r in base if len(r)]
    n = [np.asarray(r, dtype=float) for r in new if len(r)]

    def one(side: List[Any]) -> float:
        runs = rng.integers(0, len(side), len(side))
        parts = [side[i][rng.integers(0, len(side[i]), len(side[i]))] for i in runs]
        return float(np.median(np.concatenate(parts)))

    diffs = np.fromiter((one(n) - one(b) for _ in range(resamples)), dtype=float,
                        count=resamples)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    # Two-sided bootstrap p: how often the resampled change falls on the
    # other side of zero (the percentile interval excludes 0 iff p < 0.05).
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return float(lo), float(hi), max(p, 1.0 / resamples)


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
    names = sorted({k for m in bm + nm for k in m}, key=_metric_order)
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
        lost = _get(r.doc, "totals", "lost_events")
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
    it.note = f"95% CI of the change {_fmt(lo, 'ns')} .. {_fmt(hi, 'ns')}"
    return it


# -- headers -------------------------------------------------------------------
def _workload(h: Dict[str, Any]) -> Dict[str, Any]:
    w = h.get("workload")
    return w if isinstance(w, dict) else {}


_SAME = (
    ("workload", lambda h: _workload(h).get("name", "(not recorded)")),
    ("workload parameters", lambda h: json.dumps(_workload(h).get("params", {}),
                                                 sort_keys=True)),
    ("kernel", lambda h: h.get("kernel_release")),
    ("kernel build", lambda h: h.get("kernel_version")),
    ("kernel command line", lambda h: h.get("cmdline")),
    ("machine", lambda h: h.get("hostname")),
    ("CPUs", lambda h: _get(_workload(h), "machine", "cpus")),
    ("memory", lambda h: _get(_workload(h), "machine", "mem_total_bytes")),
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


# -- loading -----------------------------------------------------------------
def load_run(path: str, env: Environment, registry: Dict[str, Tracer]) -> Run:
    """Replay a recording: its report document and its per-stall latencies."""
    from trace_reclaim import events
    from trace_reclaim.recording import Reader, RecordingError
    from trace_reclaim.replay import replay

    corr = replay(path, env, registry)
    doc = corr.report()
    start, end = corr.window.start_ns, corr.window.end_ns
    lat: List[int] = []
    try:
        with open(path, "rb") as f:
            reader = Reader(f)
            for type_id, payload in reader.records():
                if type_id != abi.EV_DIRECT_RECLAIM:
                    continue
                try:
                    ev = events.decode(type_id, payload)
                except events.DecodeError:
                    continue
                if ev is None:
                    continue
                # The same window the correlator applied.
                if ev.ts_ns - ev.delta_ns < start or (end and ev.ts_ns > end):
                    continue
                lat.append(int(ev.delta_ns))
    except (OSError, RecordingError) as e:  # it replayed a moment ago
        raise UserError(f"{path}: {e}", "the file changed while it was read") from None
    return Run(path, corr.header, doc, lat)


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


# -- output --------------------------------------------------------------------
def _fmt(v: Optional[float], unit: str) -> str:
    if v is None:
        return "-"
    if unit == "ns":
        a = abs(v)
        sign = "-" if v < 0 else ""
        if a < 1e3:
            return f"{sign}{a:.0f}ns"
        if a < 1e6:
            return f"{sign}{a / 1e3:.1f}us"
        if a < 1e9:
            return f"{sign}{a / 1e6:.1f}ms"
        return f"{sign}{a / 1e9:.2f}s"
    if float(v).is_integer():
        v = int(v)
        if abs(v) >= 10_000_000:
            return f"{v / 1e6:.1f}M"
        return str(v)
    return f"{v:.1f}"


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


# -- the subcommand ----------------------------------------------------------
