"""The subcommands: each turns parsed arguments into calls on the core.

``trace_reclaim.cli`` parses the command line and calls one of these; they
compose the core (probe, session, correlator, report) with the tracers from
``trace_reclaim.tracers.registry()``.  The core never imports them.
Every command is ``run(args, env) -> ExitStatus`` and raises ``UserError``
for problems the user can fix.
"""

__all__ = ["LAZY", "HELP"]

#: Each command's one-line help, as ``trace-reclaim --help`` lists it.
HELP = {
    "run": "record N repetitions of a named workload",
    "diff": "compare two sets of recordings, with significance",
    "serve": "trace continuously and serve Prometheus metrics",
    "export": "a recording's events as tables (Parquet or CSV)",
}
#: The commands whose modules the CLI imports only when one is chosen (or
#: the whole parser is built): ``record`` should not wait for the statistics
#: of ``diff`` to load (bench/attach_time.py).  Each has ``add_parser(sub)``
#: and ``run(args, env)``.
LAZY = ("run", "diff", "serve", "export")
