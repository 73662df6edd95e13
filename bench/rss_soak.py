#!/usr/bin/env python3
"""Benchmark: the tracer's own memory over a long run under memory pressure.

Runs ``trace-reclaim record`` (every tracer this kernel supports) for
``--seconds`` while examples/ workloads loop: page-cache pressure with a
hugetlb ballast, dentry/inode churn and the huge-vmalloc trigger.  Samples
the recorder's VmRSS every 2 s and prints the curve's summary and VmHWM,
the peak the kernel saw.  Bounded state means the curve flattens.

``--memory-max MIB`` runs the recorder inside a memory cgroup of our own with
that hard limit (v1 memory.limit_in_bytes, v2 memory.max; examples/_cgroup.py
removes it on every exit path), the way an SRE would cap it on a host in
trouble, and adds the cgroup's own view: its peak charge (v1
memory.max_usage_in_bytes, v2 memory.peak), how often the limit refused a
charge (failcnt / memory.events max), its OOM kills (must be 0) and whether
the recorder lived to the end.

    sudo .venv/bin/python bench/rss_soak.py --seconds 600 [--memory-max 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import contextlib

from trace_reclaim.examples._restore import machine_lock
from trace_reclaim.examples import _cgroup, oom_kill, pressure, slab_churn, vmalloc_huge
from trace_reclaim.session import all_attached


def status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def workloads(stop: threading.Event, counts: dict, pressure_seconds: float = 10) -> None:
    """Loop the pressure, dentry-churn and huge-vmalloc workloads until ``stop``.

    Also serve_soak.py's load.
    """
    quiet = lambda *a, **k: None  # noqa: E731
    # One hold of the machine lock for the whole soak (the lock is per
    # thread): other workloads wait instead of interleaving with ours.
    with machine_lock(timeout=1800):
        while not stop.is_set():
            pressure.run(seconds=pressure_seconds, log=quiet)
            counts["pressure"] += 1
            if stop.is_set():
                break
            slab_churn.churn(seconds=3)
            counts["churn"] += 1
            vmalloc_huge.trigger(count=2)
            counts["vmalloc"] += 1
            stop.wait(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--memory-max", type=int, metavar="MIB", default=None,
                    help="run the recorder in a memory cgroup of ours with this hard limit")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("error: the soak loads BPF programs and changes nr_hugepages\n"
              "hint: run it as root", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as stack:
        cg = None
        if args.memory_max:
            cg = stack.enter_context(_cgroup.memory_cgroup(
                "soak", limit_bytes=args.memory_max * 2**20, log=None))
        return soak(args, cg)


def cgroup_view(cg) -> dict:
    c = cg.counters()
    peak = c.get("max_usage_bytes")
    if peak is None:  # v2: memory.peak (Linux 5.19+)
        with contextlib.suppress(OSError):
            with open(os.path.join(cg.path, "memory.peak")) as f:
                peak = int(f.read())
    refused = c.get("failcnt", (c.get("events") or {}).get("max"))
    stat = c.get("stat") or {}
    return {"peak": peak, "refused": refused, "oom_kills": oom_kill.oom_kills_of(cg),
            "anon": stat.get("rss", stat.get("anon")), "file": stat.get("cache",
                                                                       stat.get("file"))}


def soak(args, cg) -> int:
    d = tempfile.mkdtemp(prefix="trace-reclaim-soak-")
    try:
        return _soak(args, cg, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)   # the recording too, on every exit path


def _soak(args, cg, d) -> int:
    rec = os.path.join(d, "soak.trc")
    argv = [sys.executable, "-m", "trace_reclaim", "record", "-o", rec]
    spawn = cg.popen if cg else subprocess.Popen
    proc = spawn(argv, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    # The RSS baseline once every tracer is attached (both BPF objects).
    seen = ""
    while not all_attached(seen):
        line = proc.stderr.readline()
        if not line:
            print(f"error: recorder did not start: {seen}{line}{proc.stderr.read()}",
                  file=sys.stderr)
            return 1
        seen += line
    time.sleep(1)
    first = status(proc.pid)
    samples = [(0.0, first["VmRSS"], first["RssAnon"])]
    stop = threading.Event()
    counts = {"pressure": 0, "churn": 0, "vmalloc": 0}
    t = threading.Thread(target=workloads, args=(stop, counts))
    t.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < args.seconds:
            time.sleep(2)
            st = status(proc.pid)
            samples.append((time.monotonic() - t0, st["VmRSS"], st["RssAnon"]))
    finally:
        stop.set()
        t.join()
        alive = proc.poll() is None
        last = status(proc.pid) if alive else {"VmHWM": -1, "RssFile": -1}
        hwm = last["VmHWM"]
        view = cgroup_view(cg) if cg else None
        if alive:
            proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    size = os.path.getsize(rec)
    r = subprocess.run([sys.executable, "-m", "trace_reclaim", "report", "-j", rec],
                       capture_output=True, text=True)
    import json

    doc = json.loads(r.stdout)
    tot = doc["totals"]
    n = len(samples)
    print(f"soak: {args.seconds:.0f} s, workloads run: {counts}")
    print(f"recording: {size / 2**20:.1f} MiB, intervals {doc['window']['intervals']}, "
          f"lost events {tot['lost_events']}")
    print(f"traced: {tot['direct_reclaim_stalls']} direct-reclaim stalls, "
          f"{tot['kswapd_wakes']} kswapd wakes, {tot.get('shrink_slab_calls', '-')} "
          f"shrink_slab calls, {tot.get('vmalloc_areas', '-')} vmalloc areas")
    for col, label in ((1, "VmRSS"), (2, "RssAnon")):
        q = [samples[i][col] for i in (0, n // 4, n // 2, 3 * n // 4, -1)]
        print(f"{label} (KiB) after attach {q[0]}, at 25% {q[1]}, 50% {q[2]}, "
              f"75% {q[3]}, end {q[4]}")
    print(f"RssFile (KiB) at the end {last['RssFile']} (shared, clean library pages: "
          f"libbcc/LLVM); peak VmHWM {hwm} (the BPF compile at start)")
    print(err.strip().splitlines()[-1] if err.strip() else "")
    if view is not None:
        mib = 2**20
        print(f"cgroup {cg.rel} memory max {args.memory_max} MiB: peak charge "
              f"{view['peak'] / mib:.1f} MiB ({100 * view['peak'] / (args.memory_max * mib):.0f}% "
              f"of the limit; anon {view['anon'] / mib:.1f} MiB, page cache "
              f"{view['file'] / mib:.1f} MiB at the end), limit refused a charge "
              f"{view['refused']} times, OOM kills {view['oom_kills']}, recorder "
              f"{'alive at the end' if alive else 'DIED'} (exit {proc.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
