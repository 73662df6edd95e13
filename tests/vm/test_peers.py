"""Peers on the same pressure run, in the same guest: drsnoop, bpftrace, us.

Debian's ``drsnoop`` (bpfcc-tools: one line per direct reclaim, from the
vmscan begin/end tracepoints) and ``bpftrace`` (a script counting the same
tracepoints) run beside ``trace-reclaim record`` while vmalloc_fallback's
hugetlb ballast makes this process reclaim directly.  Each tool's count of
direct reclaims (begin/end pairs) must equal the others', and
trace-reclaim's stalls plus its retries must equal the kernel's
(``allocstall_*`` in /proc/vmstat): do_try_to_free_pages() counts ALLOCSTALL
once per pass of its priority loop and may run it again inside one begin/end
pair, which the peers cannot see and trace-reclaim counts (fentry on
vmpressure_prio()).

The guest runs nothing else, so all three, attached before the workload and
detached after it, see exactly the reclaims /proc/vmstat counts between the
two samples taken inside that span.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Dict, List

import pytest

from tests.livetools import direct_reclaim_passes, read_shared
from tests.vm.conftest import record_timing, timed
from tests.vm.recorder import ALLOCSTALL, kill, replay_report, start, stop
from trace_reclaim.examples import vmalloc_fallback
from trace_reclaim.procfs import ProcFS

DRSNOOP = "drsnoop-bpfcc"
BPFTRACE = """
tracepoint:vmscan:mm_vmscan_direct_reclaim_begin { @start[tid] = nsecs; @begin = count(); }
tracepoint:vmscan:mm_vmscan_direct_reclaim_end /@start[tid]/ {
  @stalls = count(); delete(@start[tid]); }
"""
READY_TIMEOUT = 600      # a bcc compile under emulation takes minutes


class Peer:
    """A peer tracer as a child, its output in files; ready once ``ready`` shows."""

    def __init__(self, name: str, argv: List[str], ready: str) -> None:
        self.name, self.ready = name, ready
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err = tempfile.TemporaryFile(mode="w+")
        # drsnoop prints its header without a flush: to a file, Python would
        # hold it until the first event.
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=self.err, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def text(self) -> str:
        return read_shared(self.out)

    def errors(self) -> str:
        return read_shared(self.err)

    def wait_ready(self, deadline: float) -> None:
        while self.ready not in self.text():
            assert self.proc.poll() is None, (self.name, self.errors())
            assert time.monotonic() < deadline, f"{self.name} not ready: {self.errors()}"
            time.sleep(0.2)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.text()


def _bpftrace_count(text: str, name: str) -> int:
    m = re.search(rf"^@{name}: (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0     # a count() that never ran is not printed


def _drsnoop_lines(text: str) -> int:
    """drsnoop's event lines: after its header, one per direct reclaim."""
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("COMM"))
    return sum(1 for ln in lines[head + 1:] if ln.strip())


@pytest.fixture(scope="module")
def peers_run(vm_live, tmp_path_factory) -> Dict[str, Any]:
    for exe in (DRSNOOP, "bpftrace"):
        if shutil.which(exe) is None:
            pytest.fail(f"{exe} is not installed (bootstrap.sh test-vm installs "
                        "bpfcc-tools and bpftrace on the host, which the guest shares)")
    t0 = time.monotonic()
    peers = [Peer("drsnoop", [DRSNOOP], "COMM"),
             Peer("bpftrace", ["bpftrace", "-e", BPFTRACE], "Attaching")]
    t = None
    try:
        t = start(str(tmp_path_factory.mktemp("peers")), "fentry")
        for p in peers:
            p.wait_ready(t0 + READY_TIMEOUT)
        record_timing(what="peers: all three attached", seconds=round(time.monotonic() - t0, 1))
        before = ProcFS().vmstat()
        with timed("peers: vmalloc_fallback"):
            for _ in range(3):   # until this process has reclaimed directly
                vmalloc_fallback.run(log=None)
                now = ProcFS().vmstat()
                if sum(now.get(k, 0) - before.get(k, 0) for k in ALLOCSTALL):
                    break
        time.sleep(1.0)
        after = ProcFS().vmstat()
        stop(t, "fentry", "peers")
        texts = {p.name: p.stop() for p in peers}
        errors = {p.name: p.errors() for p in peers}
    finally:
        for p in peers:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
        if t is not None:
            kill(t)
    doc, _text = replay_report(t, "fentry", "peers")
    return {"report": doc, "texts": texts, "errors": errors,
            "allocstall": sum(after.get(k, 0) - before.get(k, 0) for k in ALLOCSTALL),
            "vmstat": {k: after.get(k, 0) - before.get(k, 0)
                       for k in ("pgsteal_direct", "pgscan_direct")}}


def test_peers_count_the_same_direct_reclaims(peers_run):
    r = peers_run
    tot = r["report"]["totals"]
    ours = direct_reclaim_passes(tot)
    drsnoop = _drsnoop_lines(r["texts"]["drsnoop"])
    bt_stalls = _bpftrace_count(r["texts"]["bpftrace"], "stalls")
    bt_begins = _bpftrace_count(r["texts"]["bpftrace"], "begin")
    own = sum(tot["vmstat_delta"].get(k, 0) for k in ALLOCSTALL)
    record_timing(what="peers: direct reclaims counted", kernel_allocstall=r["allocstall"],
                  trace_reclaim=f"{tot['direct_reclaim_stalls']} stalls + "
                                f"{tot['direct_reclaim_retries']} retries",
                  drsnoop=drsnoop, bpftrace=bt_stalls, bpftrace_begins=bt_begins,
                  pgsteal_direct=r["vmstat"]["pgsteal_direct"])
    assert r["allocstall"] > 0
    # Nothing lost by any of them: bcc says "Possibly lost N samples" on stderr.
    assert tot["lost_events"] == 0
    assert "lost" not in r["errors"]["drsnoop"].lower(), r["errors"]["drsnoop"]
    assert tot["direct_reclaim_stalls"] > 0
    assert drsnoop == bt_stalls == bt_begins == tot["direct_reclaim_stalls"], r
    assert ours == r["allocstall"] == own, r


def test_drsnoop_pages_are_what_we_reclaimed(peers_run):
    """drsnoop's PAGES column is the begin/end tracepoint's nr_reclaimed: so
    is our per-stall figure; both sum to the same total."""
    lines = peers_run["texts"]["drsnoop"].splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("COMM"))
    pages = sum(int(ln.split()[-1]) for ln in lines[head + 1:] if ln.strip())
    tot = peers_run["report"]["totals"]
    record_timing(what="peers: direct reclaim pages", drsnoop=pages,
                  trace_reclaim=tot["direct_reclaim_pages"])
    assert pages == tot["direct_reclaim_pages"]
    assert os.getpid() in {p["pid"] for p in
                           peers_run["report"]["reclaim"]["direct_reclaim"]["processes"]}
