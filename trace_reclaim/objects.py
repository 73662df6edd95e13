"""The first steps of a live trace: its BPF objects, compiled, and its beginning.

Which parts of the trace each BPF object holds (``attach_parts``: the
reclaim programs first, alone, then the rest with the tracers' later
parts), the program text and cflags of each, their compile in a thread
(``Compile``), and the ``Beginning``: the first object attached and the
start read, which is when "Tracing reclaim" is said.  Everything here is
what record and live do before that line, so it imports little: the
session (``trace_reclaim.session``), the correlator and the recording are
imported after it.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from importlib import resources
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence

from trace_reclaim import events
from trace_reclaim.probe import Plan
from trace_reclaim.procfs import ProcFS
from trace_reclaim.tracer import Tracer

__all__ = ["BPF_DIR", "ATTACH_FIRST", "FIRST_PLANNED", "READY", "STOP_SIGNALS",
           "STILL_ATTACHING", "ALL_ATTACHED", "all_attached", "SessionError", "bpf_cflags",
           "later_parts", "part_tracer", "first_object", "attach_parts", "whole_object",
           "part_maps", "bpf_source", "Compile", "proc_snapshots", "Beginning",
           "quiet_own_perf_events", "default_bpf_factory"]

# The BPF sources ship inside the package; bcc needs a directory for -I.
BPF_DIR = str(resources.files("trace_reclaim").joinpath("bpf"))

# The tracers whose programs attach first, in a BPF object of their own: the
# core of a memory incident, and a compile about as small as bcc's least
# (bench/attach_time.py).  The others follow in a second object.
ATTACH_FIRST = ("reclaim",)
# The tracers planned before the first object compiles: memcg too, even when
# its programs come later, because common.bpf.h's current_memcg_id() takes
# its BTF offsets and the reclaim records carry the memcg id.
FIRST_PLANNED = ATTACH_FIRST + ("memcg",)
# What record and live print on stderr as they start: READY once the first
# object is attached (with STILL_ATTACHING when more follow), then a line
# starting ALL_ATTACHED once every tracer is (all_attached() reads them).
READY = "Tracing reclaim"
#: The signals that end a trace cleanly; the stop reason is the signal's name.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STILL_ATTACHING = "still attaching"
ALL_ATTACHED = "attached:"


def all_attached(stderr_text: str) -> bool:
    """Whether record's or live's stderr so far says every tracer is attached."""
    lines = stderr_text.splitlines()
    ready = [ln for ln in lines if ln.startswith(READY)]
    if not ready:
        return False
    return STILL_ATTACHING not in ready[0] or any(ln.startswith(ALL_ATTACHED) for ln in lines)


class SessionError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def bpf_cflags(plan: Plan, tgid: int = 0, ringbuf_pages: int = 1024,
               maps: str = "", *, names: Sequence[str]) -> List[str]:
    """The cflags of one BPF object holding the parts ``names``; ``maps`` is
    "export" for the first of several objects, "extern" for a later one (see
    common.bpf.h).  OBJECT_<NAME> says which files the object holds
    (OBJECT_RECLAIM_LRU for "reclaim.lru"): a tracepoint two of them probe
    is probed once per object (reclaim.bpf.c)."""
    # The tracers name every kprobe choice -D..._KPROBE...; only those
    # programs need struct pt_regs, whose header costs compile time.
    kprobes = any(c.startswith("-D") and "_KPROBE" in c for c in plan.cflags)
    return [f"-I{BPF_DIR}", "-Wno-ignored-attributes", f"-DRINGBUF_PAGES={ringbuf_pages}",
            f"-DTARG_TGID={tgid}", *(["-DNEED_PT_REGS"] if kprobes else []),
            *([f"-DMAPS_{maps.upper()}"] if maps else []),
            *[f"-DOBJECT_{n.replace('.', '_').upper()}" for n in names], *plan.cflags]


def later_parts(names: Sequence[str], tracers: Mapping[str, Tracer]) -> List[str]:
    """The later parts of the tracers ``names`` ("reclaim.lru": Tracer.later_part)."""
    return [f"{n}.{tracers[n].later_part}" for n in names
            if n in tracers and tracers[n].later_part]


def part_tracer(name: str) -> str:
    """The tracer a part of the trace belongs to: "reclaim" for "reclaim.lru"."""
    return name.split(".", 1)[0]


def first_object(plan: Plan, cgroup_filter: bool = False) -> List[str]:
    """The tracers whose programs attach first, in a BPF object of their own
    (ATTACH_FIRST; with -c/--cgroup the memcg tracer joins them, because its
    start sample fills the filter maps every program reads)."""
    return [n for n in plan.tracers
            if n in ATTACH_FIRST or (cgroup_filter and n == "memcg")]


def attach_parts(plan: Plan, tracers: Mapping[str, Tracer],
                 cgroup_filter: bool = False) -> List[List[str]]:
    """The plan's tracers grouped into BPF objects, in attach order.

    The reclaim programs come first (first_object()): the trace can begin
    while the larger rest compiles, their later parts (Tracer.later_part)
    with it.  One object when there is nothing to split, each tracer's
    later part right after its own file.
    """
    first = first_object(plan, cgroup_filter)
    rest = [n for n in plan.tracers if n not in first]
    if "reclaim" not in first or not rest:
        return [whole_object(plan, tracers)]
    return [first, later_parts(first, tracers) + rest]


def whole_object(plan: Plan, tracers: Mapping[str, Tracer]) -> List[str]:
    """Every part of the plan in one BPF object: each tracer, then its later part."""
    return [p for n in plan.tracers for p in [n, *later_parts([n], tracers)]]


def part_maps(index: int, nparts: int) -> str:
    """Whether object ``index`` of ``nparts`` exports the shared maps or uses them."""
    if nparts == 1:
        return ""
    return "export" if index == 0 else "extern"


def bpf_source(tracers: Mapping[str, Tracer], names: Optional[Sequence[str]] = None) -> str:
    """The program bcc compiles for the parts ``names`` (default: every
    tracer of ``tracers``, whole): common.bpf.h, then each part's file.

    bcc rewrites map method calls (``events.ringbuf_reserve()``) and builds
    tracepoint argument structs only in the main source text, never in
    included files, so these fixed files are joined rather than #included
    (events.h and reclaim.bpf.h, plain structs, are still included).  Every
    parameter reaches the C side as a -D cflag, never by editing this text.
    """
    if names is None:
        names = [p for n in tracers for p in [n, *later_parts([n], tracers)]]
    files = ["common.bpf.h"]
    for name in names:
        t = tracers[part_tracer(name)]
        files.append(t.later_source if "." in name else t.bpf_source)
    parts = []
    for name in files:
        with open(os.path.join(BPF_DIR, name)) as f:
            parts.append(f"/* ---- bpf/{name} ---- */\n{f.read()}")
    return "\n".join(parts)


class _CompileThread:
    """The one thread every compile of this process runs in.

    glibc gives a new thread its own malloc arena: a second object compiled
    in a second thread kept ~10 MiB more resident after malloc_trim than one
    thread compiling both (measured with record's two objects), so the
    compiles share this thread, and its arena, one after the other.
    """

    _lock = threading.Lock()
    _queue: Optional[queue.SimpleQueue[Callable[[], None]]] = None

    @classmethod
    def submit(cls, fn: Callable[[], None]) -> None:
        with cls._lock:
            if cls._queue is None:
                cls._queue = queue.SimpleQueue()
                # A daemon: whatever goes wrong in the main thread, exit never hangs on it.
                threading.Thread(target=cls._serve, args=(cls._queue,), name="bpf-compile",
                                 daemon=True).start()
            cls._queue.put(fn)

    @staticmethod
    def _serve(q: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            q.get()()


class Compile:
    """bcc's compile, load and attach of one BPF object, in a thread.

    The compile is one ctypes call into clang and LLVM, which releases the
    GIL: while it runs, the caller builds the recording header, the
    correlator and the live view.  bcc and clang write warnings straight to
    fd 2, so fd 2 is captured from start() to wait() (the caller must not
    print in between; --traceback shows the text).  wait() joins the thread
    on every path, Ctrl-C included, so fd 2 is never handed back while clang
    may still write to it.  A later object compiles while the trace runs:
    then the session prints nothing until it is attached.
    """

    def __init__(self, bpf_factory: Callable[..., Any], tracers: Mapping[str, Tracer],
                 plan: Plan, tgid: int = 0, ringbuf_pages: int = 1024,
                 names: Optional[List[str]] = None, maps: str = "") -> None:
        self.bpf_factory = bpf_factory
        self.names = list(whole_object(plan, tracers) if names is None else names)
        self.text = bpf_source(tracers, self.names)
        self.cflags = bpf_cflags(plan, tgid, ringbuf_pages, maps, names=self.names)
        self.later = maps == "extern"  # attached after the trace began
        self.output = ""  # bcc's compiler messages
        self._bpf: Any = None
        self._error: Optional[BaseException] = None
        self._done: Optional[threading.Event] = None
        self._capture: Any = None
        self._captured: Any = None

    def _run(self) -> None:
        try:
            self._bpf = self.bpf_factory(text=self.text, cflags=self.cflags)
            quiet_own_perf_events(self._bpf)
        except BaseException as e:  # handed to the caller by result()
            self._error = e
        finally:
            assert self._done is not None
            self._done.set()

    def start(self) -> Compile:
        from trace_reclaim.quiet import captured_stderr

        self._capture = captured_stderr()
        self._captured = self._capture.__enter__()
        self._done = threading.Event()
        _CompileThread.submit(self._run)
        return self

    def done(self) -> bool:
        """Whether the compile has finished (result() will not block)."""
        return self._done is not None and self._done.is_set()

    def wait(self) -> None:
        """Let the compile finish and give fd 2 back (also on the caller's error paths)."""
        if self._done is None:
            self.start()
        assert self._done is not None
        try:
            self._done.wait()
        finally:
            if self._capture is not None:
                capture, self._capture = self._capture, None
                capture.__exit__(None, None, None)
                self.output = self._captured.text

    def result(self) -> Any:
        """The loaded and attached BPF object; SessionError when it did not load."""
        self.wait()
        if self._error is not None:
            e = self._error
            if not isinstance(e, Exception):
                raise e
            detail = _last_line(e)
            errs = [ln for ln in self.output.splitlines() if "error:" in ln]
            if errs:
                detail += f" ({errs[0].strip()[:160]})"
            what = "the BPF program" + (f" of {', '.join(self.names)}" if self.later else "")
            raise SessionError(f"{what} did not load: {detail}",
                               "run 'trace-reclaim check' to see what this kernel "
                               "offers; --traceback shows the compiler output") from e
        return self._bpf


def proc_snapshots(procfs: ProcFS, ts_ns: int, when: str) -> Iterator[events.Snapshot]:
    """The /proc readings every window edge takes, /proc/vmstat first."""
    yield events.Snapshot(ts_ns, "vmstat", when, procfs.vmstat())
    yield events.Snapshot(ts_ns, "zoneinfo", when, procfs.zoneinfo())
    yield events.Snapshot(ts_ns, "meminfo", when, procfs.meminfo())
    psi = procfs.psi_memory()
    if psi is not None:
        yield events.Snapshot(ts_ns, "psi", when, psi)


class Beginning:
    """A trace begun before its session exists: the first BPF object
    attached and the start read, held as records.

    record and live begin tracing as soon as the first object's programs are
    attached: its tracers' start samples and the /proc start readings are
    taken at once (they open the window), and the trace is begun.  Planning
    the other tracers, the recording's header and the session come after,
    so that a busy machine's CPU goes to the compile first; the ring buffer
    holds the records meanwhile, and the session emits these first
    (LiveSession(begun=...)).  Raises SessionError when the object did not
    load.
    """

    def __init__(self, compile: Compile, tracers: Mapping[str, Tracer], procfs: ProcFS,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.compile = compile
        self.bpf = compile.result()
        now = clock()
        self.records: List[Any] = []
        for name in compile.names:
            if "." not in name:   # a later part has its tracer's sample
                self.records += tracers[name].sample(self.bpf, procfs, now, "start")
        self.start_ns = clock()
        self.wall_start = time.time()
        self.records += proc_snapshots(procfs, self.start_ns, "start")


PERF_EVENT_IOC_DISABLE = 0x2401


def quiet_own_perf_events(bpf: Any) -> None:
    """Disable the perf events bcc attached ``bpf``'s tracepoint programs through.

    The programs keep running: a classic tracepoint runs the BPF programs
    attached to it whether or not the perf event they came through is
    enabled (perf_trace_run_bpf_submit(), since 4.7).  What stops is the
    rest: as they return TP_PASS (common.bpf.h), to leave each event to
    whoever else has the tracepoint open in perf, the kernel would also
    offer it to our own event (bcc opens it on CPU 0), a sample nobody
    reads, on every event CPU 0 sees.  One that will not be disabled is
    left as it was: it costs that sample, nothing more.
    """
    import fcntl

    fds = getattr(bpf, "tracepoint_fds", None)
    for fd in (fds.values() if isinstance(fds, dict) else ()):
        try:
            fcntl.ioctl(fd, PERF_EVENT_IOC_DISABLE, 0)
        except (OSError, TypeError):
            pass


def _last_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else type(e).__name__


def default_bpf_factory() -> Callable[..., Any]:
    """bcc's BPF class, imported only when a live session needs it."""
    try:
        from bcc import BPF
    except ImportError as e:
        raise SessionError(
            f"bcc is not importable from {sys.executable}: {e}",
            "install Debian's python3-bpfcc and run from a venv made with "
            "--system-site-packages (./bootstrap.sh does both)") from e
    return BPF
