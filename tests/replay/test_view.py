"""The live view renders within 80 columns and falls back to rows off a terminal."""

from __future__ import annotations

import io
import os

from tests import FIXTURES
from trace_reclaim.view import LiveView, render_screen
from tests.replay.test_episodes_replay import replay

FIX = FIXTURES


def states():
    """Live state at each tick of a real recording, as the live run saw it."""
    out = []
    replay(os.path.join(FIX, "pressure_delayacct.trc"),
           on_row=lambda row, corr: out.append((row, corr.live_state())))
    return out


def test_screen_fits_80_columns():
    frames = states()
    assert frames
    for row, st in frames:
        for line in render_screen({**st, "row": row}, ["x" * 200], "12:00:00"):
            assert len(line) <= 80, line


def test_extreme_values_still_fit():
    st = {"row": {"interval": 99999, "reclaim": {"stalls": 10 ** 9, "stall_ns": 10 ** 15,
                                                  "kswapd_awake_ns": {0: 10 ** 12}}},
          "meminfo": {"MemFree": 10 ** 12}, "zones": [
              {"node": 1023, "zone": "Movable", "free": 1, "min": 10 ** 9, "low": 1, "high": 1}
              for _ in range(8)],
          "episodes": {"count": 10 ** 7, "recent": [
              {"id": 10 ** 7, "node": 1023, "kind": "kswapd", "open": True, "start_ns": 0,
               "end_ns": 0, "kswapd_wakes": 10 ** 9, "stalls": 10 ** 9, "stall_ns": 10 ** 15,
               "pages": 10 ** 12, "compaction_runs": 10 ** 6, "oom_kills": 999}]},
          "totals": {"stalls": 10 ** 12}}
    for line in render_screen(st, [], "12:00:00"):
        assert len(line) <= 80


def test_tty_redraws_in_place_and_pipe_prints_rows():
    frames = states()[:3]
    tty = io.StringIO()
    v = LiveView(tty, tty=True, clock=lambda: "12:00:00")
    v.start()
    for row, st in frames:
        v.update(row, st)
    text = tty.getvalue()
    assert text.count("\x1b[H\x1b[2J") == len(frames)
    assert "EPISODES" in text
    pipe = io.StringIO()
    v = LiveView(pipe, clock=lambda: "12:00:00")  # StringIO is not a terminal
    assert not v.tty
    v.start()
    for row, st in frames:
        v.update(row, st)
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 1 + len(frames) and "\x1b" not in pipe.getvalue()
    assert all(len(ln) <= 80 for ln in lines)


def test_slab_and_vmalloc_lines_show_when_those_tracers_ran():
    row = {"interval": 3, "reclaim": {},
           "slab": {"shrink_calls": 12, "scanned": 900, "freed": 450,
                    "top_net": {"dentry": 5000, "ext4_inode_cache": -20}},
           "vmalloc": {"areas": 4, "huge_areas": 1, "huge_pages": 3, "fallbacks": 1}}
    lines = render_screen({"row": row}, [], "12:00:00")
    slab = [ln for ln in lines if ln.startswith("slab ")]
    vm = [ln for ln in lines if ln.startswith("vmalloc ")]
    assert slab and "450 freed" in slab[0] and "dentry +5000" in slab[0]
    assert vm and "1 huge (3 x 2 MiB), 1 fell back" in vm[0]
    assert all(len(ln) <= 80 for ln in lines)
    plain = render_screen({"row": {"interval": 1, "reclaim": {}}}, [], "12:00:00")
    assert not any(ln.startswith(("slab ", "vmalloc ")) for ln in plain)
