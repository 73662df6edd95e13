"""The recorder as the VM tier runs it: ``trace-reclaim record`` around a
window of workloads, replayed once in the test process.

Shared by tests/vm's test modules (the attach plans, the peers).
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Tuple

from tests.livetools import Trace
from tests.vm.conftest import timed
from trace_reclaim import events, tracers
from trace_reclaim.env import Environment
from trace_reclaim.recording import Reader
from trace_reclaim.replay import replay
from trace_reclaim.report import render_json, render_text

INTERVAL = ["-i", "0.5"]
#: The attach plans a stock kernel offers, each forced in turn (--attach).
PLANS = ("fentry", "kprobe", "tracepoint")
ALLOCSTALL = ("allocstall_dma", "allocstall_dma32", "allocstall_normal",
              "allocstall_movable", "allocstall_device")


def _holds(path: str, type_id: int) -> bool:
    """Whether the recording at ``path`` holds a record of ``type_id`` yet."""
    try:
        with open(path, "rb") as f:
            for block in Reader(f).blocks_of_records():
                if any(t == type_id for t, _p in block):
                    return True
    except Exception:  # header not written yet, or a block being written
        return False
    return False


def window_open(path: str) -> bool:
    """Whether the recording holds its first tick: the window has started.

    "Tracing reclaim" is printed when the reclaim programs are attached,
    before the start samples, which take seconds under emulation; Trace
    returns at the later "attached:" line (every tracer attached and its
    start samples read: /proc/slabinfo, /sys/kernel/slab, ...); events before
    the window's start are not counted.
    """
    return _holds(path, events.USER_TICK)


def window_closed(path: str) -> bool:
    """Whether the recording holds its end: the end counters were read and written."""
    return _holds(path, events.USER_END)


def start(tmp: str, plan: str) -> Trace:
    t = Trace(tmp, INTERVAL + ["--attach", plan], ready_timeout=600, report=False)
    with timed("record start (BPF compile + attach)", plan=plan):
        t.__enter__()
    with timed("record window open (start samples)", plan=plan):
        deadline = time.monotonic() + 120
        while not window_open(t.path):
            assert t.proc is not None and t.proc.poll() is None, "trace-reclaim record exited"
            assert time.monotonic() < deadline, "no first tick within 120 s"
            time.sleep(0.2)
    return t


def stop(t: Trace, plan: str, window: str) -> None:
    with timed("record stop", plan=plan, window=window):
        t.__exit__(None, None, None)


def replay_report(t: Trace, plan: str, window: str) -> Tuple[Dict[str, Any], str]:
    """The recording's ``report -j`` document and text report, from one replay.

    What commands/report.py does, in this process: under emulation a replay
    costs seconds, and each ``report`` run would replay the file again.
    """
    with timed("replay (report -j + text)", plan=plan, window=window):
        corr = replay(t.path, Environment(), tracers.registry())
        doc = corr.report()
        return json.loads(render_json(doc)), render_text(doc, corr.aggs)


def kill(t: Trace) -> None:
    if t.proc is not None and t.proc.poll() is None:
        t.proc.kill()
        t.proc.wait()
