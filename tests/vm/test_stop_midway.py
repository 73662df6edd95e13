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

A stall ended just before the end counters are read, or not yet begun,
leaves nothing in flight, and that is what those stops met every time (the
stalls last milliseconds).  The second test makes one certain: a reader is
trapped inside a direct reclaim and held there (pressure.frozen_in_direct_reclaim)
while the trace ends, so the report must show it in flight, its stall
counted by the kernel and not ended.
"""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.livetools import Trace, direct_reclaim_passes, passes_match_allocstall
from tests.vm.conftest import record_timing, timed
from tests.vm.recorder import (ALLOCSTALL, PLANS, kill, replay_report, start, stop,
                               window_closed)
from trace_reclaim import events
from trace_reclaim.examples import pressure
from trace_reclaim.procfs import ProcFS
from trace_reclaim.recording import Reader

MiB = 1 << 20
PASSES = 200
WAIT_S = 120
GRACE_S = 3.0
READERS = 8
SPAN_MIB = pressure.SPARSE_SIZE // MiB // READERS   # each reader its own part of the file
PLAN = "fentry"
TRAP_S = 300   # a reader's next direct reclaim under emulation, a few tries


def _allocstall() -> int:
    vm = ProcFS().vmstat()
    return sum(vm.get(k, 0) for k in ALLOCSTALL)


def _replayed(t: Trace, window: str, plan: str = PLAN
              ) -> Tuple[Dict[str, Any], Dict[str, Any], int, Dict[str, int]]:
    """The recording's report: the document, its totals, the guest's
    allocstall_* delta in it, and the report's direct-reclaim counts."""
    doc, _text = replay_report(t, plan, window)
    tot, vm = doc["totals"], doc["totals"]["vmstat_delta"]
    allocstall = sum(vm[k] for k in ALLOCSTALL if k in vm)
    figures = {k: v for k, v in tot.items() if k.startswith("direct_reclaim_")
               and not k.endswith(("_ns", "_pages"))}
    return doc, tot, allocstall, figures


@contextlib.contextmanager
def _traced(tmp_path: Any, window: str, plan: str = PLAN
            ) -> Iterator[Tuple[Trace, List[subprocess.Popen]]]:
    """A recorder around the block (started first: nothing is in reclaim at
    its start) and the list the block puts its readers in.  At exit the
    readers end, then the recorder stops, or is killed if the block failed."""
    readers: List[subprocess.Popen] = []
    t = start(str(tmp_path), plan)
    try:
        yield t, readers
    except BaseException:
        _end(readers)
        kill(t)
        raise
    _end(readers)
    stop(t, plan, window)


def _end(readers: List[subprocess.Popen]) -> None:
    for r in readers:
        r.kill()
        r.wait()


def test_stopped_in_the_middle_of_direct_reclaim(vm_live, page_cache_dir, tmp_path):
    with _traced(tmp_path, "midway") as (t, readers):
        with pressure.sparse_file(directory=page_cache_dir) as path, \
                pressure.ballast(working_bytes=0, margin=256 * MiB, log=None):
            readers += _readers(path)
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
    assert stalled >= PASSES, f"the readers made {stalled} direct reclaims in {WAIT_S} s"
    doc, tot, allocstall, figures = _replayed(t, "midway")
    record_timing(what="stop midway", plan=PLAN, allocstall=allocstall,
                  passes=direct_reclaim_passes(tot), **figures)
    assert tot["lost_events"] == 0, doc["lost"]
    assert doc["reclaim"]["direct_reclaim"]["retries_exact"] is True
    assert allocstall >= PASSES
    assert passes_match_allocstall(tot, allocstall), (allocstall, figures)


def _readers(path: str) -> List[subprocess.Popen]:
    return [subprocess.Popen(
        ["dd", f"if={path}", "of=/dev/null", "bs=1M", f"skip={i * SPAN_MIB}",
         f"count={SPAN_MIB}", "status=none"]) for i in range(READERS)]


def _in_flight_tids(path: str) -> List[int]:
    """The threads in the reclaim tracer's table of running stalls at the end."""
    tids: List[int] = []
    with open(path, "rb") as f:
        for block in Reader(f).blocks_of_records():
            for type_id, payload in block:
                if type_id == events.USER_SAMPLE:
                    ev = events.decode(type_id, payload)
                    if ev is not None and ev.tracer == "reclaim" and "in_flight" in ev.data:
                        tids += [tid for _ts, _retries, tid in ev.data["in_flight"]]
    return tids


def _scheduler_knobs() -> Dict[str, str]:
    """RT throttling and every CPU's fair server runtime (6.12+), as read now."""
    paths = ["/proc/sys/kernel/sched_rt_runtime_us",
             *sorted(glob.glob(pressure.FAIR_SERVER.replace("cpu%d", "cpu*")))]
    return {p: open(p).read().strip() for p in paths}


@pytest.mark.parametrize("plan", PLANS)
def test_stopped_with_a_stall_in_flight(vm_live, page_cache_dir, tmp_path, plan):
    """One reader held inside a direct reclaim while the trace ends.

    Eight readers stream under the ballast with kswapd starved, as above;
    the first is pinned beside the test, trapped inside its next direct
    reclaim (a perf kprobe on its shrink_node()) and held there on the
    starved CPU.  The other readers and the ballast then go (nothing else
    reclaims while the trace ends), the trace is stopped, and only once its
    end counters and its table of running stalls are written is the reader
    let go: that stall is in flight in the report, its thread in the table,
    and the passes are still allocstall_* exactly.  (6.12, first run: caught
    at once, 1,276 stalls + 1 in flight = 1,277 allocstall; 6.1: 2,961 + 1.)

    On each plan: the table is filled at direct_reclaim_begin on all of
    them, but a stall's retries (in flight too) are counted by fentry or a
    kprobe on vmpressure_prio(), or inferred from the shrinks' priority on
    the tracepoint plan, a lower bound: there the passes are bounded by
    allocstall_*, not equal to it.
    """
    frozen: Optional[Dict[str, Any]] = None
    knobs = _scheduler_knobs()
    with _traced(tmp_path, "in flight", plan) as (t, readers):
        with pressure.sparse_file(directory=page_cache_dir) as path, \
                contextlib.ExitStack() as ballast:
            ballast.enter_context(pressure.ballast(working_bytes=0, margin=256 * MiB, log=None))
            readers += _readers(path)
            with pressure.starved_kswapd(log=None) as starved:
                home = min(os.sched_getaffinity(0) - {starved["cpu"]})
                os.sched_setaffinity(readers[0].pid, {home})
                with timed("stall in flight: reader trapped in reclaim", plan=plan):
                    held = pressure.frozen_in_direct_reclaim(
                        readers[0].pid, starved["cpu"], timeout=TRAP_S, log=None)
                    frozen = held.__enter__()
                try:
                    _end(readers[1:])
                    ballast.close()
                    t.interrupt()
                    with timed("stall in flight: end counters written", plan=plan):
                        deadline = time.monotonic() + WAIT_S
                        while not window_closed(t.path):
                            assert time.monotonic() < deadline, "the trace did not end"
                            time.sleep(0.2)
                finally:
                    held.__exit__(None, None, None)   # the reader goes on
                _end(readers)
    assert frozen is not None
    # The trap put back RT throttling and the fair servers (a failed restore
    # is only printed by the restorer).
    assert _scheduler_knobs() == knobs, knobs
    doc, tot, allocstall, figures = _replayed(t, "in flight", plan)
    record_timing(what="stall in flight", plan=plan, allocstall=allocstall,
                  slipped=frozen["slipped"], stack=" < ".join(frozen["stack"][:4]),
                  **figures)
    assert tot["lost_events"] == 0, doc["lost"]
    assert readers[0].pid in _in_flight_tids(t.path), frozen
    assert tot["direct_reclaim_in_flight"] >= 1, figures
    exact = doc["reclaim"]["direct_reclaim"]["retries_exact"]
    assert exact is (plan != "tracepoint")
    if exact:
        assert passes_match_allocstall(tot, allocstall), (allocstall, figures)
    else:
        # What the tracepoints saw, nothing the kernel did not count.
        assert direct_reclaim_passes(tot) <= allocstall, (allocstall, figures)
