"""The trace outlives its reader: a dropped ssh session, ``nohup``, ``live | head``.

During an incident trace-reclaim runs in a terminal over ssh, and ssh
sessions drop.  The kernel then hangs the terminal up: SIGHUP to the
session, and EIO on every later write to it.  Each test here makes that (or
the pipe's equivalent) happen for real and checks that the trace ends as at
the end of its duration: the end counters read, the End record written, the
recording whole and its counts the kernel's, ``kernel.task_delayacct`` put
back when the run turned it on, and the exit status 0 (a traceback would
exit 1).  ``nohup`` asked for the opposite: an ignored SIGHUP stays ignored.

The kernel's own counts: ``echo 2 > drop_caches`` runs drop_slab() (every
shrinker, ``drop_slab`` in /proc/vmstat) while the trace runs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any, Dict, List

import pytest

from tests.livetools import DELAYACCT, Background, Terminal, delayacct, report_json
from trace_reclaim.session import all_attached

READY_S = 60.0


def _cmd(path: str, *args: str) -> List[str]:
    return [sys.executable, "-m", "trace_reclaim", *args, "-o", path, "-i", "0.5"]


def _drop_slab(times: int = 2) -> None:
    # The slab tracer tells one drop_slab() run from the next by a pause of
    # more than a second between one task's shrinker calls.
    for _ in range(times):
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")
        time.sleep(1.3)


def _wait_attached(term: Terminal) -> None:
    """Until every tracer is attached, said on the terminal or on piped stderr."""
    deadline = time.monotonic() + READY_S
    while not all_attached(term.text() + term.err_text()):
        assert term.proc.poll() is None, f"exited: {term.err_text()}"
        assert time.monotonic() < deadline, f"not attached: {term.err_text()}"
        time.sleep(0.05)


def _check_whole(path: str, ended_by: str) -> Dict[str, Any]:
    """The recording ended as at its duration: window closed by ``ended_by``,
    nothing lost, and drop_slab() runs as the kernel counted them."""
    doc = report_json(path)
    assert doc["window"]["ended_by"] == ended_by, doc["window"]
    assert doc["window"]["end_ns"], doc["window"]
    assert doc["lost"]["total"] == 0, doc["lost"]
    assert doc["lost"]["undecodable_records"] == 0, doc["lost"]
    slab = doc["slab"]
    assert slab["drop_slab_vmstat"] >= 2, slab["drop_slab_vmstat"]
    assert slab["drop_caches_runs"] == slab["drop_slab_vmstat"], \
        (slab["drop_caches_runs"], slab["drop_slab_vmstat"])
    return doc



@pytest.fixture
def delayacct_off() -> Any:
    """kernel.task_delayacct off before the test, and as it was after it whatever happens."""
    before = delayacct()
    with open(DELAYACCT, "w") as f:
        f.write("0")
    yield
    with open(DELAYACCT, "w") as f:
        f.write(before)


def test_sighup_ends_the_trace_like_ctrl_c(tmp_path):
    path = str(tmp_path / "hup.trc")
    with Background(_cmd(path, "record")) as bg:
        bg.wait_attached(READY_S)
        _drop_slab()
        bg.proc.send_signal(signal.SIGHUP)
        rc = bg.proc.wait(timeout=60)
    assert rc == 0, bg.stderr
    assert "Traceback" not in bg.stderr, bg.stderr
    _check_whole(path, "SIGHUP")


@pytest.mark.parametrize("stderr_on_tty", [True, False], ids=["all-on-tty", "stderr-piped"])
def test_terminal_hung_up_mid_trace(tmp_path, delayacct_off, stderr_on_tty):
    """``live --delayacct`` on a pseudo-terminal that hangs up, as sshd's does
    when the connection drops: SIGHUP, then EIO on the view's next write.
    With stderr on the terminal too (as for a user) nothing can be read
    afterwards; with it piped, what it said is checked as well."""
    path = str(tmp_path / "pty.trc")
    term = Terminal(_cmd(path, "live", "--delayacct"), stderr_on_tty=stderr_on_tty)
    try:
        _wait_attached(term)
        term.wait_frames(1, READY_S)
        assert delayacct() == "1"
        _drop_slab()
        term.wait_frames(term.frames() + 1, 10)
        term.hang_up()
        rc, _text, err = term.finish(60)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()
    assert rc == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert delayacct() == "0", "kernel.task_delayacct left on after the hangup"
    doc = _check_whole(path, "SIGHUP")
    assert doc["delayacct"]["turned_on_for_run"] is True


def test_nohup_keeps_tracing(tmp_path):
    path = str(tmp_path / "nohup.trc")
    with Background(_cmd(path, "record"), ignore=[signal.SIGHUP]) as bg:
        bg.wait_attached(READY_S)
        bg.proc.send_signal(signal.SIGHUP)
        _drop_slab()
        time.sleep(1.0)
        assert bg.proc.poll() is None, bg.err_text()
        bg.proc.send_signal(signal.SIGINT)
        rc = bg.proc.wait(timeout=60)
    assert rc == 0, bg.stderr
    _check_whole(path, "SIGINT")


def test_sigint_stops_a_recorder_started_with_it_ignored(tmp_path):
    """A background job of a shell without job control (``trace-reclaim record
    ... &`` in a script, or CI) starts with SIGINT ignored; ``run`` and
    scripts still stop it with SIGINT.  Only an ignored SIGHUP is nohup's."""
    path = str(tmp_path / "bg.trc")
    with Background(_cmd(path, "record"), ignore=[signal.SIGINT]) as bg:
        bg.wait_attached(READY_S)
        _drop_slab()
        bg.proc.send_signal(signal.SIGINT)
        rc = bg.proc.wait(timeout=60)
    assert rc == 0, bg.stderr
    _check_whole(path, "SIGINT")


def test_reader_leaving_ends_the_trace(tmp_path):
    """``trace-reclaim live -o FILE | head -n 3``: the rows' reader leaves."""
    path = str(tmp_path / "pipe.trc")
    with Background(_cmd(path, "live") + ["-j"], stdout=subprocess.PIPE) as bg:
        bg.wait_attached(READY_S)
        _drop_slab()
        assert bg.proc.stdout is not None
        head = [bg.proc.stdout.readline() for _ in range(3)]
        bg.proc.stdout.close()  # head exits
        rc = bg.proc.wait(timeout=60)
    text = bg.stderr
    assert all(line.startswith('{"type": "interval"') for line in head), head
    assert rc == 0, text
    # Neither a traceback nor Python's "Exception ignored ... BrokenPipeError" at exit.
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert "error:" not in text, text
    _check_whole(path, "output closed")
