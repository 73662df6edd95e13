"""Unit tests of the vmalloc tracer: decoding, verdicts, bounds, the attach plan.

Synthetic event sequences shaped like what the kernel produced for the BPF
load trigger (shared/KERNEL-FACTS.md "Huge-page vmalloc"); no root needed.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from tests import synth
from trace_reclaim import abi, events
from trace_reclaim.correlate import Correlator
from trace_reclaim.tracer import Window
from trace_reclaim.tracers import registry
from trace_reclaim.tracers import vmalloc as vm
from trace_reclaim.tracers.vmalloc import aggregate as vm_aggregate
from trace_reclaim.tracers.vmalloc import (AllocVmapArea, FreeVmapArea, KmallocLarge, PurgeVmapArea,
                             VmallocAggregator, VmallocPageAlloc, caller_of)

MiB = 1 << 20
HUGE_SIZE = 6 * MiB + 4096        # alloc_vmap_area size=6295552 align=2097152
RETRY_SIZE = 4804608              # the 4 KiB retry at the unrounded size
REQ = 4800000
KV_STACK = ["alloc_vmap_area", "__get_vm_area_node", "__vmalloc_node_range_noprof",
            "__kvmalloc_node_noprof", "bpf_check", "bpf_prog_load", "__sys_bpf"]
NESTED_STACK = ["alloc_vmap_area", "__get_vm_area_node", "__vmalloc_node_range_noprof",
                "__vmalloc_node_noprof", "__vmalloc_node_range_noprof",
                "__kvmalloc_node_noprof", "bpf_check", "bpf_prog_load"]
VZ_STACK = ["alloc_vmap_area", "__get_vm_area_node", "__vmalloc_node_range_noprof",
            "__vmalloc_node_noprof", "bpf_check", "bpf_prog_load"]


def alloc(ts: int, addr: int, size: int, align: int, tid: int = 100, stack: int = 1,
          flags: Optional[int] = None, requested: int = 0, vm_flags: int = 0) -> AllocVmapArea:
    if flags is None:
        flags = abi.VMAP_EV_ARMED if align >= 2 * MiB else 0
    return AllocVmapArea(ts, abi.EV_ALLOC_VMAP_AREA, tid, tid, 0, "python", addr, size, align,
                         0, 0, requested, vm_flags, stack, 0, flags)


def page(ts: int, addr: int, index: int, failed: bool = False, tid: int = 100,
         expected: int = 3) -> VmallocPageAlloc:
    return VmallocPageAlloc(ts, abi.EV_VMALLOC_PAGE_ALLOC, tid, tid, 0, "python", addr,
                            0x2dc2, 9, int(failed), index, expected)


def free(ts: int, addr: int, tid: int = 100) -> FreeVmapArea:
    return FreeVmapArea(ts, abi.EV_FREE_VMAP_AREA, tid, tid, 0, "python", addr, 0, 0)


def kmalloc(ts: int, req: int, tid: int = 100) -> KmallocLarge:
    return KmallocLarge(ts, abi.EV_KMALLOC_LARGE, tid, tid, 0, "python", req, 8 * MiB, 0, -1)


def run(evs: List[Any], stacks: Optional[Dict[int, List[str]]] = None,
        end: bool = True) -> Dict[str, Any]:
    agg = VmallocAggregator(Window(start_ns=0))
    agg.on_sample(events.Sample(0, "vmalloc", {"stacks": {
        str(k): v for k, v in (stacks or {1: KV_STACK, 2: NESTED_STACK,
                                          3: VZ_STACK}).items()}}))
    for e in evs:
        agg.feed(e)
    if end:
        agg.close(10**12)
    return agg.report()


def by_addr(section: Dict[str, Any], addr: int) -> Dict[str, Any]:
    found = [a for a in section["areas"] if a["addr"] == f"0x{addr:x}"]
    assert len(found) == 1, section["areas"]
    return found[0]


A = 0xffffc90005000000
B = 0xffffc90006000000
N = 0xffffc90000ea0000


def test_huge_area_with_kvmalloc_request_and_waste():
    s = run([kmalloc(1, REQ), kmalloc(2, REQ), alloc(10, A, HUGE_SIZE, 2 * MiB),
             alloc(11, N, 16384, 1, stack=2),
             page(12, A, 0), page(13, A, 1), page(14, A, 2), free(50, A), free(51, N)])
    a = by_addr(s, A)
    assert a["verdict"] == "huge"
    assert a["huge_pages"] == 3
    assert a["requested"] == REQ and a["requested_from"] == "kmalloc"
    assert a["waste"] == 6 * MiB - REQ == 1491456
    assert a["caller"] == "__kvmalloc_node_noprof <- bpf_check"
    assert a["align"] == 2 * MiB and a["size"] == HUGE_SIZE
    assert not a["live"]
    nested = by_addr(s, N)
    assert nested["verdict"] == "not_eligible"
    assert nested["caller"].startswith("page array: __kvmalloc_node_noprof")
    assert s["by_verdict"]["huge"]["areas"] == 1
    assert s["by_verdict"]["huge"]["huge_pages"] == 3
    assert s["by_verdict"]["not_eligible"]["areas"] == 1
    assert s["live_at_end"] == []


def test_vzalloc_is_not_eligible_with_bound():
    s = run([alloc(10, B, 25 * MiB + 4096, 1, stack=3)])
    a = by_addr(s, B)
    assert a["verdict"] == "not_eligible"
    assert "did not opt in" in a["why"]
    assert a["waste"] is None and "4 KiB" in a["waste_bound"]
    assert a["caller"] == "bpf_check <- bpf_prog_load"
    assert a["live"] and s["live_at_end"] == [f"0x{B:x}"]


def test_page_aligned_small_request_is_not_eligible():
    s = run([alloc(10, B, 20480, 4096)])
    assert by_addr(s, B)["verdict"] == "not_eligible"
    assert "under 2 MiB" in by_addr(s, B)["why"]


def test_real_fallback_shape_links_retry():
    # KERNEL-FACTS: two order-9 pages succeed, one fails, the area is freed,
    # then alloc_vmap_area size=4804608 align=1 from the same task.
    s = run([kmalloc(1, REQ), alloc(10, A, HUGE_SIZE, 2 * MiB), alloc(11, N, 16384, 1, stack=2),
             page(12, A, 0), page(13, A, 1), page(14, A, 2, failed=True),
             free(15, A), free(16, N), alloc(17, B, RETRY_SIZE, 1), free(90, B)])
    fb = [a for a in s["areas"] if a["verdict"] == "fallback"]
    assert len(fb) == 1, s["areas"]
    f = fb[0]
    assert f["addr"] == f"0x{B:x}" and f["size"] == RETRY_SIZE
    assert f["attempt"]["addr"] == f"0x{A:x}"
    assert f["attempt"]["huge_pages_got"] == 2 and f["attempt"]["huge_pages_needed"] == 3
    assert f["huge_pages"] == 0
    assert f["requested"] == REQ
    assert f["waste"] == RETRY_SIZE - 4096 - REQ
    assert f["caller"] == "__kvmalloc_node_noprof <- bpf_check"
    assert not [a for a in s["areas"] if a["addr"] == f"0x{A:x}"]  # merged into the retry
    assert s["by_verdict"]["fallback"]["areas"] == 1
    assert s["counts"]["fallback_retries_linked"] == 1


def test_fallback_without_retry_seen():
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB), page(12, A, 0, failed=True), free(15, A)])
    a = by_addr(s, A)
    assert a["verdict"] == "fallback"
    assert "retry was not seen" in a["why"]


def test_retry_too_late_is_not_linked():
    late = 15 + vm.RETRY_WINDOW_NS + 1
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB), page(12, A, 0, failed=True), free(15, A),
             alloc(late, B, RETRY_SIZE, 1)])
    assert by_addr(s, A)["verdict"] == "fallback"
    assert by_addr(s, B)["verdict"] == "not_eligible"


def test_slow_retry_is_still_linked():
    """Under emulation the retry came more than PAIR_WINDOW_NS after the free."""
    slow = 15 + vm.PAIR_WINDOW_NS + 1
    assert slow < 15 + vm.RETRY_WINDOW_NS
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB), page(12, A, 0, failed=True), free(15, A),
             alloc(slow, B, RETRY_SIZE, 1)])
    b = by_addr(s, B)
    assert b["verdict"] == "fallback" and b["attempt"]["addr"] == f"0x{A:x}"


def test_retry_after_reclaiming_for_its_area_is_still_linked():
    """The retry's vmap_area may reclaim first: in the VM tier it came over a
    second after the free.  Its size, not the delay, ties it to the attempt."""
    slow = 15 + 3_000_000_000
    assert slow < 15 + vm.RETRY_WINDOW_NS
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB), page(12, A, 0, failed=True), free(15, A),
             alloc(slow, B, RETRY_SIZE, 1)])
    b = by_addr(s, B)
    assert b["verdict"] == "fallback" and b["attempt"]["addr"] == f"0x{A:x}"


def test_an_area_of_another_request_is_not_the_retry():
    """Only the size one request gives both (2 MiB vs 4 KiB rounding) links;
    another area of the task in between is left alone and the retry after
    it still links."""
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB), page(12, A, 0, failed=True), free(15, A),
             alloc(16, N, 16384, 1), alloc(17, B, RETRY_SIZE, 1)])
    assert by_addr(s, N)["verdict"] == "not_eligible" and "attempt" not in by_addr(s, N)
    b = by_addr(s, B)
    assert b["verdict"] == "fallback" and b["attempt"]["addr"] == f"0x{A:x}"
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB), page(12, A, 0, failed=True), free(15, A),
             alloc(16, B, 2 * MiB + 4096, 1)])
    assert by_addr(s, A)["verdict"] == "fallback" and "not seen" in by_addr(s, A)["why"]
    assert "attempt" not in by_addr(s, B)


def test_missing_page_events_are_unknown_not_huge():
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB)])
    a = by_addr(s, A)
    assert a["verdict"] == "unknown"
    assert "no huge-order page allocations" in a["why"]
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB), page(11, A, 0)])
    a = by_addr(s, A)
    assert a["verdict"] == "unknown" and "1 of 3" in a["why"]
    assert a["huge_pages"] == 0


def test_partial_pages_then_free_by_other_task_is_unknown():
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB), page(11, A, 0), free(500, A, tid=7)])
    a = by_addr(s, A)
    assert a["verdict"] == "unknown"


def test_arm_table_full_is_unknown():
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB, flags=abi.VMAP_EV_ARM_FULL)])
    assert by_addr(s, A)["verdict"] == "unknown"
    assert "table was full" in by_addr(s, A)["why"]


def test_huge_without_known_request_states_bound():
    s = run([alloc(10, A, HUGE_SIZE, 2 * MiB), page(11, A, 0), page(12, A, 1), page(13, A, 2)])
    a = by_addr(s, A)
    assert a["verdict"] == "huge" and a["waste"] is None
    assert a["waste_bound"].startswith("< 2 MiB")
    assert a["live"]


def test_kmalloc_of_other_size_is_not_paired():
    s = run([kmalloc(1, 100 * MiB), alloc(10, A, HUGE_SIZE, 2 * MiB)])
    assert by_addr(s, A)["requested"] is None
    s = run([kmalloc(1, REQ, tid=5), alloc(10, A, HUGE_SIZE, 2 * MiB)])
    assert by_addr(s, A)["requested"] is None


def test_exact_request_from_fentry():
    s = run([alloc(10, B, 20480, 1, flags=abi.VMAP_EV_EXACT, requested=16384, vm_flags=0)])
    a = by_addr(s, B)
    assert a["requested"] == 16384 and a["requested_from"] == "fentry"
    assert a["waste"] == 0
    assert "VM_ALLOW_HUGE_VMAP" in a["why"]


def test_out_of_order_page_before_alloc_is_applied():
    s = run([page(12, A, 0), page(13, A, 1), alloc(10, A, HUGE_SIZE, 2 * MiB), page(14, A, 2)])
    a = by_addr(s, A)
    assert a["verdict"] == "huge" and a["huge_pages"] == 3
    assert s["counts"]["page_events_early"] == 2


def test_stale_early_page_of_previous_area_is_ignored():
    s = run([page(5, A, 0), alloc(10, A, HUGE_SIZE, 2 * MiB)])
    assert by_addr(s, A)["verdict"] == "unknown"


def test_free_before_alloc_closes_area():
    s = run([free(20, B), alloc(10, B, 20480, 1)])
    a = by_addr(s, B)
    assert not a["live"] and a["freed_ns"] == 20
    assert s["live_at_end"] == []


def test_free_of_unknown_area_is_counted():
    s = run([free(20, B), free(21, A)])
    assert s["counts"]["frees_untracked"] == 2
    assert s["areas"] == []


def test_reused_address_without_free_closes_old():
    s = run([alloc(10, B, 20480, 1), alloc(20, B, 20480, 1)])
    assert s["counts"]["replaced_unfreed"] == 1
    assert len(s["areas"]) == 2
    assert sum(1 for a in s["areas"] if a["live"]) == 1


def test_live_area_cap_counts_drops(monkeypatch):
    monkeypatch.setattr(vm_aggregate, "MAX_LIVE_AREAS", 5)
    s = run([alloc(10 + i, B + i * 0x10000, 20480, 1) for i in range(8)])
    assert s["counts"]["areas_dropped"] == 3
    assert len(s["live_at_end"]) == 5
    # dropped areas still count in the totals
    assert s["by_verdict"]["not_eligible"]["areas"] == 8


def test_listed_area_cap(monkeypatch):
    monkeypatch.setattr(vm_aggregate, "MAX_LISTED_AREAS", 3)
    monkeypatch.setattr(vm_aggregate, "MAX_LISTED_NOTABLE", 1)
    evs: List[Any] = []
    for i in range(6):
        evs += [alloc(10 * i, B + i * 0x10000, 20480, 1), free(10 * i + 5, B + i * 0x10000)]
    evs += [alloc(100, A, HUGE_SIZE, 2 * MiB), page(101, A, 0), page(102, A, 1),
            page(103, A, 2), free(104, A)]
    s = run(evs)
    assert len(s["areas"]) == 4            # 3 listed + the huge one (notable)
    assert s["counts"]["areas_not_listed"] == 3
    assert s["by_verdict"]["not_eligible"]["areas"] == 6
    assert s["by_verdict"]["huge"]["areas"] == 1


def test_pending_state_is_bounded(monkeypatch):
    monkeypatch.setattr(vm_aggregate, "MAX_PENDING", 4)
    agg = VmallocAggregator(Window())
    for t in range(20):
        agg.feed(kmalloc(t, REQ, tid=t))
    assert len(agg.pending_kmalloc) == 4


def test_interval_fragment():
    agg = VmallocAggregator(Window())
    for e in [alloc(10, A, HUGE_SIZE, 2 * MiB), page(12, A, 0), page(13, A, 1),
              page(14, A, 2), alloc(20, B, HUGE_SIZE, 2 * MiB), page(21, B, 0, failed=True)]:
        agg.feed(e)
    row = agg.on_tick(100)
    assert row["huge_areas"] == 1 and row["huge_pages"] == 3 and row["fallbacks"] == 1
    assert row["areas"] == 2
    assert agg.on_tick(200)["huge_areas"] == 0


def test_caller_of():
    assert caller_of(KV_STACK) == ("__kvmalloc_node_noprof <- bpf_check", False)
    assert caller_of(NESTED_STACK) == ("__kvmalloc_node_noprof <- bpf_check", True)
    assert caller_of(["alloc_vmap_area"]) == ("[vmalloc internals only]", False)


def test_unsymbolized_stack_never_shows_addresses():
    s = run([alloc(10, B, 20480, 1, stack=77)], stacks={})
    assert by_addr(s, B)["caller"] == "[stack not symbolized]"
    s = run([alloc(10, B, 20480, 1, stack=-17)], stacks={})
    assert by_addr(s, B)["caller"].startswith("[no stack")


# -- decoding: the C structs in bpf/events.h -------------------------------
def _rec(ty: int, struct_name: str, **fields: Any) -> bytes:
    return synth.record(struct_name, ty, 123, pid=100, tgid=99, cpu=1, comm="python", **fields)


def test_decode_alloc_vmap_area():
    raw = _rec(abi.EV_ALLOC_VMAP_AREA, "alloc_vmap_area_event", addr=A, size_bytes=HUGE_SIZE,
               align_bytes=2 * MiB, vstart=1, vend=2, stack_id=42, flags=abi.VMAP_EV_ARMED)
    e = events.decode(abi.EV_ALLOC_VMAP_AREA, raw)
    assert isinstance(e, AllocVmapArea)
    assert (e.addr, e.size_bytes, e.align_bytes, e.stack_id, e.flags, e.comm, e.tgid) == \
        (A, HUGE_SIZE, 2 * MiB, 42, 1, "python", 99)


def test_decode_others():
    free_t, purge_t = abi.EV_FREE_VMAP_AREA, abi.EV_PURGE_VMAP_AREA
    assert events.decode(free_t, _rec(free_t, "free_vmap_area_event", addr=A, nr_lazy_pages=5,
                                      nr_lazy_max_pages=6)) == \
        FreeVmapArea(123, free_t, 100, 99, 1, "python", A, 5, 6)
    assert events.decode(purge_t, _rec(purge_t, "purge_vmap_area_event", start=1, end=2,
                                       nr_purged=3)) == \
        PurgeVmapArea(123, purge_t, 100, 99, 1, "python", 1, 2, 3)
    p = events.decode(abi.EV_VMALLOC_PAGE_ALLOC, _rec(
        abi.EV_VMALLOC_PAGE_ALLOC, "vmalloc_page_alloc_event", area_addr=A, gfp_flags=7,
        order=9, failed=1, index=2, expected=3))
    assert isinstance(p, VmallocPageAlloc) and p.failed == 1 and p.expected == 3
    k = events.decode(abi.EV_KMALLOC_LARGE, _rec(
        abi.EV_KMALLOC_LARGE, "kmalloc_large_event", bytes_req=REQ, bytes_alloc=8 * MiB,
        gfp_flags=7, node=-1))
    assert isinstance(k, KmallocLarge) and k.bytes_req == REQ and k.node == -1
    with pytest.raises(events.DecodeError):  # a free record is shorter than an alloc
        events.decode(abi.EV_ALLOC_VMAP_AREA, _rec(free_t, "free_vmap_area_event", addr=A))


# -- through the correlator, as live and replay do ---------------------------
def test_correlator_report_and_totals():
    corr = Correlator({"tracers": {"vmalloc": {"page_bytes": 4096, "huge_bytes": 2 * MiB,
                                               "plan": "tracepoint-only"}}},
                      [registry()["vmalloc"]])
    corr.feed(events.Snapshot(1, "vmstat", "start", {}))
    corr.feed(events.Sample(2, "vmalloc", {"stacks": {"1": KV_STACK}, "when": "start"}))
    for e in [alloc(10, A, HUGE_SIZE, 2 * MiB), page(12, A, 0), page(13, A, 1), page(14, A, 2)]:
        corr.feed(e)
    corr.feed(events.Tick(20, 1, {}))
    corr.feed(events.End(30, "SIGINT"))
    doc = corr.report()
    v = doc["vmalloc"]
    item = v["areas"][0]
    for k in ("addr", "size", "align", "verdict", "huge_pages", "caller", "pid", "comm"):
        assert k in item
    assert doc["totals"]["vmalloc_huge_areas"] == 1
    assert doc["totals"]["vmalloc_huge_pages"] == 3
    assert doc["totals"]["vmalloc_fallbacks"] == 0
    assert doc["intervals"][0]["vmalloc"]["huge_areas"] == 1
    assert "cannot show huge" in v["note"]
    lines = VmallocAggregator(Window()).render(v)
    assert all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]
    assert any("huge" in ln and "3 x 2 MiB" in ln for ln in lines)


# -- the attach plan ----------------------------------------------------------
class FakeProbe:
    def __init__(self, fentry: bool, kprobes: bool, raw: bool = True,
                 funcs: tuple = ("__vmalloc_node_range_noprof",)) -> None:
        self.fentry = (fentry, "loads" if fentry else "fentry refused: EPERM")
        self.kprobes = (kprobes, "available" if kprobes else "kprobes not compiled in")
        self.raw = raw
        self.funcs = funcs

        class P:
            @staticmethod
            def meminfo() -> Dict[str, int]:
                return {"Hugepagesize": 2048}
        self.procfs = P()
        self.huge_vmalloc = (True, "yes")

    def tracepoint_exists(self, cat: str, ev: str) -> bool:
        return True

    def tracing_attach(self, func: str, kind: str = "fentry") -> tuple:
        return self.fentry

    def raw_tracepoint_params(self, ev: str) -> Optional[List[str]]:
        if not self.raw:
            return None
        return list(vm.VmallocTracer.RAW_PROTOS[ev]) + ["int"]

    def btf_func_params(self, name: str) -> Optional[List[str]]:
        return ["long unsigned int"] * 9 if name in self.funcs else None


def _plan(p: FakeProbe):
    attaches, cflags = vm.VmallocTracer().plan(p)
    req = [a for a in attaches if a.family.startswith("vmalloc request")][0]
    return req, cflags, attaches


def test_plan_prefers_fentry_then_kprobe():
    req, cflags, _ = _plan(FakeProbe(fentry=True, kprobes=True))
    assert req.chosen == "fentry __vmalloc_node_range_noprof"
    assert "-DVMALLOC_FENTRY_NOPROF" in cflags
    req, cflags, _ = _plan(FakeProbe(fentry=False, kprobes=True,
                                     funcs=("__vmalloc_node_range",)))
    assert req.chosen == "kprobe __vmalloc_node_range" and "-DVMALLOC_KPROBE" in cflags
    assert req.rejected[0][0] == "fentry __vmalloc_node_range"


def test_plan_tracepoint_only_says_why():
    req, cflags, attaches = _plan(FakeProbe(fentry=False, kprobes=False))
    assert req.chosen.startswith("tracepoint-only")
    assert [r[1] for r in req.rejected] == ["fentry refused: EPERM", "kprobes not compiled in"]
    assert not any("FENTRY" in c or "KPROBE" in c for c in cflags)
    assert "-DVMALLOC_RAW_TP" in cflags and "-DVMALLOC_HUGE_ORDER=9" in cflags
    assert all(a.ok for a in attaches)


def test_plan_without_btf_uses_tracepoints():
    _req, cflags, attaches = _plan(FakeProbe(fentry=False, kprobes=False, raw=False))
    assert "-DVMALLOC_RAW_TP" not in cflags
    pa = [a for a in attaches if a.family == "kmem:mm_page_alloc"][0]
    assert pa.chosen == "tracepoint kmem:mm_page_alloc"
    assert pa.rejected and pa.rejected[0][0] == "raw tracepoint mm_page_alloc"


def purge(ts: int, n: int) -> PurgeVmapArea:
    return PurgeVmapArea(ts, abi.EV_PURGE_VMAP_AREA, 1, 1, 0, "kworker", 0, 1 << 40, n)


def test_purge_counts_and_a_purge_without_its_count():
    assert run([purge(1, 3), purge(2, 4)])["counts"]["purged_areas"] == 7
    # Before 6.2 the purge is seen at __purge_vmap_area_lazy, which keeps its
    # count local: the total is unknown, never a silent undercount.
    c = run([purge(1, 3), purge(2, abi.VMALLOC_PURGED_UNKNOWN)])["counts"]
    assert c["purges"] == 2 and c["purged_areas"] is None


class Btf:
    def __init__(self, va_start: Optional[int] = 0) -> None:
        self.va_start = va_start

    def member_offset(self, struct: str, member: str) -> Optional[int]:
        return self.va_start if (struct, member) == ("vmap_area", "va_start") else None


class Linux61(FakeProbe):
    """Linux 6.1: no vmalloc tracepoints; the functions, with 6.1's prototypes."""

    PROTOS = {"alloc_vmap_area": ["long unsigned int"] * 4 + ["int", "gfp_t"],
              "free_vmap_area_noflush": ["struct vmap_area *"],
              "__purge_vmap_area_lazy": ["long unsigned int"] * 2,
              "__vmalloc_node_range": ["long unsigned int"] * 9}

    def __init__(self, fentry: bool, kprobes: bool, refuse: str = "",
                 btf: Optional[Btf] = None, protos: Optional[Dict[str, List[str]]] = None):
        super().__init__(fentry, kprobes, funcs=("__vmalloc_node_range",))
        self.refuse = refuse
        self.btf_types = btf or Btf()
        self.protos = dict(self.PROTOS, **(protos or {}))

    def tracepoint_exists(self, cat: str, ev: str) -> bool:
        return cat != "vmalloc"

    def tracing_attach(self, func: str, kind: str = "fentry") -> tuple:
        if func == self.refuse:
            return False, "trampoline refused: ENOTSUPP"
        return self.fentry

    def btf_func_params(self, name: str) -> Optional[List[str]]:
        return self.protos.get(name)


def _area_attaches(attaches):
    return {a.family: a for a in attaches if a.family.startswith("vmalloc:")}


def test_before_6_2_areas_come_from_fexit_on_the_functions():
    _req, cflags, attaches = _plan(Linux61(fentry=True, kprobes=True))
    areas = _area_attaches(attaches)
    assert [areas[f].chosen for f in ("vmalloc:alloc_vmap_area",
                                      "vmalloc:free_vmap_area_noflush",
                                      "vmalloc:purge_vmap_area_lazy")] == \
        ["fexit alloc_vmap_area", "fentry free_vmap_area_noflush",
         "fexit __purge_vmap_area_lazy"]
    assert all(a.ok and "added in Linux 6.2" in a.rejected[0][1] for a in areas.values())
    assert "-DVMALLOC_AREA_FEXIT" in cflags and "-DVMAP_AREA_VA_START_OFF=0" in cflags
    assert "-DVMALLOC_AREA_KPROBE" not in cflags


def test_before_6_2_one_refused_trampoline_takes_kprobes_for_all():
    _req, cflags, attaches = _plan(Linux61(fentry=True, kprobes=True,
                                           refuse="free_vmap_area_noflush"))
    areas = _area_attaches(attaches)
    assert areas["vmalloc:alloc_vmap_area"].chosen == "kprobe+kretprobe alloc_vmap_area"
    assert areas["vmalloc:free_vmap_area_noflush"].chosen == "kprobe free_vmap_area_noflush"
    assert "ENOTSUPP" in areas["vmalloc:alloc_vmap_area"].rejected[1][1]
    assert "-DVMALLOC_AREA_KPROBE" in cflags and "-DVMALLOC_AREA_FEXIT" not in cflags


def test_before_6_2_without_probes_or_with_another_prototype_vmalloc_is_missing():
    for probe in (Linux61(fentry=False, kprobes=False),
                  Linux61(fentry=True, kprobes=True,
                          protos={"alloc_vmap_area": ["long unsigned int"] * 7}),
                  Linux61(fentry=True, kprobes=True, btf=Btf(None))):
        _req, cflags, attaches = _plan(probe)
        areas = _area_attaches(attaches)
        assert len(areas) == 3 and not any(a.ok for a in areas.values())
        assert not any("VMALLOC_AREA" in c for c in cflags)


def test_caller_skips_the_fexit_programs_own_frames():
    # Before 6.2 the area comes from fexit alloc_vmap_area: the stack starts
    # in our program and its trampoline.
    fexit = ["bpf_prog_3f06b36a2460a33d_kretfunc__alloc_vmap_area",
             "bpf_trampoline_6442467283"] + KV_STACK
    assert caller_of(fexit) == caller_of(KV_STACK)
    assert caller_of(fexit)[0].startswith("__kvmalloc_node")
