#!/usr/bin/env python3
"""Benchmark: the tracer's own memory over a long run under memory pressure.

Runs ``trace-reclaim record`` (every tracer this kernel supports) for
``--seconds`` while examples/ workloads loop: page-cache pressure with a
hugetlb ballast, dentry/inode churn and the huge-vmalloc trigger.  Samples
the recorder's VmRSS every 2 s and prints the curve's summary and VmHWM,
the peak the kernel saw.  Bounded state means the curve flattens.

    sudo .venv/bin/python bench/rss_soak.py --seconds 600
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from trace_reclaim.examples import pressure, slab_churn, vmalloc_huge


def status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def workloads(stop: threading.Event, counts: dict) -> None:
    quiet = lambda *a, **k: None  # noqa: E731
    while not stop.is_set():
        pressure.run(seconds=10, log=quiet)
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
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("error: the soak loads BPF programs and changes nr_hugepages\n"
              "hint: run it as root", file=sys.stderr)
        return 1
    d = tempfile.mkdtemp()
    rec = os.path.join(d, "soak.trc")
    proc = subprocess.Popen([sys.executable, "-m", "trace_reclaim", "record",
                             "-o", rec], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if "Tracing reclaim" not in line:
        print(f"error: recorder did not start: {line}{proc.stderr.read()}", file=sys.stderr)
        return 1
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
        last = status(proc.pid)
        hwm = last["VmHWM"]
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
    os.unlink(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
