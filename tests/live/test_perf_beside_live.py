"""Live, as root: `perf stat` beside a running trace still counts the tracepoints we trace.

A classic tracepoint hands its event on to the perf events open on it only
if the BPF programs attached there return non-zero
(perf_trace_run_bpf_submit()); bcc's TRACEPOINT_PROBEs return 0, and until
they returned TP_PASS (bpf/common.bpf.h) `perf stat -e cgroup:cgroup_mkdir`
counted 0 while trace-reclaim ran.  The perf events bcc attached our
programs through are disabled once attached (objects.quiet_own_perf_events):
they must take no sample of the events the workload makes on their CPU.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys

import pytest

from tests.livetools import PerfStat, Trace, perf_event_fds
from trace_reclaim import events
from trace_reclaim.recording import Reader
from trace_reclaim.tracers import memcg

pytestmark = pytest.mark.live

# One of each tracer's classic tracepoints that a few seconds of work on an
# idle machine make happen: memcg, vmalloc (two), oom (compaction).
TRACEPOINTS = ["cgroup:cgroup_mkdir", "kmem:mm_page_alloc", "kmem:kmalloc",
               "vmalloc:alloc_vmap_area", "compaction:mm_compaction_begin"]
# The workload, run while `perf stat -a` counts: our own memory cgroup made and
# removed; one BPF program load (the verifier's vmalloc areas); 64 MiB of
# anonymous memory touched on CPU 0, where bcc opened our perf events; a
# compaction of every zone (/proc/sys/vm/compact_memory: a trigger, nothing
# to put back).
WORKLOAD = """
import mmap, os
from trace_reclaim.examples import _cgroup, vmalloc_huge
with _cgroup.memory_cgroup("perf-beside") as cg:
    print("cgroup", os.path.basename(cg.path))
vmalloc_huge.trigger(count=1)
os.sched_setaffinity(0, {0})
m = mmap.mmap(-1, 64 << 20)
for off in range(0, 64 << 20, 4096):
    m[off] = 1
m.close()
with open("/proc/sys/vm/compact_memory", "w") as f:
    f.write("1")
"""
# pidfd_getfd(2): 438 on every architecture but alpha (numbers from 424 on are shared)
SYS_PIDFD_GETFD = 438


def _workload():
    """Run WORKLOAD; return the name of the cgroup it made."""
    r = subprocess.run([sys.executable, "-c", WORKLOAD], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("cgroup ")][0]


def _duplicated(pid):
    """``pid``'s perf events, duplicated into this process (pidfd_getfd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    fds = []
    try:
        for theirs in perf_event_fds(pid):
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, theirs, 0)
            if fd < 0:
                raise OSError(ctypes.get_errno(), f"pidfd_getfd of fd {theirs}")
            fds.append(fd)
    finally:
        os.close(pidfd)
    return fds


def _samples(fds):
    return [int.from_bytes(os.read(fd, 8), sys.byteorder) for fd in fds]


def test_perf_counts_what_we_trace_and_our_own_events_take_nothing(tmp_path):
    if shutil.which("perf") is None:
        pytest.fail("perf is not installed: ./bootstrap.sh test installs linux-perf")
    with Trace(str(tmp_path)) as t:
        ours = _duplicated(t.proc.pid)
        try:
            before = _samples(ours)
            with PerfStat(TRACEPOINTS) as perf:
                cgroup = _workload()
            after = _samples(ours)
        finally:
            for fd in ours:
                os.close(fd)
    # Every tracepoint the workload made happen reached perf beside us.
    for tp in TRACEPOINTS:
        assert perf.counts.get(tp, 0) > 0, (tp, perf.counts, perf.stderr)
    # ... and our programs saw them too: the cgroup made is in the recording.
    mkdirs = []
    with open(t.path, "rb") as f:
        for ty, payload in Reader(f).records():
            if ty == memcg.EV_CGROUP_MKDIR:
                mkdirs.append(events.decode(ty, payload).path)
    assert any(p.endswith("/" + cgroup) for p in mkdirs), (cgroup, mkdirs)
    assert t.report["lost"]["total"] == 0, t.report["lost"]
    # Our own perf events (one per classic tracepoint program) took no sample
    # of the thousands of page allocations made on their CPU.
    assert len(ours) >= len(TRACEPOINTS), ours
    assert after == before, (before, after)
