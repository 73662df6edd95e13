"""Record a replay fixture: trace-reclaim record around a real workload.

    .venv/bin/python tests/record_fixture.py NAME [--delayacct] -- pressure --seconds 3

The workload runs as its own process, started after the recorder turned
delay accounting on (only tasks forked while it is on are accounted); it
takes the workloads' machine lock itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from tests.livetools import Trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--delayacct", action="store_true")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--mib", type=int, default=None)
    p.add_argument("--interval", default="0.5")
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--dir", default=os.path.join(ROOT, "tests", "fixtures"))
    a = p.parse_args()
    out = os.path.join(a.dir, a.name + ".trc")
    args = ["-i", a.interval] + (["--delayacct"] if a.delayacct else [])
    t = Trace(a.dir, args=args)
    with t:
        # A separate process started after the recorder: delay accounting
        # only covers tasks forked while it is on.
        cmd = [sys.executable, "-m", "trace_reclaim.examples.pressure", "-j",
               "--seconds", str(a.seconds)] + (["--mib", str(a.mib)] if a.mib else [])
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res = json.loads(r.stdout)
        time.sleep(a.settle)  # let kswapd go back to sleep inside the trace
    os.replace(t.path, out)
    print(json.dumps({"recording": out, "bytes": os.path.getsize(out),
                      "workload_vmstat": {k: v for k, v in res["vmstat"].items()
                                          if k.startswith(("allocstall", "pageoutrun"))}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
