#!/usr/bin/env python3
"""Time ``trace-reclaim report`` on a recording of one million events.

Builds the recording with the real Writer from synthetic records shaped like
a pressure run (kswapd wake requests and wakes, sleeps, direct-reclaim
stalls, compaction runs, the allocator's retry decisions; a tick with PSI,
zoneinfo and LRU samples every 10,000 events), then runs the report the
way a user does, as a subprocess, and prints the wall time.

    .venv/bin/python bench/report_speed.py [--events 1000000] [--keep FILE] [--json] [--plot]
        [--baseline DIR [--rounds 5] [--instructions]]

``--baseline DIR`` times the report of another checkout (e.g. a ``git
worktree`` of an older commit) against this one on the same recording,
alternating them round by round, and prints median wall and CPU times,
events per second and the speed-up.  The recording is written by this
checkout's Writer; the file format (recording.py) and the reclaim/oom
structs of bpf/events.h it holds are unchanged since commit a65185c, so a
checkout from then on reads it (each round's exit status is checked).  Each
checkout runs once untimed first, with its bytecode cached apart, so both are
timed as installed, not compiling their modules at every run.
``--instructions`` also counts the instructions each report executes under
``valgrind --tool=callgrind`` (one run each; about 50x slower, so use it with
``--events 100000``): a figure the machine's load does not move, where wall
and CPU times on a busy VM drift by tens of percent between rounds.

``--plot`` also times ``report --plot`` (the timeline picture) against the
plain report, alternating them over 3 rounds, and prints the CPU-time ratio.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from trace_reclaim import abi, events
from trace_reclaim.recording import Writer

# (type, struct of bpf/events.h, share of the records); pad fields are packed as 0.
KINDS = [(abi.EV_WAKEUP_KSWAPD, "wakeup_kswapd_event", 0.33),
         (abi.EV_KSWAPD_WAKE, "kswapd_wake_event", 0.30),
         (abi.EV_KSWAPD_SLEEP, "kswapd_wake_event", 0.04),
         (abi.EV_DIRECT_RECLAIM, "direct_reclaim_event", 0.16),
         (abi.EV_COMPACTION, "compaction_event", 0.12),
         (abi.EV_RECLAIM_RETRY_ZONE, "reclaim_retry_zone_event", 0.03),
         (abi.EV_COMPACT_RETRY, "compact_retry_event", 0.02)]
LAYOUTS = {t: struct.Struct(abi.layout(name).fmt) for t, name, _share in KINDS}
# direct_reclaim_event as it was at a65185c: it ends where cgroup_id begins
# (appended since; the decoder reads such records with the cgroup ids 0), so
# a baseline checkout from before the cgroup ids reads this recording too.
DIRECT_RECLAIM_LEGACY = abi.layout("direct_reclaim_event").field("cgroup_id").offset
MIX = [(t, share) for t, _name, share in KINDS]
ZONES = [{"node": 0, "zone": "Normal", "free": 20000, "min": 14769, "low": 20163,
          "high": 25557, "boost": 0, "managed": 5394266}]


def build(path: str, n: int, seed: int = 1) -> int:
    rnd = random.Random(seed)
    types = [t for t, _ in MIX]
    weights = [w for _, w in MIX]
    header = {"tool": "trace-reclaim", "tool_version": "bench", "kernel_release": "bench",
              "plan": {"tracers": ["reclaim", "oom"]}, "interval_s": 1.0}
    ts = 1_000_000_000_000
    lru = {"kswapd": {"calls": 0, "nr_scanned": 0, "nr_reclaimed": 0},
           "direct": {"calls": 0, "nr_scanned": 0, "nr_reclaimed": 0},
           "khugepaged": {"calls": 0, "nr_scanned": 0, "nr_reclaimed": 0}}
    written = 0
    with open(path, "wb") as f:
        w = Writer(f, header)

        def user(obj):
            w.write(events.user_type(obj), events.encode_user(obj))

        user(events.Snapshot(ts, "vmstat", "start", {"pageoutrun": 0}))
        user(events.Snapshot(ts, "zoneinfo", "start", ZONES))
        user(events.Snapshot(ts, "psi", "start", {"some": {"total": 0}, "full": {"total": 0}}))
        tick = 0
        comms = [b"dd", b"python", b"kswapd0", b"kcompactd0", b"java"]
        for t in rnd.choices(types, weights, k=n):
            ts += rnd.randint(1_000, 20_000)
            comm = comms[rnd.randrange(5)]
            pid = 1000 + rnd.randrange(200)
            lay = LAYOUTS[t]
            if t == abi.EV_WAKEUP_KSWAPD:
                rec = lay.pack(ts, t, pid, pid, 0, comm, 0x140cca, 0, 2, rnd.choice((0, 9)), 0)
            elif t in (abi.EV_KSWAPD_WAKE, abi.EV_KSWAPD_SLEEP):
                rec = lay.pack(ts, t, 90, 90, 0, b"kswapd0", 0,
                               2 if t == abi.EV_KSWAPD_WAKE else -1,
                               rnd.choice((0, 9)), 0)
            elif t == abi.EV_DIRECT_RECLAIM:
                rec = lay.pack(ts, t, pid, pid, 1, comm, rnd.randint(10_000, 2_000_000),
                               0x140cca, rnd.randint(0, 64), rnd.choice((0, 9)), 0,
                               0, 0)[:DIRECT_RECLAIM_LEGACY]
            elif t == abi.EV_COMPACTION:
                rec = lay.pack(ts, t, pid, pid, 1, comm, rnd.randint(1_000, 5_000_000),
                               0x100000, 0x580000, 0x200000, 0x400000, rnd.randint(0, 8), 1)
            elif t == abi.EV_RECLAIM_RETRY_ZONE:
                rec = lay.pack(ts, t, pid, pid, 1, comm, 1000, 2000, 14769, 0, 2, 0,
                               rnd.randint(0, 16), 1, 0)
            else:
                rec = lay.pack(ts, t, pid, pid, 1, comm, 9, 1, 3, 1, 16, 1)
            w.write(t, rec)
            written += 1
            if written % 10_000 == 0:
                tick += 1
                for who in lru.values():
                    who["calls"] += 100
                    who["nr_scanned"] += 3200
                    who["nr_reclaimed"] += 3000
                user(events.Sample(ts, "reclaim", {"lru": json.loads(json.dumps(lru))}))
                user(events.Snapshot(ts, "psi", "tick", {"some": {"total": tick * 900,
                                                                  "avg10": 1.0},
                                                         "full": {"total": tick * 500,
                                                                  "avg10": 0.5}}))
                if tick % 5 == 0:
                    user(events.Snapshot(ts, "zoneinfo", "kswapd_wake", ZONES))
                user(events.Tick(ts, tick, {}))
        user(events.Snapshot(ts, "vmstat", "end", {"pageoutrun": 0}))
        user(events.Tick(ts, tick + 1, {}))
        user(events.End(ts, "duration"))
        w.close()
    return written


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--keep", metavar="FILE", help="write the recording here and keep it")
    p.add_argument("--json", action="store_true", help="time 'report -j' too")
    p.add_argument("--plot", action="store_true",
                   help="time 'report --plot' against 'report' (CPU ratio, 3 rounds)")
    p.add_argument("--baseline", metavar="DIR",
                   help="also time the report of the checkout in DIR, alternated with this one's")
    p.add_argument("--rounds", type=int, default=5, help="rounds with --baseline (default 5)")
    p.add_argument("--instructions", action="store_true",
                   help="with --baseline: also count instructions under valgrind (callgrind)")
    a = p.parse_args()
    path = a.keep or os.path.join(tempfile.mkdtemp(prefix="trace-reclaim-bench-"), "b.trc")
    t0 = time.monotonic()
    n = build(path, a.events)
    t_build = time.monotonic() - t0
    size = os.path.getsize(path)
    results = {}
    cpu = {}
    for mode in (["report"], ["report", "-j"]) if a.json else (["report"],):
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "trace_reclaim", *mode, path],
                           capture_output=True, text=True)
        dt = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu[" ".join(mode)] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return 1
        results[" ".join(mode)] = dt
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          "(other work on the machine slows the wall time)")
    print(f"recording: {n} events, {size / 1e6:.1f} MB, built in {t_build:.1f} s ({path})")
    for mode, dt in results.items():
        print(f"trace-reclaim {mode}: {dt:.2f} s wall ({cpu[mode]:.2f} s CPU) for {n} events "
              f"({n / dt / 1e6:.2f} M events/s) -> {'OK' if dt < 5 else 'SLOW'} (< 5 s)")
    if a.plot:
        plot_ratio(path, n)
    if a.baseline:
        modes = (["report"], ["report", "-j"]) if a.json else (["report"],)
        for mode in modes:
            baseline_ratio(path, n, a.baseline, mode, a.rounds)
        if a.instructions:
            instruction_ratio(path, n, a.baseline)
    if not a.keep:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    return 0 if all(dt < 5 for dt in results.values()) else 1


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _report_argv(checkout: str) -> list:
    """How to run the CLI of ``checkout``: ``-m trace_reclaim`` once it has a
    ``__main__`` (after a65185c), its ``cli.py`` script before."""
    if os.path.exists(os.path.join(checkout, "trace_reclaim", "__main__.py")):
        return [sys.executable, "-m", "trace_reclaim"]
    return [sys.executable, os.path.join(checkout, "cli.py")]


def _env(checkout: str) -> dict:
    """The environment ``checkout``'s CLI runs in: its own trace_reclaim (not an
    installed one), with its bytecode cached as an installed package has it
    (pip compiles it; PYTHONDONTWRITEBYTECODE, set on some machines, would
    have every run compile every interpreted module again, timing Python's
    compiler, not the report), in a cache of its own under the temporary
    directory."""
    cache = os.path.join(_PYCACHE, checkout.strip(os.sep).replace(os.sep, "_"))
    env = dict(os.environ, PYTHONPATH=checkout, PYTHONPYCACHEPREFIX=cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


_PYCACHE = tempfile.mkdtemp(prefix="trace-reclaim-bench-pyc-")
atexit.register(shutil.rmtree, _PYCACHE, True)


def _timed(checkout: str, argv: list) -> tuple:
    """Wall and CPU seconds of one run of ``checkout``'s CLI, and its stdout."""
    env = _env(checkout)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(_report_argv(checkout) + argv, cwd=checkout, env=env,
                       capture_output=True)
    dt = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"{checkout}: {' '.join(argv)} failed:\n{r.stderr.decode()}")
    return dt, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), r.stdout


def baseline_ratio(path: str, n: int, baseline: str, mode: list, rounds: int) -> None:
    """Time ``mode`` of ``baseline`` and of this checkout, alternated, on one recording."""
    base, ours = os.path.abspath(baseline), ROOT
    wall: dict = {base: [], ours: []}
    cpu: dict = {base: [], ours: []}
    outputs = set()
    for who in (base, ours):  # untimed: caches each one's bytecode
        _timed(who, [*mode, os.path.abspath(path)])
    for i in range(rounds):
        # Alternate who goes first, so a drift in the machine's speed hits both.
        for who in ((base, ours) if i % 2 == 0 else (ours, base)):
            w, c, out = _timed(who, [*mode, os.path.abspath(path)])
            wall[who].append(w)
            cpu[who].append(c)
            if who == ours:
                outputs.add(out)
    name = " ".join(mode)
    print(f"{name}: {rounds} rounds alternated, medians (min-max); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    med = {}
    for label, who in (("baseline " + baseline, base), ("this checkout", ours)):
        mw, mc = statistics.median(wall[who]), statistics.median(cpu[who])
        med[who] = (mw, mc)
        print(f"  {label}: {mw:.2f} s wall ({min(wall[who]):.2f}-{max(wall[who]):.2f}), "
              f"{mc:.2f} s CPU ({min(cpu[who]):.2f}-{max(cpu[who]):.2f}): "
              f"{n / mw / 1e6:.3f} M events/s wall, {n / mc / 1e6:.3f} M events/s CPU")
    print(f"  speed-up (events/s, this over baseline): {med[base][0] / med[ours][0]:.2f}x wall, "
          f"{med[base][1] / med[ours][1]:.2f}x CPU; "
          f"this checkout's output {'identical' if len(outputs) == 1 else 'DIFFERS'} "
          "across rounds")


def _instructions(checkout: str, argv: list) -> int:
    """Instructions (callgrind's Ir) that one run of ``checkout``'s CLI executes."""
    out = os.path.join(tempfile.mkdtemp(prefix="trace-reclaim-cg-"), "cg.out")
    env = _env(checkout)
    subprocess.run(_report_argv(checkout) + argv, cwd=checkout, env=env,
                   stdout=subprocess.DEVNULL, check=True)  # caches its bytecode
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        *_report_argv(checkout), *argv], cwd=checkout, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode:
        raise SystemExit(f"{checkout}: valgrind {' '.join(argv)} failed:\n{r.stderr.decode()}")
    with open(out) as f:
        total = next(int(line.split()[1]) for line in f if line.startswith("summary:"))
    os.unlink(out)
    os.rmdir(os.path.dirname(out))
    return total


def instruction_ratio(path: str, n: int, baseline: str) -> None:
    """Instructions of ``report`` for ``baseline`` and this checkout (startup included)."""
    base = _instructions(os.path.abspath(baseline), ["report", os.path.abspath(path)])
    ours = _instructions(ROOT, ["report", os.path.abspath(path)])
    print(f"report under callgrind: baseline {baseline} {base / 1e9:.2f} G instructions "
          f"({base / n:.0f} per event), this checkout {ours / 1e9:.2f} G ({ours / n:.0f} per "
          f"event): baseline/this {base / ours:.2f}")


def _cpu_of(argv: list) -> float:
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([sys.executable, "-m", "trace_reclaim", *argv],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def plot_ratio(path: str, n: int) -> None:
    """CPU seconds of 'report --plot' over plain 'report', alternated, medians."""
    png = os.path.join(os.path.dirname(path), "timeline.png")
    plain, plot = [], []
    for _ in range(3):
        plain.append(_cpu_of(["report", path]))
        plot.append(_cpu_of(["report", path, "--plot", png]))
        os.unlink(png)
    mp, mq = sorted(plain)[1], sorted(plot)[1]
    print(f"trace-reclaim report --plot: {mq:.2f} s CPU vs report {mp:.2f} s CPU "
          f"(median of 3, range {min(plot):.2f}-{max(plot):.2f} vs "
          f"{min(plain):.2f}-{max(plain):.2f}): ratio {mq / mp:.2f} for {n} events")


if __name__ == "__main__":
    sys.exit(main())
