#!/usr/bin/python3
"""Fill the dentry and inode caches with objects a shrinker can or cannot free.

``pinned``: create N files and hold every one open, so each dentry and
inode has a reference and ``super_cache_scan`` (the per-superblock shrinker
run by ``echo 2 > /proc/sys/vm/drop_caches``) must skip them.  ``negative``:
``stat`` N missing names, leaving N unreferenced negative dentries that the
shrinker frees.  Counts come from /proc/slabinfo (``dentry`` and the
filesystem's inode cache, e.g. ``ext4_inode_cache``) and
/proc/sys/fs/dentry-state (dentries in use: not on the LRU).  A system-wide
``drop_caches(2)`` runs first so other unused dentries do not blur the result.
RLIMIT_NOFILE is raised for the pinned mode and put back afterwards.

``--proc-fd`` (pinned): each holder also looks up /proc/self/fd/N for every
file it holds, which gives each one an unused proc dentry and a proc inode
(proc_fd_instantiate()) that drop_caches does free, allocated by the holder
itself.  Whoever looks the fds up first allocates them, and on the
development VM the sandbox's init does that within a second of the open, in
a context where no tracepoint fires: with the holders doing it first, every
object the workload makes is traced, and the mix of pinned and freeable
dentries is the same on every machine.
"""

import argparse
import contextlib
import ctypes
import functools
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time

from trace_reclaim.examples import _proc, _restore
from trace_reclaim.procfs import ProcFS

__all__ = ["fs_type", "inode_cache_for", "raised_nofile", "created_files", "pinned_dentries",
           "negative_dentries", "snapshot", "dentries_in_use", "run", "DEFAULT_FILES",
           "main"]

DEFAULT_FILES = 50_000
PROC = ProcFS()  # the live system
#: Inode slab cache of common filesystems (the name passed to kmem_cache_create).
_INODE_CACHE = {
    "ext4": "ext4_inode_cache", "ext3": "ext4_inode_cache", "ext2": "ext2_inode_cache",
    "xfs": "xfs_inode", "btrfs": "btrfs_inode", "tmpfs": "shmem_inode_cache",
    "f2fs": "f2fs_inode_cache", "nfs": "nfs_inode_cache", "overlay": "ovl_inode",
}


def fs_type(path):
    """Return the filesystem type of the mount holding ``path`` (from mountinfo)."""
    path = os.path.realpath(path)
    best, best_type = "", None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mnt = left.split()[4]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, best_type = mnt, right.split()[0]
    return best_type


def inode_cache_for(path):
    """Return the inode slab cache name for the filesystem holding ``path``."""
    return _INODE_CACHE.get(fs_type(path), "inode_cache")


def _active_objs(caches):
    """Return {cache: active_objs} for ``caches`` (a cache missing -> None).

    Needs root (/proc/slabinfo is mode 0400).
    """
    info = PROC.slabinfo()
    return {c: (info[c]["active_objs"] if c in info else None) for c in caches}


def snapshot(caches, settle=False):
    """Return {cache: active_objs} from /proc/slabinfo.

    ``settle`` polls (up to 2 s) until the counts stop falling: dentries are
    freed after an RCU grace period, so right after drop_caches part of them
    still count as active.
    """
    snap = _active_objs(caches)
    deadline = time.monotonic() + (2.0 if settle else 0)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        nxt = _active_objs(caches)
        if all(nxt[c] is None or snap[c] is None or nxt[c] >= snap[c] * 0.995 for c in caches):
            return nxt
        snap = nxt
    return snap


def dentries_in_use():
    """Return nr_dentry - nr_unused from /proc/sys/fs/dentry-state: dentries
    not on the LRU, which no shrinker may free."""
    nr_dentry, nr_unused = (int(x) for x in PROC.read("/proc/sys/fs/dentry-state").split()[:2])
    return nr_dentry - nr_unused


@contextlib.contextmanager
def raised_nofile(need):
    """Raise the RLIMIT_NOFILE soft limit toward ``need`` (at most the hard limit).

    Yields the soft limit in force; restores the old limits at exit.  Raising
    the hard limit needs CAP_SYS_RESOURCE, which this VM's root lacks, so the
    callers spread open files over several processes instead.
    """
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = old
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if want <= soft:
        yield soft
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield want
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _holder(path, first, count, ready_w, release_r, proc_fd=False):
    """Child: create+open files ``first..first+count-1`` (each looked up in
    /proc/self/fd too with ``proc_fd``), report, wait for release."""
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:
            os._exit(1)
        fds = []
        for i in range(first, first + count):
            fd = os.open(os.path.join(path, "f%07d" % i),
                         os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            if proc_fd:
                os.lstat("/proc/self/fd/%d" % fd)
            fds.append(fd)
        os.write(ready_w, b"%d\n" % len(fds))
        os.read(release_r, 1)  # EOF when the parent closes its end (or dies)
        status = 0
    except BaseException:  # noqa: B036 -- never return into the parent's code
        pass
    finally:
        os._exit(status)


def _release(children, release_w):
    if release_w is not None:
        os.close(release_w)
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _tempdir(directory, prefix):
    directory = directory or ("/var/tmp" if os.path.isdir("/var/tmp") else None)
    return tempfile.mkdtemp(prefix=prefix, dir=directory)


@contextlib.contextmanager
def created_files(n=DEFAULT_FILES, directory=None):
    """Create ``n`` empty files in a fresh directory; yield it, remove it at exit.

    For ``pinned_dentries(n, files=DIR)`` to hold the same files open more
    than once: creating them is the slow part (a journal entry each), and
    after ``drop_caches(2)`` their dentries and inodes are gone, so opening
    them again allocates both anew.
    """
    path = _tempdir(directory, "trace-reclaim-files-")
    try:
        for i in range(n):
            os.close(os.open(os.path.join(path, "f%07d" % i),
                             os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def pinned_dentries(n=DEFAULT_FILES, directory=None, proc_fd=False, files=None):
    """Create ``n`` files and hold them all open for the block.

    The files are opened by holder processes, each up to its RLIMIT_NOFILE
    (root here cannot raise the hard limit: no CAP_SYS_RESOURCE).  Holders
    die with the parent (PR_SET_PDEATHSIG).  With ``proc_fd`` each holder
    also looks up /proc/self/fd/N for each file (see the module docstring).
    ``files`` is a directory made by created_files(): its ``n`` files are opened
    instead, and the directory is left in place.
    Yields {"dir", "n", "fds", "holders", "holder_pids", "inode_cache",
    "proc_fd"}; on exit releases every fd, deletes the directory (unless
    ``files``) and restores RLIMIT_NOFILE.
    """
    path = files or _tempdir(directory, "trace-reclaim-pinned-")
    children, release_w = [], None
    try:
        with raised_nofile(n + 64) as soft:
            per = max(1, soft - 64)
            ready_r, ready_w = os.pipe()
            release_r, release_w = os.pipe()
            opened = 0
            try:
                for first in range(0, n, per):
                    pid = os.fork()
                    if pid == 0:
                        os.close(ready_r)
                        os.close(release_w)
                        _holder(path, first, min(per, n - first), ready_w, release_r,
                                proc_fd)
                    children.append(pid)
                os.close(ready_w)
                os.close(release_r)
                with os.fdopen(ready_r, "rb") as ready:
                    for _ in children:
                        line = ready.readline()
                        if not line:
                            break
                        opened += int(line)
                if opened != n:
                    raise _restore.WorkloadError("holders opened %d of %d files" % (opened, n),
                                                 "check free inodes and fs.file-max")
                yield {"dir": path, "n": n, "fds": opened, "holders": len(children),
                       "holder_pids": list(children), "inode_cache": inode_cache_for(path),
                       "proc_fd": proc_fd}
            finally:
                _release(children, release_w)
    finally:
        if files is None:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def negative_dentries(n=DEFAULT_FILES, directory=None):
    """``stat`` ``n`` missing names in a fresh directory; yield, then remove the directory.

    Yields {"dir", "n", "misses", "inode_cache"}.  Each miss leaves one
    negative dentry (d_inode == NULL) that nothing references.
    """
    path = _tempdir(directory, "trace-reclaim-negative-")
    try:
        misses = 0
        for i in range(n):
            try:
                os.stat(os.path.join(path, "missing%06d" % i))
            except FileNotFoundError:
                misses += 1
        yield {"dir": path, "n": n, "misses": misses, "inode_cache": inode_cache_for(path)}
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(mode="pinned", n=DEFAULT_FILES, drop=True, directory=None, log=print, proc_fd=False):
    """Run one mode; return {"mode", "n", "caches", "baseline", "held", "after_drop",
    "after_release", "dentry_drop", "inode_drop", "in_use", "proc_fd"} with
    slabinfo active_objs.

    ``dentry_drop`` = held - after_drop for ``dentry`` (None without ``drop``);
    ``in_use`` has dentries_in_use() at baseline, held, after_drop and
    after_release.  ``proc_fd`` (pinned only) as in pinned_dentries().
    """
    _restore.require_root()
    if mode not in ("pinned", "negative"):
        raise ValueError("mode must be pinned or negative")
    directory = directory or ("/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir())
    caches = ["dentry", inode_cache_for(directory)]
    in_use = {}
    with _restore.signals_to_exceptions():
        _proc.drop_caches(2)
        baseline = snapshot(caches, settle=True)
        in_use["baseline"] = dentries_in_use()
        cm = (functools.partial(pinned_dentries, proc_fd=proc_fd) if mode == "pinned"
              else negative_dentries)
        with cm(n, directory):
            held = snapshot(caches)
            in_use["held"] = dentries_in_use()
            after_drop = None
            if drop:
                _proc.drop_caches(2)
                after_drop = snapshot(caches, settle=True)
                in_use["after_drop"] = dentries_in_use()
        after_release = snapshot(caches)
        in_use["after_release"] = dentries_in_use()
    res = {"mode": mode, "n": n, "caches": caches, "baseline": baseline, "held": held,
           "after_drop": after_drop, "after_release": after_release,
           "dentry_drop": (held["dentry"] - after_drop["dentry"])
           if after_drop is not None else None,
           "inode_drop": (held[caches[1]] - after_drop[caches[1]])
           if after_drop is not None else None,
           "in_use": in_use, "proc_fd": bool(proc_fd and mode == "pinned")}
    if log:
        for c in caches:
            log("%-18s baseline %7d  held %7d  after drop_caches %7s  after release %7d"
                % (c, baseline[c], held[c], "-" if after_drop is None else after_drop[c],
                   after_release[c]))
        log("%-18s baseline %7d  held %7d  after drop_caches %7s  after release %7d"
            % ("dentries in use", in_use["baseline"], in_use["held"],
               in_use.get("after_drop", "-"), in_use["after_release"]))
    return res


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Pinned vs. negative dentries: what drop_caches can and cannot free.",
        epilog="examples:\n"
               "  slab_dentries.py --mode pinned --drop-caches\n"
               "  slab_dentries.py --mode pinned --proc-fd --drop-caches\n"
               "  slab_dentries.py --mode negative -n 100000 --drop-caches\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("pinned", "negative"), default="pinned")
    p.add_argument("-n", "--files", type=int, default=DEFAULT_FILES,
                   help="files to hold open / names to stat (default %(default)d)")
    p.add_argument("--drop-caches", action="store_true",
                   help="echo 2 > drop_caches while the objects are held")
    p.add_argument("--proc-fd", action="store_true",
                   help="pinned: also look up /proc/self/fd/N for each held file (an "
                        "unused, freeable proc dentry and inode per file)")
    p.add_argument("--dir", default=None, help="where to make the temp dir (default /var/tmp)")
    _restore.common_args(p)
    args = p.parse_args(argv)

    def body():
        log = _restore.progress_log(args)
        res = run(args.mode, args.files, args.drop_caches, args.dir, log, args.proc_fd)
        if args.json:
            print(json.dumps(res))
    return _restore.run_cli(body, args.traceback)


if __name__ == "__main__":
    sys.exit(main())
