"""The memcg tracer on cgroup v2, in the stock-kernel guest.

The development machine has the memory controller on cgroup v1; the guest
(Debian's kernel, as every current distribution) on cgroup v2.  The checks
are tests/live/test_cgroups_live.py's, run here with the guest's
page-cache directory (its /var/tmp may be tmpfs) and the cgroup2 root made
to delegate the memory controller when it does not (a throwaway guest: the
workload adds +memory to the root's cgroup.subtree_control and removes it
again).  cgroup2 is mounted at /sys/fs/cgroup for the session if the guest
has no cgroup2 mount.
"""

from __future__ import annotations

import os
import subprocess
from typing import Iterator

import pytest

from tests.live.test_cgroups_live import check_memcg_reclaim, check_memory_high
from trace_reclaim import cgroupfs


@pytest.fixture(scope="module")
def cgroup2(vm_live) -> Iterator[None]:
    """cgroup v2 with the memory controller, mounted for the module if needed."""
    mounted = None
    if cgroupfs.unified_mount(cgroupfs.cgroup_mounts()) is None:
        mounted = "/sys/fs/cgroup"
        os.makedirs(mounted, exist_ok=True)
        subprocess.run(["mount", "-t", "cgroup2", "none", mounted], check=True)
    try:
        mem = cgroupfs.memory_mount(cgroupfs.cgroup_mounts())
        if mem is None or mem.version != cgroupfs.V2:
            pytest.fail(f"the guest's memory controller is not on cgroup v2: {mem}")
        yield
    finally:
        if mounted:
            subprocess.run(["umount", mounted], capture_output=True)


def test_memcg_reclaim_v2(cgroup2, page_cache_dir, tmp_path):
    check_memcg_reclaim(str(tmp_path), directory=page_cache_dir, enable_v2_memory=True)


def test_memory_high_v2(cgroup2, page_cache_dir, tmp_path):
    check_memory_high(str(tmp_path), directory=page_cache_dir, enable_v2_memory=True)
