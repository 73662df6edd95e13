"""Two trace-reclaims on one machine at once, as two people on call during one incident.

Each loads its own BPF objects on the same tracepoints; neither may take
events from the other or hide them (every program returns TP_PASS, each
disables only its own perf events).  Both windows cover the same
``echo 2 > drop_caches`` runs and file lookups: each report's shrinker
counts are the kernel's over its own window, nothing lost.
"""

from __future__ import annotations

import os
import time

from tests.livetools import Trace


def _shrink_and_look_up() -> None:
    for _ in range(3):
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")
        for root, _dirs, files in os.walk("/usr/lib/python3"):
            for name in files[:40]:
                os.stat(os.path.join(root, name))
        time.sleep(1.3)   # one drop_slab() run from the next: a pause over a second


def test_two_tracers_each_count_what_the_kernel_counted(tmp_path):
    with Trace(str(tmp_path), ["-i", "0.5"]) as first:
        with Trace(str(tmp_path), ["-i", "0.5"]) as second:
            _shrink_and_look_up()
    for t in (first, second):
        doc = t.report
        tot, vm = doc["totals"], doc["totals"]["vmstat_delta"]
        assert doc["lost"]["total"] == 0, doc["lost"]
        assert vm["drop_slab"] >= 3, vm
        assert tot["drop_caches_runs"] == vm["drop_slab"], (tot["drop_caches_runs"], vm)
        assert tot["shrink_slab_scanned"] == vm["slabs_scanned"], \
            (tot["shrink_slab_scanned"], vm["slabs_scanned"])
