"""Live: real OOM kills inside a small memory cgroup of ours, traced from outside it.

The tracer runs in its own cgroup, never short of memory; the kills are the
kernel's memcg OOM killer (examples/oom_kill.py).  Checked against the kernel's
own counts: /proc/vmstat oom_kill and the cgroup's own oom_kill.
"""

from __future__ import annotations

import os

from tests.livetools import Trace
from trace_reclaim.examples import _cgroup, oom_kill


def test_oom_kills_are_traced_and_counted_exactly(live, tmp_path):
    with Trace(str(tmp_path)) as t:
        res = oom_kill.run(kills=2, log=None)
        tracer_alive = t.proc is not None and t.proc.poll() is None
    assert tracer_alive, "the tracer died with the OOM kills"
    doc = t.report
    killed = sorted(v["pid"] for v in res["victims"])
    assert len(killed) == 2 == res["vmstat_oom_kill"] == res["cgroup_oom_kill"]
    victims = doc["oom"]["victims"]
    assert sorted(v["pid"] for v in victims) == killed
    assert {v["comm"] for v in victims} == {oom_kill.VICTIM_COMM}
    # a memcg OOM kill is chosen in the charging task's context: the victim itself
    assert all(v["by_pid"] == v["pid"] for v in victims)
    assert all(v["anon_rss_kb"] > 0 for v in victims)
    assert doc["totals"]["oom_kills"] == len(killed)
    assert doc["totals"]["vmstat_delta"]["oom_kill"] == len(killed)
    assert doc["lost"]["total"] == 0
    kinds = [f for f in doc["findings"] if f["kind"] == "oom_kill"]
    assert sorted(f["evidence"]["victim_pid"] for f in kinds) == killed
    # Each kill is the memcg OOM killer's, in our cgroup, after the victim's
    # own reclaim at the limit; the allocation that triggered it is named.
    kills = doc["memcg"]["oom_kills"]
    assert sorted(k["victim_pid"] for k in kills) == killed
    for k in kills:
        assert k["memcg_oom"] and k["trigger"]["reclaim"] == "memcg"
        assert k["trigger"]["order"] == 0 and k["trigger"]["before_kill_ns"] >= 0
        assert k["cgroup"]["id"] == res["cgroup_id"]
    for f in kinds:
        assert f["title"].startswith("memcg OOM killer killed")
        assert f["evidence"]["cgroup"] == res["cgroup"]
        assert f["evidence"]["cgroup_memcg_reclaims"] > 0
    (row,) = [r for r in doc["cgroups"] if r["id"] == res["cgroup_id"]]
    assert row["path"] == res["cgroup"] and row["oom_kills"] == len(killed)
    # the cgroup is gone, and nothing of ours is left behind
    mount = _cgroup.find_memory_mount()
    assert not os.path.exists(mount.path + res["cgroup"])
    assert not [d for d in os.listdir(mount.path)
                if d.startswith(f"{_cgroup.PREFIX}{os.getpid()}-")]
