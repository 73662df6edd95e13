"""Live tests of the vmalloc tracer on the running kernel, with examples/ workloads.

The trigger (examples/vmalloc_huge.py) makes the BPF verifier kvmalloc its
state table: 4.8 MB requested, mapped as 3 x 2 MiB; the same load vzallocs
25 MiB (not huge-eligible).  examples/vmalloc_fallback.py takes every free
order-9 block with hugetlb pages first, so the huge attempt falls back to
4 KiB pages for real.  Needs root; skips without it unless
TRACE_RECLAIM_REQUIRE_LIVE=1 (the ``live`` fixture, which also holds the
machine lock).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Tuple

from trace_reclaim.examples import vmalloc_fallback, vmalloc_huge
from tests.livetools import Trace

MiB = 1 << 20
HUGE_AREA_SIZE = 6 * MiB + 4096        # 3 x 2 MiB + guard page
KV_CALLER = "__kvmalloc_node_noprof <- bpf_check"


def _mine(report: Dict[str, Any], tid: int) -> List[Dict[str, Any]]:
    return [a for a in report["vmalloc"]["areas"] if a["tid"] == tid]


def _vmallocinfo() -> List[Tuple[int, str, int]]:
    """(size, caller symbol, pages=) of every vmalloc'd area in /proc/vmallocinfo."""
    out = []
    with open("/proc/vmallocinfo") as f:
        for line in f:
            p = line.split()
            if len(p) < 4 or "vmalloc" not in p[3:]:
                continue
            pages = next((int(x[6:]) for x in p if x.startswith("pages=")), -1)
            out.append((int(p[1]), p[2].split("+", 1)[0], pages))
    return out


class _Poller:
    """Read /proc/vmallocinfo continuously while a load runs (its areas are transient)."""

    def __init__(self) -> None:
        self.seen: set = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.update(e for e in _vmallocinfo() if e[0] >= 2 * MiB)

    def __enter__(self) -> _Poller:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join(10)


def test_trigger_kvmalloc_is_huge_and_vzalloc_not_eligible(live, tmp_path):
    with Trace(str(tmp_path)) as t:
        with _Poller() as poller:
            res = vmalloc_huge.trigger(count=2)
    assert res["loaded"] == 2, res["loads"][0]["error"]
    mine = _mine(t.report, res["tid"])
    assert mine, t.report["vmalloc"]["counts"]

    # Exactly the verifier's kvmalloc areas are huge, 3 x 2 MiB each.
    kv = [a for a in mine if a["caller"] == KV_CALLER]
    assert len(kv) == 2, [(a["caller"], a["size"]) for a in mine]
    for a in kv:
        assert a["verdict"] == "huge", a
        assert a["huge_pages"] == 3
        assert a["size"] == HUGE_AREA_SIZE and a["align"] == 2 * MiB
        assert a["pid"] == os.getpid() and a["comm"]
        # kvmalloc's failed kmalloc gave the request: 4.8 MB mapped as 6 MiB
        assert a["requested_from"] == "kmalloc"
        assert 4 * MiB < a["requested"] <= 6 * MiB
        assert a["waste"] == 6 * MiB - a["requested"]
    huge = [a for a in mine if a["verdict"] == "huge"]
    assert all(a["caller"].startswith("__kvmalloc_node_noprof") for a in huge), huge
    assert all(a["align"] == 2 * MiB for a in huge)
    assert not [a for a in mine if a["verdict"] in ("fallback", "unknown")], mine

    # The 25 MiB vzalloc of the same load: not eligible (align 1, no opt-in).
    vz = [a for a in mine if a["size"] >= 25 * MiB]
    assert len(vz) == 2, [(a["caller"], a["size"]) for a in mine]
    for a in vz:
        assert a["verdict"] == "not_eligible" and a["align"] == 1
        assert "bpf_check" in a["caller"]
        assert a["huge_pages"] == 0

    # Cross-check with /proc/vmallocinfo, read while the loads ran: the same
    # area exists there (size, caller bpf_check), and it counts 1536 4 KiB
    # pages for what is mapped with three 2 MiB pages.
    assert (HUGE_AREA_SIZE, "bpf_check", 1536) in poller.seen, sorted(poller.seen)
    vz_size = vz[0]["size"]
    assert (vz_size, "bpf_check", (vz_size - 4096) // 4096) in poller.seen

    # The report's totals and interval rows carry them.
    tot = t.report["totals"]
    assert tot["vmalloc_huge_areas"] >= 2 and tot["vmalloc_huge_pages"] >= 6
    assert sum(r["vmalloc"]["huge_areas"] for r in t.report["intervals"]) >= 2
    # The verifier's areas are all closed: bpf_check freed them before returning.
    live_mine = [a for a in mine if a["live"]]
    assert not [a for a in live_mine if "bpf_check" in a["caller"]], live_mine


def test_live_areas_at_end_match_vmallocinfo(live, tmp_path):
    """A program kept loaded keeps its 2.4 MB image area: listed live, and in vmallocinfo."""
    key = "bpf_prog_alloc_no_stats"
    before = _vmallocinfo()
    fd = -1
    try:
        with Trace(str(tmp_path)) as t:
            r = vmalloc_huge.load_program(keep_fd=True)
            assert r["loaded"], r["error"]
            fd = r["fd"]
            during = _vmallocinfo()
        live_mine = [a for a in _mine(t.report, r["tid"]) if a["live"]]
        big = [a for a in live_mine if a["caller"].startswith(key) and a["size"] > MiB]
        assert len(big) == 1, live_mine
        size = big[0]["size"]
        assert big[0]["addr"] in t.report["vmalloc"]["live_at_end"]
        # vmallocinfo: exactly one more area of that size and caller, with
        # pages= equal to the traced size minus the guard page.
        grown = (sum(1 for e in during if e[:2] == (size, key))
                 - sum(1 for e in before if e[:2] == (size, key)))
        assert grown == 1
        assert (size, key, (size - 4096) // 4096) in during
    finally:
        if fd >= 0:
            os.close(fd)


def _check_fallback(t, res):
    """The kvmalloc area of one fallback run, every claim verified."""
    trig = res["trigger"]
    mine = _mine(t.report, trig["tid"])
    kv = [a for a in mine if a["caller"] == KV_CALLER]
    assert len(kv) == 1, ([(a["caller"], a["size"], a["verdict"]) for a in mine],
                          res["order9_free_during"])
    a = kv[0]
    assert a["verdict"] == "fallback", (a, res["buddyinfo_during"])
    assert a["huge_pages"] == 0
    # The retry is the area that lives on: 4 KiB pages, small alignment,
    # unrounded size; the failed huge attempt is attached to it.
    assert a["align"] < 2 * MiB and a["size"] < HUGE_AREA_SIZE
    att = a["attempt"]
    assert att["size"] == HUGE_AREA_SIZE and att["align"] == 2 * MiB
    assert att["huge_pages_needed"] == 3 and att["huge_pages_got"] < 3
    assert att["page_failed"]
    assert a["requested"] is not None and a["waste"] == a["size"] - 4096 - a["requested"]
    assert not [x for x in mine if x["verdict"] == "huge" and x["caller"] == KV_CALLER]
    assert t.report["totals"]["vmalloc_fallbacks"] >= 1
    k = t.report["vmalloc"]["kernel"]
    assert k["disarm_failed"] >= 1


def _kernel_found_huge_pages(t, res):
    """True when this run's kvmalloc really got 3 x 2 MiB: a block came free
    between the workload's last sweep and the load's attempt (the attempt
    before it reclaims and drains the per-CPU lists), so there was no
    fallback to see.  All three order-9 allocations must have succeeded."""
    kv = [a for a in _mine(t.report, res["trigger"]["tid"]) if a["caller"] == KV_CALLER]
    return (len(kv) == 1 and kv[0]["verdict"] == "huge" and kv[0]["huge_pages"] == 3
            and t.report["vmalloc"]["kernel"]["disarm_failed"] == 0)


def test_real_fallback_is_fallback(live, tmp_path):
    # The workload leaves no free 2 MiB block where the load looks; a run in
    # which one still came free in time is a correct `huge`, verified as
    # such, and the workload is run again (up to three times).
    for attempt in range(3):
        d = tmp_path / str(attempt)
        d.mkdir()
        with Trace(str(d)) as t:
            res = vmalloc_fallback.run(log=None)
        assert res["sysctls_after"] == res["sysctls_before"]
        trig = res["trigger"]
        assert trig["loaded"] == 1, trig["loads"][0]["error"]
        assert res["fallback_expected"], res["buddyinfo_during"]
        if attempt < 2 and _kernel_found_huge_pages(t, res):
            continue
        _check_fallback(t, res)
        return
