#!/usr/bin/env python3
"""What a report of bench/report_speed.py's recording costs at the least, in this Python.

Each round runs four fresh processes on the same recording, one after the
other, and times each from fork to exit:

- read: start, import the CLI and the tracers, read the header and check
  every block's CRC (nothing decoded);
- walk: read, then walk every record's framing (one loop iteration each);
- unpack: walk, and unpack every record's payload once (no handler, no state);
- report: ``trace-reclaim report``.

"unpack" is what any report that handles records one at a time in Python
pays before it does anything with them: the gap between it and a target
time is what is left for everything else.  Medians over the rounds.

    .venv/bin/python bench/report_floor.py [--events 1000000] [--rounds 3] [--keep FILE]

It prints figures; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import report_speed  # noqa: E402

READ = """
import sys
from trace_reclaim import cli, tracers  # noqa: F401 (what a report imports)
from trace_reclaim.recording import Reader
tracers.registry()
reader = Reader(open(sys.argv[1], "rb"))
blocks = [payload for payload, _n in reader._blocks()]
"""
# One loop iteration per record, with BODY (at the record's payload) in it.
LOOP = READ + """
import struct
from trace_reclaim.recording import LONG_LENGTH, RECORD_HEAD
head, long_length = RECORD_HEAD.unpack_from, LONG_LENGTH.unpack_from
by_size = dict()
for p in blocks:
    off, end = 0, len(p)
    while off < end:
        t, n = head(p, off)
        off += 4
        if n == 0xFFFF:
            n = long_length(p, off)[0]
            off += 4
BODY
        off += n
"""
WALK = LOOP.replace("BODY\n", "")
UNPACK = LOOP.replace("BODY\n", """\
        unpack = by_size.get(n)
        if unpack is None:
            unpack = by_size[n] = struct.Struct("%ds" % n).unpack_from
        unpack(p, off)
""")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--keep", metavar="FILE", help="write the recording here and keep it")
    a = p.parse_args()
    path = a.keep or os.path.join(tempfile.mkdtemp(prefix="trace-reclaim-bench-"), "b.trc")
    if not os.path.exists(path):
        report_speed.build(path, a.events)
    py = sys.executable
    modes = {"read + CRC": [py, "-c", READ, path],
             "+ framing walk": [py, "-c", WALK, path],
             "+ one unpack per record": [py, "-c", UNPACK, path],
             "trace-reclaim report": [py, "-m", "trace_reclaim", "report", path]}
    times: dict = {m: [] for m in modes}
    env = dict(os.environ, PYTHONPATH=ROOT)
    for _ in range(a.rounds):
        for mode, argv in modes.items():
            t0 = time.monotonic()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=env)
            times[mode].append(time.monotonic() - t0)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{a.events} events, {a.rounds} rounds, medians")
    for mode, ts in times.items():
        print(f"  {mode:26s} {statistics.median(ts):.2f} s (min {min(ts):.2f}, "
              f"max {max(ts):.2f})")
    if not a.keep:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
