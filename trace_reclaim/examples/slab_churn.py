#!/usr/bin/python3
"""Churn the dentry and inode caches: create/unlink files, stat missing names.

``churn`` creates and unlinks files in a loop for a number of seconds plus
``stat`` of missing names, so ``kmem_cache_alloc``/``kmem_cache_free`` fire
for ``dentry``, the filesystem inode cache and ``filp``.  ``syscall_loop``
is a fixed, cheap open/close/stat loop for K iterations (about four
kmem_cache events per iteration), used as a benchmark workload: it returns
the elapsed wall and CPU time.  Nothing global is changed; the temp
directory is removed on every exit path.
"""

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time

from trace_reclaim.examples import _restore

__all__ = ["workdir", "churn", "syscall_loop", "main"]


@contextlib.contextmanager
def workdir(directory=None):
    """Yield a fresh temp directory (under /var/tmp by default); remove it at exit."""
    directory = directory or ("/var/tmp" if os.path.isdir("/var/tmp") else None)
    path = tempfile.mkdtemp(prefix="trace-reclaim-churn-", dir=directory)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def churn(seconds=2.0, batch=1000, directory=None):
    """Create+unlink ``batch`` files and stat ``batch`` missing names, repeatedly.

    Returns {"seconds", "rounds", "created", "unlinked", "missing_stats",
    "elapsed_s", "pid"}.
    """
    created = missing = rounds = 0
    with _restore.signals_to_exceptions(), workdir(directory) as d:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            names = [os.path.join(d, "c%d_%d" % (rounds, i)) for i in range(batch)]
            for name in names:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            for name in names:
                os.unlink(name)
            for i in range(batch):
                try:
                    os.stat(os.path.join(d, "m%d_%d" % (rounds, i)))
                except FileNotFoundError:
                    missing += 1
            created += batch
            rounds += 1
        elapsed = time.monotonic() - t0
    return {"seconds": seconds, "rounds": rounds, "created": created, "unlinked": created,
            "missing_stats": missing, "elapsed_s": elapsed, "pid": os.getpid()}


def syscall_loop(iterations=100_000, directory=None):
    """Run ``iterations`` of open/close of one file and stat of a missing name.

    Deterministic and cheap: the same syscalls every iteration.  Returns
    {"iterations", "elapsed_s" (wall), "cpu_s" (user+sys of this process),
    "ns_per_iteration", "pid", "tid"}.
    """
    with _restore.signals_to_exceptions(), workdir(directory) as d:
        target = os.path.join(d, "file")
        missing = os.path.join(d, "missing")
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
        c0, t0 = os.times(), time.perf_counter()
        for _ in range(iterations):
            os.close(os.open(target, os.O_RDONLY | os.O_CLOEXEC))
            try:
                os.stat(missing)
            except FileNotFoundError:
                pass
        t1, c1 = time.perf_counter(), os.times()
    return {"iterations": iterations, "elapsed_s": t1 - t0,
            "cpu_s": (c1.user - c0.user) + (c1.system - c0.system),
            "ns_per_iteration": (t1 - t0) * 1e9 / max(1, iterations),
            "pid": os.getpid(), "tid": threading.get_native_id()}


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Dentry/inode churn, or a fixed open/close/stat benchmark loop.",
        epilog="examples:\n  slab_churn.py --seconds 2\n  slab_churn.py --loop 200000\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=2.0, help="churn duration (default 2)")
    p.add_argument("--batch", type=int, default=1000, help="files per round (default 1000)")
    p.add_argument("--loop", type=int, metavar="K", default=None,
                   help="run the open/close/stat loop K times instead of churning")
    p.add_argument("--dir", default=None, help="where to make the temp dir (default /var/tmp)")
    _restore.common_args(p)
    args = p.parse_args(argv)

    def body():
        if args.loop is not None:
            res = syscall_loop(args.loop, args.dir)
            text = ("%d iterations: %.3f s wall, %.3f s cpu, %.0f ns/iteration"
                    % (res["iterations"], res["elapsed_s"], res["cpu_s"], res["ns_per_iteration"]))
        else:
            res = churn(args.seconds, args.batch, args.dir)
            text = ("%.1f s: %d files created+unlinked, %d missing names stat'ed in %d rounds"
                    % (res["elapsed_s"], res["created"], res["missing_stats"], res["rounds"]))
        print(json.dumps(res) if args.json else text)
    return _restore.run_cli(body, args.traceback)


if __name__ == "__main__":
    sys.exit(main())
