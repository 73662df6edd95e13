"""examples/_cgroup.py on the real kernel: our cgroup appears, holds our child, and goes away.

Every exit path is checked: normal return, an exception, SIGTERM and SIGINT
to a process inside ``memory_cgroup``.  Only cgroups named
trace-reclaim-test-* are created; nothing else is written.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests import ROOT
from trace_reclaim import cgroupfs
from trace_reclaim.examples import _cgroup

PY = sys.executable


@pytest.fixture(autouse=True)
def root_only():
    if os.geteuid() != 0:
        if os.environ.get("TRACE_RECLAIM_REQUIRE_LIVE") == "1":
            pytest.fail("live cgroup tests need root (TRACE_RECLAIM_REQUIRE_LIVE=1)")
        pytest.skip("live cgroup tests need root")


def _ours():
    m = _cgroup.find_memory_mount()
    return sorted(n for n in os.listdir(m.path)
                  if n.startswith(_cgroup.PREFIX + "%d-" % os.getpid()))


def test_child_runs_in_our_cgroup_and_everything_is_removed():
    with _cgroup.memory_cgroup("helper", limit_bytes=256 << 20) as cg:
        assert os.path.isdir(cg.path)
        p = cg.popen([PY, "-c", "import sys; sys.stdout.write(open('/proc/self/cgroup').read())"],
                     stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate(timeout=30)
        key = "memory" if cg.version == cgroupfs.V1 else ""
        assert cgroupfs.parse_proc_cgroup(out)[key] == cg.rel
        assert cg.id == os.stat(cg.path).st_ino
        c = cg.counters()
        if cg.version == cgroupfs.V1:
            assert c["limit_bytes"] == 256 << 20 and "failcnt" in c
        else:
            assert c["max_bytes"] == 256 << 20 and "events" in c
        sleeper = cg.popen(["sleep", "60"])
        assert sleeper.pid in cg.pids()
        path = cg.path
    assert not os.path.exists(path)
    assert sleeper.returncode == -signal.SIGKILL
    assert _ours() == []


def test_exception_removes_the_cgroup():
    with pytest.raises(RuntimeError):
        with _cgroup.memory_cgroup("boom") as cg:
            cg.popen(["sleep", "60"])
            path = cg.path
            raise RuntimeError("boom")
    assert not os.path.exists(path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_removes_the_cgroup(sig):
    code = (
        "import sys, time\n"
        "from trace_reclaim.examples import _cgroup, _restore\n"
        "def body():\n"
        "    with _cgroup.memory_cgroup('sig') as cg:\n"
        "        cg.popen(['sleep', '60'])\n"
        "        print(cg.path, flush=True)\n"
        "        time.sleep(60)\n"
        "sys.exit(_restore.run_cli(body))\n")
    p = subprocess.Popen([PY, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    path = p.stdout.readline().strip()
    assert os.path.isdir(path), p.stderr.read()
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert p.returncode in (130, 128 + sig), err
    deadline = time.monotonic() + 5
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(path)
