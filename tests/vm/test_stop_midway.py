"""A trace stopped in the middle of direct reclaim, on a plan whose retries are exact.

The host's tracepoint-only plan can only bound the passes it saw by the
kernel's ALLOCSTALL count (tests/live/test_reclaim_live.py, the same
scenario); with fentry on ``vmpressure_prio()`` every pass is seen, so here
the report's stalls, their retries, the stalls still in reclaim at the end
and their retries are the kernel's allocstall_* delta exactly (up to the
stalls the report says began while the end counters were read, which the
kernel may or may not have counted yet).

Workload: a hugetlb ballast leaves 256 MiB available, eight readers stream
a sparse file through the page cache, and kswapd is starved
(``pressure.starved_kswapd``: pinned beside a real-time busy loop), so the
readers reclaim directly, tens to a hundred times a second under emulation
(page cache streaming alone made 1 in 40 s: kswapd kept up).  The trace is
stopped (Ctrl-C) once the kernel has counted PASSES passes, while the
readers still stall.
"""

from __future__ import annotations

import subprocess
import time
from typing import List

from tests.livetools import direct_reclaim_passes, passes_match_allocstall
from tests.vm.conftest import record_timing, timed
from tests.vm.recorder import ALLOCSTALL, kill, replay_report, start, stop
from trace_reclaim.examples import pressure
from trace_reclaim.procfs import ProcFS

MiB = 1 << 20
PASSES = 200
WAIT_S = 120
GRACE_S = 3.0
READERS = 8
SPAN_MIB = pressure.SPARSE_SIZE // MiB // READERS   # each reader its own part of the file
PLAN = "fentry"


def _allocstall() -> int:
    vm = ProcFS().vmstat()
    return sum(vm.get(k, 0) for k in ALLOCSTALL)


def _end(readers: List[subprocess.Popen]) -> None:
    for r in readers:
        r.kill()
        r.wait()


def test_stopped_in_the_middle_of_direct_reclaim(vm_live, page_cache_dir, tmp_path):
    readers: List[subprocess.Popen] = []
    t = start(str(tmp_path), PLAN)   # before the ballast: nothing is in reclaim at the start
    stopped = False
    try:
        with pressure.sparse_file(directory=page_cache_dir) as path, \
                pressure.ballast(working_bytes=0, margin=256 * MiB, log=None):
            readers = [subprocess.Popen(
                ["dd", f"if={path}", "of=/dev/null", "bs=1M", f"skip={i * SPAN_MIB}",
                 f"count={SPAN_MIB}", "status=none"]) for i in range(READERS)]
            with pressure.starved_kswapd(log=None):
                begin = _allocstall()
                deadline = time.monotonic() + WAIT_S
                with timed("stop midway: readers until the stalls", plan=PLAN):
                    while _allocstall() - begin < PASSES and time.monotonic() < deadline \
                            and any(r.poll() is None for r in readers):
                        time.sleep(0.05)
                stalled = _allocstall() - begin
                # Ctrl-C while they still stall: the recorder reads the end
                # counters at once.  The readers go on a little, then stop,
                # so that the rest of its end (drain, report, detach) does
                # not share one emulated CPU with them (on 6.1 that took
                # more than a minute).
                t.interrupt()
                time.sleep(GRACE_S)
                _end(readers)
        stop(t, PLAN, "midway")
        stopped = True
    finally:
        _end(readers)
        if not stopped:
            kill(t)
    assert stalled >= PASSES, f"the readers made {stalled} direct reclaims in {WAIT_S} s"
    doc, _text = replay_report(t, PLAN, "midway")
    tot, vm = doc["totals"], doc["totals"]["vmstat_delta"]
    allocstall = sum(vm[k] for k in ALLOCSTALL if k in vm)
    figures = {k: v for k, v in tot.items() if k.startswith("direct_reclaim_")
               and not k.endswith(("_ns", "_pages"))}
    record_timing(what="stop midway", plan=PLAN, allocstall=allocstall,
                  passes=direct_reclaim_passes(tot), **figures)
    assert tot["lost_events"] == 0, doc["lost"]
    assert doc["reclaim"]["direct_reclaim"]["retries_exact"] is True
    assert allocstall >= PASSES
    assert passes_match_allocstall(tot, allocstall), (allocstall, figures)
