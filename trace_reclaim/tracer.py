"""The core's tracer API: what a kernel area's tracer gives the core.

A tracer (``trace_reclaim.tracers.NAME``) names its BPF source under
``bpf/``, the tracepoints it needs, its record decoders and an
``Aggregator`` (pure: events in, a report section out).  Only ``sample()``
touches the live kernel (BPF maps, /proc), and only in a live session; what it
returns is recorded, so replay needs no kernel.

The correlator, episode builder, live view and report call tracers and
aggregators only through the methods declared here: each is abstract or has
a documented default, so a renamed or missing hook fails loudly (mypy, or an
AttributeError) instead of reading as a silent zero.
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, final

from mypy_extensions import mypyc_attr

from trace_reclaim.episodes import EpisodeFact

__all__ = ["Tracer", "Aggregator", "Window", "Attach", "Options", "EpisodeFact"]


NOT_YET = 1 << 64   # a start after every timestamp


@dataclass
class Window:
    """The trace window: events outside [start_ns, end_ns] are not counted."""

    start_ns: int = 0
    end_ns: int = 0  # 0 while open
    header: Dict[str, Any] = field(default_factory=dict)

    # Event types of tracers attached after the window opened: their records
    # count from their attach (NOT_YET while still attaching).
    type_start: Dict[int, int] = field(default_factory=dict)

    def contains(self, ts_ns: int) -> bool:
        return ts_ns >= self.start_ns and (not self.end_ns or ts_ns <= self.end_ns)

    def contains_event(self, type_id: int, ts_ns: int) -> bool:
        return self.contains(ts_ns) and ts_ns >= self.type_start.get(type_id, 0)

    def note_attach(self, when: str, data: Any, ts_ns: int) -> List[int]:
        """Follow an "attach" snapshot (a trace whose tracers attached in parts).

        At "start" the still-attaching tracers' event types count from
        nothing yet; at "attached" theirs count from ``ts_ns``.  Return the
        types whose start moved.
        """
        d = data if isinstance(data, dict) else {}
        key, start = {"start": ("pending_types", NOT_YET),
                      "attached": ("types", ts_ns)}.get(when, ("", 0))
        types = [t for t in d.get(key, ()) if isinstance(t, int)] if key else []
        for t in types:
            self.type_start[t] = start
        return types


@dataclass
class Attach:
    """How one event family attaches, and why better options were not taken."""

    family: str
    chosen: str                       # "tracepoint vmscan:mm_vmscan_kswapd_wake"
    rejected: List[Tuple[str, str]] = field(default_factory=list)  # (option, why)
    ok: bool = True


@dataclass(frozen=True)
class Options:
    """Command-line choices that change what a tracer attaches.

    One declared type for all of them, so a misspelled option is a type
    error, not an attribute set on a tracer that nobody reads.  Each tracer
    reads only its own fields.
    """

    # --no-slab-accounting: no per-cache kmem_cache_alloc/free counting.
    slab_cache_accounting: bool = True
    # -c/--cgroup: only tasks in these cgroups (paths or names), descendants included.
    cgroups: Tuple[str, ...] = ()


def _refuse_abstract(obj: object, base: type, hooks: Tuple[str, ...]) -> None:
    """Refuse an instance whose class lacks one of ``base``'s abstract ``hooks``.

    What ``abc.ABC`` does on instantiation, done again by hand: compiled
    (trace_reclaim.native), the native base does not stop an interpreted
    subclass that left a hook out.  tests/unit/test_tracer_hooks.py checks
    ``hooks`` against the methods the source marks ``@abc.abstractmethod``.
    """
    cls = type(obj)
    missing = [h for h in hooks if getattr(cls, h) is getattr(base, h)]
    if missing:
        raise TypeError(f"Can't instantiate abstract class {cls.__name__} without an "
                        f"implementation for abstract method(s) "
                        + ", ".join(f"'{h}'" for h in missing))


def fentry_on(probe: Any, func: str) -> Tuple[bool, str]:
    """Whether fentry works here and the trampoline takes ``func`` itself
    (it judges each function: its argument count, for one), and why not."""
    ok, why = probe.fentry
    return probe.tracing_attach(func, "fentry") if ok else (ok, why)


@mypyc_attr(allow_interpreted_subclasses=True)
class Aggregator(abc.ABC):
    """Consume events of one tracer; produce interval rows and a report section."""

    section: ClassVar[str] = ""
    # Keys of this aggregator's section that the report puts at its top level
    # (``cgroups``) instead of inside the section.
    top_level: ClassVar[Tuple[str, ...]] = ()

    #: The abstract methods (``_refuse_abstract``).
    ABSTRACT: ClassVar[Tuple[str, ...]] = ("feed", "report")

    def __init__(self, window: Window) -> None:
        _refuse_abstract(self, Aggregator, Aggregator.ABSTRACT)
        self.window = window

    # -- events in ---------------------------------------------------------
    @abc.abstractmethod
    def feed(self, ev: Any) -> None:
        """Count one of this tracer's events (inside the window)."""

    def handlers(self) -> Mapping[int, Callable[[Any], None]]:
        """The function to call for each record type, bypassing ``feed``.

        The correlator's hot path calls these directly; a type left out goes
        through ``feed``.  Default: none, everything through ``feed``.
        """
        return {}

    def flush(self) -> None:
        """Count what the handlers only held so far.

        A handler may just keep its record (``list.append``) and leave the
        counting to this, over many records at once.  The correlator calls
        it after each batch of records it is fed and before each tick,
        snapshot, sample and window end, so whatever else reads the
        aggregator finds every record counted; ``report`` calls it too.
        Records held are bounded by the batch.  Default: nothing held.
        """
        return None

    def observes(self) -> Mapping[int, Callable[[Any], None]]:
        """Other tracers' record types this aggregator also sees, read-only.

        The correlator calls these after the owning tracer's aggregator, for
        records inside the window (the memcg tracer sums every attributed
        record per cgroup).  Default: none.
        """
        return {}

    def on_tick(self, ts_ns: int) -> Dict[str, Any]:
        """Return this interval's row fragment and start a new interval."""
        return {}

    def on_snapshot(self, snap: Any) -> None:
        """See a /proc or /sys snapshot (every tracer sees every one).  Default: ignore."""
        return None

    def on_sample(self, sample: Any) -> None:
        """Take this tracer's own ``Tracer.sample()`` reading.  Default: ignore."""
        return None

    def after_window(self, ev: Any) -> None:
        """See one of its events that came after the window's end (the ring
        buffer is drained after the end counters).  Not counted; an event
        that began inside the window may still be accounted for here.
        Default: ignore."""
        return None

    def close(self, end_ns: int) -> None:
        """The window closed at ``end_ns``: finish what is still open.

        Called once, after the last event and before ``report()``.
        Default: nothing stays open.
        """
        return None

    # -- what the episode builder asks ---------------------------------------
    def episode_fact(self, ev: Any) -> Optional[EpisodeFact]:
        """What ``ev`` adds to the reclaim episode open at its time.

        A shrinker or vmalloc row (see ``EpisodeFact``); None when the event
        adds nothing beyond what the episode builder itself handles.
        Default: None.
        """
        return None

    def cgroup_name(self, key: Tuple[str, int]) -> Optional[str]:
        """The name of a cgroup, ``("memcg" | "cgroup", id)``, if this tracer
        resolved it (the memcg tracer).  Default: None."""
        return None

    def symbolize(self, addr: int) -> Optional[str]:
        """The kernel symbol at ``addr`` if this tracer resolved it (live, then
        recorded in its samples), else None.  Default: None."""
        return None

    # -- report ------------------------------------------------------------
    @abc.abstractmethod
    def report(self) -> Dict[str, Any]:
        """This tracer's report section (JSON-able)."""

    def totals(self, section: Dict[str, Any]) -> Dict[str, Any]:
        """Entries this tracer adds to the report's ``totals``.  Default: none."""
        return {}

    @final
    def live_totals(self) -> Dict[str, Any]:
        """The report's ``totals`` entries as they stand now (the live view's).

        Computed by the very code the report uses, so the view and the
        report cannot disagree; not to be overridden with a shortcut.
        """
        return self.totals(self.report())

    def vmstat_rows(self, totals: Dict[str, Any], vm: Dict[str, int]) -> List[List[Any]]:
        """Rows [what, traced, kernel, counter] for the report's traced vs
        /proc/vmstat table, from the report's totals and the vmstat delta.
        Default: none."""
        return []

    def render(self, section: Dict[str, Any]) -> List[str]:
        """Text lines for the report (under 80 columns).  Default: none."""
        return []


@mypyc_attr(allow_interpreted_subclasses=True)
class Tracer(abc.ABC):
    """A kernel area's BPF program and decoders; subclassed per area."""

    name: ClassVar[str] = ""
    bpf_source: ClassVar[str] = ""
    # BPF that may attach after tracing has begun, with the BPF object that
    # follows the tracer's own (objects.attach_parts): programs that only
    # count into maps ``sample()`` reads, never records.  Its part of the
    # trace is named "<name>.<later_part>" (objects.later_parts) wherever
    # attaching is reported, and it counts from its own attach on:
    # ``sample()`` finds its maps only once it is attached.
    later_part: ClassVar[str] = ""
    later_source: ClassVar[str] = ""
    cflag: ClassVar[str] = ""
    # (category, event) tracepoints the program attaches to unconditionally.
    tracepoints: ClassVar[Sequence[Tuple[str, str]]] = ()
    event_types: ClassVar[Sequence[int]] = ()
    # Whether its "end" sample holds kernel counters checked against the end
    # /proc snapshots: then it is read right after them, before the ring
    # buffer is drained (which can take a while under load); else after.
    end_sample_with_snapshots: ClassVar[bool] = False
    #: The abstract methods (``_refuse_abstract``).
    ABSTRACT: ClassVar[Tuple[str, ...]] = ("aggregator",)

    def __init__(self) -> None:
        _refuse_abstract(self, Tracer, Tracer.ABSTRACT)
        # The command line's choices (see ``configured``).
        self.options = Options()

    def configured(self, options: Options) -> Tracer:
        """This tracer with ``options``: itself when they are already its
        options, else a copy (the registry's instances are shared)."""
        if options == self.options:
            return self
        t = copy.copy(self)
        t.options = options
        return t

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

    @abc.abstractmethod
    def aggregator(self, window: Window) -> Aggregator:
        """A fresh aggregator for one trace window."""

    def sample(self, bpf: Any, procfs: Any, ts_ns: int, when: str) -> List[Any]:
        """Read in-kernel aggregates (live only) at "start", "tick" or "end".

        Return Sample/Snapshot events; they are recorded and fed to the
        correlator like any other record.  Default: nothing.
        """
        return []

    def header(self, probe: Any) -> Dict[str, Any]:
        """Context this tracer stores in the recording header."""
        return {}
