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

from trace_reclaim.compare.core import (DEFAULT_ALPHA, Comparison, Item, compare,
                                        header_differences, split_sides)
from trace_reclaim.compare.metrics import (Run, fold_shrinkers, load_run, never_drain_caches,
                                           run_metrics, shrinker_key)
from trace_reclaim.compare.render import render_json, render_table
from trace_reclaim.compare.stats import BOOTSTRAP, MWU, holm, mwu

__all__ = ["Run", "Item", "Comparison", "load_run", "run_metrics", "shrinker_key",
           "fold_shrinkers", "never_drain_caches", "compare", "mwu", "holm",
           "header_differences", "render_table", "render_json", "split_sides", "MWU",
           "BOOTSTRAP", "DEFAULT_ALPHA"]
