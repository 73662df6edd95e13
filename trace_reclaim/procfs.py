"""Read the kernel's own accounting: /proc/vmstat, zoneinfo, meminfo, PSI,
slabinfo, buddyinfo and single-value sysctl and sysfs files.

The one set of /proc parsers: the tool and the workloads in
``trace_reclaim.examples`` both read through it.  Parsing is pure (text in,
dicts out) so it is unit-tested on captured text; ``ProcFS`` does the reading
under an injectable root so tests and the CLI environment can point it
elsewhere.  Formats: Documentation/filesystems/proc.rst.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

__all__ = [
    "ProcFS",
    "parse_vmstat",
    "parse_zoneinfo",
    "parse_meminfo",
    "parse_psi",
    "parse_slabinfo",
    "parse_buddyinfo",
    "vmstat_delta",
    "zone_names",
    "VMSTAT_KEYS",
]

# The counters the reclaim report compares against (mm/vmstat.c names).
VMSTAT_KEYS = (
    "allocstall_dma", "allocstall_dma32", "allocstall_normal", "allocstall_movable",
    "allocstall_device",
    "pgsteal_kswapd", "pgsteal_direct", "pgsteal_khugepaged",
    "pgscan_kswapd", "pgscan_direct", "pgscan_khugepaged",
    "pageoutrun", "slabs_scanned", "drop_slab", "drop_pagecache",
    "kswapd_low_wmark_hit_quickly", "kswapd_high_wmark_hit_quickly",
    "compact_stall", "compact_fail", "compact_success", "oom_kill",
    "pgalloc_normal", "pgfree", "workingset_refault_file", "nr_free_pages",
    "thp_fault_fallback",
)


def parse_vmstat(text: str) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def vmstat_delta(before: Dict[str, int], after: Dict[str, int],
                 names: Iterable[str]) -> Dict[str, int]:
    """Return {name: after - before} for ``names`` present in both snapshots."""
    return {n: after[n] - before[n] for n in names if n in before and n in after}


def parse_meminfo(text: str, in_bytes: bool = False) -> Dict[str, int]:
    """Return meminfo values in kB, or in bytes with ``in_bytes``.

    HugePages_* are counts, not sizes: they stay counts either way.
    """
    out: Dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            value = int(parts[0])
            if in_bytes and len(parts) > 1 and parts[1] == "kB":
                value *= 1024
            out[key.strip()] = value
    return out


_ZONE_FIELDS = ("pages free", "min", "low", "high", "promo", "spanned",
                "present", "managed")


def parse_zoneinfo(text: str) -> List[Dict[str, Any]]:
    """Per zone: node, zone, free, min, low, high, promo, boost, managed (pages).

    Only zones with managed pages are returned: empty zones have no watermarks.
    """
    zones: List[Dict[str, Any]] = []
    cur: Optional[Dict[str, Any]] = None
    for line in text.splitlines():
        s = line.strip()
        if line.startswith("Node "):
            # "Node 0, zone   Normal"
            head, _, zone = line.partition(", zone")
            cur = {"node": int(head.split()[1]), "zone": zone.strip()}
            zones.append(cur)
            continue
        if cur is None:
            continue
        parts = s.split()
        if len(parts) < 2:
            continue
        if s.startswith("pages free"):
            cur["free"] = int(parts[2])
        elif parts[0] in ("min", "low", "high", "promo", "managed", "spanned",
                          "present") and parts[1].isdigit() and len(parts) == 2:
            cur[parts[0]] = int(parts[1])
        elif parts[0] == "boost" and len(parts) == 2:
            cur["boost"] = int(parts[1])
    return [z for z in zones if z.get("managed", 0) > 0]


def zone_names(text: str) -> List[str]:
    """Zone names of the first node in zone-index order (empty zones included).

    /proc/zoneinfo lists every zone of a node in node_zones[] order, so the
    position is the ``zid`` tracepoints report.
    """
    names: List[str] = []
    first = None
    for line in text.splitlines():
        if line.startswith("Node "):
            head, _, zone = line.partition(", zone")
            node = head.split()[1]
            if first is None:
                first = node
            if node == first:
                names.append(zone.strip())
    return names


def parse_psi(text: str) -> Dict[str, Dict[str, float]]:
    """Parse /proc/pressure/memory: {"some": {"avg10":..,"total":..}, "full": ...}."""
    out: Dict[str, Dict[str, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        vals: Dict[str, float] = {}
        for kv in parts[1:]:
            k, _, v = kv.partition("=")
            try:
                vals[k] = float(v) if "." in v else int(v)
            except ValueError:
                continue
        out[parts[0]] = vals
    return out


def parse_slabinfo(text: str) -> Dict[str, Dict[str, int]]:
    """Per cache: active_objs, num_objs, objsize, objperslab, pagesperslab.

    Merged caches appear once, under the name of the first cache created;
    /sys/kernel/slab shows the aliases.
    """
    out: Dict[str, Dict[str, int]] = {}
    for line in text.splitlines():
        if line.startswith(("slabinfo", "#")):
            continue
        parts = line.split()
        if len(parts) < 6:
            continue
        try:
            out[parts[0]] = {
                "active_objs": int(parts[1]), "num_objs": int(parts[2]),
                "objsize": int(parts[3]), "objperslab": int(parts[4]),
                "pagesperslab": int(parts[5]),
            }
        except ValueError:
            continue
    return out


def parse_buddyinfo(text: str) -> List[Tuple[int, str, List[int]]]:
    """Per zone: (node, zone, free blocks of each order from 0 up).

    "Node 0, zone   Normal   12   3 ..." (mm/vmstat.c frag_show_print()).
    """
    out: List[Tuple[int, str, List[int]]] = []
    for line in text.splitlines():
        head, _, rest = line.partition("zone")
        fields = rest.split()
        if not fields:
            continue
        try:
            node = int(head.replace("Node", "").strip(" ,"))
            out.append((node, fields[0], [int(c) for c in fields[1:]]))
        except ValueError:
            continue
    return out


class ProcFS:
    """Read procfs and sysfs files under ``root`` (``/`` on a live system)."""

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel.lstrip("/"))

    def read(self, rel: str) -> str:
        with open(self.path(rel)) as f:
            return f.read()

    def try_read(self, rel: str) -> Optional[str]:
        try:
            return self.read(rel)
        except OSError:
            return None

    def value(self, rel: str) -> str:
        """Return the stripped text of a one-value file (a sysctl, a sysfs attribute)."""
        return self.read(rel).strip()

    def vmstat(self) -> Dict[str, int]:
        return parse_vmstat(self.read("/proc/vmstat"))

    def zoneinfo(self) -> List[Dict[str, Any]]:
        return parse_zoneinfo(self.read("/proc/zoneinfo"))

    def meminfo(self, in_bytes: bool = False) -> Dict[str, int]:
        return parse_meminfo(self.read("/proc/meminfo"), in_bytes)

    def hugepage_size_bytes(self) -> int:
        """The default hugetlb page size (``Hugepagesize``; 2 MiB on x86-64)."""
        return self.meminfo(in_bytes=True).get("Hugepagesize", 2 << 20)

    def nr_hugepages(self) -> int:
        """Persistent hugetlb pages of the default size (vm.nr_hugepages)."""
        return int(self.value("/proc/sys/vm/nr_hugepages"))

    def buddyinfo(self) -> List[Tuple[int, str, List[int]]]:
        return parse_buddyinfo(self.read("/proc/buddyinfo"))

    def psi_memory(self) -> Optional[Dict[str, Dict[str, float]]]:
        text = self.try_read("/proc/pressure/memory")
        return parse_psi(text) if text is not None else None

    def slabinfo(self) -> Dict[str, Dict[str, int]]:
        return parse_slabinfo(self.read("/proc/slabinfo"))

    def kswapd_pids(self) -> List[int]:
        """The pids of the kswapdN kernel threads (children of kthreadd, pid 2)."""
        pids = []
        for d in os.listdir(self.path("/proc")):
            if not d.isdigit():
                continue
            stat = self.try_read(f"/proc/{d}/stat")
            if stat is None or ")" not in stat:
                continue
            comm = stat[stat.find("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            if comm.startswith("kswapd") and len(fields) > 1 and fields[1] == "2":
                pids.append(int(d))
        return sorted(pids)
