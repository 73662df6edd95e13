"""``trace-reclaim report FILE``: the report of a recording, anywhere, no root.

``--plot FILE.png|.svg`` also draws the run's timeline (``timeline.draw``),
from the report and a ``TimelineCollector`` fed by the same replay.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional

from trace_reclaim import tracers
from trace_reclaim.env import Environment, ExitStatus, UserError
from trace_reclaim.replay import replay
from trace_reclaim.report import render_json, render_text

__all__ = ["run"]


def _check_plot(path: str) -> None:
    """Refuse a --plot target before the replay, not after it."""
    from trace_reclaim.timeline.draw import FORMATS

    if not path.lower().endswith(FORMATS):
        raise UserError(f"--plot {path}: the file name must end in "
                        f"{' or '.join(FORMATS)}",
                        "e.g. --plot timeline.png (or timeline.svg)", ExitStatus.USAGE)
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UserError(f"--plot {path}: no directory {d}", "create it, or choose another path")
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise UserError(f"--plot needs matplotlib, which is not importable: {e}",
                        "install the diff extra: pip install 'trace-reclaim[diff]' "
                        "(./bootstrap.sh does)") from None


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    plot: Optional[str] = getattr(args, "plot", None)
    collector = None
    if plot:
        _check_plot(plot)
        from trace_reclaim.timeline import TimelineCollector

        collector = TimelineCollector()
    corr = replay(args.file, env, tracers.registry(), tap=collector)
    doc = corr.report()
    if plot and collector is not None:
        from trace_reclaim.timeline.draw import render

        collector.finish()
        try:
            render(doc, collector, plot, tracers=list(corr.aggs),
                   page_size=int(corr.header.get("page_size") or 4096),
                   interval_s=float(corr.header.get("interval_s") or 1.0))
        except OSError as e:
            raise UserError(f"cannot write {plot}: {e.strerror or e}",
                            "choose a writable path") from None
        print(f"timeline written to {plot}", file=env.stderr)
    if getattr(args, "redact", False):
        from trace_reclaim.redact import Redactor

        redactor = Redactor()
        doc = redactor.report(doc)
        out = render_json(doc) if args.json else redactor.text(render_text(doc, corr.aggs))
    else:
        out = render_json(doc) if args.json else render_text(doc, corr.aggs)
    env.stdout.write(out)
    return ExitStatus.OK
