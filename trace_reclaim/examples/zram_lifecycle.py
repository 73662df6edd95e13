#!/usr/bin/python3
"""Create and destroy a kmem_cache for real: a zram device's zsmalloc pool.

``hot_add`` a zram device N; setting its disksize creates the zsmalloc pool
and with it two slab caches, ``zs_handle-zramN`` and ``zspage-zramN``
(kmem_cache_create in mm/zsmalloc.c); writing to /dev/zramN allocates
objects from them; ``reset`` destroys the pool and the caches
(kmem_cache_destroy); ``hot_remove`` removes the device.  With slab merging
(the default) the caches are aliases of existing merged caches, so
/sys/kernel/slab shows symlinks (``zspage-zram1 -> :0000056``), and the merged
target outlives the destroy.  The device is always reset and removed on exit.
There is no tracepoint for kmem_cache_create/destroy.
"""

import argparse
import contextlib
import json
import os
import re
import sys
import time
from typing import Dict, Iterable, Optional

from trace_reclaim.examples import _proc, _restore
from trace_reclaim.examples._proc import MiB
from trace_reclaim.procfs import ProcFS

__all__ = ["zram_device", "hot_add", "hot_remove", "set_disksize", "reset",
           "write_data", "write_fragmented", "cache_names", "slab_entries", "zram_devices",
           "run", "main"]

ZRAM_CONTROL = "/sys/class/zram-control"
SYS_SLAB = "/sys/kernel/slab"
PROC = ProcFS()  # the live system


def zram_devices():
    """Return the numbers of existing zram devices, sorted."""
    return sorted(int(d[4:]) for d in os.listdir("/sys/block") if d.startswith("zram"))


def hot_add():
    """Add a zram device; return its number N (/dev/zramN)."""
    if not os.path.isdir(ZRAM_CONTROL):
        raise _restore.WorkloadError("zram is not available (%s missing)" % ZRAM_CONTROL,
                                     "build the kernel with CONFIG_ZRAM or modprobe zram")
    return int(PROC.value(os.path.join(ZRAM_CONTROL, "hot_add")))


def reset(n):
    """Reset zramN: free its memory and destroy its zsmalloc pool (and caches).

    Retries briefly while the device is still open (EBUSY) after a close.
    """
    for attempt in range(50):
        try:
            _proc.write_value("/sys/block/zram%d/reset" % n, 1)
            return
        except OSError as e:
            if e.errno != 16 or attempt == 49:  # EBUSY
                raise
            time.sleep(0.1)


def hot_remove(n):
    """Remove zramN (reset first if needed)."""
    if not os.path.exists("/sys/block/zram%d" % n):
        return
    _proc.write_value(os.path.join(ZRAM_CONTROL, "hot_remove"), n)


def set_disksize(n, size):
    """Set zramN's disksize (bytes, or a string like "64M"); creates the pool."""
    _proc.write_value("/sys/block/zram%d/disksize" % n, size)


def cache_names(n, release=None):
    """Return the slab cache names zsmalloc creates for zramN's pool.

    Since 6.12 ("mm/zsmalloc: use unique zsmalloc caches names") each pool's
    caches carry its name; before, every pool created "zs_handle" and
    "zspage" (6.1 does, measured in the VM tier).
    """
    release = release or os.uname().release
    m = re.match(r"(\d+)\.(\d+)", release)
    if m and (int(m.group(1)), int(m.group(2))) < (6, 12):
        return ["zs_handle", "zspage"]
    return ["zs_handle-zram%d" % n, "zspage-zram%d" % n]


def slab_entries(names: Iterable[str]) -> Dict[str, Optional[str]]:
    """Return {name: "-> target" for an alias symlink, "cache" for a real cache, None}."""
    out: Dict[str, Optional[str]] = {}
    for name in names:
        path = os.path.join(SYS_SLAB, name)
        if os.path.islink(path):
            target = os.readlink(path)
            gone = not os.path.exists(path)
            out[name] = "-> %s%s" % (os.path.basename(target), " (dangling)" if gone else "")
        elif os.path.isdir(path):
            out[name] = "cache"
        else:
            out[name] = None
    return out


def write_data(n, mib=16):
    """Write ``mib`` MiB to /dev/zramN: half random pages, half compressible text.

    Compressible pages are not same-filled (zram stores those without
    zsmalloc), so every page allocates a zsmalloc object.  Returns mm_stat.
    """
    page = 4096
    text = (b"trace-reclaim zram page %08d " * 200)
    fd = os.open("/dev/zram%d" % n, os.O_WRONLY)
    try:
        for i in range(mib * MiB // page):
            data = os.urandom(page) if i % 2 else (text % ((i,) * 200))[:page]
            os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return mm_stat(n)


def write_fragmented(n, mib=16):
    """Write ``mib`` MiB of compressible pages to /dev/zramN, then zero every other one.

    A zeroed page is same-filled: zram frees its zsmalloc object, leaving
    half-empty zspages that compaction can merge, so zs_shrinker_count()
    reports pages to free and ``drop_caches`` (mode 2) runs the pool's
    shrinker, zs_shrinker_scan().  Returns mm_stat (``pages_compacted`` counts
    what that shrinker frees).
    """
    page = 4096
    text = (b"trace-reclaim zram page %08d " * 200)
    fd = os.open("/dev/zram%d" % n, os.O_WRONLY)
    try:
        for i in range(mib * MiB // page):
            os.write(fd, (text % ((i,) * 200))[:page])
        os.fsync(fd)
        for i in range(0, mib * MiB // page, 2):
            os.pwrite(fd, bytes(page), i * page)
        os.fsync(fd)
    finally:
        os.close(fd)
    return mm_stat(n)


def mm_stat(n):
    """Return zramN's mm_stat as a dict (orig_data_size, compr_data_size, mem_used_total, ...)."""
    keys = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit",
            "mem_used_max", "same_pages", "pages_compacted", "huge_pages", "huge_pages_since")
    vals = PROC.value("/sys/block/zram%d/mm_stat" % n).split()
    return {k: int(v) for k, v in zip(keys, vals)}


@contextlib.contextmanager
def zram_device(disksize=None):
    """Hot-add a zram device for the block; yield {"n", "dev", "caches"}.

    With ``disksize`` set it also creates the pool.  On every exit the device
    is reset (destroying its caches) and hot-removed.
    """
    with _restore.Restorer() as r:
        n = hot_add()
        r.undo("hot_remove zram%d" % n, hot_remove, n)
        r.undo("reset zram%d" % n, reset, n)
        if disksize is not None:
            set_disksize(n, disksize)
        yield {"n": n, "dev": "/dev/zram%d" % n, "caches": cache_names(n)}


def run(disksize="64M", mib=16, log=print):
    """Run the whole lifecycle; return {"n", "caches", "phases": {phase: slab_entries},
    "merged_targets_after_reset", "mm_stat", "devices_before", "devices_after"}."""
    _restore.require_root()
    before = zram_devices()
    phases = {}
    with _restore.signals_to_exceptions():
        with zram_device() as z:
            n, names = z["n"], z["caches"]
            phases["hot_add"] = slab_entries(names)
            set_disksize(n, disksize)
            phases["disksize"] = slab_entries(names)
            stat = write_data(n, mib)
            phases["written"] = slab_entries(names)
            targets = {k: os.path.realpath(os.path.join(SYS_SLAB, k)) for k in names
                       if os.path.islink(os.path.join(SYS_SLAB, k))}
            reset(n)
            phases["reset"] = slab_entries(names)
        phases["hot_remove"] = slab_entries(names)
    res = {"n": n, "caches": names, "phases": phases, "mm_stat": stat,
           "merged_targets_after_reset": {k: (os.path.basename(t), os.path.isdir(t))
                                          for k, t in targets.items()},
           "devices_before": before, "devices_after": zram_devices()}
    if log:
        log("zram%d: %d MiB written, compr %d KiB, zsmalloc %d KiB"
            % (n, stat["orig_data_size"] // MiB, stat["compr_data_size"] // 1024,
               stat["mem_used_total"] // 1024))
        for phase, entries in phases.items():
            log("%-10s " % phase + "  ".join("%s %s" % (k, v) for k, v in entries.items()))
        for k, (t, alive) in res["merged_targets_after_reset"].items():
            state = "still exists" if alive else "is gone"
            log("after reset: %s's merged cache %s %s" % (k, t, state))
        log("zram devices before %s, after %s" % (before, res["devices_after"]))
    return res


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Create and destroy zsmalloc's slab caches via a zram device.",
        epilog="examples:\n  zram_lifecycle.py\n  zram_lifecycle.py --disksize 128M --mib 64\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--disksize", default="64M", help="zram disksize (default %(default)s)")
    p.add_argument("--mib", type=int, default=16, help="MiB to write (default %(default)s)")
    _restore.common_args(p)
    args = p.parse_args(argv)

    def body():
        log = _restore.progress_log(args)
        res = run(args.disksize, args.mib, log)
        if args.json:
            print(json.dumps(res))
    return _restore.run_cli(body, args.traceback)


if __name__ == "__main__":
    sys.exit(main())
