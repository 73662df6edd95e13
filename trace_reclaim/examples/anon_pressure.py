#!/usr/bin/python3
"""Anonymous-memory pressure that swaps to zram: reclaim of anon pages, for real.

Make the machine small with a hugetlb ballast (as pressure.py), add a zram
swap device with high priority, then have a child process touch more
anonymous memory than is available, so reclaim swaps its pages out to zram
(``pswpout``, ``mm_vmscan_lru_shrink_inactive`` with anon pages).  Pages are
written so they compress well (64 random bytes, rest zero: not same-filled,
so each goes through zsmalloc) and zram needs little RAM.  The child has
oom_score_adj 1000: if anything ever has to be killed, it is the child.
Undo, on every exit path, in order: kill the child, swapoff, reset and
hot-remove the zram device, restore nr_hugepages.
"""

import argparse
import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import time

from trace_reclaim.examples import _restore, pressure, zram_lifecycle
from trace_reclaim.examples._proc import RECLAIM_COUNTERS, GiB, MiB
from trace_reclaim.procfs import ProcFS, vmstat_delta

__all__ = ["run", "swaps", "main"]

DEFAULT_DISKSIZE = 4 * GiB
DEFAULT_OVER_MIB = 1024
PAGE = 4096
PROC = ProcFS()  # the live system


def swaps():
    """Return /proc/swaps as [{"filename", "type", "size_kib", "used_kib", "priority"}]."""
    out = []
    with open("/proc/swaps") as f:
        next(f)
        for line in f:
            fn, typ, size, used, prio = line.split()[:5]
            out.append({"filename": fn, "type": typ, "size_kib": int(size),
                        "used_kib": int(used), "priority": int(prio)})
    return out


def _run_tool(*argv):
    tool = shutil.which(argv[0], path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if tool is None:
        raise _restore.WorkloadError("%s not found" % argv[0],
                                     "install util-linux (mkswap, swapon, swapoff)")
    p = subprocess.run([tool, *argv[1:]], capture_output=True, text=True)
    if p.returncode:
        raise _restore.WorkloadError("%s failed: %s" % (" ".join(argv), p.stderr.strip()),
                                     "check dmesg")


def _toucher(mib, ready_w):
    """Child: mmap ``mib`` MiB anonymous memory, touch every page, report, exit."""
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
        size = mib * MiB
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        for off in range(0, size, PAGE):
            m[off:off + 64] = os.urandom(64)
        # A second pass reads pages back: swap-ins of the pages swapped first.
        acc = 0
        for off in range(0, size, 64 * PAGE):
            acc ^= m[off]
        os.write(ready_w, b"%d\n" % mib)
        m.close()
        status = 0
    except BaseException:  # noqa: B036 -- never return into the parent's code
        pass
    finally:
        os._exit(status)


def _kill_and_wait(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def run(mib=None, ballast_mib=None, disksize=DEFAULT_DISKSIZE, over_mib=DEFAULT_OVER_MIB,
        timeout=60.0, log=print):
    """Run the workload; return a result dict with vmstat deltas and swap usage.

    ``mib`` None = MemAvailable after the ballast + ``over_mib``.  Refuses
    sizes whose overflow beyond MemAvailable exceeds half the zram disksize.
    Result: {"ballast", "zram", "mib", "child_status", "elapsed_s", "vmstat",
    "swap_used_peak_kib", "mm_stat", "nr_hugepages_before/after",
    "swaps_before/after", "zram_devices_before/after"}.
    """
    _restore.require_root()
    hp_before, swaps_before = PROC.nr_hugepages(), swaps()
    zram_before = zram_lifecycle.zram_devices()
    pages = None if ballast_mib is None else ballast_mib * MiB // PROC.hugepage_size_bytes()
    with _restore.signals_to_exceptions(), _restore.machine_lock():
        with pressure.ballast(pages, log=log) as b, \
                zram_lifecycle.zram_device(disksize) as z, _restore.Restorer() as r:
            dev = z["dev"]
            _run_tool("mkswap", dev)
            r.undo("swapoff %s" % dev, _run_tool, "swapoff", dev)
            _run_tool("swapon", "-p", "32767", dev)
            avail = PROC.meminfo(in_bytes=True)["MemAvailable"]
            size = mib if mib is not None else avail // MiB + over_mib
            if (size * MiB - avail) > disksize // 2:
                raise _restore.WorkloadError(
                    "%d MiB would overflow MemAvailable (%d MiB) by more than half the "
                    "zram disksize" % (size, avail // MiB), "use a smaller --mib")
            if log:
                log("zram%d swap %d MiB on; MemAvailable %d MiB; child touches %d MiB"
                    % (z["n"], disksize // MiB, avail // MiB, size))
            v0 = PROC.vmstat()
            t0 = time.monotonic()
            ready_r, ready_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                _toucher(size, ready_w)
            os.close(ready_w)
            r.undo("kill child %d" % pid, _kill_and_wait, pid)
            peak = 0
            with os.fdopen(ready_r, "rb") as ready:
                os.set_blocking(ready.fileno(), False)
                while True:
                    peak = max(peak, sum(s["used_kib"] for s in swaps()
                                         if s["filename"] == dev))
                    wpid, status = os.waitpid(pid, os.WNOHANG)
                    if wpid:
                        break
                    if time.monotonic() - t0 > timeout:
                        raise _restore.WorkloadError("child did not finish in %.0f s" % timeout,
                                                     "use a smaller --mib")
                    time.sleep(0.05)
            elapsed = time.monotonic() - t0
            v1 = PROC.vmstat()
            stat = zram_lifecycle.mm_stat(z["n"])
    res = {"ballast": b, "zram": {"n": z["n"], "disksize": disksize}, "mib": size,
           "child_status": os.waitstatus_to_exitcode(status), "elapsed_s": elapsed,
           "vmstat": vmstat_delta(v0, v1, RECLAIM_COUNTERS), "swap_used_peak_kib": peak,
           "mm_stat": stat,
           "nr_hugepages_before": hp_before, "nr_hugepages_after": PROC.nr_hugepages(),
           "swaps_before": swaps_before, "swaps_after": swaps(),
           "zram_devices_before": zram_before, "zram_devices_after": zram_lifecycle.zram_devices()}
    if log:
        d = res["vmstat"]
        log("child exit %d after %.1f s: pswpout %d pswpin %d, allocstall %d, pgsteal "
            "direct %d kswapd %d, oom_kill %d; swap used peak %d MiB"
            % (res["child_status"], elapsed, d.get("pswpout", 0), d.get("pswpin", 0),
               sum(v for k, v in d.items() if k.startswith("allocstall_")),
               d.get("pgsteal_direct", 0), d.get("pgsteal_kswapd", 0), d.get("oom_kill", 0),
               peak // 1024))
        log("restored: nr_hugepages %d, swaps %d, zram devices %s"
            % (res["nr_hugepages_after"], len(res["swaps_after"]), res["zram_devices_after"]))
    return res


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Anonymous-memory pressure with zram swap and a hugetlb ballast.",
        epilog="examples:\n  anon_pressure.py\n  anon_pressure.py --mib 4096 --ballast-mib 19000\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=None,
                   help="anonymous MiB to touch (default: MemAvailable + %d)" % DEFAULT_OVER_MIB)
    p.add_argument("--ballast-mib", type=int, default=None,
                   help="hugetlb ballast (default: MemAvailable - margin - 512 MiB)")
    p.add_argument("--disksize-mib", type=int, default=DEFAULT_DISKSIZE // MiB,
                   help="zram swap size (default %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0)
    _restore.common_args(p)
    args = p.parse_args(argv)

    def body():
        log = _restore.progress_log(args)
        res = run(args.mib, args.ballast_mib, args.disksize_mib * MiB, log=log,
                  timeout=args.timeout)
        if args.json:
            print(json.dumps(res))
        if res["child_status"] != 0:
            raise _restore.WorkloadError("the child exited with %d" % res["child_status"],
                                         "check dmesg for an OOM kill; use a smaller --mib")
    return _restore.run_cli(body, args.traceback)


if __name__ == "__main__":
    sys.exit(main())
