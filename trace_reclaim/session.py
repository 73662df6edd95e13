"""Run a live trace: load the BPF program, drain its ring buffer, feed the
correlator, record, and tick once per interval.

Everything the correlator sees passes through ``_emit`` as a record, and
every record goes to the recording (when there is one) in that same order,
so ``report FILE`` replays exactly this run.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import socket
import sys
import threading
import time
from importlib import resources
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import trace_reclaim
from trace_reclaim import abi, events, gfp
from trace_reclaim.abi import EV_DIRECT_RECLAIM, EV_KSWAPD_WAKE
from trace_reclaim.correlate import Correlator
from trace_reclaim.env import signals_to_catch
from trace_reclaim.probe import Plan, Probe
from trace_reclaim.procfs import ProcFS, zone_names
from trace_reclaim.recording import Writer
from trace_reclaim.taskstats import DELAY_FIELDS
from trace_reclaim.tracer import Tracer

__all__ = ["BPF_DIR", "LiveSession", "Compile", "build_header", "bpf_source", "SessionError",
           "attach_parts", "part_maps", "ATTACH_FIRST", "FIRST_PLANNED", "READY", "STILL_ATTACHING",
           "detach_in_parallel",
           "ALL_ATTACHED", "all_attached", "STOP_SIGNALS"]

# The BPF sources ship inside the package; bcc needs a directory for -I.
BPF_DIR = str(resources.files("trace_reclaim").joinpath("bpf"))
_TS = int.from_bytes


def _header_slice(name: str) -> slice:
    """Where a struct event_header field lies in a raw record."""
    f = abi.layout("event_header").field(name)
    return slice(f.offset, f.offset + f.size)


_HDR_TS, _HDR_TYPE, _HDR_PID, _HDR_COMM = (_header_slice(n)
                                           for n in ("ts_ns", "type", "pid", "comm"))
MAX_TASKSTATS_PER_TICK = 32
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
    """The cflags of one BPF object holding the tracers ``names``; ``maps`` is
    "export" for the first of several objects, "extern" for a later one (see
    common.bpf.h).  OBJECT_<NAME> says which tracers' files the object holds:
    a tracepoint two of them probe is probed once per object (reclaim.bpf.c)."""
    # The tracers name every kprobe choice -D..._KPROBE...; only those
    # programs need struct pt_regs, whose header costs compile time.
    kprobes = any(c.startswith("-D") and "_KPROBE" in c for c in plan.cflags)
    return [f"-I{BPF_DIR}", "-Wno-ignored-attributes", f"-DRINGBUF_PAGES={ringbuf_pages}",
            f"-DTARG_TGID={tgid}", *(["-DNEED_PT_REGS"] if kprobes else []),
            *([f"-DMAPS_{maps.upper()}"] if maps else []),
            *[f"-DOBJECT_{n.upper()}" for n in names], *plan.cflags]


def attach_parts(plan: Plan, cgroup_filter: bool = False) -> List[List[str]]:
    """The plan's tracers grouped into BPF objects, in attach order.

    The reclaim programs come first, alone: the trace can begin while the
    larger rest compiles.  With -c/--cgroup the memcg tracer joins them,
    because its start sample fills the filter maps every program reads.
    One object when there is nothing to split.
    """
    first = [n for n in plan.tracers
             if n in ATTACH_FIRST or (cgroup_filter and n == "memcg")]
    rest = [n for n in plan.tracers if n not in first]
    if "reclaim" not in first or not rest:
        return [list(plan.tracers)]
    return [first, rest]


def part_maps(index: int, nparts: int) -> str:
    """Whether object ``index`` of ``nparts`` exports the shared maps or uses them."""
    if nparts == 1:
        return ""
    return "export" if index == 0 else "extern"


def bpf_source(tracers: Mapping[str, Tracer]) -> str:
    """The one program bcc compiles: common.bpf.h, then each tracer's file.

    bcc rewrites map method calls (``events.ringbuf_reserve()``) and builds
    tracepoint argument structs only in the main source text, never in
    included files, so these fixed files are joined rather than #included
    (events.h, plain structs, is still included).  Every parameter reaches
    the C side as a -D cflag, never by editing this text.
    """
    parts = []
    for name in ["common.bpf.h"] + [t.bpf_source for t in tracers.values()]:
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
        self.names = list(plan.tracers if names is None else names)
        self.text = bpf_source({n: tracers[n] for n in self.names})
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


def build_header(probe: Probe, plan: Plan, argv: List[str], interval_s: float,
                 tracers: Mapping[str, Tracer], workload: Optional[Dict[str, Any]] = None,
                 ) -> Dict[str, Any]:
    """The system context a recording carries (what a replay elsewhere needs)."""
    fmt = probe.tracepoint_format("vmscan", "mm_vmscan_direct_reclaim_begin") or ""
    cfg = {k: probe.config(k) for k in (
        "CONFIG_HAVE_ARCH_HUGE_VMALLOC", "CONFIG_KPROBES", "CONFIG_SLUB",
        "CONFIG_SLAB_MERGE_DEFAULT", "CONFIG_PSI", "CONFIG_TASK_DELAY_ACCT",
        "CONFIG_ZRAM", "CONFIG_MEMCG", "CONFIG_NUMA", "CONFIG_TRANSPARENT_HUGEPAGE")}
    header: Dict[str, Any] = {
        "tool": "trace-reclaim",
        "tool_version": trace_reclaim.__version__,
        "kernel_release": probe.release,
        "kernel_version": os.uname().version,
        "machine": os.uname().machine,
        "hostname": socket.gethostname(),
        "cmdline": probe.cmdline,
        "config": cfg,
        "argv": argv,
        "interval_s": interval_s,
        "wall_start": time.time(),
        "plan": plan.as_json(),
        "headers": probe.headers,
        "gfp_bits": gfp.parse_format_bits(fmt) or gfp.DEFAULT_BITS,
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "zone_names": zone_names(probe.procfs.try_read("/proc/zoneinfo") or ""),
        "workload": workload,
    }
    for name, t in tracers.items():
        extra = t.header(probe)
        if extra:
            header.setdefault("tracers", {})[name] = extra
    return header


class LiveSession:
    """One live trace from attach to the final report."""

    def __init__(self, *, bpf_factory: Callable[..., Any], procfs: ProcFS,
                 tracers: Mapping[str, Tracer], plan: Plan, header: Dict[str, Any],
                 interval_s: float = 1.0, duration_s: Optional[float] = None,
                 tgid: int = 0, writer: Optional[Writer] = None,
                 on_row: Optional[Callable[[Dict[str, Any]], None]] = None,
                 clock: Callable[[], int] = time.monotonic_ns,
                 ringbuf_pages: int = 1024, slow_consumer_ms: int = 0,
                 taskstats: Optional[Any] = None, history: bool = True,
                 compile: Optional[Compile] = None,
                 parts: Optional[List[List[str]]] = None,
                 on_attached: Optional[Callable[[List[str], int], None]] = None,
                 stop_on_write_error: bool = True) -> None:
        self.bpf_factory = bpf_factory
        # A recording that can no longer be written (Writer.error) ends the
        # trace, unless the trace is worth more than its recording (serve).
        self.stop_on_write_error = stop_on_write_error
        # The first object's compile: started by the caller before the
        # slower setup, or here by load().
        self._compile = compile
        # The tracers of each BPF object, in attach order (attach_parts()).
        self.parts = parts or [list(plan.tracers)]
        # Called (tracer names, ns since the window opened) when a later
        # object is attached.
        self.on_attached = on_attached
        self.procfs = procfs
        self.tracers = {n: tracers[n] for n in plan.tracers}
        self.plan = plan
        self.header = header
        self.interval_ns = int(interval_s * 1e9)
        self.duration_ns = int(duration_s * 1e9) if duration_s else None
        self.tgid = tgid
        self.writer = writer
        self.on_row = on_row
        self.clock = clock
        self.ringbuf_pages = ringbuf_pages
        # Tests only: drain the ring buffer this rarely, to make real losses.
        self.slow_consumer_ms = slow_consumer_ms
        self.correlator = Correlator(header, self.tracers.values(), history=history)
        self._batch: List[bytes] = []
        self._stop: Optional[str] = None
        self.bpf: Any = None   # the first object: the ring buffer and the loss counts
        self._objects: List[Any] = []   # every attached object, in attach order
        self._bpf_of: Dict[str, Any] = {}   # tracer name -> its attached object
        self._later: Optional[Compile] = None   # a later object, compiling
        self._start_ns = 0
        # Why a later object did not load (the trace then ends at once).
        self.attach_error: Optional[SessionError] = None
        self.compiler_output = ""  # bcc's compiler messages when load() failed
        # Read live between ticks, emitted as records at the tick: whether a
        # kswapd woke (zoneinfo is re-read then), and which threads stalled in
        # direct reclaim (their taskstats are read then).
        self.taskstats = taskstats
        self._kswapd_woke = False
        self._stalled: Dict[int, str] = {}
        self._ts_read: Dict[int, int] = {}

    # -- records -----------------------------------------------------------
    def _note(self, type_id: int, payload: bytes) -> None:
        """What the session itself reacts to: kswapd wakes (zoneinfo), stalls (taskstats)."""
        if type_id == EV_KSWAPD_WAKE:
            self._kswapd_woke = True
        elif type_id == EV_DIRECT_RECLAIM and len(self._stalled) < MAX_TASKSTATS_PER_TICK:
            tid = _TS(payload[_HDR_PID], "little")
            if tid not in self._stalled:
                self._stalled[tid] = payload[_HDR_COMM].split(b"\0", 1)[0].decode(
                    "utf-8", "replace")

    def _emit(self, type_id: int, payload: bytes) -> None:
        self._note(type_id, payload)
        if self.writer is not None:
            self.writer.write(type_id, payload)
        row = self.correlator.feed_record(type_id, payload)
        if row is not None and self.on_row is not None:
            self.on_row(row)

    def _emit_user(self, obj: Any) -> None:
        self._emit(events.user_type(obj), events.encode_user(obj))

    def _on_event(self, ctx: Any, data: Any, size: int) -> int:
        self._batch.append(ctypes.string_at(data, size))
        return 0

    def _flush_batch(self) -> None:
        batch = self._batch
        if not batch:
            return
        self._batch = []
        # One ring buffer, many CPUs: commit order is nearly time order.
        batch.sort(key=lambda b: _TS(b[_HDR_TS], "little"))
        records = [(_TS(raw[_HDR_TYPE], "little"), raw) for raw in batch]
        write = self.writer.write if self.writer is not None else None
        for type_id, raw in records:
            self._note(type_id, raw)
            if write is not None:
                write(type_id, raw)
        # Same order as recorded; BPF records never end an interval (no rows).
        self.correlator.feed_records(records)
        if self._stalled and self.taskstats is not None:
            # Read stalled tasks' delays now, while they still exist; a
            # short-lived allocator is gone by the next tick.
            self._read_taskstats("stall")

    def _lost(self) -> Dict[int, int]:
        out: Dict[int, int] = {}
        for k, v in self.bpf["lost_events"].items():
            n = sum(v)
            if n:
                out[k.value] = n
        return out

    def _snapshots(self, when: str, after_vmstat: Optional[Callable[[], None]] = None) -> int:
        now = self.clock()
        pf = self.procfs
        self._emit_user(events.Snapshot(now, "vmstat", when, pf.vmstat()))
        if after_vmstat is not None:
            after_vmstat()
        self._emit_user(events.Snapshot(now, "zoneinfo", when, pf.zoneinfo()))
        self._emit_user(events.Snapshot(now, "meminfo", when, pf.meminfo()))
        psi = pf.psi_memory()
        if psi is not None:
            self._emit_user(events.Snapshot(now, "psi", when, psi))
        return now

    def _tick_snapshots(self, when: str) -> None:
        """PSI every tick; zoneinfo and meminfo after kswapd woke; stalled tasks' delays."""
        pf = self.procfs
        now = self.clock()
        if when == "tick":
            psi = pf.psi_memory()
            if psi is not None:
                self._emit_user(events.Snapshot(now, "psi", "tick", psi))
            if self._kswapd_woke:
                # This VM grows the Normal zone's managed pages lazily: the
                # watermarks at trace start can be stale by the first wake.
                self._emit_user(events.Snapshot(now, "zoneinfo", "kswapd_wake",
                                                pf.zoneinfo()))
                self._emit_user(events.Snapshot(now, "meminfo", "kswapd_wake",
                                                pf.meminfo()))
        self._kswapd_woke = False
        if self._stalled and self.taskstats is not None:
            self._read_taskstats(when)
        self._stalled = {}

    def _read_taskstats(self, when: str) -> None:
        """Emit the delay accounting of the threads that stalled since the last read.

        Between ticks ("stall") a thread is read at most every 200 ms; the
        rest wait for the tick, so a long stall storm cannot flood the
        recording.
        """
        now = self.clock()
        due = {}
        for tid, comm in self._stalled.items():
            if when != "stall" or now - self._ts_read.get(tid, 0) >= 200_000_000:
                due[tid] = comm
        if not due:
            return
        tasks = []
        errors = 0
        client = self.taskstats
        if client is None:
            return
        for tid, comm in sorted(due.items()):
            del self._stalled[tid]
            self._ts_read[tid] = now
            try:
                reply = client.get(tid)
                if reply is None:
                    raise LookupError(tid)
                st = reply["stats"]
            except Exception:  # the task exited, or netlink refused
                errors += 1
                continue
            row: Dict[str, Any] = {"tid": tid, "comm": comm,
                                   "tgid": st.get("ac_tgid", st.get("ac_pid"))}
            for k in DELAY_FIELDS:
                if k in st:
                    row[k] = st[k]
            tasks.append(row)
        if len(self._ts_read) > 4096:
            self._ts_read.clear()
        self._emit_user(events.Snapshot(self.clock(), "taskstats", when, {
            "enabled": True, "tasks": tasks, "gone": errors}))

    def _sample(self, when: str, names: Optional[List[str]] = None) -> None:
        """Sample the attached tracers (``names``: only those)."""
        now = self.clock()
        for name, t in self.tracers.items():
            b = self._bpf_of.get(name)
            if b is None or (names is not None and name not in names):
                continue
            for obj in t.sample(b, self.procfs, now, when):
                self._emit_user(obj)

    def stop(self, reason: str) -> None:
        """End the trace at the loop's next turn; the first reason given is the one kept
        (a hung-up terminal sends SIGHUP, then fails the view's next write)."""
        if self._stop is None:
            self._stop = reason

    # -- the run -----------------------------------------------------------
    def load(self) -> None:
        from trace_reclaim.quiet import trim_heap

        c = self._compile or self._part_compile(0)
        self._compile = None
        try:
            self.bpf = c.result()
        finally:
            self.compiler_output = c.output
        self._attached(c.names, self.bpf)
        self.bpf["events"].open_ring_buffer(self._on_event)
        trim_heap()

    def _part_compile(self, index: int) -> Compile:
        return Compile(self.bpf_factory, self.tracers, self.plan, self.tgid,
                       self.ringbuf_pages, names=self.parts[index],
                       maps=part_maps(index, len(self.parts)))

    def _types(self, names: List[str]) -> List[int]:
        return sorted({int(ty) for n in names for ty in self.tracers[n].event_types})

    def _attached(self, names: List[str], bpf: Any) -> None:
        self._objects.append(bpf)
        for n in names:
            self._bpf_of[n] = bpf

    def _compile_next(self) -> None:
        """Start compiling the next object, if any: after the first is loaded,
        whose shared maps it names."""
        if len(self._objects) < len(self.parts):
            self._later = self._part_compile(len(self._objects)).start()

    def _attach_later(self) -> None:
        """Take the later object's compile: attach it, or end the trace."""
        from trace_reclaim.quiet import trim_heap

        c, self._later = self._later, None
        assert c is not None
        try:
            b = c.result()
        except SessionError as e:
            self.compiler_output = c.output
            self.attach_error = e
            self._emit_user(events.Snapshot(self.clock(), "attach", "failed",
                                            {"tracers": c.names, "error": str(e)}))
            self.stop("attach failed")
            return
        self._attached(c.names, b)
        trim_heap()
        # The kernel's counters as these tracers begin: their rows in the
        # report's /proc/vmstat table count from here, not from the start.
        now = self.clock()
        self._emit_user(events.Snapshot(now, "attach", "attached", {
            "tracers": c.names, "types": self._types(c.names), "vmstat": self.procfs.vmstat()}))
        self._sample("start", c.names)
        if self.on_attached is not None:
            self.on_attached(c.names, now - self._start_ns)
        self._compile_next()

    def run(self, on_ready: Optional[Callable[[], None]] = None) -> Correlator:
        """Trace until the duration passes or ``stop()``; return the correlator.

        ``on_ready`` runs once Ctrl-C and SIGTERM end the trace with its
        report: the place to tell the user tracing has begun.
        """
        if self.bpf is None:
            self.load()
        # Ctrl-C, kill, and the terminal going away (an ssh session dropped
        # mid-incident): each ends the trace as the end of its duration would,
        # end counters and End record written.
        old = signals_to_catch(STOP_SIGNALS)

        def _handler(signum: int, frame: Any) -> None:
            self.stop(signal.Signals(signum).name)

        for s in old:
            signal.signal(s, _handler)
        try:
            if on_ready is not None:
                on_ready()
            # The next object compiles (in its thread) while the start
            # samples and snapshots are read.
            self._compile_next()
            self._run()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if self.writer is not None:
                self.writer.flush()
        return self.correlator

    def _run(self) -> None:
        b = self.bpf
        self._sample("start")
        self._start_ns = self._snapshots("start")
        if len(self.parts) > 1:
            # What records this recording can hold from the start, and what
            # only from the "attached" snapshot on (a report never implies
            # events were seen before their programs were attached).
            pending = [n for p in self.parts for n in p if n not in self._bpf_of]
            self._emit_user(events.Snapshot(self._start_ns, "attach", "start", {
                "tracers": list(self._bpf_of), "pending": pending,
                "pending_types": self._types(pending)}))
        start = self.clock()
        next_tick = start + self.interval_ns
        end = start + self.duration_ns if self.duration_ns else None
        interval = 0
        last_consume = start
        while self._stop is None:
            if self.stop_on_write_error and self.writer is not None \
                    and self.writer.error is not None:
                self._stop = "recording failed"
                break
            now = self.clock()
            deadline = next_tick if end is None else min(next_tick, end)
            # While a later object compiles, look for its end often.
            longest = 100 if self._later is None else 10
            timeout_ms = max(0, min(longest, (deadline - now) // 1_000_000))
            if self.slow_consumer_ms:
                time.sleep(timeout_ms / 1000)
                if now - last_consume >= self.slow_consumer_ms * 1_000_000:
                    b.ring_buffer_consume()
                    last_consume = now
            else:
                # Records are submitted without a wakeup until the buffer is
                # a quarter full (submit_event() in bpf/common.bpf.h): a
                # timeout is the usual way out of the poll, so drain here.
                b.ring_buffer_poll(int(timeout_ms))
                b.ring_buffer_consume()
            self._flush_batch()
            if self._later is not None and self._later.done():
                self._attach_later()
                continue
            now = self.clock()
            if end is not None and now >= end:
                self._stop = "duration"
                break
            if now >= next_tick:
                interval += 1
                self._sample("tick")
                self._tick_snapshots("tick")
                self._emit_user(events.Tick(self.clock(), interval, self._lost()))
                if self.writer is not None:
                    self.writer.flush()
                next_tick += self.interval_ns
                if next_tick <= now:  # we fell behind: skip, don't burst
                    next_tick = now + self.interval_ns
        # Close the window: kernel counters first, then everything the ring
        # buffer still holds; the End record excludes events after the counters.
        # In-kernel sums checked against /proc/vmstat are read right after it.
        first = [n for n, t in self.tracers.items() if t.end_sample_with_snapshots]
        end_ts = self._snapshots("end", lambda: self._sample("end", first))
        # Drain before the other tracers' last sample, so it covers every
        # record (the vmalloc tracer symbolizes the stacks of the areas it saw).
        b.ring_buffer_consume()
        self._flush_batch()
        self._sample("end", [n for n in self.tracers if n not in first])
        self._tick_snapshots("end")
        self._emit_user(events.Tick(self.clock(), interval + 1, self._lost()))
        self._emit_user(events.End(end_ts, self._stop or "stopped"))

    def close(self) -> None:
        """Detach every object, later ones first (they use the first one's maps).

        A later object still compiling (the trace ended first) is waited
        for, then detached unused.
        """
        if self._later is not None:
            c, self._later = self._later, None
            c.wait()
            try:
                self._objects.append(c.result())
            except SessionError:
                pass
        objects = list(reversed(self._objects))
        if self.bpf is not None and not objects:
            objects = [self.bpf]
        detach_in_parallel(objects)
        for b in objects:
            try:
                b.cleanup()
            except Exception:
                pass
        self._objects = []
        self._bpf_of = {}
        self.bpf = None


# bcc's per-attachment detach methods, by the table of fds each empties.
_DETACH = (("kprobe_fds", "detach_kprobe_event"), ("tracepoint_fds", "detach_tracepoint"),
           ("raw_tracepoint_fds", "detach_raw_tracepoint"),
           ("kfunc_entry_fds", "detach_kfunc"), ("kfunc_exit_fds", "detach_kretfunc"))
DETACH_THREADS = 16


def detach_in_parallel(objects: List[Any]) -> int:
    """Detach every probe of bcc ``objects`` from several threads; return how many.

    Each detach is a close(2) that waits for an RCU grace period in the
    kernel (unregistering a tracepoint probe, unlinking a trampoline):
    ~80 ms each, so bcc's cleanup(), one after the other, took 1.7 s for the
    tracepoint plan's 22.  The closes release the GIL and their grace
    periods overlap.  What is left (and every error) is cleanup()'s.
    """
    jobs = []
    for b in objects:
        for table, method in _DETACH:
            fds = getattr(b, table, None)
            if isinstance(fds, dict) and hasattr(b, method):
                jobs += [(getattr(b, method), key) for key in list(fds)]
    if len(jobs) < 2:
        return 0

    def detach(job: Tuple[Callable[[Any], Any], Any]) -> None:
        try:
            job[0](job[1])
        except Exception:
            pass   # left attached: cleanup() tries again and says nothing either

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(DETACH_THREADS, len(jobs)),
                            thread_name_prefix="bpf-detach") as pool:
        list(pool.map(detach, jobs))
    return len(jobs)


# include/uapi/linux/perf_event.h: _IO('$', 1)
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
