"""Live: every example in `trace-reclaim --help` runs, so the docs cannot drift."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from trace_reclaim import cli
from tests.livetools import ROOT

pytestmark = pytest.mark.live


def examples():
    for line in cli.EPILOG.splitlines():
        line = line.strip()
        if line.startswith("trace-reclaim"):
            yield shlex.split(line.split("#")[0])[1:]


def _wait_for_tracing(proc, err_path, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Tracing reclaim" in err_path.read_text() or proc.poll() is not None:
            return
        time.sleep(0.1)
    raise AssertionError(f"not tracing after {timeout} s: {err_path.read_text()}")


def test_every_help_example_runs(live, tmp_path):
    ran = 0
    for i, argv in enumerate(examples()):
        err_path = tmp_path / f"stderr-{i}.txt"
        with open(err_path, "w+") as err_file:
            proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), *argv],
                                    cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=err_file, text=True)
            duration = float(argv[argv.index("-d") + 1]) if "-d" in argv else None
            bounded = argv[:1] in (["check"], ["report"], ["export"]) or (duration or 99) <= 10
            if not bounded:  # until Ctrl-C, or a long -d: end it the way a user does,
                # once it traces (attaching takes seconds, longer on a busy machine)
                _wait_for_tracing(proc, err_path)
                time.sleep(2)
                proc.send_signal(signal.SIGINT)
            try:
                out, _ = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        err = err_path.read_text()
        assert proc.returncode == 0, (argv, err)
        assert "Traceback" not in err, (argv, err)
        if argv[:1] == ["record"]:  # stdout is data: record writes only the file
            assert "recorded" in err and out == "", argv
        elif argv[:1] == ["export"]:  # the tables are files; stdout stays empty
            assert "written to" in err and out == "", argv
        else:
            assert out.strip(), argv
        ran += 1
    assert ran >= 8
    assert (tmp_path / "run.trc").exists() and (tmp_path / "pid1.trc").exists()
    assert (tmp_path / "timeline.png").exists() and (tmp_path / "run-export").is_dir()
