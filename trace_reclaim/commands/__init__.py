"""The subcommands: each turns parsed arguments into calls on the core.

``trace_reclaim.cli`` parses the command line and calls one of these; they
compose the core (probe, session, correlator, report) with the tracers from
``trace_reclaim.tracers.registry()``.  The core never imports them.
Every command is ``run(args, env) -> ExitStatus`` and raises ``UserError``
for problems the user can fix.
"""
