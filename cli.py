"""trace-reclaim: trace Linux memory reclaim live, record it, report on it.

Subcommands: check, live (the default), record, report.  See --help.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import gc
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, TextIO

import trace_reclaim
from trace_reclaim.correlate import Correlator
from trace_reclaim.probe import Probe
from trace_reclaim.procfs import ProcFS
from trace_reclaim.recording import Reader, RecordingError, Writer
from trace_reclaim.report import render_json, render_text
import tracers as tracers_pkg

__all__ = ["ExitStatus", "Environment", "main", "UserError"]

# ./trace-reclaim runs this file as __main__: make `import cli` in subcommand
# modules find this module rather than load a second copy, whose UserError
# main() would not catch (a traceback instead of error:/hint:).
if __name__ == "__main__":
    sys.modules.setdefault("cli", sys.modules[__name__])


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix: printed as error:/hint:, never a traceback."""

    def __init__(self, message: str, hint: str = "",
                 status: ExitStatus = ExitStatus.ERROR) -> None:
        super().__init__(message)
        self.hint = hint
        self.status = status


@dataclass
class Environment:
    """What the CLI touches outside itself, injectable for in-process tests."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    procfs: ProcFS = field(default_factory=ProcFS)
    bpf_factory: Optional[Callable[..., Any]] = None
    is_root: Callable[[], bool] = field(default_factory=lambda: Probe.is_root)

    def bpf(self) -> Callable[..., Any]:
        if self.bpf_factory is None:
            from trace_reclaim.session import SessionError, default_bpf_factory
            try:
                self.bpf_factory = default_bpf_factory()
            except SessionError as e:
                raise UserError(str(e), e.hint) from e
        return self.bpf_factory

    def stdout_tty(self) -> bool:
        isatty = getattr(self.stdout, "isatty", None)
        return bool(isatty and isatty())

    def warn(self, msg: str) -> None:
        print(f"warning: {msg}", file=self.stderr)


EPILOG = """\
examples:
  trace-reclaim check                  # what this kernel offers, the attach plan
  trace-reclaim                        # live: one row per second until Ctrl-C
  trace-reclaim live -d 10 -i 2        # live for 10 s, rows every 2 s
  trace-reclaim live -p 1 -o pid1.trc   # only process 1 (init), recording too
  trace-reclaim live -j -d 5           # JSON lines, then the report as JSON
  trace-reclaim record -o run.trc -d 60  # record only
  trace-reclaim live --delayacct -d 30   # with stalled tasks' delay accounting
  trace-reclaim report run.trc         # the report of a recording
  trace-reclaim report -j run.trc      # ... as one JSON document
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UserError(message, f"see '{self.prog} --help'", ExitStatus.USAGE)


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(s: str) -> Any:
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {s!r}")
        return v
    return parse


def _power_of_two(s: str) -> int:
    v = _positive(int)(s)
    if v & (v - 1):
        raise argparse.ArgumentTypeError(f"must be a power of two: {s!r}")
    return int(v)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="trace-reclaim", description=__doc__.splitlines()[0],
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version",
                   version=f"trace-reclaim {trace_reclaim.__version__}")
    p.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    sub.add_parser("check", help="what this kernel offers and the attach plan",
                   description="Print what this kernel offers and the plan trace-reclaim "
                               "will use; exit 0 when tracing can run.")

    def trace_opts(sp: argparse.ArgumentParser, record_only: bool) -> None:
        sp.add_argument("-d", "--duration", type=_positive(float), metavar="SECONDS",
                        help="stop after this many seconds (default: until Ctrl-C)")
        sp.add_argument("-i", "--interval", type=_positive(float), default=1.0,
                        metavar="SECONDS", help="interval between rows (default 1)")
        sp.add_argument("-p", "--pid", type=_positive(int), default=0,
                        help="trace direct reclaim of this process only")
        sp.add_argument("-o", "--output", metavar="FILE", required=record_only,
                        help="record to FILE (must not exist)")
        sp.add_argument("--delayacct", action="store_true",
                        help="turn on per-task delay accounting (kernel.task_delayacct) "
                             "for the run and read stalled tasks' reclaim, thrashing and "
                             "compaction delays; restored afterwards")
        sp.add_argument("--no-slab-accounting", action="store_true",
                        help="don't count kmem_cache allocations per cache in the kernel "
                             "(the costliest probe: every slab allocation pays for it)")
        sp.add_argument("--workload", metavar="JSON", help=argparse.SUPPRESS)
        # Developer knobs: tests use them to force ring-buffer loss for real.
        sp.add_argument("--ringbuf-pages", type=_power_of_two, default=1024,
                        help=argparse.SUPPRESS)
        sp.add_argument("--slow-consumer-ms", type=_positive(int), default=0,
                        help=argparse.SUPPRESS)
        sp.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
        if not record_only:
            sp.add_argument("-j", "--json", action="store_true",
                            help="JSON lines: one per interval, then the report")

    trace_opts(sub.add_parser("live", help="trace live, one row per interval (default)",
                              epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter),
               record_only=False)
    trace_opts(sub.add_parser("record", help="record to a file without the live table"),
               record_only=True)
    rp = sub.add_parser("report", help="the report of a recording")
    rp.add_argument("file", help="a recording made with -o")
    rp.add_argument("-j", "--json", action="store_true", help="one JSON document")
    for mod in _command_modules():
        mod.add_parser(sub)
    return p


# Subcommands that live in their own modules: each has add_parser(sub), which
# registers its parser with set_defaults(func=run), and run(args, env) -> int.
COMMAND_MODULES: List[str] = ["trace_reclaim.runner", "trace_reclaim.diff"]


def _command_modules() -> List[Any]:
    import importlib

    return [importlib.import_module(m) for m in COMMAND_MODULES]


# -- check -------------------------------------------------------------------
def _wrapped(out: TextIO, text: str, indent: str, later: Optional[str] = None) -> None:
    import textwrap

    for line in textwrap.wrap(text, 79, initial_indent=indent,
                              subsequent_indent=later or indent, break_on_hyphens=False):
        print(line, file=out)



def cmd_check(args: argparse.Namespace, env: Environment) -> ExitStatus:
    probe = Probe(env.procfs, env.bpf_factory)
    out = env.stdout
    ok = True
    problems: List[str] = []
    root = env.is_root()
    _wrapped(out, f"kernel        {probe.release}", "", " " * 14)
    _wrapped(out, f"root          {'yes' if root else 'no: BPF needs root'}", "", " " * 14)
    ok &= root
    tfs, how = probe.mount_tracefs() if root else (probe.tracefs(), "")
    print(f"tracefs       {tfs or 'missing'}" + (f" ({how})" if how and how != "mounted"
                                                 else ""), file=out)
    if not tfs:
        ok = False
        problems.append("tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing")
    h = probe.headers
    if h["path"] is None:
        print(f"headers       missing: /lib/modules/{probe.release}/build", file=out)
        problems.append("no kernel headers: run ./bootstrap.sh to install the nearest")
        ok = False
    else:
        match = "match the running kernel" if h["matches"] else \
            f"from {h['release']}, NOT the running {probe.release}: the nearest " \
            "available; tracepoint programs are still correct (their fields come " \
            "from the live tracefs formats)"
        print(f"headers       {h['path']}", file=out)
        _wrapped(out, match, "              ")
    bcc_ok = True
    if root:
        try:
            factory = env.bpf()
            probe._bpf_factory = factory
        except UserError as e:
            bcc_ok = False
            problems.append(str(e))
    _wrapped(out, f"bcc           {'importable' if bcc_ok else 'missing'}", "", " " * 14)
    ok &= bcc_ok
    _wrapped(out, f"BTF           {'yes' if probe.btf else 'no'}", "", " " * 14)
    kp = probe.kprobes
    _wrapped(out, f"kprobes       {'yes' if kp[0] else 'no'}: {kp[1]}", "", " " * 14)
    fe = probe.fentry if root and bcc_ok else (False, "not tried (needs root and bcc)")
    _wrapped(out, f"fentry        {'yes' if fe[0] else 'no'}: {fe[1]}", "", " " * 14)
    psi = probe.psi
    _wrapped(out, f"PSI           {'yes' if psi[0] else 'no'}: {psi[1]}", "", " " * 14)
    da = probe.delayacct
    _wrapped(out, f"delayacct     {da[1]}", "", " " * 14)
    hv = probe.huge_vmalloc
    _wrapped(out, f"huge vmalloc  {'possible' if hv[0] else 'no'}: {hv[1]}", "", " " * 14)
    if tfs:
        plan = probe.plan(tracers_pkg.registry())
        print("\nattach plan:", file=out)
        for a in plan.attaches:
            print(f"  {a.family}", file=out)
            _wrapped(out, f"-> {a.chosen}", "      ")
            for opt, why in a.rejected:
                _wrapped(out, f"not {opt}: {why}", "      ", "        ")
        _wrapped(out, f"tracers       {', '.join(plan.tracers) or 'none'}", "", " " * 14)
        if "reclaim" not in plan.tracers:
            ok = False
            problems.append("the vmscan tracepoints are missing")
    print(file=out)
    _wrapped(out, f"ready         {'yes' if ok else 'no'}", "", " " * 14)
    if not ok:
        raise UserError("tracing cannot run here: " + "; ".join(problems) if problems
                        else "tracing cannot run here",
                        "run as root after ./bootstrap.sh" if not root else
                        "run ./bootstrap.sh, which installs bcc and headers and mounts tracefs")
    return ExitStatus.OK


# -- live / record -----------------------------------------------------------
def _preflight(env: Environment) -> Probe:
    if not env.is_root():
        raise UserError("trace-reclaim needs root to load BPF programs",
                        "run it as root, e.g. sudo ./trace-reclaim")
    probe = Probe(env.procfs, None)
    tfs, how = probe.mount_tracefs()
    if tfs is None:
        raise UserError(f"tracefs is not available ({how})",
                        "mount it: mount -t tracefs nodev /sys/kernel/tracing")
    if probe.headers["path"] is None:
        raise UserError(f"no kernel headers at /lib/modules/{probe.release}/build "
                        "(bcc compiles every program against them)",
                        "run ./bootstrap.sh: it installs the nearest linux-headers and "
                        "links them there")
    probe._bpf_factory = env.bpf()
    return probe


def cmd_trace(args: argparse.Namespace, env: Environment, live: bool) -> ExitStatus:
    from trace_reclaim.session import bpf_cflags, bpf_source, build_header

    workload = None
    if args.workload:
        try:
            workload = json.loads(args.workload)
        except json.JSONDecodeError as e:
            raise UserError(f"--workload is not JSON: {e}", "pass a JSON object") from e
    registry = tracers_pkg.registry()
    if args.no_slab_accounting and "slab" in registry:
        import copy

        registry["slab"] = copy.copy(registry["slab"])  # not the shared instance
        registry["slab"].cache_accounting = False  # type: ignore[attr-defined]
    if args.ebpf:
        probe = Probe(env.procfs, None)
        plan = probe.plan(registry)
        print(bpf_source({n: registry[n] for n in plan.tracers}), file=env.stdout)
        print("/* cflags: " + " ".join(bpf_cflags(plan, args.pid)) + " */", file=env.stdout)
        return ExitStatus.OK
    if args.output:  # before any slow step: bad input fails fast
        if os.path.lexists(args.output):
            raise UserError(f"{args.output} exists; trace-reclaim does not overwrite "
                            "recordings", "choose another file name")
        parent = os.path.dirname(os.path.abspath(args.output))
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot write {args.output}: {parent} is not writable",
                            "choose a writable path")
    probe = _preflight(env)
    plan = probe.plan(registry)
    if "reclaim" not in plan.tracers:
        raise UserError("the vmscan tracepoints are missing: " + "; ".join(plan.missing),
                        "run 'trace-reclaim check'; this kernel lacks CONFIG_TRACEPOINTS "
                        "or the vmscan events")
    for m in plan.missing:
        env.warn(f"not tracing {m}")
    header = build_header(probe, plan, sys.argv[1:], args.interval, registry, workload)
    with _delayacct(env, args.delayacct) as da:
        header["delayacct"] = da
        return _trace(args, env, live, plan, header, registry)


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
    if want and not before:
        try:
            set_delayacct(env.procfs, True)
        except OSError as e:
            raise UserError(f"--delayacct: cannot enable delay accounting: {e.strerror}",
                            "run as root, or without --delayacct") from None
        state["turned_on_for_run"] = True
        state["during"] = True
    try:
        yield state
    finally:
        if state["turned_on_for_run"]:
            try:
                set_delayacct(env.procfs, False)
            except OSError as e:
                env.warn(f"could not turn kernel.task_delayacct back off: {e}")


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
           header: Dict[str, Any], registry: Dict[str, Any]) -> ExitStatus:
    from trace_reclaim.session import LiveSession, SessionError
    from trace_reclaim.view import LiveView

    f = None
    writer = None
    if args.output:
        try:
            f = open(args.output, "xb")
        except FileExistsError:
            raise UserError(f"{args.output} exists; trace-reclaim does not overwrite "
                            "recordings", "choose another file name") from None
        except OSError as e:
            raise UserError(f"cannot write {args.output}: {e.strerror}",
                            "choose a writable path") from None
        writer = Writer(f, header)

    json_out = live and args.json
    out = env.stdout
    view = LiveView(out, tty=env.stdout_tty())
    session: Any = None

    def on_row(row: Dict[str, Any]) -> None:
        if not live:
            return
        if json_out:
            print(json.dumps({"type": "interval", **row}), file=out, flush=True)
        else:
            view.update(row, session.correlator.live_state())

    taskstats = _taskstats_reader(env, header["delayacct"]["during"])
    session = LiveSession(bpf_factory=env.bpf(), procfs=env.procfs, tracers=registry,
                          plan=plan, header=header, interval_s=args.interval,
                          duration_s=args.duration, tgid=args.pid, writer=writer,
                          on_row=on_row, ringbuf_pages=args.ringbuf_pages,
                          slow_consumer_ms=args.slow_consumer_ms, taskstats=taskstats)
    try:
        try:
            session.load()
        except SessionError as e:
            if f is not None:  # holds only our header: nothing recorded is lost
                f.close()
                f = writer = None
                os.unlink(args.output)
            if args.traceback:
                print(getattr(session, "compiler_output", ""), file=env.stderr)
            raise UserError(str(e), e.hint) from e
        print(f"Tracing reclaim ({', '.join(plan.tracers)})"
              + (f", recording to {args.output}" if args.output else "")
              + ("" if args.duration else "... Ctrl-C to end."), file=env.stderr)
        if live and not json_out:
            view.start()
        corr = session.run()
    finally:
        session.close()
        if taskstats is not None:
            taskstats.close()
        if writer is not None and f is not None:
            writer.close()
            f.close()
    doc = corr.report()
    if live:
        if json_out:
            print(json.dumps({"type": "report", "report": doc}), file=out)
        else:
            view.finish()
            print("", file=out)
            out.write(render_text(doc, corr.aggs))
    if writer is not None:
        print(f"recorded {writer.records} records, {writer.bytes} bytes to {args.output}",
              file=env.stderr)
    if doc["totals"]["lost_events"]:
        env.warn(f"{doc['totals']['lost_events']} events lost (ring buffer full)")
    return ExitStatus.OK


# -- report ------------------------------------------------------------------
def replay(path: str, env: Environment) -> Correlator:
    """Feed a recording through the correlator, exactly as the live run did."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}",
                        "pass a recording made with 'trace-reclaim record -o FILE'") from None
    with f:
        try:
            reader = Reader(f)
        except RecordingError as e:
            raise UserError(f"{path}: {e}", e.hint) from None
        header = reader.header
        registry = tracers_pkg.registry()
        names = header.get("plan", {}).get("tracers", [])
        if not isinstance(names, list):
            raise UserError(f"{path}: recording header has no valid tracer list",
                            "the file is damaged")
        unknown = [n for n in names if n not in registry]
        if unknown:
            env.warn(f"{path} has events of tracers this version lacks: "
                     f"{', '.join(map(str, unknown))}; they are skipped")
        corr = Correlator(header, [registry[n] for n in names if n in registry])
        # Millions of short-lived event objects and no cycles among them:
        # the cyclic collector would only rescan the correlator's state.
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for block in reader.blocks_of_records():
                corr.feed_records(block)
        finally:
            if gc_was:
                gc.enable()
    for w in reader.warnings:
        env.warn(f"{path}: {w}")
    if corr.unknown_types:
        env.warn(f"{path}: skipped {sum(corr.unknown_types.values())} records of types "
                 f"this version does not know ({', '.join(map(str, sorted(corr.unknown_types)))})"
                 "; a newer trace-reclaim wrote them")
    if corr.decode_errors:
        env.warn(f"{path}: {corr.decode_errors} records could not be decoded")
    return corr


def cmd_report(args: argparse.Namespace, env: Environment) -> ExitStatus:
    corr = replay(args.file, env)
    doc = corr.report()
    if args.json:
        env.stdout.write(render_json(doc))
    else:
        env.stdout.write(render_text(doc, corr.aggs))
    return ExitStatus.OK


def parser_commands(parser: argparse.ArgumentParser) -> List[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def main(argv: Optional[List[str]] = None, env: Optional[Environment] = None) -> int:
    env = env or Environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    traceback = "--traceback" in argv
    argv = [a for a in argv if a != "--traceback"]
    try:
        commands = {"check", "live", "record", "report"} | set(parser_commands(parser))
        if not any(a in commands for a in argv) and \
                not any(a in ("-h", "--help", "--version") for a in argv):
            argv = ["live"] + argv
        args = parser.parse_args(argv)
        args.traceback = traceback
        if args.command == "check":
            return cmd_check(args, env)
        if args.command in ("live", "record"):
            return cmd_trace(args, env, live=args.command == "live")
        if args.command == "report":
            return cmd_report(args, env)
        if getattr(args, "func", None) is not None:
            return int(args.func(args, env))
        parser.print_help(env.stdout)
        return ExitStatus.USAGE
    except UserError as e:
        if traceback:
            raise
        print(f"error: {e}", file=env.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=env.stderr)
        return e.status
    except KeyboardInterrupt:
        if traceback:
            raise
        print("error: interrupted before tracing began", file=env.stderr)
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # `trace-reclaim ... | head`: the reader left; not an error.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return ExitStatus.OK


if __name__ == "__main__":
    sys.exit(main())
