"""``trace-reclaim live`` and ``record``: attach, trace, record, report at the end."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

from trace_reclaim import tracers
from trace_reclaim.env import (Environment, ExitStatus, UserError, output_gone, signals_to_catch,
                               silence)
from trace_reclaim.probe import Probe
from trace_reclaim import recording
from trace_reclaim.recording import Writer
from trace_reclaim.tracer import Options, Tracer

if TYPE_CHECKING:   # imported when a trace starts (bcc is slow to import)
    from trace_reclaim.correlate import Correlator
    from trace_reclaim.session import LiveSession
    from trace_reclaim.view import LiveView

__all__ = ["run", "preflight", "sigterm_interrupts", "open_recording"]


def preflight(env: Environment, attach: Any = None, prefetch: bool = True) -> Probe:
    if not env.is_root():
        raise UserError("trace-reclaim needs root to load BPF programs",
                        "run it as root, e.g. sudo ./trace-reclaim")
    probe = Probe(env.procfs, None, attach)
    probe.prefetch_btf()   # while bcc loads, below
    if prefetch:
        probe.prefetch()
    tfs, how = probe.mount_tracefs()
    if tfs is None:
        raise UserError(f"tracefs is not available ({how})",
                        "mount it: mount -t tracefs nodev /sys/kernel/tracing")
    if probe.headers["path"] is None:
        raise UserError(f"no kernel headers at /lib/modules/{probe.release}/build "
                        "(bcc compiles every program against them)",
                        "run ./bootstrap.sh: it installs the nearest linux-headers and "
                        "links them there (or boot a kernel built with CONFIG_IKHEADERS)")
    probe._bpf_factory = env.bpf()
    return probe


def run(args: argparse.Namespace, env: Environment, live: bool) -> ExitStatus:
    from trace_reclaim.objects import (FIRST_PLANNED, READY, STILL_ATTACHING, Compile,
                                       bpf_cflags, bpf_source, later_parts)

    workload = None
    if args.workload:
        try:
            workload = json.loads(args.workload)
        except json.JSONDecodeError as e:
            raise UserError(f"--workload is not JSON: {e}", "pass a JSON object") from e
    options = Options(slab_cache_accounting=not args.no_slab_accounting,
                      cgroups=tuple(args.cgroup))
    if args.ebpf:
        registry = {name: t.configured(options) for name, t in tracers.registry().items()}
        probe = Probe(env.procfs, None, args.attach)
        plan1, first = _first_object(probe, registry, bool(args.cgroup))
        plan = probe.plan(registry)
        parts = _parts(first, plan, registry)
        objects = [(first, plan1, "export")] + ([(parts[1], plan, "extern")]
                                                 if len(parts) > 1 else [])
        for i, (names, p, maps) in enumerate(objects):
            # As record and live compile them.
            if len(objects) > 1:
                print(f"/* ==== BPF object {i + 1} of {len(objects)} ({', '.join(names)})"
                      + (", attached first" if i == 0 else ", attached next") + " ==== */",
                      file=env.stdout)
            print(bpf_source(registry, names), file=env.stdout)
            cflags = bpf_cflags(p, args.pid, maps=maps, names=names)
            print("/* cflags: " + " ".join(cflags) + " */", file=env.stdout)
        return ExitStatus.OK
    if getattr(args, "redact", False) and not args.output:
        raise UserError("--redact applies to the recording, and there is none",
                        "add -o FILE (or redact a report: trace-reclaim report --redact FILE)",
                        ExitStatus.USAGE)
    if args.pid:
        _check_pid(env, args.pid)
    if args.output:  # before any slow step: bad input fails fast
        if os.path.lexists(args.output):
            raise UserError(f"{args.output} exists; trace-reclaim does not overwrite "
                            "recordings", "choose another file name")
        parent = os.path.dirname(os.path.abspath(args.output))
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot write {args.output}: {parent} is not writable",
                            "choose a writable path")
    probe = preflight(env, args.attach, prefetch=False)
    # The tracers of the first BPF object are loaded and planned first, and
    # its compile starts at once.  Nothing else runs until it is attached
    # and tracing has begun: on a busy machine the CPU goes to the compile.
    # The other tracers are loaded and planned after, the recording's header
    # is built and the session made, while the ring buffer holds the records
    # (objects.Beginning); /proc/kallsyms, for the slab tracer's plan, is
    # read then too.
    early = {name: t.configured(options)
             for name, t in tracers.registry(FIRST_PLANNED).items()}
    plan1, first = _first_object(probe, early, bool(args.cgroup))
    if "reclaim" not in plan1.tracers:
        raise UserError("the vmscan tracepoints are missing: " + "; ".join(plan1.missing),
                        "run 'trace-reclaim check'; this kernel lacks CONFIG_TRACEPOINTS "
                        "or the vmscan events")
    if args.cgroup:
        _check_cgroups(args.cgroup, plan1)
    # From here until the compile's result is taken, nothing may print: fd 2
    # holds the compiler's output.  Nor may anything use a relative path:
    # bcc chdir()s into the kernel headers while it compiles, and the working
    # directory belongs to the whole process (imports are safe once sys.path
    # is absolute: _absolute_sys_path).
    out_path = os.path.abspath(args.output) if args.output else None
    _absolute_sys_path()
    pending = Compile(env.bpf(), early, plan1, args.pid, args.ringbuf_pages,
                      names=first, maps="export").start()
    try:
        with sigterm_interrupts(), _delayacct(env, args.delayacct) as da:
            begun = _begin(args, env, pending, early, plan1)
            with _EarlyStop() as early_stop:
                later = later_parts(first, early) + [n for n in tracers.NAMES
                                                     if n not in first]
                env.tell(f"{READY} ({', '.join(first)})"
                         + (f", {STILL_ATTACHING} {', '.join(later)}" if later else "")
                         + (f", recording to {args.output}" if args.output else "")
                         + ("" if args.duration else "... Ctrl-C to end."))
                from trace_reclaim.session import build_header

                registry = {name: early[name] if name in early else t.configured(options)
                            for name, t in tracers.registry().items()}
                plan = probe.plan(registry)
                for m in plan.missing:
                    env.warn(f"not tracing {m}")
                parts = _parts(first, plan, registry)
                header = build_header(probe, plan, sys.argv[1:], args.interval, registry,
                                      workload, wall_start=begun.wall_start)
                header["delayacct"] = da
                return _trace(args, env, live, plan, header, registry, begun, out_path, parts,
                              early_stop)
    finally:
        pending.wait()


def _begin(args: argparse.Namespace, env: Environment, pending: Any,
           early: Dict[str, Tracer], plan1: Any) -> Any:
    """Attach the first object and read the start (objects.Beginning), or
    say why it did not load."""
    from trace_reclaim.objects import Beginning, SessionError

    try:
        return Beginning(pending, early, env.procfs)
    except SessionError as e:
        for m in plan1.missing:
            env.warn(f"not tracing {m}")
        if args.traceback:
            print(pending.output, file=env.stderr)
        raise UserError(str(e), e.hint) from e


class _EarlyStop:
    """Ctrl-C, SIGTERM or SIGHUP from "Tracing reclaim" until the session
    runs: the first is noted and handed to the session, which then ends the
    trace at once with its report (tracing has begun: what it holds is
    recorded); once handed over, each goes to the session as its own
    handlers would.  Outside, SIGTERM and SIGHUP interrupt like Ctrl-C
    (sigterm_interrupts)."""

    def __init__(self) -> None:
        self.reason: Optional[str] = None
        self._session: Optional[LiveSession] = None
        self._old: Dict[int, Any] = {}

    def __enter__(self) -> _EarlyStop:
        from trace_reclaim.objects import STOP_SIGNALS

        if threading.current_thread() is threading.main_thread():
            self._old = signals_to_catch(STOP_SIGNALS)
            for s in self._old:
                signal.signal(s, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._session is not None:
            self._session.stop(name)
        elif self.reason is None:
            self.reason = name

    def hand_to(self, session: LiveSession) -> None:
        """From now on a signal ends the session's trace; pass it the one that came."""
        self._session = session
        if self.reason is not None:
            session.stop(self.reason)

    def __exit__(self, *exc: object) -> None:
        """Give the signals back (also once the trace has ended: Ctrl-C
        interrupts the report again)."""
        old, self._old = self._old, {}
        for s, h in old.items():
            signal.signal(s, h)


def _check_pid(env: Environment, pid: int) -> None:
    """-p names a running process (a thread group): the filter compares tgids,
    so another thread's id, or a pid not running, would match nothing."""
    status = env.procfs.try_read(f"/proc/{pid}/status")
    if status is None:
        raise UserError(f"-p {pid}: no such process",
                        "give the pid of a running process (pgrep NAME finds it)",
                        ExitStatus.USAGE)
    tgid = next((line.split()[1] for line in status.splitlines()
                 if line.startswith("Tgid:") and len(line.split()) > 1), str(pid))
    if tgid != str(pid):
        raise UserError(f"-p {pid}: a thread of process {tgid}, not a process",
                        f"-p {tgid} traces the direct reclaim of all its threads",
                        ExitStatus.USAGE)


def _absolute_sys_path() -> None:
    """Make every sys.path entry absolute ('' is the working directory), so
    that an import while bcc compiles in another directory finds what it
    would have found here."""
    sys.path[:] = [os.path.abspath(p or os.curdir) for p in sys.path]


def _first_object(probe: Probe, registry: Dict[str, Tracer],
                  cgroup_filter: bool) -> Tuple[Any, List[str]]:
    """The plan whose cflags the first BPF object compiles with (its tracers
    and memcg: objects.FIRST_PLANNED says why), and the object's tracers
    (objects.first_object())."""
    from trace_reclaim.objects import FIRST_PLANNED, first_object

    plan1 = probe.plan({n: t for n, t in registry.items() if n in FIRST_PLANNED})
    return plan1, first_object(plan1, cgroup_filter)


def _parts(first: List[str], plan: Any, registry: Dict[str, Tracer]) -> List[List[str]]:
    """The parts of each BPF object: the first, compiled before the whole plan
    was known, then the later parts of its tracers and every other tracer."""
    from trace_reclaim.objects import later_parts

    rest = later_parts(first, registry) + [n for n in plan.tracers if n not in first]
    return [first] + ([rest] if rest else [])


def _check_cgroups(wanted: Any, plan: Any) -> None:
    """-c/--cgroup: every argument names a cgroup here, and the memcg tracer loads."""
    from trace_reclaim import cgroupfs

    if "memcg" not in plan.tracers:
        raise UserError("-c/--cgroup needs the memcg tracer, which cannot load here: "
                        + "; ".join(m for m in plan.missing if m.startswith("memcg")),
                        "run 'trace-reclaim check'")
    mounts = cgroupfs.cgroup_mounts()
    mem, uni = cgroupfs.memory_mount(mounts), cgroupfs.unified_mount(mounts)
    try:
        cgroupfs.select_cgroups(wanted, cgroupfs.CgroupResolver(mem.path if mem else None),
                                cgroupfs.CgroupResolver(uni.path if uni else None))
    except LookupError as e:
        where = ", ".join(m.path for m in (mem, uni) if m is not None) or "no cgroup mount"
        raise UserError(f"-c {e.args[0]}: no such cgroup (looked in {where})",
                        "give a path inside the hierarchy (/system.slice/x.service), a "
                        "path under its mount, a unit name or a container id") from None


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Let SIGTERM and SIGHUP interrupt the block like Ctrl-C, so its cleanup runs.

    Without this, a SIGTERM while the BPF program compiles, or the ssh
    session it runs in dropping (SIGHUP), would kill the process with
    kernel.task_delayacct still on.  While tracing, the session's own
    handler takes over: the trace ends and the report follows.  A SIGHUP
    ignored when we started (``nohup``) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signals_to_catch((signal.SIGTERM, signal.SIGHUP))
    for s in old:
        signal.signal(s, interrupt)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _delayacct(env: Environment, want: bool) -> Iterator[Dict[str, Any]]:
    """Turn kernel.task_delayacct on for the block if asked; put it back on every exit."""
    from trace_reclaim.taskstats import delayacct_enabled, set_delayacct

    before = delayacct_enabled(env.procfs)
    state: Dict[str, Any] = {"before": before, "turned_on_for_run": False,
                             "during": bool(before)}
    if want and before is None:
        raise UserError("--delayacct: /proc/sys/kernel/task_delayacct does not exist",
                        "this kernel lacks CONFIG_TASK_DELAY_ACCT; run without --delayacct")
    try:
        if want and not before:
            # Marked before the write: an interrupt right after it still restores.
            state["turned_on_for_run"] = True
            try:
                set_delayacct(env.procfs, True)
            except OSError as e:
                state["turned_on_for_run"] = False
                raise UserError(f"--delayacct: cannot enable delay accounting: {e.strerror}",
                                "run as root, or without --delayacct") from None
            state["during"] = True
        yield state
    finally:
        if state["turned_on_for_run"]:
            try:
                set_delayacct(env.procfs, False)
            except OSError as e:
                env.warn(f"could not turn kernel.task_delayacct back off: {e}")


def open_recording(path: str, shown: str, header: Dict[str, Any],
                   redact: bool = False) -> Tuple[IO[bytes], Writer]:
    """Create the recording at ``path`` (``shown`` as the user gave it) and
    write its header; UserError when it exists or cannot be written (nothing
    is left behind then)."""
    try:
        f = recording.create(path)
    except FileExistsError:
        raise UserError(f"{shown} exists; trace-reclaim does not overwrite recordings",
                        "choose another file name") from None
    except OSError as e:
        raise UserError(f"cannot write {shown}: {e.strerror}", "choose a writable path") from None
    try:
        if redact:
            from trace_reclaim.redact import RedactingWriter

            return f, RedactingWriter(f, header)
        return f, Writer(f, header)
    except OSError as e:
        f.close()
        os.unlink(path)
        raise UserError(f"cannot write {shown}: {e.strerror}",
                        "free space on its filesystem, or record to another one") from None


def _taskstats_reader(env: Environment, on: bool) -> Any:
    if not on:
        return None
    try:
        from trace_reclaim.taskstats import TaskStatsReader
        return TaskStatsReader()
    except Exception as e:  # no pyroute2, or genetlink TASKSTATS missing
        env.warn(f"per-task delay accounting unavailable: {e}")
        return None


def _trace(args: argparse.Namespace, env: Environment, live: bool, plan: Any,
           header: Dict[str, Any], registry: Dict[str, Tracer], begun: Any,
           out_path: Optional[str], parts: List[List[str]],
           early_stop: _EarlyStop) -> ExitStatus:
    from trace_reclaim.session import ALL_ATTACHED, LiveSession
    from trace_reclaim.view import LiveView

    f = None
    writer: Optional[Writer] = None
    if out_path:
        f, writer = open_recording(out_path, args.output, header,
                                   redact=getattr(args, "redact", False))

    view = LiveView(env.stdout, tty=env.stdout_tty(), json_lines=args.json) if live else None
    session: Optional[LiveSession] = None

    def to_view(show: Callable[[LiveView], None]) -> None:
        nonlocal view
        if view is None or session is None:
            return
        try:
            show(view)
        except OSError as e:
            if not output_gone(e):
                raise
            # Nobody reads the rows any more (``live | head``, a hung-up
            # terminal): the trace ends as at its duration, and a recording
            # gets its end counters and End record.
            view = None
            silence(env.stdout)
            session.stop("output closed")

    def on_row(row: Dict[str, Any]) -> None:
        if session is not None:
            corr = session.correlator
            to_view(lambda v: v.interval(row, corr))

    def on_attached(names: List[str], after_ns: int) -> None:
        # Tests and scripts that need every tracer's events wait for this line.
        env.tell(f"{ALL_ATTACHED} {', '.join(names)} ({after_ns / 1e9:.2f} s after "
                 f"{', '.join(parts[0])}); tracing {', '.join(plan.tracers)}")

    taskstats = None
    ran = False
    session = LiveSession(bpf_factory=env.bpf(), procfs=env.procfs, tracers=registry,
                          plan=plan, header=header, interval_s=args.interval,
                          duration_s=args.duration, tgid=args.pid, writer=writer,
                          on_row=on_row, ringbuf_pages=args.ringbuf_pages,
                          slow_consumer_ms=args.slow_consumer_ms, begun=begun,
                          parts=parts, on_attached=on_attached)
    early_stop.hand_to(session)
    try:
        session.load()   # the first object: attached by the Beginning
        session.taskstats = taskstats = _taskstats_reader(env, header["delayacct"]["during"])
        # Tracing began with the Beginning ("Tracing reclaim" was said).
        corr = session.run(on_ready=lambda: to_view(lambda v: v.start()))
        early_stop.__exit__()
        ran = True
    finally:
        if not ran:
            session.close()
        if taskstats is not None:
            taskstats.close()
        if writer is not None and f is not None:
            writer.close()
            f.close()
    # The programs are detached after the report is out: the window closed
    # at the end counters, and each detach waits for the kernel (RCU).
    try:
        return _finish(env, args, session, corr, view, writer, out_path)
    except OSError as e:
        if not output_gone(e):
            raise
        # The recording is closed and whole; there is no one left to tell.
        silence(env.stdout)
        silence(env.stderr)
        return ExitStatus.OK
    finally:
        session.close()


def _finish(env: Environment, args: argparse.Namespace, session: LiveSession,
            corr: Correlator, view: Optional[LiveView], writer: Optional[Writer],
            out_path: Optional[str]) -> ExitStatus:
    if session.attach_error is not None:
        # As when the first object does not load: an error, no report; the
        # recording holds only the first second or so, and goes too.
        err = session.attach_error
        if out_path is not None and os.path.exists(out_path):
            os.unlink(out_path)
        if args.traceback:
            print(session.compiler_output, file=env.stderr)
        raise UserError(str(err), err.hint) from err
    doc = corr.report()
    if view is not None:
        view.end(doc, corr.aggs)
    if writer is not None and writer.error is not None:
        # The trace stopped at the failed write: the view's report above is
        # the whole trace, the recording holds its complete blocks.
        e = writer.error
        raise UserError(
            f"cannot write {args.output}: {e.strerror or e}; the trace stopped there",
            f"{args.output} holds the first {writer.records} records ({writer.bytes} bytes, "
            f"every block complete; {writer.unwritten} not written): 'trace-reclaim report' "
            "reads them. Free space on its filesystem, or record to another one")
    if writer is not None:
        env.tell(f"recorded {writer.records} records, {writer.bytes} bytes to {args.output}")
    if doc["totals"]["lost_events"]:
        env.warn(f"{doc['totals']['lost_events']} events lost (ring buffer full)")
    return ExitStatus.OK
