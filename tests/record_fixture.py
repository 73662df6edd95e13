"""Record a replay fixture: trace-reclaim record around a real workload, on this kernel.

Run from the checkout's root (root and bcc needed, like the live tests)::

    python -m tests.record_fixture NAME                  # a fixture in RECIPES, made as before
    python -m tests.record_fixture NAME [options] -- MODULE [ARGS...]
    python -m tests.record_fixture NAME [options] --scenario SCENARIO

``MODULE`` is any workload in trace_reclaim/examples/ (``pressure``,
``vmalloc_huge``, ...); it runs through its own ``main(ARGS + ["-j"])`` in a
child forked after the recorder attached: delay accounting covers only tasks
forked while it is on, and the child inherits this process's hold on the
machine lock (the lock is re-entrant per thread, and a fork copies the
holder's state), so a workload that takes the lock itself does not wait for
us.  A ``SCENARIO`` (SCENARIOS below) drives the examples' building blocks
in-process when the recorder must stop in the middle of a workload (pinned
dentries are judged while still held) or phases must be an interval apart
(kmem_cache lifecycle is seen by comparing /sys/kernel/slab per interval).

The whole recording runs under tests/livetools.machine_lock, the lock every
live test and workload takes, so it never records another helper's workload.
A recording is kept as tests/fixtures/NAME.trc only when the fixture's
checks in tests/replay/test_golden.py pass on it (the trace agrees with
/proc/vmstat, and ``MEANING[NAME]``) and it is at most ``max_bytes``; with
``--tries N`` a run whose kernel did not do the thing (e.g. vmalloc_fallback
when an order-9 block survived) is recorded again, up to N times.  A rejected
recording is left as $TMPDIR/NAME.rejected.trc for a look.

Afterwards regenerate the golden reports and review them in the diff::

    python -m tests.regen_golden NAME
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

from tests import FIXTURES
from tests.livetools import Trace, machine_lock


# -- the recorder ---------------------------------------------------------------
class Recorder:
    """``trace-reclaim record`` as a subprocess that a workload starts and stops."""

    def __init__(self, directory: str, args: List[str]) -> None:
        self.trace = Trace(directory, args=args)
        self.running = False

    @property
    def path(self) -> str:
        return self.trace.path

    def start(self) -> None:
        self.trace.__enter__()
        self.running = True

    def stop(self) -> None:
        """Stop it with SIGINT (a clean end) and replay the recording."""
        if self.running:
            self.running = False
            self.trace.__exit__(None, None, None)

    def kill(self) -> None:
        p = self.trace.proc
        if self.running and p is not None and p.poll() is None:
            p.kill()
            p.wait()
        self.running = False


def run_example(module: str, argv: List[str]) -> Dict[str, Any]:
    """Run ``trace_reclaim.examples.MODULE.main(argv + ["-j"])`` in a forked child.

    Return its JSON result.  The child's stderr (the workload's progress and
    errors) goes to ours; a non-zero exit raises RuntimeError.
    """
    mod = importlib.import_module(f"trace_reclaim.examples.{module}")
    with tempfile.TemporaryFile(mode="w+") as out:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the workload: never returns into our code
            rc = 1
            try:
                os.dup2(out.fileno(), 1)
                sys.stdout = os.fdopen(1, "w", closefd=False)
                rc = mod.main(list(argv) + ["-j"]) or 0
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: B036 -- report, then leave the child
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc)
        try:
            _, status = os.waitpid(pid, 0)
        except KeyboardInterrupt:  # the child got the SIGINT too: let it restore
            os.waitpid(pid, 0)
            raise
        rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if rc != 0:
        raise RuntimeError(f"workload {module} {' '.join(argv)} exited {rc}")
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


# -- scenarios: workloads the recorder must stop or pace ------------------------
N_FILES = 20_000


def scenario_pinned_dentries(rec: Recorder, files: int = N_FILES) -> Dict[str, Any]:
    """Hold ``files`` files open, drop_caches(2) while held, stop the trace still held.

    As tests/live/test_slab_live.py does: dentries and inodes the shrinker
    cannot free, so the report flags the filesystem's inode cache (and,
    without the walker below, dentry) as never draining: pinned.

    Seen on the recording machine: something walks every /proc/PID/fd about
    every 3 s, instantiating a proc inode and a dentry per open fd.  Those
    dentries are freeable: a drop_caches frees them and the next walk makes
    them again, so the dentry verdict of a run depends on where the walks
    fall; proc_inode_cache can even look as if it never drains.  The inode
    cache's verdict is not blurred (the walk makes no ext4 inodes).
    """
    from trace_reclaim.examples import _proc, slab_dentries

    _proc.drop_caches(2)  # start from few unused dentries
    rec.start()
    t0 = time.monotonic()
    with slab_dentries.pinned_dentries(files) as p:
        opened_s = time.monotonic() - t0
        time.sleep(1.2)           # samples with the files held
        _proc.drop_caches(2)
        time.sleep(1.5)           # RCU frees, then settled samples
        rec.stop()                # before the holders let go
    return {"files": p["fds"], "holders": p["holders"], "inode_cache": p["inode_cache"],
            "open_s": round(opened_s, 2)}


def scenario_negative_dentries(rec: Recorder, files: int = N_FILES) -> Dict[str, Any]:
    """``stat`` ``files`` missing names, then drop_caches(2): all freeable, nothing flagged."""
    from trace_reclaim.examples import _proc, slab_dentries

    _proc.drop_caches(2)
    rec.start()
    with slab_dentries.negative_dentries(files) as p:
        time.sleep(1.2)
        _proc.drop_caches(2)
        time.sleep(1.5)
    time.sleep(0.6)
    rec.stop()
    return {"misses": p["misses"], "inode_cache": p["inode_cache"]}


def scenario_zram_lifecycle(rec: Recorder, disksize: str = "64M", mib: int = 8,
                            ) -> Dict[str, Any]:
    """A zram device's zsmalloc caches created, used and destroyed, phases an interval apart.

    The lifecycle is seen by comparing /sys/kernel/slab each interval (no
    kmem_cache_create/destroy tracepoint), so each phase lasts longer than one.
    """
    from trace_reclaim.examples import zram_lifecycle

    rec.start()
    with zram_lifecycle.zram_device() as z:
        n = z["n"]
        time.sleep(0.8)
        zram_lifecycle.set_disksize(n, disksize)
        time.sleep(0.8)
        stat = zram_lifecycle.write_data(n, mib)
        time.sleep(0.8)
        zram_lifecycle.reset(n)
        time.sleep(0.8)
    time.sleep(0.6)
    rec.stop()
    return {"n": n, "caches": z["caches"], "mm_stat": stat}


def scenario_compaction(rec: Recorder, runs: int = 2) -> Dict[str, Any]:
    """Compact every zone through /proc/sys/vm/compact_memory, ``runs`` times.

    compact_memory runs compact_zone() on each populated zone of each node in
    the writing task (mm_compaction_begin/end fire per zone) and allocates
    nothing, so no reclaim, no OOM; it changes no setting, so nothing to put
    back.  The page cache is filled first (a file read once) so the runs have
    pages to migrate.
    """
    from trace_reclaim.examples import _proc

    before = _proc.vmstat()
    path = tempfile.mktemp(prefix="trace-reclaim-compact-", dir="/var/tmp")
    try:
        with open(path, "wb") as f:   # 256 MiB of page cache, scattered by later frees
            for _ in range(256):
                f.write(os.urandom(1 << 20))
        rec.start()
        time.sleep(0.6)
        for _ in range(runs):
            _proc.write_value("/proc/sys/vm/compact_memory", 1)
            time.sleep(0.6)
        rec.stop()
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    after = _proc.vmstat()
    return {"runs": runs, "vmstat_delta": {k: after[k] - before.get(k, 0) for k in after
                                           if k.startswith("compact_")}}


def scenario_cgroup_pressure(rec: Recorder, mib: int = 300, limit_mib: int = 48,
                             seconds: float = 4.0) -> Dict[str, Any]:
    """A cgroup of our own streams a file past its limit, then the machine is short.

    First memcg reclaim: the cgroup (examples/cgroup_pressure.py, on the
    hierarchy with the memory controller) reclaims its own pages at its
    limit, which no /proc/vmstat counter counts; it is held a moment so a
    sample reads its counters.  Then global pressure (examples/pressure.py:
    a hugetlb ballast and a page-cache stream) until the kernel counted
    direct reclaim, stalling tasks of another cgroup (this one's).  Both
    workloads put back what they changed.
    """
    from trace_reclaim.examples import cgroup_pressure, pressure

    rec.start()
    time.sleep(0.6)
    cg = cgroup_pressure.run(mib=mib, limit_mib=limit_mib, hold_s=1.5, log=None)
    glob = pressure.run(seconds=seconds, until_direct_reclaim=True, log=None)
    time.sleep(1.0)
    rec.stop()
    return {"cgroup": cg["cgroup"], "delta": cg["delta"],
            "direct_reclaims": glob["direct_reclaims"]}


SCENARIOS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "cgroup_pressure": scenario_cgroup_pressure,
    "pinned_dentries": scenario_pinned_dentries,
    "negative_dentries": scenario_negative_dentries,
    "zram_lifecycle": scenario_zram_lifecycle,
    "compaction": scenario_compaction,
}


# -- how each checked-in fixture was made ---------------------------------------
@dataclasses.dataclass(frozen=True)
class Recipe:
    """One fixture: recorder options plus an examples/ workload or a scenario."""

    example: Optional[List[str]] = None     # MODULE ARGS...
    scenario: Optional[str] = None
    interval: str = "0.5"
    delayacct: bool = False
    settle: float = 2.0                     # after an example: let kswapd sleep in the trace
    tries: int = 1
    drop_caches: int = 0                    # echo N > drop_caches before the recorder starts
    max_bytes: int = 512 << 10              # record again when bigger (fixtures stay small)


RECIPES: Dict[str, Recipe] = {
    "pressure": Recipe(example=["pressure", "--seconds", "3"]),
    "pressure_delayacct": Recipe(example=["pressure", "--seconds", "3"], delayacct=True),
    "vmalloc_huge": Recipe(example=["vmalloc_huge", "--count", "1"], settle=0.6),
    # The kernel still finds an order-9 block about one run in eight, and how
    # long kswapd shrinks slabs under the ballast varies (1,700 to 10,000
    # shrink_slab records, 0.4 to 2 MB): record again until both are right.
    "vmalloc_fallback": Recipe(example=["vmalloc_fallback"], settle=1.0, tries=5),
    # Other work on the machine (dentries and inodes made and freed by other
    # tests) can blur a slab run: record again until the checks pass.
    "slab_pinned": Recipe(scenario="pinned_dentries", tries=4),
    "slab_negative": Recipe(scenario="negative_dentries", tries=4),
    "zram_lifecycle": Recipe(scenario="zram_lifecycle"),
    "compaction": Recipe(scenario="compaction"),
    "cgroup_pressure": Recipe(scenario="cgroup_pressure", tries=3),
}


def record_once(name: str, recipe: Recipe, directory: str) -> Dict[str, Any]:
    """Record ``recipe`` once into ``directory``; return {"path", "workload", "report"}."""
    # The recording's header names what ran (the text report shows it).
    if recipe.scenario:
        workload = {"name": recipe.scenario, "params": {}, "fixture": name}
    else:
        assert recipe.example
        workload = {"name": recipe.example[0], "params": {"args": recipe.example[1:]},
                    "fixture": name}
    args = ["-i", recipe.interval, "--workload", json.dumps(workload)]
    if recipe.delayacct:
        args.append("--delayacct")
    rec = Recorder(directory, args)
    if recipe.drop_caches:
        from trace_reclaim.examples import _proc

        _proc.drop_caches(recipe.drop_caches)
    try:
        if recipe.scenario:
            result = SCENARIOS[recipe.scenario](rec)
        else:
            assert recipe.example
            rec.start()
            result = run_example(recipe.example[0], recipe.example[1:])
            time.sleep(recipe.settle)
            rec.stop()
    finally:
        rec.kill()
    return {"path": rec.path, "workload": result, "report": rec.trace.report}


def check_failures(name: str, path: str, report: Dict[str, Any], text: str) -> Optional[str]:
    """What tests/replay/test_golden.py's checks for ``name`` say about a recording, or None."""
    from tests.replay.test_golden import check_fixture

    try:
        check_fixture(name, report, text, path)
    except AssertionError as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return f"{tb.name}:{tb.lineno} {tb.line}: {e}"[:2000]
    return None


def _text_report(path: str) -> str:
    from tests.livetools import run_cli

    r = run_cli(["report", path])
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return r.stdout


def _summary(workload: Dict[str, Any]) -> Dict[str, Any]:
    """The workload result without its bulky parts (buddyinfo, verifier logs)."""
    drop = ("buddyinfo_before", "buddyinfo_during", "buddyinfo_after_trigger", "loads",
            "verifier_log", "phases", "snapshots")
    out: Dict[str, Any] = {}
    for k, v in workload.items():
        if k in drop:
            continue
        out[k] = _summary(v) if isinstance(v, dict) else v
    return out


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    example = None
    if "--" in argv:
        i = argv.index("--")
        argv, example = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(
        prog="python -m tests.record_fixture",
        description="Record tests/fixtures/NAME.trc around a real workload (root).",
        epilog="fixtures: " + ", ".join(RECIPES) + "\nscenarios: " + ", ".join(SCENARIOS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="fixture name: tests/fixtures/NAME.trc")
    p.add_argument("--scenario", choices=sorted(SCENARIOS))
    p.add_argument("--delayacct", action="store_true", default=None)
    p.add_argument("-i", "--interval", default=None, help="recorder interval (default 0.5)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds recorded after an example workload ends (default 2)")
    p.add_argument("--tries", type=int, default=None,
                   help="record again while the fixture's checks fail (default 1)")
    p.add_argument("--dir", default=FIXTURES, help="where NAME.trc goes (default tests/fixtures)")
    a = p.parse_args(argv)
    if example is not None or a.scenario:
        if example is not None and a.scenario:
            p.error("give either -- MODULE ARGS or --scenario, not both")
        if example == []:
            p.error("-- needs a workload MODULE from trace_reclaim/examples")
        recipe = Recipe(example=example, scenario=a.scenario)
    elif a.name in RECIPES:
        recipe = RECIPES[a.name]
    else:
        p.error(f"{a.name} has no recipe: give -- MODULE ARGS or --scenario")
    over = {k: v for k, v in (("interval", a.interval), ("delayacct", a.delayacct),
                              ("settle", a.settle), ("tries", a.tries)) if v is not None}
    recipe = dataclasses.replace(recipe, **over)

    out = os.path.join(a.dir, a.name + ".trc")
    tmp = tempfile.mkdtemp(prefix=".record-", dir=a.dir)
    try:
        with machine_lock():
            for attempt in range(1, recipe.tries + 1):
                t0 = time.monotonic()
                got = record_once(a.name, recipe, tmp)
                took = time.monotonic() - t0
                text = _text_report(got["path"])
                why = check_failures(a.name, got["path"], got["report"], text)
                size = os.path.getsize(got["path"])
                if why is None and size > recipe.max_bytes:
                    why = f"{size} bytes, more than {recipe.max_bytes}"
                info = {"recording": out, "attempt": attempt, "seconds": round(took, 1),
                        "bytes": size,
                        "workload": _summary(got["workload"])}
                if why is None:
                    os.replace(got["path"], out)
                    print(json.dumps(info, default=str))
                    return 0
                rejected = os.path.join(tempfile.gettempdir(), a.name + ".rejected.trc")
                os.replace(got["path"], rejected)
                print(json.dumps({**info, "recording": rejected, "rejected": why},
                                 default=str), file=sys.stderr)
        print(f"error: no recording of {a.name} passed its checks in {recipe.tries} tries",
              file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
