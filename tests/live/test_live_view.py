"""Live: the view on a real terminal under pressure, ended by Ctrl-C or SIGTERM.

``trace-reclaim live --delayacct -i 1`` runs on a pseudo-terminal (so the
view redraws in place, as for a user) while examples/pressure.py makes the
kernel reclaim.  After it is ended, the last frame's totals must be the
report printed below it, the exit status 0, and kernel.task_delayacct back
to what it was.  A recording (-o) of the same run, replayed, must print the
very report the live run printed.

Needs root and bcc (skips otherwise, fails under TRACE_RECLAIM_REQUIRE_LIVE=1).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from typing import Any, Dict, List, Tuple

import pytest

from tests.livetools import Terminal, delayacct, report_json, run_cli
from trace_reclaim.examples import pressure
from trace_reclaim.view import CLEAR_EOL, HOME_CLEAR, totals_line




def _allocstall() -> int:
    with open("/proc/vmstat") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("allocstall_"))


def split_screen(text: str) -> Tuple[List[str], str]:
    """(the last frame's lines, everything printed below it)."""
    assert HOME_CLEAR in text, "no frame drawn"
    last = text.rsplit(HOME_CLEAR, 1)[1]
    lines = []
    rest = last
    while True:
        line, sep, after = rest.partition("\n")
        if not sep or not line.endswith(CLEAR_EOL):
            break
        lines.append(line[: -len(CLEAR_EOL)])
        rest = after
    return lines, rest


def run_live_under_pressure(tmp_path: Any, end: str) -> Dict[str, Any]:
    before = delayacct()
    path = os.path.join(str(tmp_path), f"live-{end}.trc")
    term = Terminal([sys.executable, "-m", "trace_reclaim", "live", "--delayacct",
                     "-i", "1", "-o", path])
    try:
        term.wait_frames(2, timeout=180)  # the BPF program compiled and is attached
        during = delayacct()
        # Repeat until the kernel itself counted direct reclaim: that is the
        # workload's precondition, not the tracer's.
        stalls0 = _allocstall()
        for _ in range(3):
            pressure.run(seconds=8, working_mib=64, log=None)
            if _allocstall() > stalls0:
                break
        # One full interval after the workload, then end it.
        term.wait_frames(term.frames() + 2, timeout=30)
    finally:
        if term.proc.poll() is None:
            if end == "SIGINT":
                term.ctrl_c()
            else:
                term.proc.send_signal(signal.SIGTERM)
    rc, text, err = term.finish()
    return {"rc": rc, "text": text, "err": err, "path": path, "before": before,
            "during": during, "after": delayacct(), "allocstall": _allocstall() - stalls0}


@pytest.mark.parametrize("end", ["SIGINT", "SIGTERM"])
def test_live_view_totals_are_the_report(live, tmp_path, end):
    r = run_live_under_pressure(tmp_path, end)
    assert r["rc"] == 0, r["err"]
    assert "Traceback" not in r["err"] and "error:" not in r["err"], r["err"]
    assert r["during"] == "1" and r["after"] == r["before"], r
    assert r["allocstall"] > 0, "the workload made no direct reclaim"

    frame, below = split_screen(r["text"])
    doc = report_json(r["path"])
    t = doc["totals"]
    assert doc["window"]["ended_by"] == end
    assert t["direct_reclaim_stalls"] > 0 and t["kswapd_wakes"] > 0
    # The last frame shows the report's totals ...
    assert [ln for ln in frame if ln.startswith("total ")] == [totals_line(t)], \
        "\n".join(frame)
    assert f"  lost {t['lost_events']}  " in frame[0]
    assert f"EPISODES ({doc['episode_summary']['count']} so far)" in frame
    # ... and the report printed below it is the report of the recording:
    # the same correlator code on the same records.
    replayed = run_cli(["report", r["path"]])
    assert replayed.returncode == 0, replayed.stderr
    assert below == "\n\n" + replayed.stdout
    m = re.search(r"^Direct reclaim: (\d+) stalls", below, re.M)
    assert m and int(m.group(1)) == t["direct_reclaim_stalls"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_while_compiling_restores_delayacct(live, tmp_path, sig):
    """A SIGTERM (or SIGHUP, the terminal gone) before tracing began ends it like
    Ctrl-C: no traceback, nothing left on."""
    before = delayacct()
    assert before == "0", "kernel.task_delayacct is already on: cannot see it turned on"
    term = Terminal([sys.executable, "-m", "trace_reclaim", "live", "--delayacct", "-i", "1"])
    deadline = time.monotonic() + 60
    # Delay accounting goes on just before the BPF program compiles (seconds).
    while delayacct() == before and time.monotonic() < deadline and term.proc.poll() is None:
        time.sleep(0.01)
    assert delayacct() != before, "trace-reclaim never turned delay accounting on"
    term.proc.send_signal(sig)
    rc, text, err = term.finish()
    assert term.frames() == 0, "the trace had already begun: the signal came too late"
    assert rc == 130, (rc, err)
    assert "error: interrupted before tracing began" in err and "Traceback" not in err, err
    assert delayacct() == before
