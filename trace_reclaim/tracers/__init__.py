"""One module per kernel area: its BPF program, its events, its report section.

``reclaim`` (kswapd, direct reclaim), ``vmalloc`` and ``slab`` (packages,
split by what the code does: records, aggregation, rendering, reading /proc
and /sys), ``compaction`` (records and counts the ``oom`` tracer's program
produces) ``oom`` (retry decisions, OOM kills) and ``memcg`` (memcg limit
reclaim, and every attributed record summed per cgroup).  Each tracer implements
the core's tracer API (``trace_reclaim.tracer``); ``registry()`` is the one
place that lists them, for the commands.
"""

from __future__ import annotations

from typing import Dict

from trace_reclaim.tracer import Tracer

__all__ = ["registry"]


def registry() -> Dict[str, Tracer]:
    """Every tracer this version has, by name, in report order."""
    from trace_reclaim.tracers import memcg, oom, reclaim, slab, vmalloc

    return {t.name: t for t in (reclaim.TRACER, vmalloc.TRACER, slab.TRACER, oom.TRACER,
                                memcg.TRACER)}
