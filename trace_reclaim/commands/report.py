"""``trace-reclaim report FILE``: the report of a recording, anywhere, no root."""

from __future__ import annotations

import argparse

from trace_reclaim import tracers
from trace_reclaim.env import Environment, ExitStatus
from trace_reclaim.replay import replay
from trace_reclaim.report import render_json, render_text

__all__ = ["run"]


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    corr = replay(args.file, env, tracers.registry())
    doc = corr.report()
    if args.json:
        env.stdout.write(render_json(doc))
    else:
        env.stdout.write(render_text(doc, corr.aggs))
    return ExitStatus.OK
