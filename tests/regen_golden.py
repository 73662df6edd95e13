"""Regenerate the golden reports of the replay fixtures.

    python -m tests.regen_golden            # every tests/fixtures/*.trc
    python -m tests.regen_golden NAME ...   # only these fixtures
    python -m tests.regen_golden --check    # compare only: exit 1 if any differs

For each ``tests/fixtures/NAME.trc`` this writes exactly what
``trace-reclaim report -j NAME.trc`` prints to ``NAME.report.json`` and what
``trace-reclaim report NAME.trc`` prints to ``NAME.report.txt`` (the CLI run
in-process, as tests/replay/test_golden.py runs it).  Review every changed
line in ``git diff tests/fixtures``: a golden file changes only when the
report is meant to change.  No root needed.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import sys
from typing import List, Optional, Tuple

from tests import FIXTURES


def fixture_names() -> List[str]:
    """Every recording in tests/fixtures, by name (NAME.trc)."""
    return sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(FIXTURES, "*.trc")))


def golden_paths(name: str) -> Tuple[str, str]:
    base = os.path.join(FIXTURES, name)
    return base + ".report.json", base + ".report.txt"


def report_outputs(path: str) -> Tuple[str, str, str]:
    """Run ``report -j`` and ``report`` on ``path`` in-process.

    Return (json stdout, text stdout, both stderrs).  Raise RuntimeError on a
    non-zero exit: a fixture must replay cleanly.
    """
    from trace_reclaim import cli
    from trace_reclaim.env import Environment

    outs, errs = [], []
    for args in (["report", "-j", path], ["report", path]):
        out, err = io.StringIO(), io.StringIO()
        rc = cli.main(args, Environment(stdout=out, stderr=err))
        if rc != 0:
            raise RuntimeError(f"trace-reclaim {' '.join(args)} exited {rc}: {err.getvalue()}")
        outs.append(out.getvalue())
        errs.append(err.getvalue())
    return outs[0], outs[1], "".join(errs)


def regenerate(name: str, write: bool = True) -> List[str]:
    """Write NAME's golden files (unless not ``write``); return the paths that differ(ed)."""
    trc = os.path.join(FIXTURES, name + ".trc")
    j, t, err = report_outputs(trc)
    if err:
        print(f"warning: {name}: report wrote to stderr:\n{err}", file=sys.stderr)
    changed = []
    for path, text in zip(golden_paths(name), (j, t)):
        old = None
        if os.path.exists(path):
            with open(path, encoding="utf-8", newline="") as f:
                old = f.read()
        if old != text:
            if write:
                with open(path, "w", encoding="utf-8", newline="") as f:
                    f.write(text)
            changed.append(path)
    return changed


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.regen_golden",
                                description="Rewrite tests/fixtures/NAME.report.{json,txt}.")
    p.add_argument("names", nargs="*", help="fixtures (default: every tests/fixtures/*.trc)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when a report differs from its golden file")
    a = p.parse_args(argv)
    have = fixture_names()
    names = a.names or have
    missing = [n for n in names if n not in have]
    if missing:
        print(f"error: no tests/fixtures/{missing[0]}.trc", file=sys.stderr)
        print(f"hint: fixtures are: {', '.join(have)}", file=sys.stderr)
        return 2
    differ = 0
    for name in names:
        changed = regenerate(name, write=not a.check)
        differ += len(changed)
        verb = "differs" if a.check else "rewritten"
        print(f"{name}: " + (", ".join(f"{os.path.basename(c)} {verb}" for c in changed)
                             if changed else "unchanged"))
    return 1 if a.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
