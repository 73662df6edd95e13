#!/usr/bin/python3
"""Make real OOM kills, safely: a task outgrows the memory limit of a cgroup of ours.

The machine never runs short: the limit (default 64 MiB) is tiny next to free
memory.  Inside a memory cgroup of our own (``examples/_cgroup.py``) a task
named ``oom-victim`` allocates and touches anonymous memory 1 MiB at a time up
to 4x the limit.  Swap is kept out of the cgroup (v1 memory.swappiness 0, v2
memory.swap.max 0), so memcg reclaim finds nothing to reclaim, try_charge()
gives up and mem_cgroup_out_of_memory() kills the task, the only one inside
(mm/memcontrol.c).  Each kill moves /proc/vmstat ``oom_kill`` and the
cgroup's own ``oom_kill`` (v1 memory.oom_control, v2 memory.events) by one
(mm/oom_kill.c __oom_kill_process()).  The cgroup is removed on every exit path.
"""

import argparse
import json
import os
import signal
import sys
import time

from trace_reclaim import cgroupfs
from trace_reclaim.examples import _cgroup, _restore
from trace_reclaim.examples._proc import MiB
from trace_reclaim.procfs import ProcFS

__all__ = ["VICTIM_COMM", "run", "main"]

VICTIM_COMM = "oom-victim"
DEFAULT_LIMIT_MIB = 64
PROC = ProcFS()

# The task inside: name itself, then touch anonymous memory until killed.
_VICTIM = """
import sys
with open("/proc/self/comm", "w") as f:
    f.write(%r)
held = []
for _ in range(int(sys.argv[1])):
    held.append(bytearray(1 << 20))   # zero-filled: every page is touched
sys.exit(3)                           # not killed: the limit did not hold
""" % VICTIM_COMM


def oom_kills_of(cg):
    """The cgroup's own OOM-kill count (v1 memory.oom_control, v2 memory.events)."""
    if cg.version == cgroupfs.V1:
        with open(os.path.join(cg.path, "memory.oom_control")) as f:
            fields = dict(line.split() for line in f if line.strip())
        return int(fields.get("oom_kill", 0))
    with open(os.path.join(cg.path, "memory.events")) as f:
        return int(cgroupfs.parse_flat_keyed(f.read()).get("oom_kill", 0))


def _keep_swap_out(cg):
    if cg.version == cgroupfs.V1:
        cg.set_swappiness(0)
    elif os.path.exists(os.path.join(cg.path, "memory.swap.max")):
        cg._write("memory.swap.max", 0)


def run(kills=1, limit_mib=DEFAULT_LIMIT_MIB, timeout=60.0, log=print):
    """Make ``kills`` OOM kills in a cgroup of ours; return what the kernel counted.

    Result: {"victims": [{"pid", "signal"}], "cgroup": path as /proc/PID/cgroup
    shows it, "cgroup_id", "version", "limit_bytes", "vmstat_oom_kill",
    "cgroup_oom_kill"} (the last two are deltas over the run).
    """
    _restore.require_root()
    victims = []
    # Under the machine lock: other workloads' checks count /proc/vmstat's oom_kill.
    with _restore.machine_lock(), _restore.signals_to_exceptions(), \
            _cgroup.memory_cgroup("oom", limit_bytes=limit_mib * MiB, log=log) as cg:
        _keep_swap_out(cg)
        vm0, cg0 = PROC.vmstat().get("oom_kill", 0), oom_kills_of(cg)
        for _ in range(kills):
            p = cg.popen([sys.executable, "-c", _VICTIM, str(4 * limit_mib)])
            try:
                rc = p.wait(timeout=timeout)
            except BaseException:
                p.kill()
                p.wait()
                raise
            if rc != -signal.SIGKILL:
                raise _restore.WorkloadError(
                    "the task in %s ended with status %s, not an OOM kill" % (cg.rel, rc),
                    "check the cgroup's limit and that no swap is available to it")
            victims.append({"pid": p.pid, "signal": -rc})
            if log:
                log("pid %d (%s) OOM-killed in %s" % (p.pid, VICTIM_COMM, cg.rel))
        # The counters move inside __oom_kill_process(), before the SIGKILL is
        # delivered, so they are final once the task has been reaped.
        time.sleep(0.05)
        result = {"victims": victims, "cgroup": cg.rel, "cgroup_id": cg.id,
                  "version": cg.version, "limit_bytes": limit_mib * MiB,
                  "vmstat_oom_kill": PROC.vmstat().get("oom_kill", 0) - vm0,
                  "cgroup_oom_kill": oom_kills_of(cg) - cg0}
    return result


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Real OOM kills inside a small memory cgroup of our own.",
        epilog="examples:\n  oom_kill.py\n  oom_kill.py --kills 3 --limit-mib 32\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=1, help="OOM kills to make (default 1)")
    p.add_argument("--limit-mib", type=int, default=DEFAULT_LIMIT_MIB,
                   help="the cgroup's memory limit (default %(default)s MiB)")
    _restore.common_args(p)
    args = p.parse_args(argv)

    def body():
        res = run(args.kills, args.limit_mib, log=_restore.progress_log(args))
        if args.json:
            print(json.dumps(res))
        else:
            print("%d OOM kills in %s: /proc/vmstat oom_kill +%d, the cgroup's oom_kill +%d"
                  % (len(res["victims"]), res["cgroup"], res["vmstat_oom_kill"],
                     res["cgroup_oom_kill"]))
    return _restore.run_cli(body, args.traceback)


if __name__ == "__main__":
    sys.exit(main())
