"""Every classic tracepoint program leaves its event to perf users: each return is TP_PASS.

A TRACEPOINT_PROBE that returns 0 on some path (a filter, a full ring
buffer) hides that event from `perf stat/record/trace` on the same
tracepoint while we trace (bpf/common.bpf.h says why); the live proof is
tests/live/test_perf_beside_live.py, for the tracepoints an idle machine
makes happen.  This reads every program, those of the plans a machine here
never loads included.
"""

from __future__ import annotations

import glob
import os
import re

from trace_reclaim.session import BPF_DIR

RETURN = re.compile(r"\breturn\b([^;]*);")


def _tracepoint_programs():
    """(file, name, body) of every TRACEPOINT_PROBE: its line to the next ``}`` at column 0."""
    for path in sorted(glob.glob(os.path.join(BPF_DIR, "*.bpf.c"))):
        lines = open(path).read().split("\n")
        for i, line in enumerate(lines):
            if line.startswith("TRACEPOINT_PROBE("):
                end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("}"))
                yield os.path.basename(path), line, "\n".join(lines[i + 1:end])


def test_every_return_of_a_tracepoint_program_is_tp_pass():
    programs = list(_tracepoint_programs())
    # reclaim 7, memcg 5, oom 5, slab 2, vmalloc 5: a parser that found none would pass
    assert len(programs) >= 24, [p[1] for p in programs]
    for path, name, body in programs:
        values = [v.strip() for v in RETURN.findall(body)]
        assert values, f"{path}: {name} has no return"
        assert all(v == "TP_PASS" for v in values), f"{path}: {name} returns {values}"
        assert body.rstrip().endswith("return TP_PASS;"), f"{path}: {name} may fall off its end"


def test_tp_pass_hands_the_event_on():
    text = open(os.path.join(BPF_DIR, "common.bpf.h")).read()
    assert re.search(r"^#define TP_PASS 1$", text, re.M)
