#!/usr/bin/env python3
"""Benchmark: how many events per second trace-reclaim records with no loss.

A generator process, pinned to one CPU, calls getppid() at a target rate;
bench/emit.bpf.c turns each call into one 64-byte record through the same
ring buffer, decoder, recording writer and correlator as a real trace, with
the session pinned to the other CPU.  For each rate it prints what the
kernel emitted, what was recorded, what was lost, the session's CPU time per
second, and the recording's bytes per event.

    sudo .venv/bin/python bench/record_throughput.py [--rates 50000,100000,200000,300000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time

from trace_reclaim.probe import Plan, Probe
from trace_reclaim.recording import Reader, Writer
from trace_reclaim.session import LiveSession, build_header, default_bpf_factory
from trace_reclaim.tracers import reclaim


class EmitTracer(reclaim.ReclaimTracer):
    """The reclaim tracer's decoders and aggregator, fed by getppid()."""

    name = "reclaim"
    bpf_source = "../bench/emit.bpf.c"
    later_part = ""   # no LRU counts: emit.bpf.c is the whole program

    def sample(self, bpf, procfs, ts_ns, when):
        return []


def generator(rate: int, seconds: float, cpu: int, go, done) -> None:
    os.sched_setaffinity(0, {cpu})
    go.wait()
    getppid = os.getppid
    batch = max(1, rate // 1000)
    t0 = time.perf_counter()
    n = 0
    while True:
        for _ in range(batch):
            getppid()
        n += batch
        ahead = n / rate - (time.perf_counter() - t0)
        if ahead > 0:
            time.sleep(ahead)
        if time.perf_counter() - t0 >= seconds:
            break
    done.set()


def run(rate: int, seconds: float) -> dict:
    ctx = mp.get_context("fork")
    go, done = ctx.Event(), ctx.Event()
    gen = ctx.Process(target=generator, args=(rate, seconds, 1, go, done))
    gen.start()
    os.sched_setaffinity(0, {0})
    tracers = {"reclaim": EmitTracer()}
    probe = Probe()
    plan = Plan(["reclaim"], [], [])
    header = build_header(probe, plan, ["bench"], 1.0, tracers)
    fd, path = tempfile.mkstemp(suffix=".trc")
    with os.fdopen(fd, "wb") as f:
        writer = Writer(f, header)
        session = LiveSession(bpf_factory=default_bpf_factory(), procfs=probe.procfs,
                              tracers=tracers, plan=plan, header=header, interval_s=1.0,
                              tgid=gen.pid, writer=writer)
        session.load()
        import threading

        def stopper():
            done.wait()
            time.sleep(0.3)
            session.stop("done")

        threading.Thread(target=stopper, daemon=True).start()
        c0 = time.process_time()
        w0 = time.monotonic()
        go.set()
        corr = session.run()
        cpu = time.process_time() - c0
        wall = time.monotonic() - w0
        emitted = sum(session.bpf["bench_emitted"][session.bpf["bench_emitted"].Key(0)])
        session.close()
        writer.close()
    gen.join()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        r = Reader(f)
        recorded = sum(1 for t, _ in r.records() if t == reclaim.EV_WAKEUP_KSWAPD)
    os.unlink(path)
    lost = sum(corr.lost.values())
    return {"rate": rate, "emitted": emitted, "recorded": recorded, "lost": lost,
            "cpu_s": cpu, "wall_s": wall, "bytes": size,
            "bytes_per_event": size / max(1, recorded)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="50000,100000,200000,300000")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("error: the benchmark loads BPF programs\nhint: run it as root", file=sys.stderr)
        return 1
    print(f"{'TARGET/s':>9} {'EMITTED':>9} {'RECORDED':>9} {'LOST':>7} {'REC/s':>8} "
          f"{'CPU%':>6} {'B/EVENT':>8}")
    for rate in (int(x) for x in args.rates.split(",")):
        r = run(rate, args.seconds)
        print(f"{rate:>9} {r['emitted']:>9} {r['recorded']:>9} {r['lost']:>7} "
              f"{r['recorded'] / args.seconds:>8.0f} {100 * r['cpu_s'] / r['wall_s']:>6.1f} "
              f"{r['bytes_per_event']:>8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
