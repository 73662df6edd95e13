"""One module per kernel area: its BPF program, its events, its report section.

Each tracer implements the core's tracer API (``trace_reclaim.tracer``);
``registry()`` is the one place that lists them, for the commands.
"""

from __future__ import annotations

from typing import Dict

from trace_reclaim.tracer import Tracer

__all__ = ["registry"]


def registry() -> Dict[str, Tracer]:
    """Every tracer this version has, by name, in report order."""
    from trace_reclaim.tracers import oom, reclaim, slab, vmalloc

    return {t.name: t for t in (reclaim.TRACER, vmalloc.TRACER, slab.TRACER, oom.TRACER)}
