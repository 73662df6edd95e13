"""``trace-reclaim diff BASE... -- NEW...``: two sets of recordings compared.

The statistics and rendering are ``trace_reclaim.compare``.
"""

from __future__ import annotations

import argparse
from typing import Any, List

from trace_reclaim import tracers
from trace_reclaim.compare import (DEFAULT_ALPHA, compare, load_run, render_json,
                                   render_table, split_sides)
from trace_reclaim.commands import HELP
from trace_reclaim.env import Environment, ExitStatus, UserError

__all__ = ["add_parser", "run", "EPILOG"]


EPILOG = """\
examples:
  trace-reclaim diff base/*.trc -- new/*.trc
  trace-reclaim diff -j base/*.trc -- new/*.trc      # JSON
  trace-reclaim diff --plot lat.png base/*.trc -- new/*.trc

A change is significant when the Holm-adjusted p of a two-sided Mann-Whitney
U test on the per-run values is below --alpha.  Use >= 6 runs per side:
with 3+3 runs no change can reach p < 0.05.
"""


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-j", "--json", action="store_true", help="one JSON document")
    p.add_argument("--plot", metavar="FILE",
                   help="write the latency distributions, base vs new (.png or .svg)")
    p.add_argument("--alpha", type=float, default=None,
                   help=f"family-wise significance level (default {DEFAULT_ALPHA})")


_late_parser_class: Any = argparse.ArgumentParser


def add_parser(sub: Any) -> None:
    global _late_parser_class
    p = sub.add_parser(
        "diff", help=HELP["diff"],
        description="Compare recordings BASE... against NEW...: every metric's median "
                    "run, the change, and whether it is significant across runs.",
        usage="trace-reclaim diff [-j] [--plot FILE] [--alpha A] BASE... -- NEW...",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_options(p)
    # REMAINDER keeps the "--" that splits the sides (other nargs drop it).
    p.add_argument("recordings", nargs=argparse.REMAINDER, metavar="BASE... -- NEW...",
                   help="recordings made with 'trace-reclaim run' or 'record'")
    _late_parser_class = type(p)  # the CLI's parser: errors become UserError


def _late_options(args: argparse.Namespace) -> List[str]:
    """Options given after the first recording land in the remainder: parse them."""
    late = _late_parser_class(prog="trace-reclaim diff", add_help=False)
    _add_options(late)
    tokens = list(args.recordings)
    if "--" in tokens:
        i = tokens.index("--")
        left, right = tokens[:i], tokens[i + 1:]
    else:
        left, right = tokens, None
    ns, left = late.parse_known_args(left)
    if right is not None:
        ns2, right = late.parse_known_args(right)
        for k in ("json", "plot", "alpha"):
            if getattr(ns2, k) not in (None, False):
                setattr(ns, k, getattr(ns2, k))
    for k in ("json", "plot", "alpha"):
        if getattr(ns, k) not in (None, False) and getattr(args, k) in (None, False):
            setattr(args, k, getattr(ns, k))
    return left + (["--"] + right if right is not None else [])


def _require(module: str, what: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"{what} need {module}, which is not importable: {e}",
                            "install the diff extra: pip install 'trace-reclaim[diff]' "
                            "(./bootstrap.sh does)") from None


def run(args: argparse.Namespace, env: Environment) -> int:
    tokens = _late_options(args)
    _require("scipy", "the significance tests")
    if args.plot:
        _require("matplotlib", "--plot")
    alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, not {alpha}",
                            "e.g. --alpha 0.05", ExitStatus.USAGE)
    base_paths, new_paths = split_sides(tokens)
    if args.plot and not args.plot.lower().endswith((".png", ".svg")):
        raise UserError(f"--plot {args.plot}: the file name must end in .png or .svg",
                            "e.g. --plot latency.png", ExitStatus.USAGE)
    registry = tracers.registry()
    base = [load_run(p, env, registry) for p in base_paths]
    new = [load_run(p, env, registry) for p in new_paths]
    c = compare(base, new, alpha)
    for w in c.warnings:
        env.warn(w)
    if min(len(base), len(new)) < 2:
        env.warn("fewer than 2 runs on a side: nothing can be called significant; "
                 "record more with 'trace-reclaim run -n N'")
    if args.plot:
        from trace_reclaim import plot

        try:
            plot.latency_plot(base, new, args.plot)
        except OSError as e:
            raise UserError(f"cannot write {args.plot}: {e.strerror or e}",
                                "choose a writable path") from None
        print(f"plot written to {args.plot}", file=env.stderr)
    env.stdout.write(render_json(c) if args.json else render_table(c))
    return int(ExitStatus.OK)
