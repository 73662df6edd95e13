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
import re
import subprocess
import tempfile
import time
from typing import Any, Dict, Iterator, List

import pytest

from tests.conftest import REQUIRE_LIVE
from tests.livetools import live_unavailable_reason, machine_lock

TIMINGS: List[Dict[str, Any]] = []


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    mine = [i for i in items if str(i.fspath).startswith(here)]
    for item in mine:
        item.add_marker(pytest.mark.vm)
        item.add_marker(pytest.mark.live)
    expr = config.option.markexpr or ""
    if not (re.search(r"\bvm\b", expr) and not re.search(r"\bnot\s+vm\b", expr)):
        keep = [i for i in items if not str(i.fspath).startswith(here)]
        if len(keep) != len(items):
            config.hook.pytest_deselected(items=mine)
            items[:] = keep


def pytest_terminal_summary(terminalreporter):
    if not TIMINGS:
        return
    terminalreporter.section("vm tier timings (seconds)")
    for row in TIMINGS:
        terminalreporter.write_line(json.dumps(row, sort_keys=True))


def record_timing(**row: Any) -> None:
    TIMINGS.append(row)


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
