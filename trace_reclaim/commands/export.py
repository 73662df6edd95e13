"""``trace-reclaim export FILE``: a recording's events as tables (Parquet or CSV).

The tables and their columns are ``trace_reclaim.export``'s.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from trace_reclaim import tracers
from trace_reclaim.commands import HELP
from trace_reclaim.env import Environment, ExitStatus
from trace_reclaim.export import FORMATS, MANIFEST, export

__all__ = ["add_parser", "run", "EPILOG"]

EPILOG = """\
examples:
  trace-reclaim export run.trc                   # Parquet tables in run-export/
  trace-reclaim export run.trc --format csv -o csv/   # CSV tables in csv/

then, e.g. in DuckDB (stalls per task, as the report counts them):
  SELECT comm, count(*) AS stalls, sum(delta_ns) / 1e6 AS ms
    FROM 'run-export/direct_reclaim.parquet'
    WHERE in_window AND began_in_window GROUP BY comm ORDER BY ms DESC;

One table per event type (direct_reclaim, kswapd_wake, shrink_slab, ...),
snapshots as long tables (vmstat, zoneinfo, psi, ...), and export.json
listing them.  Files that exist are never overwritten.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export", help=HELP["export"],
        description="Write the events of a recording as tables, one per event\n"
                    "type, with typed columns and names resolved, for pandas or DuckDB.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="a recording made with -o")
    p.add_argument("--format", choices=FORMATS, default="parquet",
                   help="parquet (needs duckdb: the export extra) or csv; default parquet")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="directory for the tables (default: FILE's name + '-export')")


def default_dir(path: str) -> str:
    stem = os.path.basename(path)
    if stem.endswith(".trc"):
        stem = stem[:-4]
    return f"{stem}-export"


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    out = args.output or default_dir(args.file)
    manifest = export(args.file, out, args.format, env, tracers.registry())
    tables = manifest["tables"]
    rows = sum(t["rows"] for t in tables.values())
    print(f"{len(tables)} tables, {rows} rows written to {out}/ "
          f"(listed in {os.path.join(out, MANIFEST)})", file=env.stderr)
    return ExitStatus.OK
