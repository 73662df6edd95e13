"""The statistics of ``trace-reclaim diff``: Mann-Whitney U, Holm, cluster bootstrap.

Per-run values are the unit of replication (see the package docstring).
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

__all__ = ["MWU", "BOOTSTRAP", "BOOTSTRAP_RESAMPLES", "EXACT_PERMUTATIONS", "mwu", "holm",
           "cluster_bootstrap_median"]

MWU = "Mann-Whitney U (two-sided, per-run values)"
BOOTSTRAP = "cluster bootstrap 95% CI of the median (runs, then stalls)"
BOOTSTRAP_RESAMPLES = 2000
#: Up to this many distinct splits of the runs the permutation test is exact.
EXACT_PERMUTATIONS = 20000


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
