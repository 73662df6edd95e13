"""Live, as root: the reclaim tracer against the kernel's own counters.

The workload is examples/pressure.py (hugetlb ballast + page-cache
streaming), which makes kswapd wake and the reading task enter direct reclaim
within seconds, and puts nr_hugepages back on every exit path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import List

import pytest

from trace_reclaim.examples import pressure
from tests.livetools import (ROOT, Trace, direct_reclaim_passes, passes_match_allocstall,
                            report_json, run_cli, vmstat)

pytestmark = pytest.mark.live

ALLOCSTALL = ("allocstall_dma", "allocstall_dma32", "allocstall_normal",
              "allocstall_movable", "allocstall_device")


def quiet(*a, **k):
    pass


def press(seconds: float = 6) -> dict:
    """Stream three times the memory left outside the ballast (at most ``seconds``).

    Repeated, up to 3 times, until the kernel itself counted direct reclaim:
    that is the workload's precondition, not the tracer's (a busy machine's
    kswapd can keep up with one pass).  The result sums the passes.
    """
    total: dict = {}
    for _ in range(3):
        result = pressure.run(seconds=seconds, log=quiet)
        total["direct_reclaims"] = total.get("direct_reclaims", 0) + result["direct_reclaims"]
        total["pid"] = result["pid"]
        if total["direct_reclaims"]:
            break
    return total


def test_counts_equal_the_kernels_own(live, tmp_path):
    """Every traced count against /proc/vmstat over the same window.

    - allocstall_*: do_try_to_free_pages() counts one per pass of its
      priority loop; a stall is one begin/end pair and may "goto retry" once
      or more (skipped deactivation, memcg low).  stalls + retries is exact.
    - pgsteal_*/pgscan_*: shrink_inactive_list() adds the same nr_reclaimed
      and nr_scanned to the counters as it passes to
      mm_vmscan_lru_shrink_inactive, attributed by reclaimer_offset(): exact.
    - pageoutrun: balance_pgdat() counts once per call, and kswapd() calls it
      once right after each mm_vmscan_kswapd_wake: exact.
    - A stall's nr_reclaimed (direct_reclaim_end) also includes
      reclaim_state->reclaimed, slab pages that shrinkers freed inside the
      stall (flush_reclaim_state()).  So it is at least pgsteal_direct, and
      exceeds it by at most the pages shrinkers freed, which is at most the
      objects shrinkers scanned (slabs_scanned): a freed slab page needs at
      least one freed object.
    """
    with Trace(str(tmp_path)) as t:
        result = press()
        with open("/proc/sys/vm/drop_caches", "w") as f:  # every shrinker, once
            f.write("2")
        time.sleep(1.5)  # the shrinks finish inside the window
    assert result["direct_reclaims"] > 0
    doc = t.report
    tot, vm = doc["totals"], doc["totals"]["vmstat_delta"]
    assert tot["lost_events"] == 0
    allocstall = sum(vm[k] for k in ALLOCSTALL if k in vm)
    assert allocstall > 0
    assert passes_match_allocstall(tot, allocstall), tot
    assert tot["direct_reclaim_retries"] <= tot["direct_reclaim_stalls"]
    assert tot["lru_reclaimed_direct"] == vm["pgsteal_direct"]
    assert tot["lru_scanned_direct"] == vm["pgscan_direct"]
    assert tot["lru_reclaimed_kswapd"] == vm["pgsteal_kswapd"]
    assert tot["lru_scanned_kswapd"] == vm["pgscan_kswapd"]
    assert tot["kswapd_wakes"] > 0
    assert tot["kswapd_wakes"] == vm["pageoutrun"]
    excess = tot["direct_reclaim_pages"] - vm["pgsteal_direct"]
    assert 0 <= excess <= vm["slabs_scanned"]
    # The other rows of the report's kernel cross-check.  slabs_scanned:
    # do_shrink_slab() adds each batch's nr_scanned and subtracts it from
    # total_scan, so asked-minus-left summed over calls is exact.
    assert vm["slabs_scanned"] > 0
    assert tot["shrink_slab_scanned"] == vm["slabs_scanned"]
    assert tot["drop_caches_runs"] == vm["drop_slab"] == 1
    assert tot["oom_kills"] == vm["oom_kill"] == 0
    # The reading task is the one that stalled.
    pids = {p["pid"] for p in doc["reclaim"]["direct_reclaim"]["processes"]}
    assert result["pid"] in pids
    assert doc["window"]["ended_by"] == "SIGINT"
    assert sum(n["awake_ns"] for n in doc["reclaim"]["kswapd"]) > 0


def test_live_report_equals_the_replayed_recording(live, tmp_path):
    """The report a live run prints is byte for byte `report FILE` of its recording."""
    rec = tmp_path / "live.trc"
    cmd = [sys.executable, os.path.join(ROOT, "cli.py"), "live", "-o", str(rec), "-d", "9"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    press(seconds=4)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    replay = run_cli(["report", str(rec)])
    assert replay.returncode == 0, replay.stderr
    assert "Direct reclaim:" in replay.stdout
    assert out.endswith("\n\n" + replay.stdout)
    # -j: the live JSON report equals report -j's document.
    rec2 = tmp_path / "live2.trc"
    r = run_cli(["live", "-j", "-o", str(rec2), "-d", "2"])
    assert r.returncode == 0, r.stderr
    lines = [__import__("json").loads(x) for x in r.stdout.splitlines()]
    assert [x["type"] for x in lines] == ["interval"] * (len(lines) - 1) + ["report"]
    assert lines[-1]["report"] == report_json(str(rec2))


def test_kill_9_leaves_a_usable_recording(live, tmp_path):
    rec = tmp_path / "killed.trc"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "record",
                             "-o", str(rec)], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "Tracing reclaim" in line
    time.sleep(1)  # the start snapshots follow the attach
    before = vmstat()
    for _ in range(3):  # the workload's precondition, not the tracer's
        press(seconds=4)
        woke = vmstat()["pageoutrun"] - before["pageoutrun"]
        if woke:
            break
    assert woke > 0, "the workload did not wake kswapd in three tries"
    time.sleep(2.5)  # two ticks after the pressure: its blocks are flushed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = run_cli(["report", "-j", str(rec)])
    assert r.returncode == 0, r.stderr
    doc = __import__("json").loads(r.stdout)
    assert doc["window"]["intervals"] >= 2
    # Everything up to the last flushed block is there: all the kswapd wakes.
    assert doc["totals"]["kswapd_wakes"] >= woke
    assert doc["window"]["ended_by"] is None  # no End record: killed
    assert "Traceback" not in r.stderr


def test_pid_filter_keeps_only_that_process(live, tmp_path):
    with Trace(str(tmp_path), ["-p", str(os.getpid())]) as t:
        result = press()
    d = t.report["reclaim"]["direct_reclaim"]
    assert result["pid"] == os.getpid()
    assert d["stalls"] > 0
    assert {p["pid"] for p in d["processes"]} == {os.getpid()}
    assert t.report["totals"]["kswapd_wakes"] > 0  # kswapd is never filtered


def test_lost_events_are_counted_exactly_and_shown(live, tmp_path):
    """A one-page ring buffer (64 records) drained every 4 s overflows under
    pressure; every record that did not fit is counted: traced + lost equals
    the kernel's count, for kswapd wakes and for direct reclaim passes."""
    from trace_reclaim.abi import EV_DIRECT_RECLAIM, EV_KSWAPD_WAKE

    with Trace(str(tmp_path), ["--ringbuf-pages", "1", "--slow-consumer-ms", "4000"]) as t:
        press()
    doc = t.report
    tot, vm = doc["totals"], doc["totals"]["vmstat_delta"]
    lost = {int(k): v for k, v in doc["lost"]["by_type"].items()}
    assert tot["lost_events"] > 0
    assert tot["kswapd_wakes"] + lost.get(EV_KSWAPD_WAKE, 0) == vm["pageoutrun"]
    # A lost stall record also loses its retries: the kernel's count is between.
    passes = direct_reclaim_passes(tot)
    allocstall = sum(vm[k] for k in ALLOCSTALL if k in vm)
    assert passes + lost.get(EV_DIRECT_RECLAIM, 0) <= allocstall
    assert any(row["lost_events"] for row in doc["intervals"])
    text = run_cli(["report", t.path]).stdout
    assert f"Lost events: {doc['totals']['lost_events']} (ring buffer full)" in text


def test_stopped_in_the_middle_of_direct_reclaim(live, tmp_path):
    """A trace stopped while several readers stall in direct reclaim (Ctrl-C
    during an incident): the stalls that ended before the end counters, those
    still running then and the retries of both are the kernel's allocstall_*
    delta (exactly where the retries are, up to the stalls the report says
    began while the counters were read).  Stalls that begin and end while the
    recorder drains its ring buffer (after the counters) are outside the
    window: they were counted once (9 of 324), before the window closed at
    the end counters instead of at the End record."""
    readers: List[subprocess.Popen] = []
    t = Trace(str(tmp_path))
    with pressure.sparse_file() as path:
        t.__enter__()   # before the ballast: nothing is in reclaim at the start
        stopped = False
        try:
            with pressure.ballast(log=quiet):
                # Four readers streaming the sparse file past the memory left.
                readers = [subprocess.Popen(
                    ["dd", f"if={path}", "of=/dev/null", "bs=1M", f"skip={i * 7168}",
                     "count=7168", "status=none"]) for i in range(4)]
                start = _allocstall()
                deadline = time.monotonic() + 30
                while _allocstall() - start < 200 and time.monotonic() < deadline:
                    time.sleep(0.02)
                stalled = _allocstall() - start
                stopped = True
                t.__exit__(None, None, None)   # stopped while they still stall
        finally:
            for r in readers:
                r.kill()
                r.wait()
            if not stopped:
                t.__exit__(*sys.exc_info())
    assert stalled >= 200, f"the readers made {stalled} direct reclaims in 30 s"
    tot, vm = t.report["totals"], t.report["totals"]["vmstat_delta"]
    assert tot["lost_events"] == 0
    allocstall = sum(vm[k] for k in ALLOCSTALL if k in vm)
    figures = {k: v for k, v in tot.items() if k.startswith("direct_reclaim_")
               and not k.endswith(("_ns", "_pages"))}
    print(f"allocstall {allocstall}, outside the window {t.report['lost']}, {figures}")
    if t.report["reclaim"]["direct_reclaim"]["retries_exact"]:
        assert passes_match_allocstall(tot, allocstall), (allocstall, figures)
    else:
        # Retries inferred from the tracepoints are a lower bound (the report
        # says so): under this load about one run in 14 had one retry pass
        # that showed no event.  Nothing may be counted that the kernel did
        # not count (what the drain brings after the end counters was, before).
        assert direct_reclaim_passes(tot) <= allocstall, (allocstall, figures)


def _allocstall() -> int:
    return sum(v for k, v in vmstat().items() if k.startswith("allocstall_"))
