#!/usr/bin/env python3
"""Measure the per-cache kmem_cache accounting's cost on a syscall-heavy loop.

Two measurements, both under the machine lock:

1. Wall and CPU time of ``examples/slab_churn.syscall_loop`` (open/close of
   one file and stat of a missing name: about four kmem_cache events per
   iteration), with the slab tracer's BPF program attached and detached
   alternately over many rounds.  Medians and spread are printed; this VM's
   timing noise is ~15%, so only many rounds say anything.
2. The kernel's own per-program accounting (kernel.bpf_stats_enabled=1,
   restored afterwards): run_time_ns / run_cnt of the accounting programs
   and of empty raw tracepoint programs on the same tracepoints, attached at
   the same time, from ``bpftool prog show``.  The difference is the
   marginal cost per event (the stats' own clock reads cost the same in both).

Run as root: ``.venv/bin/python bench/slab_overhead.py [--rounds 10] [--iterations 100000]``.
It prints figures; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any, Dict, List

from trace_reclaim.examples import slab_churn
from trace_reclaim.examples._restore import machine_lock
from trace_reclaim.probe import Probe
from trace_reclaim.quiet import captured_stderr
from trace_reclaim.session import bpf_cflags, bpf_source
from trace_reclaim.tracers.slab import TRACER

STATS = "/proc/sys/kernel/bpf_stats_enabled"
ACCOUNTING = ("kmem_cache_alloc", "kmem_cache_free")
EMPTY = """
RAW_TRACEPOINT_PROBE(kmem_cache_alloc) { return 0; }
RAW_TRACEPOINT_PROBE(kmem_cache_free) { return 0; }
"""


def load_slab(bpf_cls: Any) -> Any:
    probe = Probe(bpf_factory=bpf_cls)
    plan = probe.plan({"slab": TRACER})
    with captured_stderr():
        return bpf_cls(text=bpf_source({"slab": TRACER}),
                       cflags=bpf_cflags(plan, 0, 64)), plan


def detach(b: Any) -> None:
    for tp in ACCOUNTING:
        b.detach_raw_tracepoint(tp=tp.encode())


def attach(b: Any) -> None:
    for tp in ACCOUNTING:
        b.attach_raw_tracepoint(tp=tp.encode(), fn_name=f"raw_tracepoint__{tp}".encode())


def prog_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("prog_id:"):
                return int(line.split()[1])
    raise RuntimeError("no prog_id in fdinfo")


def bpftool_stats(pid: int) -> Dict[str, int]:
    out = subprocess.run(["bpftool", "prog", "show", "id", str(pid), "-j"],
                         capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    return {"run_time_ns": d.get("run_time_ns", 0), "run_cnt": d.get("run_cnt", 0)}


def spread(xs: List[float]) -> str:
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    return (f"median {statistics.median(xs):.3f}s  IQR {q[0]:.3f}-{q[2]:.3f}s  "
            f"range {min(xs):.3f}-{max(xs):.3f}s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--iterations", type=int, default=100_000)
    args = p.parse_args()
    from bcc import BPF  # type: ignore[import-not-found]

    with machine_lock():
        b, plan = load_slab(BPF)
        print("plan cflags:", " ".join(c for c in plan.cflags if "KMEM" in c or "SLAB" in c))
        with captured_stderr():
            e = BPF(text=EMPTY, cflags=["-Wno-ignored-attributes"])
        slab_churn.syscall_loop(args.iterations // 10)  # warm up
        modes = ("untraced", "traced", "empty")
        wall: Dict[str, List[float]] = {m: [] for m in modes}
        cpu: Dict[str, List[float]] = {m: [] for m in modes}
        ratios = []
        detach(b)
        detach(e)
        try:
            for r in range(args.rounds):
                res = {}
                for i in range(3):  # rotate the order every round
                    mode = modes[(i + r) % 3]
                    obj = {"traced": b, "empty": e}.get(mode)
                    if obj is not None:
                        attach(obj)
                    try:
                        res[mode] = slab_churn.syscall_loop(args.iterations)
                    finally:
                        if obj is not None:
                            detach(obj)
                    wall[mode].append(res[mode]["elapsed_s"])
                    cpu[mode].append(res[mode]["cpu_s"])
                ratios.append(res["traced"]["elapsed_s"] / res["untraced"]["elapsed_s"])
        finally:
            b.cleanup()
            e.cleanup()
        print(f"\n{args.rounds} rounds x {args.iterations} iterations of open/close + stat, "
              "order rotated each round; 'empty' = empty raw tracepoint programs on the "
              "same two tracepoints (the floor of any per-event BPF)")
        for mode in modes:
            print(f"  {mode:<9} wall {spread(wall[mode])}")
            print(f"  {mode:<9} cpu  {spread(cpu[mode])}")
        base = statistics.median(wall["untraced"])
        for mode in ("traced", "empty"):
            mw = statistics.median(wall[mode]) / base - 1
            mc = statistics.median(cpu[mode]) / statistics.median(cpu["untraced"]) - 1
            print(f"  {mode} slowdown (ratio of medians): wall {mw * 100:+.1f}%  "
                  f"cpu {mc * 100:+.1f}%")
        own = statistics.median(wall["traced"]) / statistics.median(wall["empty"]) - 1
        print(f"  accounting vs empty programs (its own work): wall {own * 100:+.1f}%")
        print(f"  per-round wall ratio traced/untraced: median "
              f"{(statistics.median(ratios) - 1) * 100:+.1f}%, range "
              f"{(min(ratios) - 1) * 100:+.1f}% .. {(max(ratios) - 1) * 100:+.1f}%")

        # The kernel's own accounting, against empty programs in the same run.
        with open(STATS) as f:
            old = f.read().strip()
        b, _plan = load_slab(BPF)
        with captured_stderr():
            e = BPF(text=EMPTY, cflags=["-Wno-ignored-attributes"])
        try:
            with open(STATS, "w") as f:
                f.write("1")
            res = slab_churn.syscall_loop(args.iterations)
            rows = []
            for label, obj in (("accounting", b), ("empty", e)):
                for tp in ACCOUNTING:
                    fd = obj.funcs[f"raw_tracepoint__{tp}".encode()].fd
                    st = bpftool_stats(prog_id(fd))
                    rows.append((label, tp, st))
        finally:
            with open(STATS, "w") as f:
                f.write(old)
            b.cleanup()
            e.cleanup()
        print(f"\nbpf_stats_enabled run ({args.iterations} iterations, "
              f"{res['elapsed_s']:.2f}s; restored bpf_stats_enabled={old}):")
        per = {}
        for label, tp, st in rows:
            ns = st["run_time_ns"] / max(1, st["run_cnt"])
            per[(label, tp)] = ns
            print(f"  {label:<10} {tp:<17} run_cnt {st['run_cnt']:>9}  "
                  f"run_time_ns {st['run_time_ns']:>11}  {ns:6.1f} ns/event")
        events_per_iter = sum(st["run_cnt"] for lab, _t, st in rows
                              if lab == "accounting") / args.iterations
        for tp in ACCOUNTING:
            print(f"  marginal cost {tp}: {per[('accounting', tp)] - per[('empty', tp)]:.1f} ns"
                  f"/event")
        marg = sum(per[("accounting", tp)] - per[("empty", tp)] for tp in ACCOUNTING) / 2
        ns_iter = statistics.median(wall["untraced"]) * 1e9 / args.iterations
        full = sum(per[("accounting", t)] for t in ACCOUNTING) / 2
        print(f"  {events_per_iter:.1f} kmem_cache events/iteration (system-wide), "
              f"untraced {ns_iter:.0f} ns/iteration: accounting adds about "
              f"{events_per_iter * marg / ns_iter * 100:.2f}% (marginal) / "
              f"{events_per_iter * full / ns_iter * 100:.2f}% (incl. the stats' clock reads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
