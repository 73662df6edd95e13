#!/usr/bin/env python3
"""Benchmark: ``trace-reclaim serve``'s memory and CPU over a run, and its
state per tick.

1. Live (root): runs ``serve -i 1`` on a free loopback port for
   ``--seconds``, idle for the first ``--idle`` seconds, then with the
   examples/ workloads looping (page-cache pressure with a hugetlb ballast,
   dentry/inode churn, the huge-vmalloc trigger).  Scrapes /metrics every 2 s
   as Prometheus would, samples VmRSS, and prints the curve and the tool's
   own CPU seconds per interval (process_cpu_seconds_total), idle and busy.
2. Synthetic (no root): feeds ``--ticks`` intervals of PSI/zoneinfo
   snapshots and reclaim events (two stalling processes) through the
   correlator and the exporter, as serve does (history off) and as ``live``
   does (history on), and prints the Python heap each one holds
   (tracemalloc) at half way and at the end.  The reclaim aggregator keeps
   each process's first 4096 latencies exact, then a histogram: past that,
   a bounded serve holds the same at both marks.

    sudo .venv/bin/python bench/serve_soak.py --seconds 300
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from typing import Dict, List, Tuple


def status(pid: int) -> Dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def cpu_seconds(addr: str) -> float:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
        body = r.read().decode()
    m = re.search(r"^process_cpu_seconds_total ([0-9.e+]+)$", body, re.M)
    return float(m.group(1)) if m else float("nan")


def live(seconds: float, idle: float) -> int:
    d = tempfile.mkdtemp()
    err_path = os.path.join(d, "serve.err")
    err = open(err_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "trace_reclaim", "serve",
                             "--listen", "127.0.0.1:0", "-i", "1"],
                            stdout=subprocess.DEVNULL, stderr=err)
    addr = ""
    for _ in range(600):
        with open(err_path) as f:
            m = re.search(r"metrics on http://([^/]+)/metrics", f.read())
        if m:
            addr = m.group(1)
            break
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    if not addr:
        proc.kill()
        print(f"error: serve did not start: {open(err_path).read()}", file=sys.stderr)
        return 1
    time.sleep(2)
    samples: List[Tuple[float, int, int, float]] = []
    stop = threading.Event()
    counts = {"pressure": 0, "churn": 0, "vmalloc": 0}
    from rss_soak import workloads  # bench/ is this script's directory

    t = threading.Thread(target=workloads, args=(stop, counts, 8))
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            el = time.monotonic() - t0
            if el >= idle and not t.is_alive() and not stop.is_set():
                t.start()
            st = status(proc.pid)
            samples.append((el, st["VmRSS"], st["RssAnon"], cpu_seconds(addr)))
            time.sleep(2)
    finally:
        stop.set()
        if t.is_alive():
            t.join()
        hwm = status(proc.pid)["VmHWM"]
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        err.close()
    idle_s = [s for s in samples if s[0] < idle]
    busy = [s for s in samples if s[0] >= idle]
    print(f"serve soak: {seconds:.0f} s ({idle:.0f} s idle first), workloads run: {counts}, "
          f"exit {rc}")
    for name, part in (("idle", idle_s), ("busy", busy)):
        if len(part) >= 2:
            cpu = (part[-1][3] - part[0][3]) / (part[-1][0] - part[0][0])
            print(f"{name}: CPU {cpu * 1000:.0f} ms per second of tracing "
                  f"({cpu * 100:.1f}% of one core); VmRSS {part[0][1]} -> {part[-1][1]} KiB")
    n = len(busy)
    if n >= 5:
        q = [busy[i] for i in (0, n // 4, n // 2, 3 * n // 4, -1)]
        print("busy VmRSS (KiB) at 0/25/50/75/100%: " + ", ".join(str(s[1]) for s in q))
        print("busy RssAnon (KiB) at 0/25/50/75/100%: " + ", ".join(str(s[2]) for s in q))
        half = busy[n // 2:]
        slope = (half[-1][2] - half[0][2]) / max(1e-9, (half[-1][0] - half[0][0]) / 60)
        print(f"RssAnon slope over the second half: {slope:+.0f} KiB/min")
    print(f"peak VmHWM {hwm} KiB (the BPF compile at start)")
    with open(err_path) as f:
        print(f.read().strip().splitlines()[-1])
    os.unlink(err_path)
    os.rmdir(d)
    return 0


def synthetic(ticks: int) -> None:
    from tests import synth
    from trace_reclaim import events, tracers
    from trace_reclaim.correlate import Correlator
    from trace_reclaim.exporter import Exporter, ObservedReclaimTracer

    zones = [{"node": 0, "zone": z, "free": 1000, "min": 10, "low": 20, "high": 30,
              "managed": 100000} for z in ("DMA", "DMA32", "Normal")]
    psi = {"some": {"avg10": 0.5, "avg60": 0.1, "avg300": 0.0, "total": 1},
           "full": {"avg10": 0.1, "avg60": 0.0, "avg300": 0.0, "total": 1}}

    for history in (False, True):
        exp = Exporter()
        reg = tracers.registry()
        reg["reclaim"] = ObservedReclaimTracer(exp)
        header = {"tool": "trace-reclaim", "plan": {"tracers": ["reclaim", "oom"]}}
        corr = Correlator(header, [reg["reclaim"], reg["oom"]], history=history)
        corr.feed_record(*synth.vmstat_snapshot(1, "start", allocstall_normal=0))
        tracemalloc.start()
        marks = []
        t0 = time.perf_counter()
        for i in range(1, ticks + 1):
            ts = i * 1_000_000_000
            recs = [synth.wakeup_kswapd(ts + 1, pid=100 + i % 2),
                    synth.kswapd_wake(ts + 2),
                    synth.direct_reclaim(ts + 50_000, 40_000 + i % 997, pid=100 + i % 2),
                    synth.kswapd_sleep(ts + 90_000)]
            corr.feed_records(recs)
            for rec in (synth.user(events.Snapshot(ts + 100_000, "psi", "tick", psi)),
                        synth.user(events.Snapshot(ts + 100_001, "zoneinfo", "kswapd_wake",
                                                   zones))):
                corr.feed_record(*rec)
            row = corr.feed_record(*synth.user(events.Tick(ts + 200_000, i, {})))
            assert row is not None
            exp.update(corr.aggs, row)
            if i in (ticks // 2, ticks):
                marks.append(tracemalloc.get_traced_memory()[0])
        took = time.perf_counter() - t0
        tracemalloc.stop()
        print(f"synthetic {ticks} intervals, history {'on (live)' if history else 'off (serve)'}: "
              f"heap {marks[0] / 1024:.0f} KiB at {ticks // 2}, {marks[1] / 1024:.0f} KiB at "
              f"{ticks} ({(marks[1] - marks[0]) / (ticks / 2):.0f} B per interval); "
              f"{took / ticks * 1e6:.0f} us per interval (events + update, under tracemalloc)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--idle", type=float, default=60)
    ap.add_argument("--ticks", type=int, default=20000)
    ap.add_argument("--synthetic-only", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    synthetic(args.ticks)
    if args.synthetic_only:
        return 0
    if os.geteuid() != 0:
        print("error: the live part loads BPF programs and changes nr_hugepages\n"
              "hint: run it as root, or with --synthetic-only", file=sys.stderr)
        return 1
    return live(args.seconds, args.idle)


if __name__ == "__main__":
    sys.exit(main())
