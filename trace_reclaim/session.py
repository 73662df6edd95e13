"""Run a live trace: load the BPF program, drain its ring buffer, feed the
correlator, record, and tick once per interval.

Everything the correlator sees passes through ``_emit`` as a record, and
every record goes to the recording (when there is one) in that same order,
so ``report FILE`` replays exactly this run.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import trace_reclaim
from trace_reclaim import abi, events, gfp
from trace_reclaim.abi import EV_DIRECT_RECLAIM, EV_KSWAPD_WAKE
from trace_reclaim.correlate import Correlator
from trace_reclaim.env import signals_to_catch
# What a trace does before its session exists, named here too.
from trace_reclaim.objects import (ALL_ATTACHED, ATTACH_FIRST, BPF_DIR, FIRST_PLANNED,
                                   READY, STILL_ATTACHING, STOP_SIGNALS, Beginning, Compile,
                                   SessionError, all_attached, attach_parts, bpf_cflags,
                                   bpf_source, default_bpf_factory, first_object, later_parts,
                                   part_maps, part_tracer, proc_snapshots,
                                   quiet_own_perf_events, whole_object)
from trace_reclaim.probe import Plan, Probe
from trace_reclaim.procfs import ProcFS, zone_names
from trace_reclaim.recording import Writer
from trace_reclaim.taskstats import DELAY_FIELDS
from trace_reclaim.tracer import Tracer

__all__ = ["BPF_DIR", "LiveSession", "Compile", "build_header", "bpf_source", "bpf_cflags",
           "SessionError", "Beginning", "proc_snapshots", "attach_parts", "first_object",
           "whole_object", "later_parts", "part_tracer", "part_maps", "ATTACH_FIRST",
           "FIRST_PLANNED", "READY", "STILL_ATTACHING", "detach_in_parallel", "ALL_ATTACHED",
           "all_attached", "STOP_SIGNALS", "default_bpf_factory", "quiet_own_perf_events"]

_TS = int.from_bytes


def _header_slice(name: str) -> slice:
    """Where a struct event_header field lies in a raw record."""
    f = abi.layout("event_header").field(name)
    return slice(f.offset, f.offset + f.size)


_HDR_TS, _HDR_TYPE, _HDR_PID, _HDR_COMM = (_header_slice(n)
                                           for n in ("ts_ns", "type", "pid", "comm"))
MAX_TASKSTATS_PER_TICK = 32
def build_header(probe: Probe, plan: Plan, argv: List[str], interval_s: float,
                 tracers: Mapping[str, Tracer], workload: Optional[Dict[str, Any]] = None,
                 wall_start: Optional[float] = None) -> Dict[str, Any]:
    """The system context a recording carries (what a replay elsewhere needs);
    ``wall_start``: when the trace began (Beginning.wall_start), if before now."""
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
        "wall_start": time.time() if wall_start is None else wall_start,
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
                 stop_on_write_error: bool = True,
                 begun: Optional[Beginning] = None) -> None:
        self.bpf_factory = bpf_factory
        # The first object attached and the start read (objects.Beginning):
        # made by record and live before this session, else by load().
        self._begun = begun
        # A recording that can no longer be written (Writer.error) ends the
        # trace, unless the trace is worth more than its recording (serve).
        self.stop_on_write_error = stop_on_write_error
        # The first object's compile: started by the caller before the
        # slower setup, or here by load().
        self._compile = compile
        # Called (tracer names, ns since the window opened) when a later
        # object is attached.
        self.on_attached = on_attached
        self.procfs = procfs
        self.tracers = {n: tracers[n] for n in plan.tracers}
        # The parts of each BPF object, in attach order (attach_parts()).
        self.parts = parts or [whole_object(plan, self.tracers)]
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
        self._bpf_of: Dict[str, Any] = {}   # tracer or part name -> its attached object
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
        for snap in proc_snapshots(self.procfs, now, when):
            self._emit_user(snap)
            if snap.what == "vmstat" and after_vmstat is not None:
                after_vmstat()
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
        """Sample the attached tracers (``names``: only those, and those of these parts)."""
        now = self.clock()
        wanted = None if names is None else {part_tracer(n) for n in names}
        for name, t in self.tracers.items():
            b = self._bpf_of.get(name)
            if b is None or (wanted is not None and name not in wanted):
                continue
            later = self._bpf_of.get(f"{name}.{t.later_part}") if t.later_part else None
            if later is not None and later is not b:
                b = _Maps(b, later)
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

        if self._begun is None:  # else record and live attached it already
            c = self._compile or self._part_compile(0)
            self._compile = None
            try:
                self._begun = Beginning(c, self.tracers, self.procfs, self.clock)
            finally:
                self.compiler_output = c.output
        c = self._begun.compile
        self.bpf = self._begun.bpf
        self.compiler_output = c.output
        self._attached(c.names, self.bpf)
        self.bpf["events"].open_ring_buffer(self._on_event)
        trim_heap()

    def _part_compile(self, index: int) -> Compile:
        return Compile(self.bpf_factory, self.tracers, self.plan, self.tgid,
                       self.ringbuf_pages, names=self.parts[index],
                       maps=part_maps(index, len(self.parts)))

    def _types(self, names: List[str]) -> List[int]:
        """The record types of these parts (a later part has none: it only counts)."""
        return sorted({int(ty) for n in names if "." not in n
                       for ty in self.tracers[n].event_types})

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
        # The start, as the Beginning read it when the first object attached.
        assert self._begun is not None
        held, self._begun.records = self._begun.records, []
        for ev in held:
            self._emit_user(ev)
        self._start_ns = self._begun.start_ns
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


class _Maps:
    """The maps of a tracer whose later part is in another BPF object, by name.

    What ``Tracer.sample()`` is given then: ``maps["name"]`` finds a map in
    the tracer's own object, else in its later part's; anything else
    (``ksym``) is the own object's.
    """

    def __init__(self, own: Any, later: Any) -> None:
        self._objects = (own, later)

    def __getitem__(self, name: str) -> Any:
        for b in self._objects:
            try:
                return b[name]
            except KeyError:
                continue
        raise KeyError(name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._objects[0], attr)


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
