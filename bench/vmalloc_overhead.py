#!/usr/bin/env python3
"""Measure the vmalloc tracer's cost on a page-allocation-heavy workload.

Two measurements (shared/KERNEL-FACTS.md "Measuring cost"):

1. Wall and CPU time of a page-fault loop (mmap anonymous memory without
   THP, touch every 4 KiB page, munmap), untraced and traced alternately,
   many rounds; medians and spread.  "Traced" loads exactly the BPF program
   trace-reclaim loads for the vmalloc tracer alone.
2. The kernel's own per-program cost (bpf_stats_enabled=1, run_time_ns /
   run_cnt from ``bpftool prog show``) of the tracer's mm_page_alloc program
   against an empty program on the same hook, attached in the same run: the
   difference is the marginal cost of the filter; the empty program's figure
   is mostly the stats' own clock reads.

Run as root: ``.venv/bin/python bench/vmalloc_overhead.py [--rounds 10]``.
Holds the machine lock; puts bpf_stats_enabled back on every exit path.
Prints figures only; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from trace_reclaim.examples._restore import machine_lock
from trace_reclaim.probe import Probe
from trace_reclaim.quiet import captured_stderr
from trace_reclaim.session import bpf_cflags, bpf_source
from trace_reclaim.tracers import vmalloc

STATS = "/proc/sys/kernel/bpf_stats_enabled"
EMPTY = {
    "raw": "RAW_TRACEPOINT_PROBE(mm_page_alloc) { return 0; }",
    "tp": "TRACEPOINT_PROBE(kmem, mm_page_alloc) { return 0; }",
}


def workload(mib: int, loops: int) -> Tuple[float, float, int]:
    """Fault in ``mib`` MiB page by page ``loops`` times; return (wall s, cpu s, pages)."""
    size = mib << 20
    libc = ctypes.CDLL(None)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(loops):
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB faults: one mm_page_alloc each
        buf = (ctypes.c_char * size).from_buffer(m)
        libc.memset(buf, 1, size)
        del buf
        m.close()
    return time.perf_counter() - t0, time.process_time() - c0, loops * (size >> 12)


def load_tracer(variant: str) -> Any:
    from bcc import BPF  # type: ignore[import-not-found]

    probe = Probe()
    t = vmalloc.TRACER
    plan = probe.plan({"vmalloc": t})
    flags = [c for c in bpf_cflags(plan) if not (variant == "tp" and c == "-DVMALLOC_RAW_TP")]
    with captured_stderr():  # the 6.12 headers' compiler warnings
        return BPF(text=bpf_source({"vmalloc": t}), cflags=flags)


def prog_ids_of(bpf: Any, names: List[str]) -> Dict[str, int]:
    """Kernel prog ids of bcc functions, from /proc/self/fdinfo of their fds."""
    out = {}
    for fn in bpf.funcs.values():
        if fn.name.decode() not in names:
            continue
        with open(f"/proc/self/fdinfo/{fn.fd}") as f:
            for line in f:
                if line.startswith("prog_id:"):
                    out[fn.name.decode()] = int(line.split()[1])
    return out


def bpftool_stats(prog_id: int) -> Tuple[int, int]:
    j = json.loads(subprocess.run(["bpftool", "prog", "show", "id", str(prog_id), "-j"],
                                  capture_output=True, text=True, check=True).stdout)
    return int(j.get("run_time_ns", 0)), int(j.get("run_cnt", 0))


def spread(xs: List[float]) -> str:
    return (f"median {statistics.median(xs):.3f}s  min {min(xs):.3f}  max {max(xs):.3f}  "
            f"(n={len(xs)})")


def timing(rounds: int, mib: int, loops: int, variant: str) -> None:
    print(f"== wall/CPU time: fault in {mib} MiB x {loops} per run, {rounds} rounds, "
          f"untraced and traced ({variant}) alternately")
    un_w: List[float] = []
    un_c: List[float] = []
    tr_w: List[float] = []
    tr_c: List[float] = []
    pages = 0
    workload(mib, 1)  # warm up
    for i in range(rounds):
        b = None
        order = ("un", "tr") if i % 2 == 0 else ("tr", "un")
        for which in order:
            if which == "tr":
                b = load_tracer(variant)
                w, c, pages = workload(mib, loops)
                tr_w.append(w)
                tr_c.append(c)
                b.cleanup()
            else:
                w, c, pages = workload(mib, loops)
                un_w.append(w)
                un_c.append(c)
    print(f"  pages faulted per run: {pages}")
    print(f"  untraced wall {spread(un_w)}")
    print(f"  traced   wall {spread(tr_w)}")
    print(f"  untraced cpu  {spread(un_c)}")
    print(f"  traced   cpu  {spread(tr_c)}")
    ratio = [t / u for t, u in zip(tr_w, un_w)]
    print(f"  traced/untraced wall per round: median {statistics.median(ratio):.3f}x "
          f"(min {min(ratio):.3f}, max {max(ratio):.3f})")
    per = (statistics.median(tr_c) - statistics.median(un_c)) / pages * 1e9
    print(f"  CPU difference of medians per page fault: {per:+.0f} ns (noise: see spread)")


def kernel_cost(mib: int, loops: int, variant: str) -> None:
    from bcc import BPF  # type: ignore[import-not-found]

    print(f"== kernel per-program cost (bpf_stats_enabled), variant {variant}")
    fn = "raw_tracepoint__mm_page_alloc" if variant == "raw" else "tracepoint__kmem__mm_page_alloc"
    old = open(STATS).read().strip()

    def restore(*_a: Any) -> None:
        with open(STATS, "w") as f:
            f.write(old)

    prev = {s: signal.signal(s, lambda n, f: (restore(), sys.exit(130)))
            for s in (signal.SIGINT, signal.SIGTERM)}
    tracer: Optional[Any] = None
    empty: Optional[Any] = None
    try:
        with open(STATS, "w") as f:
            f.write("1")
        tracer = load_tracer(variant)
        with captured_stderr():
            empty = BPF(text=EMPTY[variant], cflags=["-Wno-ignored-attributes"])
        ids = {"vmalloc": prog_ids_of(tracer, [fn])[fn], "empty": prog_ids_of(empty, [fn])[fn]}
        base = {k: bpftool_stats(v) for k, v in ids.items()}
        _w, _c, pages = workload(mib, loops)
        after = {k: bpftool_stats(v) for k, v in ids.items()}
        per = {}
        for k in ids:
            ns = after[k][0] - base[k][0]
            cnt = after[k][1] - base[k][1]
            per[k] = ns / cnt if cnt else float("nan")
            print(f"  {k:<8} prog id {ids[k]:>6}: {cnt} runs, {ns} ns, {per[k]:.1f} ns/run")
        print(f"  ({pages} pages faulted by the workload; runs include every other "
              "page allocation on the machine meanwhile)")
        print(f"  marginal cost of the vmalloc filter: {per['vmalloc'] - per['empty']:+.1f} "
              "ns per page allocation")
    finally:
        for p in (tracer, empty):
            if p is not None:
                p.cleanup()
        restore()
        for s, h in prev.items():
            signal.signal(s, h)
    print(f"  bpf_stats_enabled restored to {open(STATS).read().strip()}")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--mib", type=int, default=256, help="MiB faulted per loop")
    p.add_argument("--loops", type=int, default=4)
    p.add_argument("--variant", choices=("raw", "tp", "both"), default="both",
                   help="mm_page_alloc as raw tracepoint (the plan here), tracepoint, or both")
    p.add_argument("--no-timing", action="store_true")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root to load BPF programs", file=sys.stderr)
        print("hint: sudo .venv/bin/python bench/vmalloc_overhead.py", file=sys.stderr)
        return 1
    variants = ("raw", "tp") if args.variant == "both" else (args.variant,)
    with machine_lock():
        for v in variants:
            kernel_cost(args.mib, args.loops, v)
        if not args.no_timing:
            for v in variants:
                timing(args.rounds, args.mib, args.loops, v)
    return 0


if __name__ == "__main__":
    sys.exit(main())
