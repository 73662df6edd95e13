"""Read the kernel's own memory counters: /proc/meminfo, vmstat, slabinfo, buddyinfo.

Also the small writers every workload needs: ``drop_caches`` and raw
``read_value``/``write_value`` of /proc and /sys files.  Everything here is
a thin parser of a documented procfs/sysfs format (Documentation/filesystems/proc.rst);
``procfs`` arguments let tests point at a copied tree.
"""

import os

__all__ = [
    "read_value", "write_value", "meminfo", "mem_available_bytes", "vmstat",
    "vmstat_delta", "slabinfo", "slab_active_objs", "buddyinfo",
    "free_blocks_at_least", "drop_caches", "hugepage_size_bytes",
    "nr_hugepages", "RECLAIM_COUNTERS", "MiB", "GiB",
]

MiB = 1 << 20
GiB = 1 << 30

#: /proc/vmstat counters that prove reclaim happened (see KERNEL-FACTS.md).
RECLAIM_COUNTERS = (
    "allocstall_normal", "allocstall_movable", "allocstall_dma32",
    "pgsteal_direct", "pgsteal_kswapd", "pgscan_direct", "pgscan_kswapd",
    "pageoutrun", "slabs_scanned", "drop_slab", "compact_stall",
    "pswpout", "pswpin", "oom_kill",
)


def read_value(path):
    """Return the stripped text of a /proc or /sys file."""
    with open(path) as f:
        return f.read().strip()


def write_value(path, value):
    """Write ``value`` to a /proc or /sys file in one write(2), as ``echo`` does."""
    data = str(value).encode()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def meminfo(procfs="/proc"):
    """Return /proc/meminfo as {name: bytes} (HugePages_* counts stay counts)."""
    out = {}
    with open(os.path.join(procfs, "meminfo")) as f:
        for line in f:
            name, _, rest = line.partition(":")
            fields = rest.split()
            if not fields:
                continue
            value = int(fields[0])
            if len(fields) > 1 and fields[1] == "kB":
                value *= 1024
            out[name] = value
    return out


def mem_available_bytes(procfs="/proc"):
    """Return MemAvailable in bytes (free + reclaimable estimate)."""
    return meminfo(procfs)["MemAvailable"]


def hugepage_size_bytes(procfs="/proc"):
    """Return the default hugetlb page size in bytes (2 MiB on x86-64)."""
    return meminfo(procfs).get("Hugepagesize", 2 * MiB)


def nr_hugepages(procfs="/proc"):
    """Return /proc/sys/vm/nr_hugepages (persistent default-size hugetlb pages)."""
    return int(read_value(os.path.join(procfs, "sys/vm/nr_hugepages")))


def vmstat(procfs="/proc"):
    """Return /proc/vmstat as {name: int}."""
    out = {}
    with open(os.path.join(procfs, "vmstat")) as f:
        for line in f:
            name, value = line.split()
            out[name] = int(value)
    return out


def vmstat_delta(before, after, names=RECLAIM_COUNTERS):
    """Return {name: after - before} for ``names`` present in both snapshots."""
    return {n: after[n] - before[n] for n in names if n in before and n in after}


def slabinfo(procfs="/proc"):
    """Return /proc/slabinfo as {cache: {active_objs, num_objs, objsize, ...}}.

    Needs root (the file is mode 0400).  Merged caches appear once, under the
    name of the first cache created; /sys/kernel/slab shows the aliases.
    """
    out = {}
    with open(os.path.join(procfs, "slabinfo")) as f:
        for line in f:
            if line.startswith(("slabinfo", "#")):
                continue
            fields = line.split()
            out[fields[0]] = {
                "active_objs": int(fields[1]),
                "num_objs": int(fields[2]),
                "objsize": int(fields[3]),
                "objperslab": int(fields[4]),
                "pagesperslab": int(fields[5]),
            }
    return out


def slab_active_objs(names, procfs="/proc"):
    """Return {cache: active_objs} for the caches in ``names`` (missing -> None)."""
    info = slabinfo(procfs)
    return {n: (info[n]["active_objs"] if n in info else None) for n in names}


def buddyinfo(procfs="/proc"):
    """Return /proc/buddyinfo as [(node, zone, [free blocks per order])]."""
    out = []
    with open(os.path.join(procfs, "buddyinfo")) as f:
        for line in f:
            head, _, counts = line.partition("zone")
            node = int(head.replace("Node", "").strip(" ,"))
            fields = counts.split()
            out.append((node, fields[0], [int(c) for c in fields[1:]]))
    return out


def free_blocks_at_least(order, procfs="/proc", zones=None):
    """Return the number of free buddy blocks of ``order`` or higher.

    A block of order k > ``order`` holds 2**(k-order) blocks of ``order``; this
    counts buddy blocks as listed, not what they could be split into.
    """
    total = 0
    for _node, zone, counts in buddyinfo(procfs):
        if zones is not None and zone not in zones:
            continue
        total += sum(counts[order:])
    return total


def format_buddyinfo(info):
    """Return buddyinfo as short text lines, one per zone."""
    return ["node %d %-7s %s" % (node, zone, " ".join("%d" % c for c in counts))
            for node, zone, counts in info]


def drop_caches(mode=3, procfs="/proc"):
    """Write ``mode`` to /proc/sys/vm/drop_caches (1 page cache, 2 slab, 3 both).

    Mode 2 runs every registered shrinker (``drop_slab``); nothing to restore.
    """
    if mode not in (1, 2, 3):
        raise ValueError("drop_caches mode must be 1, 2 or 3")
    os.sync()
    write_value(os.path.join(procfs, "sys/vm/drop_caches"), mode)
