#!/usr/bin/env python3
"""Compare trace-reclaim's cost with its peers', side by side, in one run.

Two workloads:

- ``pressure``: page cache streamed through a hugetlb ballast (the pressure
  workload of trace_reclaim.examples.pressure), a fixed number of MiB per
  round, so direct reclaim, kswapd and shrinkers run;
- ``slab``: the open/close/stat loop of trace_reclaim.examples.slab_churn
  (about four kmem_cache events per iteration).

Under each, with the rounds alternated (the order rotates every round), one of:

- ``untraced``;
- ``trace-reclaim``: ``python -m trace_reclaim record`` (all tracers);
- ``trace-reclaim --no-slab-accounting``;
- ``bpftrace``: a script counting the same vmscan tracepoints (stall latency
  included) and kmem_cache allocations and frees per cache;
- ``perf record -a`` on the same tracepoints;
- ``slabratetop``: bcc's slabratetop-bpfcc, where it runs (it needs kprobes);
- ``empty``: empty BPF programs on the tracepoints bpftrace uses, the
  per-event floor of any BPF tool.

Printed: the workload's wall time and the machine's CPU time (all CPUs, from
/proc/stat: the workload, the tracer's user space and its BPF programs) as
ratios against untraced; and with kernel.bpf_stats_enabled=1 (restored at
exit) the kernel's own per-event run time of each tool's BPF programs, per
tracepoint, beside the empty program's.

Run as root on a quiet machine:

    .venv/bin/python bench/peers.py [--rounds 3] [--mib 3000] [--iterations 200000]

Needs Debian's bpftrace, linux-perf and bpfcc-tools (a peer that is missing
is reported, not skipped silently).  Nothing asserts on the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, Callable, Dict, List, Optional, Sequence, Tuple, Union

from tabulate import tabulate

from trace_reclaim.examples import _restore, pressure, slab_churn
from trace_reclaim.session import all_attached

STATS = "/proc/sys/kernel/bpf_stats_enabled"
VMSCAN = ("mm_vmscan_direct_reclaim_begin", "mm_vmscan_direct_reclaim_end",
          "mm_vmscan_kswapd_wake", "mm_vmscan_kswapd_sleep", "mm_vmscan_wakeup_kswapd",
          "mm_shrink_slab_start", "mm_shrink_slab_end")
KMEM = ("kmem_cache_alloc", "kmem_cache_free")

BPFTRACE = """
tracepoint:vmscan:mm_vmscan_direct_reclaim_begin { @start[tid] = nsecs; }
tracepoint:vmscan:mm_vmscan_direct_reclaim_end /@start[tid]/ {
  @stall_ns = hist(nsecs - @start[tid]); @stalls = count(); delete(@start[tid]); }
tracepoint:vmscan:mm_vmscan_kswapd_wake { @kswapd_wake = count(); }
tracepoint:vmscan:mm_vmscan_kswapd_sleep { @kswapd_sleep = count(); }
tracepoint:vmscan:mm_vmscan_wakeup_kswapd { @wakeup_kswapd = count(); }
tracepoint:vmscan:mm_shrink_slab_start { @shrink_start = count(); }
tracepoint:vmscan:mm_shrink_slab_end { @shrink_end = count(); }
tracepoint:kmem:kmem_cache_alloc { @alloc[str(args->name)] = count(); }
tracepoint:kmem:kmem_cache_free { @free[str(args->name)] = count(); }
"""

EMPTY = "\n".join(
    [f"TRACEPOINT_PROBE(vmscan, {tp}) {{ return 0; }}" for tp in VMSCAN]
    + [f"TRACEPOINT_PROBE(kmem, {tp}) {{ return 0; }}" for tp in KMEM])

EMPTY_RUNNER = f"""
import sys, time
from bcc import BPF
b = BPF(text={EMPTY!r})
print("ready", flush=True)
try:
    while True:
        time.sleep(1)
except KeyboardInterrupt:
    pass
"""


@dataclass
class Peer:
    """A tracer started as a child process; ready when ``ready`` shows in its output
    (or says so, when it is a function of the output)."""
    name: str
    argv: Callable[[str], List[str]]
    ready: Union[None, str, Callable[[str], bool]]   # None: give it ``settle`` seconds
    settle: float = 2.0
    needs: str = ""               # the executable that must exist


def _tr(*extra: str) -> Callable[[str], List[str]]:
    return lambda d: [sys.executable, "-m", "trace_reclaim", "record",
                      "-o", os.path.join(d, f"tr-{time.monotonic_ns()}.trc"), *extra]


PEERS = [
    # Measured once every tracer is attached (the reclaim programs attach first).
    Peer("trace-reclaim", _tr(), all_attached),
    Peer("trace-reclaim --no-slab-accounting", _tr("--no-slab-accounting"), all_attached),
    Peer("bpftrace", lambda d: ["bpftrace", "-e", BPFTRACE], "Attaching", needs="bpftrace"),
    Peer("perf record -a",
         lambda d: ["perf", "record", "-a", "-q", "-o", os.path.join(d, "perf.data"),
                    *[a for tp in VMSCAN for a in ("-e", f"vmscan:{tp}")],
                    *[a for tp in KMEM for a in ("-e", f"kmem:{tp}")]],
         None, settle=2.0, needs="perf"),
    Peer("slabratetop", lambda d: ["slabratetop-bpfcc", "-C", "1", "3600"], None,
         settle=4.0, needs="slabratetop-bpfcc"),
    Peer("empty", lambda d: [sys.executable, "-c", EMPTY_RUNNER], "ready"),
]


@dataclass
class Running:
    peer: Peer
    proc: subprocess.Popen
    out: IO[str]
    new_progs: List[int] = field(default_factory=list)


def bpf_prog_ids() -> List[int]:
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True,
                         check=True).stdout
    return [p["id"] for p in json.loads(out)]


def prog_stats(ids: Sequence[int]) -> Dict[int, Tuple[int, int]]:
    """run_time_ns and run_cnt of each program still loaded."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True,
                         check=True).stdout
    want = set(ids)
    return {p["id"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0))
            for p in json.loads(out) if p["id"] in want}


def prog_tracepoints() -> Dict[int, str]:
    """Map program id -> the tracepoint it is attached to (perf events and raw links)."""
    where: Dict[int, str] = {}
    perf = subprocess.run(["bpftool", "perf", "show", "-j"], capture_output=True, text=True)
    for e in json.loads(perf.stdout or "[]"):
        if e.get("tracepoint"):
            where[e["prog_id"]] = e["tracepoint"]
    links = subprocess.run(["bpftool", "link", "show", "-j"], capture_output=True, text=True)
    for e in json.loads(links.stdout or "[]"):
        if e.get("tp_name"):
            where[e["prog_id"]] = e["tp_name"]
    return where


def start(peer: Peer, workdir: str) -> Running:
    before = set(bpf_prog_ids())
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(peer.argv(workdir), stdout=out, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    r = Running(peer, proc, out)
    deadline = time.monotonic() + (60 if peer.ready else peer.settle)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out.seek(0)
            raise RuntimeError(f"{peer.name} exited: {_why(out.read())}")
        if peer.ready:
            out.seek(0)
            text = out.read()
            if peer.ready(text) if callable(peer.ready) else peer.ready in text:
                break
        time.sleep(0.05)
    else:
        if peer.ready:
            stop(r)
            raise RuntimeError(f"{peer.name} did not become ready in 60 s")
    time.sleep(0.5)  # the start snapshots that follow the attach
    r.new_progs = sorted(set(bpf_prog_ids()) - before)
    return r


def _why(output: str) -> str:
    """The line of a peer's output that says why it failed (a compile error first)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln.lower()]
    return (errors or lines or ["(no output)"])[0 if errors else -1][:300]


def stop(r: Running) -> None:
    if r.proc.poll() is None:
        os.killpg(r.proc.pid, signal.SIGINT)
        try:
            r.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait()
    r.out.close()


def cpu_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


@dataclass
class Sample:
    wall: float
    cpu: float
    bpf: Dict[str, Tuple[int, int]]  # tracepoint -> (run_time_ns, run_cnt)


def measure(workload: Callable[[], None], r: Optional[Running]) -> Sample:
    where = prog_tracepoints() if r else {}
    s0 = prog_stats(r.new_progs) if r else {}
    hz = os.sysconf("SC_CLK_TCK")
    j0, t0 = cpu_jiffies(), time.perf_counter()
    workload()
    t1, j1 = time.perf_counter(), cpu_jiffies()
    s1 = prog_stats(r.new_progs) if r else {}
    bpf: Dict[str, Tuple[int, int]] = {}
    for pid, (ns, cnt) in s1.items():
        ns0, cnt0 = s0.get(pid, (0, 0))
        tp = where.get(pid, f"prog {pid}")
        old = bpf.get(tp, (0, 0))
        bpf[tp] = (old[0] + ns - ns0, old[1] + cnt - cnt0)
    return Sample(t1 - t0, (j1 - j0) / hz, bpf)


def median(xs: List[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mib", type=int, default=3000, help="MiB streamed per pressure round")
    p.add_argument("--iterations", type=int, default=200_000, help="slab loop iterations")
    p.add_argument("--only", action="append", help="run only this peer (repeatable)")
    args = p.parse_args()
    _restore.require_root()
    peers = [pe for pe in PEERS if not args.only or pe.name in args.only]
    missing = {pe.name: f"{pe.needs} not installed" for pe in peers
               if pe.needs and not shutil.which(pe.needs)}
    configs: List[Optional[Peer]] = [None] + [pe for pe in peers if pe.name not in missing]
    results: Dict[Tuple[str, str], List[Sample]] = {}
    failed: Dict[str, str] = dict(missing)

    with _restore.machine_lock(timeout=1800), _restore.Restorer() as restorer, \
            _restore.signals_to_exceptions(), tempfile.TemporaryDirectory() as workdir:
        restorer.sysctl("kernel.bpf_stats_enabled", "1")
        with pressure.ballast(log=print) as b, pressure.sparse_file() as path:
            mib = min(args.mib, 3 * b["mem_available_after"] // pressure.MiB)
            offset = [0]

            def stream() -> None:
                offset[0] = pressure.stream(path, mib, offset=offset[0])["next_offset"]

            def loop() -> None:
                slab_churn.syscall_loop(args.iterations)

            workloads = {"pressure": stream, "slab": loop}
            stream()  # warm up: fill the page cache so every round reclaims
            loop()
            for rnd in range(args.rounds):
                order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
                for cfg in order:
                    name = cfg.name if cfg else "untraced"
                    if name in failed:
                        continue
                    for wname, work in workloads.items():
                        r = None
                        try:
                            r = start(cfg, workdir) if cfg else None
                            s = measure(work, r)
                        except RuntimeError as e:
                            failed[name] = str(e)
                            break
                        finally:
                            if r:
                                stop(r)
                        results.setdefault((wname, name), []).append(s)
                        print(f"round {rnd + 1} {wname:8} {name:36} wall {s.wall:7.3f}s "
                              f"cpu {s.cpu:7.3f}s", flush=True)

    report(results, failed, args)
    return 0


def report(results: Dict[Tuple[str, str], List[Sample]], failed: Dict[str, str],
           args: argparse.Namespace) -> None:
    for wname in ("pressure", "slab"):
        base = results.get((wname, "untraced"), [])
        bw, bc = median([s.wall for s in base]), median([s.cpu for s in base])
        rows = []
        for (w, name), samples in results.items():
            if w != wname:
                continue
            wall, cpu = median([s.wall for s in samples]), median([s.cpu for s in samples])
            ns = sum(v[0] for s in samples for v in s.bpf.values())
            cnt = sum(v[1] for s in samples for v in s.bpf.values())
            rows.append([name, f"{wall:.3f}", f"{wall / bw:.3f}", f"{cpu:.3f}", f"{cpu / bc:.3f}",
                         cnt // max(1, len(samples)), f"{ns / cnt:.0f}" if cnt else "-"])
        size = (f"{args.mib} MiB streamed" if wname == "pressure"
                else f"{args.iterations} iterations")
        print(f"\n{wname}: medians of {args.rounds} rounds ({size})")
        print(tabulate(rows, headers=["tool", "wall s", "x untraced", "cpu s", "x untraced",
                                      "bpf events", "bpf ns/event"]))
        tps = sorted({tp for (w, _n), ss in results.items() if w == wname
                      for s in ss for tp in s.bpf if tp in VMSCAN + KMEM})
        if tps:
            per_tp: List[List[str]] = []
            for tp in tps:
                row: List[str] = [tp]
                for name in ("trace-reclaim", "trace-reclaim --no-slab-accounting", "bpftrace",
                             "slabratetop", "empty"):
                    ss = results.get((wname, name), [])
                    ns = sum(s.bpf.get(tp, (0, 0))[0] for s in ss)
                    cnt = sum(s.bpf.get(tp, (0, 0))[1] for s in ss)
                    row.append(f"{ns / cnt:.0f}" if cnt else "-")
                per_tp.append(row)
            print(f"\n{wname}: kernel run time per event (ns, bpf_stats) per tracepoint")
            print(tabulate(per_tp, headers=["tracepoint", "trace-reclaim", "tr --no-slab-acc",
                                          "bpftrace", "slabratetop", "empty"]))
    for name, why in failed.items():
        print(f"\n{name}: not measured: {why}")


if __name__ == "__main__":
    sys.exit(main())
