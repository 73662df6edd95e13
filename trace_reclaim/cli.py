"""trace-reclaim: trace Linux memory reclaim live, record it, report on it.

Subcommands: check, live (the default), record, report, run, diff, export.  See --help.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, List, NoReturn, Optional

import trace_reclaim
# Each command's module is imported when it is chosen (commands.LAZY).
from trace_reclaim.commands import HELP, LAZY
from trace_reclaim.commands.args import DURATION_MAX_S, INTERVAL_S, positive, power_of_two
from trace_reclaim.env import Environment, ExitStatus, UserError

__all__ = ["main", "build_parser", "EPILOG"]


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
  trace-reclaim report run.trc --plot timeline.png  # ... and its timeline
  trace-reclaim export run.trc         # its events as Parquet tables
"""


#: Every command, in --help order.
COMMANDS = ("check", "live", "record", "report") + LAZY


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UserError(message, f"see '{self.prog} --help'", ExitStatus.USAGE)


def attach_opt(sp: argparse.ArgumentParser) -> None:
    from trace_reclaim.probe import ATTACH_CHOICES, ATTACH_ENV

    sp.add_argument("--attach", choices=ATTACH_CHOICES, default=None,
                    help="use no attach mechanism better than this one: kprobe leaves "
                         "fentry unused, tracepoint leaves fentry and kprobes unused "
                         f"(default: the best that loads; also ${ATTACH_ENV})")


def _command_module(name: str) -> Any:
    return importlib.import_module(f"trace_reclaim.commands.{name}")


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, the commands of ``LAZY`` other
    than ``only`` are listed by name and help but their modules not imported
    (main builds the parser for the command given)."""
    p = _Parser(prog="trace-reclaim", description=__doc__.splitlines()[0],
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version",
                   version=f"trace-reclaim {trace_reclaim.__version__} "
                           f"(report path: {trace_reclaim.native.STATUS})")
    p.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    cp = sub.add_parser("check", help="what this kernel offers and the attach plan",
                        description="Print what this kernel offers and the plan trace-reclaim "
                                    "will use; exit 0 when tracing can run.")
    attach_opt(cp)

    def trace_opts(sp: argparse.ArgumentParser, record_only: bool) -> None:
        sp.add_argument("-d", "--duration", type=positive(float, most=DURATION_MAX_S),
                        metavar="SECONDS",
                        help="stop after this many seconds (default: until Ctrl-C)")
        sp.add_argument("-i", "--interval", type=positive(float, *INTERVAL_S), default=1.0,
                        metavar="SECONDS", help="interval between rows (default 1; "
                        f"{INTERVAL_S[0]:g} to {INTERVAL_S[1]:g})")
        sp.add_argument("-p", "--pid", type=positive(int), default=0,
                        help="trace direct reclaim of this process only")
        sp.add_argument("-c", "--cgroup", action="append", default=[], metavar="PATH",
                        help="trace tasks of this cgroup (and its descendants) only: a "
                             "path in the memory or unified hierarchy, or a name such as "
                             "a systemd unit or a container id; repeatable")
        sp.add_argument("-o", "--output", metavar="FILE", required=record_only,
                        help="record to FILE (must not exist)")
        sp.add_argument("--redact", action="store_true",
                        help="write the recording (-o) without kernel addresses (keyed "
                             "hashes), host name or command lines, to share it")
        sp.add_argument("--delayacct", action="store_true",
                        help="turn on per-task delay accounting (kernel.task_delayacct) "
                             "for the run and read stalled tasks' reclaim, thrashing and "
                             "compaction delays; restored afterwards")
        sp.add_argument("--no-slab-accounting", action="store_true",
                        help="don't count kmem_cache allocations per cache in the kernel "
                             "(the costliest probe: every slab allocation pays for it)")
        attach_opt(sp)
        sp.add_argument("--workload", metavar="JSON", help=argparse.SUPPRESS)
        # Developer knobs: tests use them to force ring-buffer loss for real.
        sp.add_argument("--ringbuf-pages", type=power_of_two, default=1024,
                        help=argparse.SUPPRESS)
        sp.add_argument("--slow-consumer-ms", type=positive(int), default=0,
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
    rp.add_argument("--redact", action="store_true",
                    help="hash kernel addresses and hide the host name, to share the report")
    rp.add_argument("--plot", metavar="FILE",
                    help="also draw the run's timeline to FILE (.png or .svg; needs "
                         "matplotlib)")
    for name in LAZY:
        if only is None or only == name:
            _command_module(name).add_parser(sub)
        else:
            sub.add_parser(name, help=HELP[name], add_help=False)
    return p


def parser_commands(parser: argparse.ArgumentParser) -> List[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def main(argv: Optional[List[str]] = None, env: Optional[Environment] = None) -> int:
    env = env or Environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    traceback = "--traceback" in argv
    argv = [a for a in argv if a != "--traceback"]
    # The command is the first word that names one: only its module loads.
    given = next((a for a in argv if a in COMMANDS), None)
    if given in (None, "live", "record") and env.is_root():
        # Tracing plans its first BPF object from the kernel's BTF: read it
        # while the command, the tracers and bcc load (btf.read_ahead).
        from trace_reclaim.btf import VMLINUX, read_ahead

        read_ahead(env.procfs.path(VMLINUX))
    parser = build_parser(only=given or "live")
    try:
        commands = set(parser_commands(parser))
        if not any(a in commands for a in argv) and \
                not any(a in ("-h", "--help", "--version") for a in argv):
            argv = ["live"] + argv
        args = parser.parse_args(argv)
        args.traceback = traceback
        # `record` should not wait for the check and report code to load.
        if args.command == "check":
            from trace_reclaim.commands import check

            return check.run(args, env)
        if args.command in ("live", "record"):
            from trace_reclaim.commands import trace

            return trace.run(args, env, live=args.command == "live")
        if args.command == "report":
            from trace_reclaim.commands import report

            return report.run(args, env)
        if args.command in LAZY:
            return int(_command_module(args.command).run(args, env))
        parser.print_help(env.stdout)
        return ExitStatus.USAGE
    except UserError as e:
        if traceback:
            raise
        env.tell(f"error: {e}", *([f"hint: {e.hint}"] if e.hint else []))
        return e.status
    except KeyboardInterrupt:
        if traceback:
            raise
        env.tell("error: interrupted before tracing began")
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
