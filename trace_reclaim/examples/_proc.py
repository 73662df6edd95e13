"""Change what the workloads change in /proc and /sys: ``write_value``, ``drop_caches``.

Reading and parsing the kernel's counters (/proc/meminfo, vmstat, slabinfo,
buddyinfo, sysctl values) is the tool's: ``trace_reclaim.procfs``, one set of
parsers for the tool and the workloads.  This module keeps the writes, which
only workloads do, and the units and counter names they report in.
"""

import os

__all__ = ["write_value", "drop_caches", "RECLAIM_COUNTERS", "MiB", "GiB"]

MiB = 1 << 20
GiB = 1 << 30

#: /proc/vmstat counters that prove reclaim happened (see KERNEL-FACTS.md).
RECLAIM_COUNTERS = (
    "allocstall_normal", "allocstall_movable", "allocstall_dma32",
    "pgsteal_direct", "pgsteal_kswapd", "pgscan_direct", "pgscan_kswapd",
    "pageoutrun", "slabs_scanned", "drop_slab", "compact_stall",
    "pswpout", "pswpin", "oom_kill",
)


def write_value(path, value):
    """Write ``value`` to a /proc or /sys file in one write(2), as ``echo`` does."""
    data = str(value).encode()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def drop_caches(mode=3, procfs="/proc"):
    """Write ``mode`` to /proc/sys/vm/drop_caches (1 page cache, 2 slab, 3 both).

    Mode 2 runs every registered shrinker (``drop_slab``); nothing to restore.
    """
    if mode not in (1, 2, 3):
        raise ValueError("drop_caches mode must be 1, 2 or 3")
    os.sync()
    write_value(os.path.join(procfs, "sys/vm/drop_caches"), mode)
