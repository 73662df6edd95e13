"""``trace-reclaim run WORKLOAD --kernel K -n N -o DIR``, for real: two kernels in VMs.

Run on demand from the host (tests/vmhost/conftest.py):

    sudo .venv/bin/python -m pytest -m vmhost tests/vmhost

Each side boots its kernel in a VM and records N runs of ``anon`` (a hugetlb
ballast and a child swapping to zram: direct reclaim and kswapd), sized for
the VM's 3 GiB.  Checked on the host afterwards: N recordings per side landed
in DIR, each header names the guest's kernel (not this host's) and carries
the guest's configuration, every traced count equals the guest kernel's own
/proc/vmstat delta over the recording (the start and end snapshots the
recorder takes), ``diff`` of the two directories runs and warns that the
sides ran different kernels, and no VM directory is left behind.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest

from tests.conftest import REQUIRE_LIVE
from tests.livetools import (live_unavailable_reason, passes_match_allocstall, report_json,
                            run_cli)
from trace_reclaim import vm
from trace_reclaim.env import UserError
from trace_reclaim.recording import Reader

KERNELS = os.environ.get("TRACE_RECLAIM_VMHOST_KERNELS", "6.12,6.1").split(",")
N = int(os.environ.get("TRACE_RECLAIM_VMHOST_RUNS", "2"))
# MemAvailable after the ballast + 256 MiB: swapping, yet quick under emulation.
WORKLOAD = ["anon", "--param", "over_mib=256", "--param", "timeout=300"]
ALLOCSTALL = ("allocstall_dma", "allocstall_dma32", "allocstall_normal",
              "allocstall_movable", "allocstall_device")


def _unavailable() -> str:
    why = live_unavailable_reason()
    if why:
        return why
    try:
        vm._vng()
    except UserError as e:
        return str(e)
    return ""


@pytest.fixture(scope="module")
def sides() -> Iterator[Dict[str, Dict[str, Any]]]:
    """Each kernel's side: {"kernel", "dir", "rc", "stderr", "seconds"}."""
    why = _unavailable()
    if why:
        if REQUIRE_LIVE:
            pytest.fail(f"vmhost tier cannot run ({why}) but TRACE_RECLAIM_REQUIRE_LIVE=1")
        pytest.skip(why)
    assert len(KERNELS) == 2, "TRACE_RECLAIM_VMHOST_KERNELS is BASE,NEW"
    work = tempfile.mkdtemp(prefix="trace-reclaim-vmhost-", dir="/var/tmp")
    out: Dict[str, Dict[str, Any]] = {}
    try:
        for side, spec in zip(("base", "new"), KERNELS):
            kernel = vm.resolve(spec, log=lambda m: None)
            d = os.path.join(work, side)
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "trace_reclaim", "run", *WORKLOAD,
                                "-n", str(N), "-o", d, "--kernel", spec],
                               capture_output=True, text=True, timeout=3600)
            out[side] = {"kernel": kernel, "dir": d, "rc": r.returncode,
                         "stderr": r.stderr, "stdout": r.stdout,
                         "seconds": round(time.monotonic() - t0)}
            sys.stderr.write(f"vmhost: {side} ({kernel.release}) took "
                             f"{out[side]['seconds']} s, exit {r.returncode}\n")
        out["_"] = {"work": work}
        yield out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _recordings(side: Dict[str, Any]) -> List[str]:
    found = sorted(glob.glob(os.path.join(side["dir"], "*.trc")))
    assert len(found) == N, (found, side["stderr"][-3000:])   # never a vacuous pass
    return found


def _config_file(kernel: vm.Kernel) -> Optional[Dict[str, str]]:
    """CONFIG_X -> value from the kernel's own config file, or None if the host has none."""
    for path in ([os.path.join(kernel.kdir, ".config")] if kernel.kdir else []) + \
            ([os.path.join(kernel.root, "boot", f"config-{kernel.release}")]
             if kernel.root else []):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        out: Dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, _, v = line.partition("=")
                out[k] = v
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                out[line[2:-11]] = "n"
        return out
    return None


def _header(path: str) -> Dict[str, Any]:
    with open(path, "rb") as f:
        return Reader(f).header


@pytest.mark.parametrize("name", ["base", "new"])
def test_n_recordings_land_in_dir_on_the_host(sides, name):
    side = sides[name]
    assert side["rc"] == 0, side["stderr"][-3000:]
    assert "Traceback" not in side["stderr"]
    assert [os.path.basename(p) for p in _recordings(side)] == \
        [f"anon-{i}.trc" for i in range(1, N + 1)]
    assert not glob.glob(os.path.join(side["dir"], "*.incomplete"))
    assert side["stdout"].split() == _recordings(side)   # the guest's list, passed on


@pytest.mark.parametrize("name", ["base", "new"])
def test_headers_carry_the_guest_kernel_and_its_config(sides, name):
    side = sides[name]
    release = side["kernel"].release
    assert release != os.uname().release
    for path in _recordings(side):
        h = _header(path)
        assert h["kernel_release"] == release, path
        assert h["workload"]["machine"]["kernel_release"] == release
        assert h["workload"]["name"] == "anon"
        # The guest's configuration, read inside the guest, not this host's
        # (no kprobes): each value as the kernel's own config file has it
        # (Debian's /boot/config-RELEASE, a build tree's .config), where the
        # host has that file.
        assert h["config"]["CONFIG_KPROBES"] == "y", h["config"]
        assert all(h["config"][k] is not None for k in ("CONFIG_SLUB", "CONFIG_MEMCG"))
        own = _config_file(side["kernel"])
        if own is not None:
            assert h["config"] == {k: own.get(k, "n") for k in h["config"]}, h["config"]


@pytest.mark.parametrize("name", ["base", "new"])
def test_counts_equal_the_guest_kernels_own(sides, name):
    """Every traced count against the guest's /proc/vmstat delta over the
    recording (its start and end snapshots), as tests/vm/test_attach_plans.py
    does inside the guest."""
    for path in _recordings(sides[name]):
        doc = report_json(path)
        tot, vm_ = doc["totals"], doc["totals"]["vmstat_delta"]
        sys.stderr.write(f"vmhost: {os.path.basename(path)} ({sides[name]['kernel'].release})"
                         ": traced/vmstat " + json.dumps({
                             k: f"{tot[k]}/{vm_.get(v)}" for k, v in (
                                 ("lru_reclaimed_direct", "pgsteal_direct"),
                                 ("lru_reclaimed_kswapd", "pgsteal_kswapd"),
                                 ("lru_scanned_kswapd", "pgscan_kswapd"),
                                 ("kswapd_wakes", "pageoutrun"),
                                 ("shrink_slab_scanned", "slabs_scanned"))}) + "\n")
        assert tot["lost_events"] == 0, path
        allocstall = sum(vm_[k] for k in ALLOCSTALL if k in vm_)
        assert passes_match_allocstall(tot, allocstall), tot
        assert tot["lru_reclaimed_direct"] == vm_["pgsteal_direct"]
        assert tot["lru_scanned_direct"] == vm_["pgscan_direct"]
        assert tot["lru_reclaimed_kswapd"] == vm_["pgsteal_kswapd"]
        assert tot["lru_scanned_kswapd"] == vm_["pgscan_kswapd"]
        assert tot["kswapd_wakes"] == vm_["pageoutrun"]
        assert tot["shrink_slab_scanned"] == vm_["slabs_scanned"]
        assert tot["oom_kills"] == vm_["oom_kill"] == 0
        # The workload made reclaim happen: the equalities above are not 0 == 0.
        assert vm_["pgsteal_kswapd"] + vm_["pgsteal_direct"] > 0, vm_
        assert vm_["pgscan_kswapd"] + vm_["pgscan_direct"] > 0, vm_


def test_diff_compares_the_two_kernels(sides):
    base, new = sides["base"], sides["new"]
    r = run_cli(["diff", *_recordings(base), "--", *_recordings(new)], timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    sys.stderr.write(r.stderr + r.stdout)   # shown with -s: the diff a developer reads
    warn = [ln for ln in r.stderr.splitlines()
            if ln.startswith("warning: the sides ran different kernels:")]
    assert warn == [f"warning: the sides ran different kernels: base "
                    f"{base['kernel'].release}; new {new['kernel'].release}"], r.stderr
    assert "direct_reclaim.stalls" in r.stdout and "reclaimed.kswapd_pages" in r.stdout
    j = run_cli(["diff", "-j", *_recordings(base), "--", *_recordings(new)], timeout=600)
    assert j.returncode == 0, j.stderr
    assert json.loads(j.stdout)


def test_no_vm_left_behind(sides):
    """Neither VM's directory (its run.sh names our DIR) nor its QEMU remains;
    other VMs on the host (another user's) may come and go meanwhile."""
    work = sides["_"]["work"]
    ours = []
    for d in glob.glob("/tmp/trace-reclaim-vm-*"):
        try:
            with open(os.path.join(d, "run.sh")) as f:
                if work in f.read():
                    ours.append(d)
        except OSError:
            pass
    assert ours == []
    assert not subprocess.run(["pgrep", "-f", "qemu-system.*" + work],
                              capture_output=True).stdout
