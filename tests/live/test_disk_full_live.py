"""A recording whose filesystem fills up during the trace.

Incidents fill disks.  The recording is written to a tmpfs of 128 KiB
(mounted here, unmounted whatever happens) while shrinkers run and files
are stat'ed, until the tracer stops on its own: ``error:``/``hint:`` naming
the file, the errno and how many records it holds, exit 1, no traceback,
``kernel.task_delayacct`` put back, and the file cut back to its last
complete block, so that it reports without a warning and holds exactly the
records the hint counts.  ``live`` shows its report first: the trace in
memory is whole, it ended "by recording failed".  ``serve`` goes on: its
metrics are its job; it warns once, counts the records it could not write
(``trace_reclaim_recording_unwritten_records_total``) and ends with the error.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Iterator, List

import pytest

from tests.livetools import Background, delayacct, read_shared, run_cli
from trace_reclaim.recording import Reader

FILL_S = 90


@pytest.fixture
def small_fs(tmp_path) -> Iterator[str]:
    where = str(tmp_path / "small")
    os.mkdir(where)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k,mode=0700", "tmpfs", where],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", where], check=False)



def _events_until_exit(p: subprocess.Popen) -> None:
    """Shrinker runs and dentry lookups, until the tracer stops by itself."""
    deadline = time.monotonic() + FILL_S
    while p.poll() is None and time.monotonic() < deadline:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")
        for root, _dirs, files in os.walk("/usr/lib/python3"):
            for name in files[:50]:
                os.stat(os.path.join(root, name))
        time.sleep(0.2)


@pytest.mark.parametrize("command", ["record", "live"])
def test_a_full_disk_stops_the_trace_with_an_error_and_keeps_every_complete_block(
        small_fs, command):
    path = os.path.join(small_fs, "full.trc")
    before = delayacct()
    with tempfile.TemporaryFile(mode="w+") as out:
        with Background([sys.executable, "-m", "trace_reclaim", command, "-o", path,
                         "-i", "0.5", "--delayacct"], stdout=out) as bg:
            _events_until_exit(bg.proc)
            rc = bg.proc.wait(timeout=60)
        text = bg.stderr
        shown = read_shared(out)
    assert delayacct() == before, "kernel.task_delayacct not put back"
    assert rc == 1, text
    assert "Traceback" not in text, text
    m = re.search(r"^error: cannot write \S+: No space left on device; the trace stopped there$"
                  r"\nhint: \S+ holds the first (\d+) records \((\d+) bytes, every block "
                  r"complete; (\d+) not written\)", text, re.M)
    assert m, text
    records, size = int(m.group(1)), int(m.group(2))
    assert os.path.getsize(path) == size
    with open(path, "rb") as f:
        r = Reader(f)
        got: List[Any] = list(r.records())
    assert not r.warnings and not r.truncated, r.warnings
    assert len(got) == records > 0
    rep = run_cli(["report", path])
    assert rep.returncode == 0, rep.stderr
    assert "warning" not in rep.stderr, rep.stderr
    if command == "live":
        # The report of the whole trace, from memory, before the error.
        assert "ended by recording failed" in shown.replace("\n  ", " "), shown[-3000:]


def test_serve_goes_on_when_its_recording_fills_the_disk(small_fs):
    """serve's job is the metrics: it warns once, goes on, and counts what it
    could not write; at its end, the error."""
    path = os.path.join(small_fs, "serve.trc")
    with Background([sys.executable, "-m", "trace_reclaim", "serve", "--listen",
                     "127.0.0.1:0", "-i", "0.5", "-o", path]) as bg:
        deadline = time.monotonic() + FILL_S
        while "recording stopped after" not in bg.err_text():
            assert bg.proc.poll() is None, bg.err_text()
            assert time.monotonic() < deadline, bg.err_text()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("2")
            time.sleep(0.3)
        addr = re.search(r"metrics on http://([^/]+)/", bg.err_text())
        assert addr, bg.err_text()
        time.sleep(1.5)   # a refresh after the failure
        assert bg.proc.poll() is None, bg.err_text()
        with urllib.request.urlopen(f"http://{addr.group(1)}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        bg.proc.send_signal(signal.SIGINT)
        rc = bg.proc.wait(timeout=60)
    text = bg.stderr
    m = re.search(r"^trace_reclaim_recording_unwritten_records_total (\S+)$", metrics, re.M)
    assert m and float(m.group(1)) > 0, metrics
    assert text.count("recording stopped after") == 1, text
    assert rc == 1 and "Traceback" not in text, text
    assert re.search(r"^error: cannot write \S+: No space left on device$", text, re.M), text
    with open(path, "rb") as f:
        r = Reader(f)
        assert list(r.records()) and not r.warnings, r.warnings
