#!/usr/bin/python3
"""Make a huge-page vmalloc fall back to 4 KiB pages, for real.

Drop the page cache, ask for far more hugetlb pages than exist (the kernel
takes every free order-9 block it can get), then run the vmalloc_huge BPF
load.  The verifier's kvcalloc gets ``alloc_vmap_area align=2097152``, some of
its order-9 ``mm_page_alloc`` calls fail (pfn = -1), the area is freed
(``free_vmap_area_noflush``) and allocated again with small alignment at the
unrounded size.  nr_hugepages goes back to its old value on every exit path.

Safety: taking every order-9 block leaves only fragmented memory (~350 MiB
free on the 24 GiB test VM).  The ballast is held for well under a second;
if MemFree falls below ``min_free`` the ballast is shrunk (and the result
says the fallback may then not happen).  Order-9 attempts in vmalloc do no
direct reclaim, so they fail when no zone has a free order-9 block above
its watermark; DMA32 blocks kept back by lowmem_reserve stay free and unused.
"""

import argparse
import json
import os
import sys
import time

from trace_reclaim.examples import _proc, _restore, vmalloc_huge
from trace_reclaim.examples._proc import MiB
from trace_reclaim.procfs import ProcFS

__all__ = ["run", "DEFAULT_PAGES", "DEFAULT_MIN_FREE_MIB", "main"]

DEFAULT_PAGES = 100_000
DEFAULT_MIN_FREE_MIB = 128
PMD_ORDER = 9
PROC = ProcFS()  # the live system


def _order9(info, zones=("Normal", "Movable")):
    return sum(sum(c[PMD_ORDER:]) for _n, z, c in info if z in zones)


def _format_buddyinfo(info):
    """Return buddyinfo as short text lines, one per zone."""
    return ["node %d %-7s %s" % (node, zone, " ".join("%d" % c for c in counts))
            for node, zone, counts in info]


def _retake_on_each_cpu(restorer, target):
    """Write nr_hugepages = ``target`` once from each allowed CPU; return the count."""
    cpus = sorted(os.sched_getaffinity(0))
    try:
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            restorer.hugetlb_ballast(target)
    finally:
        os.sched_setaffinity(0, set(cpus))
    return len(cpus)


def run(pages=DEFAULT_PAGES, insns=vmalloc_huge.DEFAULT_INSNS, count=1,
        min_free_mib=DEFAULT_MIN_FREE_MIB, drop=True, log=print):
    """Run the fallback trigger; return a result dict.

    Result: {"hugepages_requested", "hugepages_obtained", "shrunk_pages",
    "mem_free_during", "mem_available_during", "buddyinfo_before",
    "buddyinfo_during", "buddyinfo_after_trigger", "order9_free_normal_during",
    "order9_free_during" (all zones), "fallback_expected", "trigger"
    (vmalloc_huge.trigger result: pid, tid, loads), "nr_hugepages_before",
    "nr_hugepages_after", "held_s"}.
    """
    _restore.require_root()
    hp_before = PROC.nr_hugepages()
    min_free = min_free_mib * MiB
    with _restore.machine_lock(), _restore.Restorer() as r:
        if drop:
            _proc.drop_caches(3)
        bi_before = PROC.buddyinfo()
        t0 = time.monotonic()
        got = r.hugetlb_ballast(hp_before + pages)
        mi = PROC.meminfo(in_bytes=True)
        shrunk = 0
        hp = mi.get("Hugepagesize", 2 * MiB)
        while mi["MemFree"] < min_free and got > hp_before:
            cut = (min_free - mi["MemFree"]) // hp + 1
            got = r.hugetlb_ballast(max(hp_before, got - cut))
            shrunk += cut
            mi = PROC.meminfo(in_bytes=True)
        bi_during = PROC.buddyinfo()
        # Since 5.13 (commit 44042b449872, "mm/page_alloc: allow high-order pages
        # to be stored on the per-cpu lists") free order-9 pages can sit on
        # another CPU's pcp list, invisible in buddyinfo, and the BPF load may
        # run there.  An allocation takes from its own CPU's list first, so
        # ask again from every CPU; also takes blocks freed in the meantime.
        mops = 0
        if not shrunk:
            mops = _retake_on_each_cpu(r, hp_before + pages)
            got = PROC.nr_hugepages()
            bi_during = PROC.buddyinfo()
        mi = PROC.meminfo(in_bytes=True)
        # Run the load on one CPU, right after emptying that CPU's pcp list.
        cpus = os.sched_getaffinity(0)
        try:
            if not shrunk:
                os.sched_setaffinity(0, {max(cpus)})
                got = r.hugetlb_ballast(hp_before + pages)
            trig = vmalloc_huge.trigger(insns, count)
        finally:
            os.sched_setaffinity(0, cpus)
        bi_after = PROC.buddyinfo()
    held = time.monotonic() - t0
    res = {
        "hugepages_requested": hp_before + pages, "hugepages_obtained": got,
        "shrunk_pages": shrunk, "mem_free_during": mi["MemFree"],
        "mem_available_during": mi["MemAvailable"],
        "buddyinfo_before": bi_before, "buddyinfo_during": bi_during,
        "buddyinfo_after_trigger": bi_after,
        "order9_free_normal_during": _order9(bi_during),
        "order9_free_during": sum(sum(c[PMD_ORDER:]) for _n, _z, c in bi_during),
        "fallback_expected": _order9(bi_during) == 0,
        "trigger": trig, "nr_hugepages_before": hp_before,
        "nr_hugepages_after": PROC.nr_hugepages(), "held_s": held,
        "retakes": mops,
    }
    if log:
        log("buddyinfo before (free blocks per order 0..10):")
        for line in _format_buddyinfo(bi_before):
            log("  " + line)
        log("nr_hugepages: asked %d, kernel gave %d%s; MemFree %d MiB, MemAvailable %d MiB"
            % (hp_before + pages, got, " (shrunk by %d for safety)" % shrunk if shrunk else "",
               mi["MemFree"] // MiB, mi["MemAvailable"] // MiB))
        log("buddyinfo with ballast (order>=9 free: Normal %d, all zones %d):"
            % (res["order9_free_normal_during"], res["order9_free_during"]))
        for line in _format_buddyinfo(bi_during):
            log("  " + line)
        log("trigger: pid %d tid %d, %d/%d loads ok"
            % (trig["pid"], trig["tid"], trig["loaded"], count))
        log("buddyinfo after trigger:")
        for line in _format_buddyinfo(bi_after):
            log("  " + line)
        log("held ballast %.2f s; nr_hugepages restored: %d -> %d"
            % (held, hp_before, res["nr_hugepages_after"]))
        if not res["fallback_expected"]:
            log("note: a free order-9 block remained in Normal; the huge mapping may succeed")
    return res


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Exhaust order-9 blocks with hugetlb pages, then trigger a huge vmalloc.",
        epilog="examples:\n"
               "  vmalloc_fallback.py\n"
               "  vmalloc_fallback.py --count 2 --min-free-mib 512\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pages", type=int, default=DEFAULT_PAGES,
                   help="hugetlb pages to ask for (default %(default)d: all the kernel has)")
    p.add_argument("-n", "--insns", type=int, default=vmalloc_huge.DEFAULT_INSNS)
    p.add_argument("--count", type=int, default=1, help="BPF loads while the ballast is held")
    p.add_argument("--min-free-mib", type=int, default=DEFAULT_MIN_FREE_MIB,
                   help="shrink the ballast if MemFree falls below this (default %(default)s)")
    p.add_argument("--no-drop-caches", dest="drop", action="store_false",
                   help="skip echo 3 > drop_caches first")
    _restore.common_args(p)
    args = p.parse_args(argv)

    def body():
        log = _restore.progress_log(args)
        res = run(args.pages, args.insns, args.count, args.min_free_mib, args.drop, log)
        if args.json:
            print(json.dumps(res))
        if res["trigger"]["failed"]:
            raise _restore.WorkloadError("BPF_PROG_LOAD failed: %s"
                                         % res["trigger"]["loads"][0]["error"],
                                         "run examples/vmalloc_huge.py alone to see why")
    return _restore.run_cli(body, args.traceback)


if __name__ == "__main__":
    sys.exit(main())
