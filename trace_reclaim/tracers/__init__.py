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

import importlib
from typing import Dict, Iterable, Optional

from trace_reclaim.tracer import Tracer

__all__ = ["NAMES", "registry"]

#: Every tracer this version has, in report order (each is the module of that name).
NAMES = ("reclaim", "vmalloc", "slab", "oom", "memcg")


def registry(names: Optional[Iterable[str]] = None) -> Dict[str, Tracer]:
    """The tracers by name, in report order: every one, or those of ``names``
    (only their modules are imported: record plans the first BPF object's
    tracers and starts its compile before the others load)."""
    chosen = set(NAMES if names is None else names)
    wanted = [n for n in NAMES if n in chosen]
    return {n: importlib.import_module(f"trace_reclaim.tracers.{n}").TRACER for n in wanted}
