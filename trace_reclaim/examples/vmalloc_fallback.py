#!/usr/bin/python3
"""Make a huge-page vmalloc fall back to 4 KiB pages, for real: fragment memory.

A huge vmalloc mapping needs free 2 MiB (order-9) blocks; it falls back to
4 KiB pages when the page allocator has none to give, which on a long-running
machine is fragmentation, not a shortage.  This workload makes exactly that
state, with most of memory still free:

1. ``vm.compact_unevictable_allowed`` = 0 (compaction leaves mlocked pages
   where they are: no compaction, the load's own included, can rebuild a
   block around a kept page) and ``vm.compaction_proactiveness`` = 0;
2. on each CPU in turn (a freed 2 MiB block may wait on a CPU's per-CPU list),
   fault transparent huge pages in 2 MiB-aligned anonymous memory (THP
   ``defrag`` = never: a fault takes a free block or falls back, nothing
   more) until a fault finds none: each THP is one free order-9 block;
3. in each of them keep one 4 KiB page (mlocked) and give the other 511
   back (MADV_FREE splits the huge page, MADV_DONTNEED frees the pieces): the
   block's free pages can merge up to order 8, never to 9 again while the
   kept page lives;
4. sweep: drop the clean page cache, and fault a few THPs on each CPU with
   ``defrag`` = madvise, where a fault that finds no block compacts,
   reclaims, drains every CPU's free-page lists and looks again, as the
   load's own failed attempt will; what that frees is taken too (until a
   sweep takes nothing).  Compaction is left on: it can only move pages out
   of blocks that nothing pins, and those blocks are taken here, not by the
   load; and a high-order direct reclaim stops as soon as compaction could
   do the rest (with compaction off, ``vm.extfrag_threshold`` 1000, one
   window on 6.1 reclaimed 58,545 pages directly; with it on, 7);
5. run the vmalloc_huge BPF load on the last CPU: its verifier kvcalloc gets
   ``alloc_vmap_area align=2097152``, its first order-9 ``mm_page_alloc``
   fails (pfn = -1), the area is freed and allocated again with small
   alignment at the unrounded size.  A block can still come free between
   the last sweep and the attempt (then it gets huge pages, rarely).

Everything is given back on every exit path: the kept pages unmapped, the
sysctls and THP modes restored, and memory compacted (while the pieces were
free, allocations landed in them, so the blocks would not merge back on
their own); then it waits up to 10 s for the blocks to be back (the kept
pages, free again, wait on per-CPU lists first, which can take longer).
Held memory is one 4 KiB page per 2 MiB of free memory (0.2%), more where
MADV_FREE did not split a huge page at once (the kernel's deferred split
then holds it whole: 1.4 GiB of 22 GiB free on this 6.18 host, 0.1 GiB of
2.7 GiB in a 6.12 guest), and one chunk (``chunk`` MiB) while it is being
split.
"""

import argparse
import ctypes
import json
import mmap
import os
import sys
import time

from trace_reclaim.examples import _proc, _restore, vmalloc_huge
from trace_reclaim.examples._proc import MiB
from trace_reclaim.procfs import ProcFS, parse_meminfo

__all__ = ["run", "fragment", "DEFAULT_CHUNK_MIB", "main"]

DEFAULT_CHUNK_MIB = 256
PMD_ORDER = 9
HUGE = 2 * MiB
PAGE = mmap.PAGESIZE
PROC = ProcFS()  # the live system
THP = "/sys/kernel/mm/transparent_hugepage/enabled"
DEFRAG = "/sys/kernel/mm/transparent_hugepage/defrag"
#: Faults beyond what buddyinfo shows: blocks a CPU's per-CPU list may hold.
PCP_PROBE = 4
#: Seconds to wait at the end for the 2 MiB blocks to come back.
RESTORE_WAIT_S = 10
#: Rounds at most: the bulk take, then sweeps until one takes nothing.  Most
#: runs stop after one or two sweeps; 4 was once too few (a 6.12 guest's
#: sweeps still found 2 blocks in the 4th round, and its load got huge pages).
MAX_ROUNDS = 8
#: Zones a GFP_KERNEL allocation may take a block from (ZONE_DMA is kept back
#: by lowmem_reserve from THP faults and the vmalloc alike).
ZONES = ("DMA32", "Normal", "Movable")
#: Migrate types whose free blocks no GFP_KERNEL allocation is given: the
#: high-order atomic reserve (a pageblock kept for high-order atomic
#: allocations once one succeeded under pressure; the page allocator gives
#: its last one up only as it is about to OOM, so neither a THP fault nor
#: the vmalloc gets it) and blocks isolated for migration.
RESERVED_TYPES = ("HighAtomic", "Isolate")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


def _order9(info, zones=ZONES):
    """Free blocks of order 9 and up (an order-10 block counts as two)."""
    return sum(sum(n << (o - PMD_ORDER) for o, n in enumerate(c) if o >= PMD_ORDER)
               for _n, z, c in info if z in zones)


def _reserved_order9(pagetypeinfo, zones=ZONES):
    """Free blocks of order 9 and up of ``RESERVED_TYPES`` (/proc/pagetypeinfo's text)."""
    n = 0
    for line in pagetypeinfo.splitlines():
        # "Node    0, zone   Normal, type   HighAtomic      0 ... 1      0"
        head, sep, rest = line.partition(", type")
        if not sep or ", zone" not in head:
            continue
        zone = head.split(", zone", 1)[1].strip()
        mtype, *counts = rest.split()
        if zone in zones and mtype in RESERVED_TYPES:
            n += sum(int(c) << (o - PMD_ORDER) for o, c in enumerate(counts) if o >= PMD_ORDER)
    return n


def _format_buddyinfo(info):
    """Return buddyinfo as short text lines, one per zone."""
    return ["node %d %-7s %s" % (node, zone, " ".join("%d" % c for c in counts))
            for node, zone, counts in info]


def _selected(text):
    """The [bracketed] choice of a sysfs mode file."""
    return text[text.index("[") + 1:text.index("]")]


def _sysctls(names):
    return {n: PROC.try_read("/proc/sys/vm/" + n) for n in names}


def compact_memory():
    """Compact every zone now (/proc/sys/vm/compact_memory), if the kernel can."""
    if os.path.exists("/proc/sys/vm/compact_memory"):
        _proc.write_value("/proc/sys/vm/compact_memory", 1)


def _blocks_back(before, wait_s=RESTORE_WAIT_S):
    """Wait (at most ``wait_s``) for 9 in 10 of the free 2 MiB blocks there
    were before; return the buddyinfo then.

    The kept pages, once unmapped, are free but wait on per-CPU free lists
    (one page in each block: up to the lists' size, ~10,000 pages a CPU on
    the 24 GiB host) before they merge back into their blocks; the kernel
    empties those lists as their limits decay, and at once at its next
    high-order attempt that finds no block (after a direct reclaim).
    """
    deadline = time.monotonic() + wait_s
    while True:
        info = PROC.buddyinfo()
        if _order9(info) * 10 >= before * 9 or time.monotonic() >= deadline:
            return info
        time.sleep(0.5)


def _own(path, key):
    """A ``Key: N kB`` figure of this process (/proc/self/...), in bytes."""
    return parse_meminfo(PROC.read(path), in_bytes=True).get(key, 0)


def _vm_locked():
    """This process's mlocked memory in bytes (VmLck)."""
    return _own("/proc/self/status", "VmLck")


def _own_thps():
    """This process's PMD-mapped THPs (AnonHugePages; not other processes')."""
    return _own("/proc/self/smaps_rollup", "AnonHugePages") // HUGE


class _Kept:
    """The mappings that hold one 4 KiB page of each taken block."""

    def __init__(self):
        self.maps = []
        self.pages = 0

    def close(self):
        for m in self.maps:
            m.close()
        self.maps, self.pages = [], 0

    def take(self, chunk):
        """Fault ``chunk`` bytes of THPs, keep a page of each 2 MiB; return THPs got."""
        m = mmap.mmap(-1, chunk + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.maps.append(m)
        base = ctypes.addressof(ctypes.c_char.from_buffer(m))
        off = -base % HUGE                    # the first 2 MiB boundary
        m.madvise(mmap.MADV_HUGEPAGE, off, chunk)
        before = _own_thps()
        for o in range(off, off + chunk, HUGE):
            m[o] = 1                          # one fault: a THP, else one 4 KiB page
        got = _own_thps() - before
        for o in range(off, off + chunk, HUGE):
            # MADV_FREE on part of a huge page splits it; DONTNEED then frees
            # the 511 small pages at once (not at the next reclaim).
            m.madvise(mmap.MADV_FREE, o + PAGE, HUGE - PAGE)
            m.madvise(mmap.MADV_DONTNEED, o + PAGE, HUGE - PAGE)
            if _libc.mlock(ctypes.c_void_p(base + o), PAGE) != 0:
                e = ctypes.get_errno()
                raise OSError(e, "mlock: %s" % os.strerror(e))
        # the head and tail outside the aligned chunk hold nothing
        self.pages += chunk // HUGE
        return got


def fragment(restorer, chunk_mib=DEFAULT_CHUNK_MIB, cpus=None):
    """Leave no free 2 MiB block a GFP_KERNEL allocation could get; return stats.

    Runs its loop on each of ``cpus`` (default: all allowed), ending on the
    last one, where the caller's allocation should run (the caller restores
    its affinity).  Returns {"thps", "rounds" (THPs taken per round),
    "kept_pages", "chunks", "cpus", "seconds"}.
    """
    if not os.path.exists(THP):
        raise _restore.WorkloadError(
            "this kernel has no transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE)",
            "vmalloc_fallback takes free 2 MiB blocks as THPs; use a kernel with THP")
    restorer.sysctl("vm.compact_unevictable_allowed", 0)
    if os.path.exists("/proc/sys/vm/compaction_proactiveness"):   # 5.9+
        restorer.sysctl("vm.compaction_proactiveness", 0)
    if "[never]" in PROC.read(THP):
        restorer.write(THP, "madvise", restore_value="never")
    # In bulk a fault takes a free block or falls back to a 4 KiB page: no
    # reclaim, no compaction (with MADV_HUGEPAGE, "madvise" would reclaim on
    # every miss).  The sweeps below switch to "madvise" for just that.
    restorer.write(DEFRAG, "never", restore_value=_selected(PROC.read(DEFRAG)))
    kept = _Kept()
    restorer.undo("the kept pages unmapped", kept.close)
    chunk = max(1, chunk_mib * MiB // HUGE) * HUGE
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else list(cpus)
    allowed = os.sched_getaffinity(0)
    t0 = time.monotonic()
    chunks = 0
    rounds = []
    try:
        for n in range(MAX_ROUNDS):
            got_round = 0
            for cpu in cpus:
                os.sched_setaffinity(0, {cpu})
                while True:
                    # in bulk, as many faults as buddyinfo shows free blocks;
                    # then a few, for what per-CPU lists may hold
                    blocks = min(chunk // HUGE,
                                 PCP_PROBE + (_order9(PROC.buddyinfo()) if n == 0 else 0))
                    got = kept.take(blocks * HUGE)
                    got_round += got
                    chunks += 1
                    if got < blocks:   # a fault found no block: none left here
                        break
            rounds.append(got_round)
            if n and not got_round:
                break
            if n == 0:
                # Sweeps: a fault that finds no block now reclaims directly,
                # then drains every CPU's free-page lists and looks again,
                # as the load's own failed attempt will.  Pages waiting on
                # those lists, and clean page cache, are all that kept some
                # blocks from being free: dropped and drained, they are, and
                # are taken here instead of by the load.
                _proc.write_value(DEFRAG, "madvise")
            _proc.drop_caches(1)
    finally:
        os.sched_setaffinity(0, {cpus[-1]} if cpus else allowed)
    return {"thps": sum(rounds), "rounds": rounds, "kept_pages": kept.pages,
            "chunks": chunks, "cpus": cpus, "seconds": time.monotonic() - t0}


def run(insns=vmalloc_huge.DEFAULT_INSNS, count=1, chunk_mib=DEFAULT_CHUNK_MIB,
        drop=True, log=print):
    """Run the fallback trigger; return a result dict.

    Result: {"fragment" (fragment()'s stats), "mem_free_before",
    "mem_free_during", "buddyinfo_before", "buddyinfo_during",
    "buddyinfo_after_trigger", "buddyinfo_restored" (after everything was
    given back and memory compacted), "order9_free_before",
    "order9_free_during", "order9_free_restored" (DMA32, Normal, Movable),
    "fallback_expected", "trigger" (vmalloc_huge.trigger result: pid, tid,
    loads), "sysctls_before", "sysctls_after", "vm_locked_before",
    "vm_locked_after" (this process's mlocked bytes), "held_s"}.
    """
    _restore.require_root()
    locked_before = _vm_locked()
    names = ("extfrag_threshold", "compact_unevictable_allowed", "compaction_proactiveness")
    sysctls_before = _sysctls(names)
    allowed = os.sched_getaffinity(0)
    with _restore.machine_lock(), _restore.Restorer() as r:
        # Put the 2 MiB blocks back at the end: while the pieces were free,
        # allocations landed in them (the smallest free blocks go first),
        # so freeing the kept pages alone leaves memory fragmented.  Last
        # in, first out: this runs after the kept pages are unmapped.
        r.undo("memory compacted", compact_memory)
        if drop:
            _proc.drop_caches(3)
        compact_memory()
        bi_before = PROC.buddyinfo()
        free_before = PROC.meminfo(in_bytes=True)["MemFree"]
        t0 = time.monotonic()
        try:
            frag = fragment(r, chunk_mib)
            bi_during = PROC.buddyinfo()
            reserved_during = _reserved_order9(PROC.try_read("/proc/pagetypeinfo") or "")
            free_during = PROC.meminfo(in_bytes=True)["MemFree"]
            trig = vmalloc_huge.trigger(insns, count)
        finally:
            os.sched_setaffinity(0, allowed)
        bi_after = PROC.buddyinfo()
    held = time.monotonic() - t0
    locked_after = _vm_locked()
    bi_restored = _blocks_back(_order9(bi_before))
    res = {
        "fragment": frag, "mem_free_before": free_before, "mem_free_during": free_during,
        "buddyinfo_before": bi_before, "buddyinfo_during": bi_during,
        "buddyinfo_after_trigger": bi_after, "buddyinfo_restored": bi_restored,
        "order9_free_restored": _order9(bi_restored),
        "order9_free_before": _order9(bi_before),
        "order9_free_during": _order9(bi_during),
        # of which the reserve no GFP_KERNEL allocation is given (RESERVED_TYPES)
        "order9_reserved_during": reserved_during,
        "order9_takeable_during": _order9(bi_during) - reserved_during,
        "fallback_expected": _order9(bi_during) - reserved_during <= 0,
        "trigger": trig, "held_s": held,
        "vm_locked_before": locked_before, "vm_locked_after": locked_after,
        "sysctls_before": sysctls_before,
        "sysctls_after": _sysctls(names),
    }
    if log:
        log("buddyinfo before (free blocks per order 0..10):")
        for line in _format_buddyinfo(bi_before):
            log("  " + line)
        log("took %d free 2 MiB blocks as THPs on CPUs %s (bulk %s), kept one "
            "4 KiB page of each (%d pages), %.2f s; MemFree %d -> %d MiB"
            % (frag["thps"], ",".join(map(str, frag["cpus"])),
               "%d; sweeps %s" % (frag["rounds"][0],
                                  ", ".join(map(str, frag["rounds"][1:])) or "none"),
               frag["kept_pages"],
               frag["seconds"], free_before // MiB, free_during // MiB))
        log("buddyinfo fragmented (order>=9 free in DMA32/Normal/Movable: %d, of which "
            "the high-order atomic reserve or isolated: %d):"
            % (res["order9_free_during"], res["order9_reserved_during"]))
        for line in _format_buddyinfo(bi_during):
            log("  " + line)
        log("trigger: pid %d tid %d, %d/%d loads ok"
            % (trig["pid"], trig["tid"], trig["loaded"], count))
        log("buddyinfo after trigger (kept pages still held):")
        for line in _format_buddyinfo(bi_after):
            log("  " + line)
        log("given back and compacted: %d free 2 MiB blocks (%d before; pages still on "
            "per-CPU free lists merge back as the kernel drains them)"
            % (res["order9_free_restored"], res["order9_free_before"]))
        if not res["fallback_expected"]:
            log("note: a free order-9 block appeared after fragmenting; "
                "the huge mapping may succeed")
    return res


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Fragment memory (no free 2 MiB block, most memory still free), "
                    "then trigger a huge vmalloc: it falls back to 4 KiB pages.",
        epilog="examples:\n"
               "  vmalloc_fallback.py\n"
               "  vmalloc_fallback.py --count 2 --json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--insns", type=int, default=vmalloc_huge.DEFAULT_INSNS)
    p.add_argument("--count", type=int, default=1, help="BPF loads while memory is fragmented")
    p.add_argument("--chunk-mib", type=int, default=DEFAULT_CHUNK_MIB,
                   help="memory faulted at a time while taking blocks (default %(default)s)")
    p.add_argument("--no-drop-caches", dest="drop", action="store_false",
                   help="skip echo 3 > drop_caches first")
    _restore.common_args(p)
    args = p.parse_args(argv)

    def body():
        log = _restore.progress_log(args)
        res = run(args.insns, args.count, args.chunk_mib, args.drop, log)
        if args.json:
            print(json.dumps(res))
        if res["trigger"]["failed"]:
            raise _restore.WorkloadError("BPF_PROG_LOAD failed: %s"
                                         % res["trigger"]["loads"][0]["error"],
                                         "run examples/vmalloc_huge.py alone to see why")
    return _restore.run_cli(body, args.traceback)


if __name__ == "__main__":
    sys.exit(main())
