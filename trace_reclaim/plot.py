"""Plot direct-reclaim stall latencies, base against new.

Left: the cumulative distribution of every stall (log time axis), one thin
line per run and a thick line for each side's pooled stalls, so the
run-to-run spread is visible next to the difference between the sides.
Right: stalls per run, one dot per run, since a change in how often reclaim
stalls matters as much as how long each stall takes.  matplotlib's Agg
backend: no display needed.
"""

from __future__ import annotations

from typing import Any, List, Sequence

__all__ = ["latency_plot"]

BASE_COLOR = "#1f77b4"
NEW_COLOR = "#d62728"


def _ecdf(values: Sequence[int]) -> Any:
    import numpy as np

    x = np.sort(np.asarray(values, dtype=float)) / 1e3  # microseconds
    y = np.arange(1, len(x) + 1) / len(x)
    return x, y


def latency_plot(base: Sequence[Any], new: Sequence[Any], path: str) -> None:
    """Write the plot of ``Run``s ``base`` and ``new`` to ``path`` (.png or .svg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.5),
                                  gridspec_kw={"width_ratios": [3, 1]})
    try:
        any_stalls = False
        for side, runs, color in (("base", base, BASE_COLOR), ("new", new, NEW_COLOR)):
            pooled: List[int] = []
            for r in runs:
                if r.latencies_ns:
                    x, y = _ecdf(r.latencies_ns)
                    ax.step(x, y, where="post", color=color, alpha=0.3, linewidth=0.8)
                    pooled += r.latencies_ns
            if pooled:
                any_stalls = True
                x, y = _ecdf(pooled)
                nruns = sum(1 for r in runs if r.latencies_ns)
                ax.step(x, y, where="post", color=color, linewidth=2.2,
                        label=f"{side}: {len(pooled)} stalls in {nruns} of {len(runs)} runs, "
                              f"median {_us(x[len(x) // 2])}")
        if any_stalls:
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            plain = FuncFormatter(lambda v, _pos: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(
                FuncFormatter(lambda v, _pos: f"{v:g}" if str(int(v))[0] in "25" else ""))
            ax.legend(loc="lower right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no direct-reclaim stalls on either side",
                    ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("direct-reclaim stall latency (us, log scale)")
        ax.set_ylabel("fraction of stalls <= latency")
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title("Direct-reclaim stall latency: thin = one run, thick = pooled",
                     fontsize=10)

        for i, (_side, runs, color) in enumerate((("base", base, BASE_COLOR),
                                                 ("new", new, NEW_COLOR))):
            counts = [len(r.latencies_ns) for r in runs]
            xs = [i + (j - (len(counts) - 1) / 2) * 0.06 for j in range(len(counts))]
            ax2.scatter(xs, counts, color=color, zorder=3)
            if counts:
                med = sorted(counts)[len(counts) // 2]
                ax2.hlines(med, i - 0.25, i + 0.25, color=color, linewidth=2)
        ax2.set_xticks([0, 1], ["base", "new"])
        ax2.set_xlim(-0.6, 1.6)
        ax2.set_ylabel("stalls per run")
        ax2.set_ylim(bottom=0)
        ax2.grid(True, axis="y", alpha=0.3)
        ax2.set_title("Stalls per run (bar = median)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _us(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:.2f} ms"
    return f"{v:.0f} us"
