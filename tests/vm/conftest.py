"""The attach-plan tier: every plan on a kernel that offers them all.

These tests force each attach plan in turn (``--attach fentry|kprobe|
tracepoint``) and check each against the kernel's own accounting.  They need
a kernel with fentry, kprobes and matching headers, which a distribution
kernel has and the development machine's does not: ``sudo ./bootstrap.sh
test-vm [KERNEL]`` boots one (trace_reclaim/vm.py) and runs them inside it.
They are collected only when the ``vm`` marker is selected (``-m vm``), so
the ordinary tiers never run them on a kernel that cannot pass them.

Every test here is marked ``vm`` and ``live``.  The set-up the guest needs is
done once per session and undone afterwards: the zram module loaded, and a
disk-backed filesystem for the page-cache workload where /var/tmp is tmpfs
(a tmpfs file's holes are read without page cache, so nothing to reclaim).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest

from tests.conftest import REQUIRE_LIVE
from tests.livetools import live_unavailable_reason, machine_lock, opt_in_tier
from trace_reclaim.examples import slab_dentries

TIMINGS: List[Dict[str, Any]] = []
N_FILES = 50_000   # pinned ones must dominate the dentry cache (never_drains: < 10% fell)


def pytest_collection_modifyitems(config, items):
    opt_in_tier(config, items, os.path.dirname(os.path.abspath(__file__)), "vm",
                also=("live",))


def pytest_terminal_summary(terminalreporter):
    if not TIMINGS:
        return
    terminalreporter.section("vm tier timings (seconds)")
    for row in TIMINGS:
        terminalreporter.write_line(json.dumps(row, sort_keys=True))


def record_timing(**row: Any) -> None:
    TIMINGS.append(row)
    # Progress as it happens (pytest shows the table only at the end): fd 2
    # itself, which ``--capture=sys`` (tests/vm/guest.sh) leaves alone.
    with contextlib.suppress(OSError):
        os.write(2, ("vm tier: " + json.dumps(row, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def timed(what: str, **extra: Any) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        record_timing(what=what, seconds=round(time.monotonic() - t0, 1), **extra)


def _fstype(path: str) -> str:
    best, fs = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fs = mnt, parts[2]
    return fs


@pytest.fixture(scope="session")
def vm_live() -> Iterator[None]:
    """Root and bcc, the machine lock, zram loaded: for the whole tier."""
    why = live_unavailable_reason()
    if why:
        if REQUIRE_LIVE:
            pytest.fail(f"vm tier cannot run ({why}) but TRACE_RECLAIM_REQUIRE_LIVE=1")
        pytest.skip(why)
    loaded = False
    if not os.path.isdir("/sys/class/zram-control"):
        r = subprocess.run(["modprobe", "zram"], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"modprobe zram failed: {r.stderr.strip()}")
        loaded = True
    with machine_lock():
        try:
            yield
        finally:
            if loaded:
                subprocess.run(["modprobe", "-r", "zram"], capture_output=True)


@pytest.fixture(scope="session")
def page_cache_dir(vm_live) -> Iterator[str]:
    """A directory whose files are read through the page cache (not tmpfs)."""
    if _fstype("/var/tmp") not in ("tmpfs", "ramfs", "overlay", "9p"):
        yield "/var/tmp"
        return
    # ext4 reads a hole into zeroed page-cache pages without touching the
    # device, so a small image on tmpfs holds a 30 GiB sparse file.
    if not os.path.exists("/dev/loop-control"):
        subprocess.run(["modprobe", "loop"], capture_output=True)
    work = tempfile.mkdtemp(prefix="trace-reclaim-vm-ext4-")
    img, mnt = os.path.join(work, "disk.img"), os.path.join(work, "mnt")
    os.mkdir(mnt)
    try:
        with open(img, "wb") as f:   # 50,000 pinned files need inodes: 512 MiB
            f.truncate(512 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-N", "131072", img], check=True,
                       capture_output=True)
        subprocess.run(["mount", "-o", "loop", img, mnt], check=True, capture_output=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", mnt], capture_output=True)
    finally:
        subprocess.run(["rm", "-rf", work])


@pytest.fixture(scope="session")
def pinned_files(page_cache_dir) -> Iterator[str]:
    """N_FILES empty files, made once for every plan's pinned-dentry case.

    Creating them is most of that case's cost under emulation; each window
    drops their dentries and inodes (drop_caches) before it starts and opens
    them again inside it.
    """
    with contextlib.ExitStack() as stack:
        with timed("create the pinned-dentry files", files=N_FILES):
            path = stack.enter_context(slab_dentries.created_files(N_FILES,
                                                                   directory=page_cache_dir))
        yield path


class DrgnTruth:
    """tests/vm/drgn_truth.py running beside the tests: the kernel's memory, read by drgn."""

    def __init__(self, vmlinux: str) -> None:
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(here, "drgn_truth.py"), vmlinux],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready: Optional[Dict[str, Any]] = None
        self.t0 = time.monotonic()

    def _line(self) -> Dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"drgn_truth.py exited ({self.proc.wait()})"
        return json.loads(line)

    def ask(self, op: str, **kw: Any) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        if self.ready is None:
            self.ready = self._line()
            record_timing(what="drgn: load vmlinux debug info",
                          seconds=self.ready["load_s"],
                          waited=round(time.monotonic() - self.t0, 1))
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        a = self._line()
        assert "error" not in a, (op, a["error"])
        record_timing(what=f"drgn: {op}", seconds=a["seconds"])
        return a

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def drgn_truth(vm_live) -> Iterator[Optional[DrgnTruth]]:
    """drgn on /proc/kcore with this kernel's debug-info vmlinux, loaded once.

    None when drgn cannot run (the drgn tests then skip; a failure with
    TRACE_RECLAIM_REQUIRE_LIVE=1): the other tests do not need it.
    """
    vmlinux = f"/lib/modules/{os.uname().release}/vmlinux"
    why = None
    try:
        import drgn  # noqa: F401
    except ImportError:
        why = "drgn is not importable (pip install drgn; bootstrap.sh test-vm does)"
    if why is None and not os.path.exists(vmlinux):
        why = f"no debug-info {vmlinux} (trace_reclaim.vm prepares it from linux-image-*-dbg)"
    if why is None and not os.path.exists("/proc/kcore"):
        why = "no /proc/kcore (CONFIG_PROC_KCORE)"
    if why:
        if REQUIRE_LIVE:
            pytest.fail(f"drgn ground truth cannot run ({why}) but TRACE_RECLAIM_REQUIRE_LIVE=1")
        yield None
        return
    d = DrgnTruth(vmlinux)
    try:
        yield d
    finally:
        d.close()
