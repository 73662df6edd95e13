#!/usr/bin/env python3
"""Measure how long ``trace-reclaim record`` takes to attach, against bcc itself.

Each round starts two fresh processes, one after the other (the order
alternates from round to round):

- baseline: a Python process that imports bcc, compiles and attaches one
  empty ``TRACEPOINT_PROBE(vmscan, mm_vmscan_kswapd_wake)`` and prints when
  attached: the least any bcc tool pays before it traces;
- trace-reclaim: ``python -m trace_reclaim record -o FILE`` until it prints
  "Tracing reclaim" on stderr (then SIGINT ends it; its report is not timed).
  When the tracer prints what is still attaching, the time until it says
  everything is attached is shown too.

Both are timed from the fork to the line that says "attached", with the
same interpreter, and with bytecode caching on (as an installed package has
it: Debian's bcc ships its .pyc files; PYTHONDONTWRITEBYTECODE, if set, is
dropped for the children, and one warm-up round per mode is not counted).
Medians, spread and the ratio of medians are printed for each mode:
``idle`` (whatever else runs on the machine; say so with the figure) and
``pressure`` (``trace_reclaim.examples.pressure`` runs in a child for the
whole mode: hugetlb ballast plus page-cache streaming, so kswapd and direct
reclaim run while both compile).  The pressure child runs inside this
process's machine lock and restores nr_hugepages itself; if it has to be
killed, this bench frees its ballast.

Run as root from the repository root:
``.venv/bin/python bench/attach_time.py [--rounds 7] [--modes idle,pressure]``.
It prints figures; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from trace_reclaim.examples import _restore  # noqa: E402
from trace_reclaim.procfs import ProcFS  # noqa: E402

BASELINE = """
from bcc import BPF
b = BPF(text="TRACEPOINT_PROBE(vmscan, mm_vmscan_kswapd_wake) { return 0; }")
print("attached", flush=True)
"""
READY = "Tracing reclaim"
ALL_ATTACHED = "attached:"      # the tracer's line once a deferred part is attached
# Bytecode caching on for the children, as installed packages have it.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
PRESSURE_COUNTERS = ("pgscan_kswapd", "pgscan_direct", "allocstall_normal",
                     "allocstall_movable", "pageoutrun")


def time_baseline(python: str) -> float:
    t0 = time.monotonic()
    p = subprocess.Popen([python, "-c", BASELINE], cwd=ROOT, env=CHILD_ENV,
                         stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    try:
        for line in p.stdout:
            if line.startswith("attached"):
                return time.monotonic() - t0
        raise RuntimeError(f"baseline exited ({p.wait()}) without attaching")
    finally:
        p.stdout.close()
        p.wait()


def time_record(python: str, extra: List[str]) -> Tuple[float, Optional[float]]:
    """(seconds to "Tracing reclaim", seconds until everything attached or None)."""
    with tempfile.TemporaryDirectory(prefix="attach-time-") as d:
        out = os.path.join(d, "x.rec")
        t0 = time.monotonic()
        p = subprocess.Popen([python, "-m", "trace_reclaim", "record", "-o", out, *extra],
                             cwd=ROOT, env=CHILD_ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE,
                             text=True)
        assert p.stderr is not None
        ready = done = None
        lines = []
        try:
            for line in p.stderr:
                lines.append(line)
                if ready is None and line.startswith(READY):
                    ready = time.monotonic() - t0
                    if "still attaching" not in line:
                        break
                elif ready is not None and line.startswith(ALL_ATTACHED):
                    done = time.monotonic() - t0
                    break
            if ready is None:
                raise RuntimeError("trace-reclaim record exited (%s) without attaching:\n%s"
                                   % (p.wait(), "".join(lines[-10:])))
        finally:
            p.send_signal(signal.SIGINT)
            try:
                p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
        return ready, (done if done is not None else ready)


class Pressure:
    """The pressure workload in a child process, for the duration of a ``with`` block."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.proc: Optional[subprocess.Popen] = None
        self.vmstat0: Dict[str, int] = {}
        self.hp_before = 0

    def __enter__(self) -> Pressure:
        self.hp_before = ProcFS().nr_hugepages()
        env, fds = _restore.lock_for_child()
        self.proc = subprocess.Popen(
            [self.python, "-m", "trace_reclaim.examples.pressure", "--seconds", "3600",
             "--mib", "100000000"], cwd=ROOT, env=env, pass_fds=fds,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # the ballast is in place once it says so
            print("  pressure: " + line.rstrip(), flush=True)
            if line.startswith("ballast:"):
                break
        else:
            raise RuntimeError(f"the pressure workload exited ({self.proc.wait()})")
        time.sleep(2.0)  # let the page cache fill up to the watermarks
        self.vmstat0 = ProcFS().vmstat()
        return self

    def counters(self) -> Dict[str, int]:
        now = ProcFS().vmstat()
        return {k: now.get(k, 0) - self.vmstat0.get(k, 0) for k in PRESSURE_COUNTERS}

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # its Restorer frees the ballast
        try:
            rest, _ = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        for line in (rest or "").splitlines()[-3:]:
            print("  pressure: " + line, flush=True)
        if self.proc.returncode == -signal.SIGKILL and \
                ProcFS().nr_hugepages() > self.hp_before:
            # Killed before its own restore ran: free its ballast here.
            _restore._write_nr_hugepages(self.hp_before)


def spread(xs: List[float]) -> str:
    return (f"median {statistics.median(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f}, "
            f"n={len(xs)})")


def run_mode(mode: str, rounds: int, python: str, extra: List[str]) -> float:
    base: List[float] = []
    ours: List[float] = []
    full: List[float] = []
    print(f"\n{mode}: {rounds} rounds, alternating order, after one warm-up round",
          flush=True)
    time_baseline(python)
    time_record(python, extra)
    for i in range(rounds):
        order = ("baseline", "ours") if i % 2 == 0 else ("ours", "baseline")
        for who in order:
            if who == "baseline":
                base.append(time_baseline(python))
            else:
                ready, done = time_record(python, extra)
                ours.append(ready)
                if done is not None:
                    full.append(done)
        print(f"  round {i + 1}: baseline {base[-1]:.3f} s  trace-reclaim ready "
              f"{ours[-1]:.3f} s" + (f", all attached {full[-1]:.3f} s"
                                     if full[-1] != ours[-1] else ""), flush=True)
    ratio = statistics.median(ours) / statistics.median(base)
    print(f"  baseline (bcc, one tracepoint): {spread(base)}")
    print(f"  trace-reclaim ready:            {spread(ours)}")
    if full != ours:  # the tracer said some part was still attaching
        print(f"  trace-reclaim all attached:     {spread(full)}; / baseline "
              f"{statistics.median(full) / statistics.median(base):.2f}x")
    print(f"  ratio of medians, ready / baseline: {ratio:.2f}x")
    paired = [o / b for o, b in zip(ours, base)]
    print(f"  per-round ratio ready / baseline: median {statistics.median(paired):.2f}x "
          f"(min {min(paired):.2f}, max {max(paired):.2f})", flush=True)
    return ratio


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--modes", default="idle,pressure",
                   help="comma-separated: idle, pressure (default both)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for both processes (default: this one)")
    p.add_argument("--lock-timeout", type=float, default=3600,
                   help="seconds to wait for the machine lock (default %(default)s)")
    p.add_argument("record_args", nargs="*",
                   help="extra arguments for 'trace-reclaim record' (after --)")
    args = p.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in ("idle", "pressure") for m in modes):
        p.error("--modes takes idle and/or pressure")
    _restore.require_root()
    ratios = {}
    with _restore.machine_lock(timeout=args.lock_timeout), _restore.signals_to_exceptions():
        hp_before = ProcFS().nr_hugepages()  # under the lock: no other workload's ballast
        print(f"load average before: {os.getloadavg()[0]:.2f}; "
              f"nr_hugepages {hp_before}", flush=True)
        for mode in modes:
            if mode == "idle":
                ratios[mode] = run_mode(mode, args.rounds, args.python, args.record_args)
            else:
                with Pressure(args.python) as pr:
                    ratios[mode] = run_mode(mode, args.rounds, args.python,
                                            args.record_args)
                    print("  kernel counters during the rounds: " + ", ".join(
                        f"{k} +{v}" for k, v in pr.counters().items()), flush=True)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("attach ratio (trace-reclaim ready / bcc one-tracepoint, medians): " + ", ".join(
        f"{m} {v:.2f}x" for m, v in ratios.items()))
    print(f"nr_hugepages after: {ProcFS().nr_hugepages()} (before {hp_before})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
