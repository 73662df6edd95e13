"""Live tests of the workloads in examples/: real runs, checked against the kernel's counters.

They change machine-wide state (hugetlb pages, zram, swap, drop_caches), so
they need root; without it they skip, unless TRACE_RECLAIM_REQUIRE_LIVE=1,
which turns the skip into a failure so CI cannot pass by skipping.
"""

import os
import signal
import subprocess
import time

import pytest

from tests import ROOT
from tests.livetools import machine_lock
from trace_reclaim.examples import (_proc, _restore, anon_pressure, pressure, slab_churn,
                                    slab_dentries, vmalloc_fallback, vmalloc_huge,
                                    zram_lifecycle)
from trace_reclaim.procfs import ProcFS

PY = "/usr/bin/python3"
PROC = ProcFS()


def _live_or_skip():
    if os.geteuid() == 0:
        return
    reason = "live workload tests need root"
    if os.environ.get("TRACE_RECLAIM_REQUIRE_LIVE") == "1":
        pytest.fail(reason + " (TRACE_RECLAIM_REQUIRE_LIVE=1)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def machine_state():
    """Require root; check every test leaves hugetlb, zram and swap as it found them.

    Holds the machine lock (re-entrant: the workloads take it again) so another
    process's workload cannot change the state between the two snapshots.
    """
    _live_or_skip()
    with machine_lock():
        before = (PROC.nr_hugepages(), zram_lifecycle.zram_devices(), anon_pressure.swaps())
        yield before
        after = (PROC.nr_hugepages(), zram_lifecycle.zram_devices(), anon_pressure.swaps())
    assert after == before


def test_pressure_makes_direct_reclaim():
    res = pressure.run(seconds=10, until_direct_reclaim=True, log=None)
    assert res["ballast"]["pages"] > 0
    assert res["direct_reclaims"] > 0, res["vmstat"]
    assert res["vmstat"]["pgsteal_kswapd"] > 0
    assert res["nr_hugepages_after"] == res["nr_hugepages_before"]


def _spinners():
    """This machine's SCHED_FIFO tasks at priority 50 that are not kernel threads."""
    out = subprocess.run(["ps", "-eo", "pid=,cls=,rtprio=,ppid="], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    return [int(f[0]) for f in (ln.split() for ln in out) if len(f) == 4
            and f[1] == "FF" and f[2] == "50" and f[3] != "2"]


def test_starved_kswapd_pins_kswapd_beside_a_busy_loop_and_puts_it_back():
    pids = pressure.kswapd_pids()
    assert pids, "no kswapd thread found"
    before = {p: os.sched_getaffinity(p) for p in pids}
    assert not _spinners()
    with pytest.raises(RuntimeError, match="inside"):
        with pressure.starved_kswapd(log=None) as s:
            assert s["kswapd"] == pids
            assert all(os.sched_getaffinity(p) == {s["cpu"]} for p in pids)
            spin = _spinners()
            assert len(spin) == 1 and os.sched_getaffinity(spin[0]) == {s["cpu"]}
            raise RuntimeError("an error inside the block")
    assert {p: os.sched_getaffinity(p) for p in pids} == before
    assert not _spinners()


def test_starved_kswapd_refuses_without_rt_throttling(monkeypatch):
    real = pressure.PROC.try_read
    monkeypatch.setattr(pressure.PROC, "try_read", lambda path: "-1\n"
                        if path.endswith("sched_rt_runtime_us") else real(path))
    before = {p: os.sched_getaffinity(p) for p in pressure.kswapd_pids()}
    with pytest.raises(_restore.WorkloadError, match="throttling is off"):
        with pressure.starved_kswapd(log=None):
            pass
    assert {p: os.sched_getaffinity(p) for p in before} == before and not _spinners()


def test_vmalloc_huge_loads_and_reports_task():
    res = vmalloc_huge.trigger(count=2)
    assert res["loaded"] == 2, res["loads"][0]["error"]
    assert res["pid"] == os.getpid()
    assert all(r["tid"] == res["tid"] for r in res["loads"])
    assert "processed 300001 insns" in res["loads"][0]["verifier_log"]


def test_vmalloc_huge_reports_verifier_error():
    # A program that does not end in exit is rejected; the verifier log says why.
    r = vmalloc_huge.load_program(program=vmalloc_huge._MOV64_IMM_R0_0 * 3)
    assert not r["loaded"] and r["fd"] < 0
    assert r["errno"] != 0 and r["error"]
    assert r["verifier_log"], "no verifier log on failure"


def test_vmalloc_fallback_fragments_memory_and_puts_it_back():
    names = ("extfrag_threshold", "compact_unevictable_allowed", "compaction_proactiveness")
    thp = {f: _proc_read(f"/sys/kernel/mm/transparent_hugepage/{f}") for f in ("enabled", "defrag")}
    res = vmalloc_fallback.run(log=None)
    frag = res["fragment"]
    assert frag["thps"] > 0 and frag["kept_pages"] >= frag["thps"]
    assert res["trigger"]["loaded"] == 1
    # No free 2 MiB block where a GFP_KERNEL allocation looks, with most of
    # memory still free: fragmentation, not a shortage.  A block of the
    # high-order atomic reserve may stay free (pressure earlier on the
    # machine made one): the allocation is not given it.
    assert res["order9_takeable_during"] == 0, (res["buddyinfo_during"],
                                                res["order9_reserved_during"])
    assert res["order9_free_during"] == res["order9_reserved_during"]
    assert res["fallback_expected"]
    assert res["mem_free_during"] >= res["mem_free_before"] // 2
    # Everything put back: the settings, the THP modes, the kept pages (no
    # mlocked memory left in this process: nothing still pins a block).
    assert res["sysctls_after"] == res["sysctls_before"]
    assert [_proc_read(f"/proc/sys/vm/{n}") for n in names] == \
        [res["sysctls_before"][n] for n in names]
    assert {f: _proc_read(f"/sys/kernel/mm/transparent_hugepage/{f}") for f in thp} == thp
    assert res["vm_locked_after"] == res["vm_locked_before"] == 0


def _proc_read(path):
    with open(path) as f:
        return f.read()


def test_pinned_dentries_survive_drop_caches():
    n = 30_000
    _proc.drop_caches(2)
    base = slab_dentries.snapshot(["dentry"], settle=True)["dentry"]
    with slab_dentries.pinned_dentries(n) as held:
        assert held["fds"] == n
        cache = held["inode_cache"]
        with_files = slab_dentries.snapshot(["dentry", cache])
        _proc.drop_caches(2)
        after = slab_dentries.snapshot(["dentry", cache], settle=True)
        assert after["dentry"] - base >= 0.9 * n
        assert after[cache] >= with_files[cache] - 0.1 * n
    assert not os.path.exists(held["dir"])


def test_negative_dentries_freed_by_drop_caches():
    n = 30_000
    with slab_dentries.negative_dentries(n) as neg:
        assert neg["misses"] == n
        held = slab_dentries.snapshot(["dentry"])["dentry"]
        _proc.drop_caches(2)
        after = slab_dentries.snapshot(["dentry"], settle=True)["dentry"]
    assert held - after >= 0.9 * n


def test_zram_caches_created_and_device_removed():
    with zram_lifecycle.zram_device() as z:
        n, names = z["n"], z["caches"]
        assert os.path.exists("/sys/block/zram%d" % n)
        # Aliases of earlier devices with the same number may linger (see
        # KERNEL-FACTS: alias symlinks outlive kmem_cache_destroy), so check
        # that after disksize each name is a live cache or resolves to one.
        zram_lifecycle.set_disksize(n, "64M")
        during = zram_lifecycle.slab_entries(names)
        assert all(v is not None and "dangling" not in v for v in during.values()), during
        assert all(os.path.isdir(os.path.join("/sys/kernel/slab", c)) for c in names)
        stat = zram_lifecycle.write_data(n, 4)
        assert stat["compr_data_size"] > 0
    assert not os.path.exists("/sys/block/zram%d" % n)


def test_anon_pressure_swaps_to_zram():
    res = anon_pressure.run(over_mib=768, log=None)
    assert res["child_status"] == 0
    assert res["vmstat"]["pswpout"] > 0
    assert res["vmstat"]["oom_kill"] == 0
    assert res["swaps_after"] == res["swaps_before"]


def test_slab_churn_and_loop():
    res = slab_churn.churn(seconds=0.5, batch=500)
    assert res["created"] >= 500 and res["missing_stats"] == res["created"]
    loop = slab_churn.syscall_loop(20_000)
    assert loop["iterations"] == 20_000 and loop["elapsed_s"] > 0


def _spawn(script, *args):
    """Run a workload as its own process, inside this test's machine lock."""
    env, fds = _restore.lock_for_child()
    return subprocess.Popen([PY, "-m", f"trace_reclaim.examples.{script[:-3]}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env, pass_fds=fds)


def _wait_for(cond, timeout=20.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_pressure_restores_on_signal(machine_state, sig):
    hp0 = machine_state[0]
    p = _spawn("pressure.py", "--seconds", "30", "--mib", "1000000")
    try:
        assert _wait_for(lambda: PROC.nr_hugepages() > hp0), "ballast never appeared"
        time.sleep(0.5)
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == (130 if sig == signal.SIGINT else 128 + sig), err
    assert "Traceback" not in err and err.startswith("error:")
    assert PROC.nr_hugepages() == hp0


def test_anon_pressure_restores_on_sigterm(machine_state):
    hp0, zram0, swaps0 = machine_state
    p = _spawn("anon_pressure.py")
    try:
        assert _wait_for(lambda: len(anon_pressure.swaps()) > len(swaps0)), "swap never appeared"
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 128 + signal.SIGTERM, err
    assert PROC.nr_hugepages() == hp0
    assert zram_lifecycle.zram_devices() == zram0
    assert anon_pressure.swaps() == swaps0


def _pinned_dirs():
    return {d for d in os.listdir("/var/tmp") if d.startswith("trace-reclaim-pinned-")}


def test_pinned_dentries_restores_on_sigint(machine_state):
    # Only the directory this run makes is ours: another program's (a killed
    # run's) may already be there, and is not this test's to judge.
    before = _pinned_dirs()
    p = _spawn("slab_dentries.py", "--mode", "pinned", "-n", "200000")
    try:
        assert _wait_for(lambda: _pinned_dirs() - before)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    assert not _pinned_dirs() - before


def test_cli_error_format():
    p = subprocess.run([PY, "-m", "trace_reclaim.examples.slab_churn",
                        "--dir", "/nonexistent/dir"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 1
    assert p.stdout == ""
    assert p.stderr.startswith("error: ") and "\nhint: " in p.stderr
    assert "Traceback" not in p.stderr


def test_starved_kswapd_refuses_where_kswapd_cannot_be_pinned(monkeypatch):
    """A kernel that refuses kswapd's affinity: an error and a hint, nothing left changed."""
    pids = pressure.kswapd_pids()
    before = {p: os.sched_getaffinity(p) for p in pids}
    real = os.sched_setaffinity

    def refuse_kswapd(pid, cpus):
        if pid in pids and set(cpus) != before[pid]:
            raise OSError(22, "Invalid argument")
        real(pid, cpus)
    monkeypatch.setattr(os, "sched_setaffinity", refuse_kswapd)
    with pytest.raises(_restore.WorkloadError, match="cannot pin kswapd") as e:
        with pressure.starved_kswapd(log=None):
            pass
    assert e.value.hint
    monkeypatch.undo()
    assert {p: os.sched_getaffinity(p) for p in pids} == before and not _spinners()


def _traps():
    """Our reclaim traps still running (pressure._TRAP children)."""
    out = subprocess.run(["pgrep", "-f", "perf_event_open"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split() if int(p) != os.getpid()]


def test_reclaim_trap_gives_up_on_a_task_that_never_reclaims():
    """A sleeping task never enters direct reclaim: the trap arms (a perf
    event on it), nothing springs it, and at the timeout the task's CPUs, RT
    throttling and the trap are as before.  Where the CPU's fair server
    (6.12 on) cannot be read (debugfs locked down, as on this host), it is
    refused before anything changes: it could not be switched off, so the
    task would not stay frozen."""
    rt = _proc_read("/proc/sys/kernel/sched_rt_runtime_us")
    cpus = sorted(os.sched_getaffinity(0))
    fair = pressure.FAIR_SERVER % cpus[-1]
    try:
        readable = not os.path.exists(fair) or bool(_proc_read(fair))
    except PermissionError:
        readable = False
    task = subprocess.Popen(["sleep", "60"])
    try:
        os.sched_setaffinity(task.pid, {cpus[0]})
        why = "was not held in direct reclaim" if readable else "cannot read CPU .* fair server"
        with pytest.raises(_restore.WorkloadError, match=why) as e:
            with pressure.frozen_in_direct_reclaim(task.pid, cpus[-1], timeout=3, log=None):
                pass
        assert e.value.hint
        assert os.sched_getaffinity(task.pid) == {cpus[0]}
        assert _proc_read("/proc/sys/kernel/sched_rt_runtime_us") == rt
        assert not _traps()
    finally:
        task.kill()
        task.wait()


def test_reclaim_trap_refuses_an_unpinned_task_or_throttling_off(monkeypatch):
    cpus = sorted(os.sched_getaffinity(0))
    task = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(_restore.WorkloadError, match="must be pinned to one CPU"):
            with pressure.frozen_in_direct_reclaim(task.pid, cpus[-1], timeout=3, log=None):
                pass
        os.sched_setaffinity(task.pid, {cpus[-1]})   # on the CPU to freeze: refused too
        with pytest.raises(_restore.WorkloadError, match="other than"):
            with pressure.frozen_in_direct_reclaim(task.pid, cpus[-1], timeout=3, log=None):
                pass
        real = pressure.PROC.value
        monkeypatch.setattr(pressure.PROC, "value", lambda path: "-1"
                            if path.endswith("sched_rt_runtime_us") else real(path))
        with pytest.raises(_restore.WorkloadError, match="already off"):
            with pressure.frozen_in_direct_reclaim(task.pid, cpus[0], timeout=3, log=None):
                pass
        assert not _traps()
    finally:
        task.kill()
        task.wait()
