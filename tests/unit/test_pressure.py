"""pressure.py's reading of a task's state, on made-up /proc files."""

from __future__ import annotations

import os

from trace_reclaim.examples import pressure
from trace_reclaim.procfs import ProcFS

# A reader preempted in shrink_folio_list (6.12), and one copying to user space.
IN_RECLAIM = """[<0>] __cond_resched+0x2d/0x50
[<0>] shrink_folio_list+0x7f/0xd90
[<0>] shrink_inactive_list+0x1a8/0x400
[<0>] shrink_lruvec+0x2a9/0x460
[<0>] shrink_node+0x2f5/0x8a0
[<0>] do_try_to_free_pages+0xd1/0x5c0
[<0>] try_to_free_pages+0xe6/0x230
[<0>] __alloc_pages_slowpath.constprop.0+0x3d3/0xcf0
"""
COPYING = """[<0>] filemap_read+0x2c1/0x350
[<0>] vfs_read+0x24f/0x360
"""
# Compaction is in the slow path too, but not a direct reclaim.
COMPACTING = """[<0>] isolate_migratepages_block+0x1c/0xe30
[<0>] __compact_zone+0x4c1/0xd10
[<0>] try_to_compact_pages+0xe3/0x2a0
[<0>] __alloc_pages_direct_compact+0x8b/0x200
"""


def _proc(tmp_path, stack, state="R", cpu=1, ran=123456):
    d = tmp_path / "proc" / "77"
    d.mkdir(parents=True)
    fields = [state] + ["0"] * 35 + [str(cpu)] + ["0"] * 10
    (d / "stat").write_text("77 (dd (x)) " + " ".join(fields) + "\n")
    (d / "schedstat").write_text(f"{ran} 99 3\n")
    (d / "stack").write_text(stack)
    return ProcFS(str(tmp_path))


def test_task_state_reads_state_cpu_time_and_frames(tmp_path, monkeypatch):
    monkeypatch.setattr(pressure, "PROC", _proc(tmp_path, IN_RECLAIM, "R", 1, 555))
    state, cpu, ran, frames = pressure._task_state(77)
    assert (state, cpu, ran) == ("R", 1, 555)
    assert frames[0] == "__cond_resched" and frames[6] == "try_to_free_pages"
    assert pressure._in_direct_reclaim(frames)


def test_only_a_stack_inside_try_to_free_pages_is_in_direct_reclaim(tmp_path, monkeypatch):
    for stack in (COPYING, COMPACTING, ""):
        frames = [line.split()[1].split("+")[0] for line in stack.splitlines()]
        assert not pressure._in_direct_reclaim(frames), stack
    # Past the begin tracepoint only: try_to_free_pages alone (the throttle
    # before it sleeps) is not enough.
    assert not pressure._in_direct_reclaim(["schedule", "try_to_free_pages"])
    assert os.path.basename(pressure.DIRECT_RECLAIM_BEGIN) == "id"
