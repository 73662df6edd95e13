"""The core's tracer API: what a kernel area's tracer gives the core.

A tracer (``trace_reclaim.tracers.NAME``) names its BPF source under
``bpf/``, the tracepoints it needs, its record decoders and an
``Aggregator`` (pure: events in, a report section out).  Only ``sample()``
touches the live kernel (BPF maps, /proc), and only in a live session; what it
returns is recorded, so replay needs no kernel.  The correlator, episode
builder, live view and report call tracers only through what is declared here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Sequence, Tuple

__all__ = ["Tracer", "Aggregator", "Window", "Attach"]


@dataclass
class Window:
    """The trace window: events outside [start_ns, end_ns] are not counted."""

    start_ns: int = 0
    end_ns: int = 0  # 0 while open
    header: Dict[str, Any] = field(default_factory=dict)

    def contains(self, ts_ns: int) -> bool:
        return ts_ns >= self.start_ns and (not self.end_ns or ts_ns <= self.end_ns)


@dataclass
class Attach:
    """How one event family attaches, and why better options were not taken."""

    family: str
    chosen: str                       # "tracepoint vmscan:mm_vmscan_kswapd_wake"
    rejected: List[Tuple[str, str]] = field(default_factory=list)  # (option, why)
    ok: bool = True


class Aggregator:
    """Consume events of one tracer; produce interval rows and a report section."""

    section: ClassVar[str] = ""

    def __init__(self, window: Window) -> None:
        self.window = window

    def feed(self, ev: Any) -> None:
        raise NotImplementedError

    def on_tick(self, ts_ns: int) -> Dict[str, Any]:
        """Return this interval's row fragment and start a new interval."""
        return {}

    def on_snapshot(self, snap: Any) -> None:
        pass

    def on_sample(self, sample: Any) -> None:
        pass

    def report(self) -> Dict[str, Any]:
        raise NotImplementedError

    def totals(self, section: Dict[str, Any]) -> Dict[str, Any]:
        """Entries this tracer adds to the report's ``totals``."""
        return {}

    def render(self, section: Dict[str, Any]) -> List[str]:
        """Text lines for the report (under 80 columns)."""
        return []


class Tracer:
    """A kernel area's BPF program and decoders; subclassed per area."""

    name: ClassVar[str] = ""
    bpf_source: ClassVar[str] = ""
    cflag: ClassVar[str] = ""
    # (category, event) tracepoints the program attaches to unconditionally.
    tracepoints: ClassVar[Sequence[Tuple[str, str]]] = ()
    event_types: ClassVar[Sequence[int]] = ()

    def plan(self, probe: Any) -> Tuple[List[Attach], List[str]]:
        """Return the attach plan and the extra cflags for this kernel."""
        attaches = []
        for cat, ev in self.tracepoints:
            ok = probe.tracepoint_exists(cat, ev)
            attaches.append(Attach(
                family=f"{cat}:{ev}", chosen=f"tracepoint {cat}:{ev}" if ok else "none",
                rejected=self.rejected_options(probe) + ([] if ok else [
                    (f"tracepoint {cat}:{ev}", "not in this kernel's tracefs")]),
                ok=ok))
        return attaches, []

    def rejected_options(self, probe: Any) -> List[Tuple[str, str]]:
        """Why the better attach options are not used (default: none better)."""
        return []

    def aggregator(self, window: Window) -> Aggregator:
        raise NotImplementedError

    def sample(self, bpf: Any, procfs: Any, ts_ns: int, when: str) -> List[Any]:
        """Read in-kernel aggregates (live only) at "start", "tick" or "end".

        Return Sample/Snapshot events; they are recorded and fed to the
        correlator like any other record.  Default: nothing.
        """
        return []

    def header(self, probe: Any) -> Dict[str, Any]:
        """Context this tracer stores in the recording header."""
        return {}
