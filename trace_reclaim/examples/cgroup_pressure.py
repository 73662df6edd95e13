#!/usr/bin/python3
"""Memory pressure inside one memory cgroup: its own limit, not the machine's.

Create our cgroup (``trace-reclaim-test-<pid>-pressure``, examples/_cgroup.py)
with a hard limit (v1 memory.limit_in_bytes, v2 memory.max) and optionally
memory.high (v2), then run a child inside it that streams a fresh sparse
file through the page cache (``--mode file``, the default: only clean page
cache, so safe) or touches anonymous memory (``--mode anon``; with
``--zram`` a zram swap device takes what the limit pushes out, without it
the child is OOM-killed inside the cgroup when it exceeds the limit).
The cgroup reclaims its own pages: ``mm_vmscan_memcg_reclaim_begin/end``,
v1 ``memory.failcnt``, v2 ``memory.events`` max/high, never allocstall_*.

The result has the cgroup's own counters before and after (read before the
cgroup is removed), the child's pid and exit status, bytes streamed, and the
/proc/vmstat delta.  Undo on every exit path: kill the child, remove the
cgroup, delete the file, swapoff and remove zram.
"""

import argparse
import contextlib
import json
import os
import sys
import time

from trace_reclaim import cgroupfs
from trace_reclaim.examples import _cgroup, _restore, pressure
from trace_reclaim.examples._proc import RECLAIM_COUNTERS, MiB
from trace_reclaim.procfs import ProcFS, vmstat_delta

__all__ = ["run", "counter_delta", "main", "CHILD_COMM"]

PROC = ProcFS()
DEFAULT_LIMIT_MIB = 64
DEFAULT_MIB = 512
#: The child's comm (PR_SET_NAME), so its records are told from the parent's.
CHILD_COMM = "trace-cg-child"
_SET_COMM = "import ctypes; ctypes.CDLL(None).prctl(15, b'%s', 0, 0, 0)\n" % CHILD_COMM

# The child: stream (file) or touch (anon) ``mib`` MiB, then print what it did.
_FILE_CHILD = _SET_COMM + """
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
done = 0
for i in range(mib):
    done += len(os.pread(fd, 1 << 20, i << 20))
print(done, flush=True)
"""
_ANON_CHILD = _SET_COMM + """
import mmap, os, sys
mib = int(sys.argv[1])
m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for off in range(0, mib << 20, 4096):
    m[off:off + 64] = os.urandom(64)
print(mib << 20, flush=True)
"""


def counter_delta(before, after):
    """The change of a cgroup's counters: failcnt, memory.events, memory.stat, PSI totals."""
    out = {}
    if "failcnt" in before and "failcnt" in after:
        out["failcnt"] = after["failcnt"] - before["failcnt"]
    for key in ("events", "events_local", "stat"):
        a, b = before.get(key) or {}, after.get(key) or {}
        out[key] = {k: b[k] - a[k] for k in sorted(b) if k in a}
    pa, pb = before.get("pressure") or {}, after.get("pressure") or {}
    if pb:
        out["pressure_total_us"] = {k: int(pb[k].get("total", 0)) - int(pa.get(k, {}).get(
            "total", 0)) for k in pb}
    return out


@contextlib.contextmanager
def _zram_swap(log):
    """A zram swap device for the block (machine-wide: under the machine lock)."""
    from trace_reclaim.examples import anon_pressure, zram_lifecycle

    with _restore.machine_lock(), zram_lifecycle.zram_device(1 << 30) as z, \
            _restore.Restorer() as r:
        dev = z["dev"]
        anon_pressure._run_tool("mkswap", dev)
        r.undo("swapoff %s" % dev, anon_pressure._run_tool, "swapoff", dev)
        anon_pressure._run_tool("swapon", "-p", "32767", dev)
        if log:
            log("zram swap on %s" % dev)
        yield z


def run(limit_mib=DEFAULT_LIMIT_MIB, mib=DEFAULT_MIB, mode="file", high_mib=None,
        zram=False, version=None, enable_v2_memory=False, directory=None, timeout=120.0,
        name="pressure", hold_s=0.0, log=print):
    """Run the workload; return a result dict (see the module docstring).

    ``hold_s`` keeps the (idle) cgroup that long after the child exits, so a
    tracer sampling once per interval reads its final counters.
    """
    _restore.require_root()
    if mode not in ("file", "anon"):
        raise _restore.WorkloadError("unknown mode %r" % mode, "use --mode file or anon")
    if zram and mode != "anon":
        raise _restore.WorkloadError("--zram needs --mode anon", "add --mode anon")
    with _restore.signals_to_exceptions(), contextlib.ExitStack() as stack:
        if zram:
            stack.enter_context(_zram_swap(log))
        path = None
        if mode == "file":
            path = stack.enter_context(pressure.sparse_file(max(mib, 1) * MiB + MiB,
                                                            directory))
        cg = stack.enter_context(_cgroup.memory_cgroup(
            name, version=version, limit_bytes=limit_mib * MiB,
            high_bytes=high_mib * MiB if high_mib else None,
            enable_v2_memory=enable_v2_memory, log=log))
        if zram:
            cg.set_swappiness(100)
        if log:
            log("cgroup v%d %s: limit %d MiB%s; child %s %d MiB"
                % (cg.version, cg.path, limit_mib,
                   ", memory.high %d MiB" % high_mib if high_mib else "",
                   "streams" if mode == "file" else "touches", mib))
        v0 = PROC.vmstat()
        c0 = cg.counters()
        t0 = time.monotonic()
        argv = [sys.executable, "-c", _FILE_CHILD, path, str(mib)] if mode == "file" else \
            [sys.executable, "-c", _ANON_CHILD, str(mib)]
        import subprocess

        child = cg.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise _restore.WorkloadError("the child did not finish in %.0f s" % timeout,
                                         "use a smaller --mib or a larger --limit-mib") from None
        elapsed = time.monotonic() - t0
        c1 = cg.counters()
        v1 = PROC.vmstat()
        time.sleep(hold_s)
        res = {
            "cgroup": {"path": cg.path, "rel": cg.rel, "id": cg.id, "version": cg.version,
                       "name": cgroupfs.classify(cg.rel)[1]},
            "mode": mode, "limit_bytes": limit_mib * MiB,
            "high_bytes": high_mib * MiB if high_mib else None, "zram": zram,
            "child_pid": child.pid, "child_status": child.returncode,
            "bytes": int(out.strip() or 0) if child.returncode == 0 else 0,
            "child_stderr": err.strip()[-500:],
            "elapsed_s": elapsed, "counters_before": c0, "counters_after": c1,
            "delta": counter_delta(c0, c1), "vmstat": vmstat_delta(v0, v1, RECLAIM_COUNTERS),
        }
    res["cgroup_removed"] = not os.path.exists(res["cgroup"]["path"])
    if log:
        d = res["delta"]
        own = ("failcnt +%d" % d["failcnt"]) if "failcnt" in d else \
            "memory.events " + " ".join("%s +%d" % kv for kv in d["events"].items() if kv[1])
        log("child exit %d after %.1f s, %d MiB; own counters: %s; global allocstall +%d"
            % (res["child_status"], elapsed, res["bytes"] // MiB, own,
               sum(v for k, v in res["vmstat"].items() if k.startswith("allocstall_"))))
        log("restored: cgroup removed %s" % res["cgroup_removed"])
    return res


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Memory pressure inside a memory cgroup of our own (its limit, not the "
                    "machine's).",
        epilog="examples:\n"
               "  cgroup_pressure.py                          # 64 MiB limit, stream 512 MiB\n"
               "  cgroup_pressure.py --limit-mib 32 --mib 256\n"
               "  cgroup_pressure.py --mode anon --mib 128 --zram   # anon, swapped to zram\n"
               "  cgroup_pressure.py --high-mib 48           # v2: memory.high below max\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit-mib", type=int, default=DEFAULT_LIMIT_MIB,
                   help="hard limit (default %(default)s)")
    p.add_argument("--high-mib", type=int, default=None, help="memory.high (cgroup v2 only)")
    p.add_argument("--mib", type=int, default=DEFAULT_MIB,
                   help="MiB the child streams or touches (default %(default)s)")
    p.add_argument("--mode", choices=("file", "anon"), default="file")
    p.add_argument("--zram", action="store_true", help="anon mode: swap to a zram device")
    p.add_argument("--cgroup-version", type=int, choices=(1, 2), default=None,
                   help="hierarchy to use (default: the one with the memory controller)")
    p.add_argument("--enable-v2-memory", action="store_true",
                   help="add +memory to the cgroup2 root's subtree_control if missing (VM "
                        "guests only; undone at exit)")
    p.add_argument("--dir", default=None, help="directory for the sparse file (default /var/tmp)")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--hold", type=float, default=0.0,
                   help="keep the idle cgroup this many seconds after the child exits")
    _restore.common_args(p)
    args = p.parse_args(argv)

    def body():
        log = _restore.progress_log(args)
        res = run(args.limit_mib, args.mib, args.mode, args.high_mib, args.zram,
                  args.cgroup_version, args.enable_v2_memory, args.dir, args.timeout,
                  hold_s=args.hold, log=log)
        if args.json:
            print(json.dumps(res))
        if res["child_status"] != 0 and not (args.mode == "anon" and not args.zram):
            raise _restore.WorkloadError("the child exited with %d: %s"
                                         % (res["child_status"], res["child_stderr"]),
                                         "check dmesg; use a larger --limit-mib")
    return _restore.run_cli(body, args.traceback)


if __name__ == "__main__":
    sys.exit(main())
