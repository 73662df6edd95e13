#!/usr/bin/env python3
"""What a tracepoint program's return value costs: 0, TP_PASS, TP_PASS with our perf event off.

trace-reclaim's TRACEPOINT_PROBEs return TP_PASS (1) so that `perf stat`
and `perf record` beside it still see the events (bpf/common.bpf.h); the
perf events bcc attached them through are then disabled
(objects.quiet_own_perf_events).  This times a page-fault loop pinned to
CPU 0 (where bcc opens those perf events; ``--mib`` of anonymous memory
touched, one kmem:mm_page_alloc per page) under a one-tracepoint program
on kmem:mm_page_alloc shaped like ours (an array-map count), in four modes,
rounds alternated:

  untraced          no program
  return 0          bcc's tools: the event is hidden from perf users
  return 1          the event goes on to perf, and to our own perf event
  return 1, off     ours: our perf event disabled once attached

It prints the loop's median CPU time per mode, its ratio to untraced, the
extra nanoseconds per event over untraced, and how many samples our own
perf event took (read from it).  Nothing else may run on CPU 0 meanwhile.

    sudo .venv/bin/python bench/tp_pass.py [--rounds 7] [--mib 256]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys

from trace_reclaim.quiet import captured_stderr
from trace_reclaim.session import quiet_own_perf_events

PROGRAM = r"""
BPF_ARRAY(seen, u64, 1);
TRACEPOINT_PROBE(kmem, mm_page_alloc)
{
	int zero = 0;
	u64 *n = seen.lookup(&zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	return RET;
}
"""
LOOP = """
import mmap, os, sys
os.sched_setaffinity(0, {0})
size = int(sys.argv[1]) << 20
m = mmap.mmap(-1, size)
for off in range(0, size, 4096):
    m[off] = 1
m.close()
"""
MODES = ["untraced", "return 0", "return 1", "return 1, off"]


def _loop(mib: int) -> float:
    """CPU seconds (user + system) of one loop, in a child of its own."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", LOOP, str(mib)], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _attached(ret: int, off: bool):
    from bcc import BPF

    with captured_stderr():  # clang's warnings about bcc's own headers
        b = BPF(text=PROGRAM, cflags=[f"-DRET={ret}"])
    fd = next(iter(b.tracepoint_fds.values()))
    if off:
        quiet_own_perf_events(b)
    return b, fd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("error: attaching BPF programs needs root\nhint: run it with sudo",
              file=sys.stderr)
        return 2
    times = {m: [] for m in MODES}
    events = {m: [] for m in MODES}
    own = {m: 0 for m in MODES}
    _loop(args.mib)  # warm up: the interpreter's own pages, the page cache
    for r in range(args.rounds):
        order = MODES if r % 2 == 0 else list(reversed(MODES))
        for mode in order:
            if mode == "untraced":
                times[mode].append(_loop(args.mib))
                continue
            b, fd = _attached(0 if mode == "return 0" else 1, mode.endswith("off"))
            try:
                taken = int.from_bytes(os.read(fd, 8), sys.byteorder)
                times[mode].append(_loop(args.mib))
                events[mode].append(b["seen"][0].value)
                own[mode] += int.from_bytes(os.read(fd, 8), sys.byteorder) - taken
            finally:
                b.cleanup()
    base = statistics.median(times["untraced"])
    print(f"page-fault loop on CPU 0, {args.mib} MiB, {args.rounds} rounds alternated; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'mode':<15} {'CPU s':>7} {'ratio':>6} {'ns/event':>9} {'events':>9} "
          f"{'own perf samples':>17}")
    for mode in MODES:
        t = statistics.median(times[mode])
        n = statistics.median(events[mode]) if events[mode] else 0
        per = f"{(t - base) / n * 1e9:9.0f}" if n else f"{'':>9}"
        print(f"{mode:<15} {t:7.3f} {t / base:6.3f} {per} {int(n):9d} "
              f"{own[mode] if mode != 'untraced' else '':>17}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
