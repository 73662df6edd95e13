"""vmalloc areas: every area seen, huge (PMD) mappings flagged, fallbacks and waste.

Caveats: the tracepoint-only plan (the one that runs where kprobes and fentry
do not) infers what ``__vmalloc_node_range`` decided from what it did: an
area allocated with 2 MiB alignment is a huge attempt, its task's order-9
page allocations that follow are its pages, and a NULL one is the failure
that makes vmalloc free the area and retry with 4 KiB pages.  The requested
size is known there only for kvmalloc (its failed ``kmalloc`` comes first);
elsewhere waste is given as a bound.

Kernel side: ``bpf/vmalloc.bpf.c`` on the tracepoints
``vmalloc:alloc_vmap_area``, ``vmalloc:free_vmap_area_noflush``,
``vmalloc:purge_vmap_area_lazy`` (since Linux 6.1), ``kmem:mm_page_alloc`` and
``kmem:kmalloc`` (as raw tracepoints when BTF confirms their TP_PROTO), and
fentry or a kprobe on ``__vmalloc_node_range_noprof`` where the kernel allows
one (exact request size and vm_flags).  Huge vmalloc needs
CONFIG_HAVE_ARCH_HUGE_VMALLOC and no ``nohugevmalloc``; since Linux 5.18
(commit 559089e0a93d, "vmalloc: replace VM_NO_HUGE_VMAP with
VM_ALLOW_HUGE_VMAP") it is opt-in per caller (kvmalloc, vmalloc_huge).
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

from trace_reclaim import events
from trace_reclaim.tracer import Aggregator, Attach, EpisodeFact, Tracer, Window

__all__ = [
    "EV_ALLOC_VMAP_AREA", "EV_FREE_VMAP_AREA", "EV_PURGE_VMAP_AREA",
    "EV_VMALLOC_PAGE_ALLOC", "EV_KMALLOC_LARGE",
    "AllocVmapArea", "FreeVmapArea", "PurgeVmapArea", "VmallocPageAlloc", "KmallocLarge",
    "VmallocTracer", "VmallocAggregator", "TRACER", "caller_of", "VERDICTS",
    "MAX_LIVE_AREAS", "MAX_LISTED_AREAS", "VMALLOCINFO_NOTE",
]

EV_ALLOC_VMAP_AREA = 16
EV_FREE_VMAP_AREA = 17
EV_PURGE_VMAP_AREA = 18
EV_VMALLOC_PAGE_ALLOC = 19
EV_KMALLOC_LARGE = 20

# struct alloc_vmap_area_event flags (bpf/events.h)
VMAP_EV_ARMED = 1
VMAP_EV_EXACT = 2
VMAP_EV_ARM_FULL = 4

# include/linux/vmalloc.h
VM_NO_GUARD = 0x40
VM_ALLOW_HUGE_VMAP = 0x400

VERDICTS = ("huge", "fallback", "not_eligible", "unknown")

# Bounds on user-space state.
MAX_LIVE_AREAS = 8192        # areas allocated in the window and not yet freed
MAX_LISTED_AREAS = 2048      # closed areas listed one by one (all are counted)
MAX_LISTED_NOTABLE = 2048    # ... plus this many huge/fallback/unknown ones
MAX_PENDING = 1024           # per-task kmalloc failures and failed huge attempts
MAX_EARLY = 1024             # page events / frees seen before their area
MAX_STACKS = 4096
STACK_DEPTH = 16
# A kvmalloc's vmalloc follows its failed kmalloc at once; a fallback's retry
# follows the failed attempt's free at once.
PAIR_WINDOW_NS = 100_000_000

VMALLOCINFO_NOTE = ("/proc/vmallocinfo cannot show huge mappings: its pages= counts "
                    "4 KiB pages for a 2 MiB-mapped area too (and addresses are hashed)")

# vmalloc's own frames: the caller is the first frame after these.
_INTERNAL = frozenset((
    "alloc_vmap_area", "__get_vm_area_node", "__get_vm_area_caller",
    "__vmalloc_node_range_noprof", "__vmalloc_node_range",
    "__vmalloc_node_noprof", "__vmalloc_node", "__vmalloc_area_node",
))
_RANGE = frozenset(("__vmalloc_node_range_noprof", "__vmalloc_node_range"))


@dataclass(slots=True)
class AllocVmapArea(events.Event):
    addr: int
    size_bytes: int
    align_bytes: int
    vstart: int
    vend: int
    requested_bytes: int
    vm_flags: int
    stack_id: int
    failed: int
    flags: int


@dataclass(slots=True)
class FreeVmapArea(events.Event):
    addr: int
    nr_lazy_pages: int
    nr_lazy_max_pages: int


@dataclass(slots=True)
class PurgeVmapArea(events.Event):
    start: int
    end: int
    nr_purged: int


@dataclass(slots=True)
class VmallocPageAlloc(events.Event):
    area_addr: int
    gfp_flags: int
    order: int
    failed: int
    index: int
    expected: int


@dataclass(slots=True)
class KmallocLarge(events.Event):
    bytes_req: int
    bytes_alloc: int
    gfp_flags: int
    node: int


# The C struct behind each record type (tests/test_events_h.py compares sizes).
C_STRUCTS = {
    EV_ALLOC_VMAP_AREA: "alloc_vmap_area_event",
    EV_FREE_VMAP_AREA: "free_vmap_area_event",
    EV_PURGE_VMAP_AREA: "purge_vmap_area_event",
    EV_VMALLOC_PAGE_ALLOC: "vmalloc_page_alloc_event",
    EV_KMALLOC_LARGE: "kmalloc_large_event",
}

events.register(EV_ALLOC_VMAP_AREA, events.struct_decoder(AllocVmapArea, "QQQQQQQiiII", 10))
events.register(EV_FREE_VMAP_AREA, events.struct_decoder(FreeVmapArea, "QQQ", 3))
events.register(EV_PURGE_VMAP_AREA, events.struct_decoder(PurgeVmapArea, "QQII", 3))
events.register(EV_VMALLOC_PAGE_ALLOC,
                events.struct_decoder(VmallocPageAlloc, "QQIiII", 6))
events.register(EV_KMALLOC_LARGE, events.struct_decoder(KmallocLarge, "QQQiI", 4))


def caller_of(frames: Sequence[str]) -> Tuple[str, bool]:
    """Return ("first <- second" frame outside vmalloc, nested) for a stack.

    ``nested`` is true for vmalloc's own page-pointer array: a vmalloc made
    from inside another one (``__vmalloc_node_range`` twice on the stack).
    """
    nested = sum(1 for f in frames if f in _RANGE) > 1
    rest = [f for f in frames[next((i for i, f in enumerate(frames)
                                    if f not in _INTERNAL), len(frames)):]]
    rest = [f for f in rest if f not in _INTERNAL]
    if not rest:
        return "[vmalloc internals only]", nested
    return " <- ".join(rest[:2]), nested


class _Area:
    __slots__ = ("addr", "size", "align", "ts_ns", "tid", "pid", "comm", "stack_id",
                 "flags", "requested", "requested_from", "vm_flags", "expected",
                 "pages_ok", "page_failed", "freed_ns", "attempt", "page_events")

    def __init__(self, ev: AllocVmapArea, page_bytes: int, huge_bytes: int) -> None:
        self.addr = ev.addr
        self.size = ev.size_bytes
        self.align = ev.align_bytes
        self.ts_ns = ev.ts_ns
        self.tid = ev.pid
        self.pid = ev.tgid
        self.comm = ev.comm
        self.stack_id = ev.stack_id
        self.flags = ev.flags
        self.vm_flags: Optional[int] = ev.vm_flags if ev.flags & VMAP_EV_EXACT else None
        self.requested: Optional[int] = ev.requested_bytes if ev.flags & VMAP_EV_EXACT \
            else None
        self.requested_from = "fentry" if self.requested is not None else None
        self.expected = ev.size_bytes // huge_bytes if ev.flags & VMAP_EV_ARMED else 0
        self.pages_ok = 0
        self.page_failed = False
        self.page_events = 0
        self.freed_ns: Optional[int] = None
        self.attempt: Optional[Dict[str, Any]] = None

    @property
    def huge_attempt(self) -> bool:
        return bool(self.flags & (VMAP_EV_ARMED | VMAP_EV_ARM_FULL))


class VmallocAggregator(Aggregator):
    """Per-area verdicts (huge, fallback, not_eligible, unknown), waste and callers."""

    section: ClassVar[str] = "vmalloc"

    def __init__(self, window: Window) -> None:
        super().__init__(window)
        tr = (window.header.get("tracers") or {}).get("vmalloc") or {}
        self.page_bytes = int(tr.get("page_bytes") or window.header.get("page_size") or 4096)
        self.huge_bytes = int(tr.get("huge_bytes") or 2 << 20)
        self.plan = str(tr.get("plan") or "tracepoint")
        self.huge_possible = tr.get("huge_vmalloc")
        self.live: Dict[int, _Area] = {}
        self.closed: List[Dict[str, Any]] = []
        self.closed_notable = 0
        self.closed_not_listed = 0
        self.stacks: Dict[int, List[str]] = {}
        self.stats: Dict[str, int] = {}
        self.vmallocinfo: Dict[str, Any] = {}
        # (stack_id, verdict) -> [areas, mapped bytes, huge pages, waste known]
        self.by_key: Dict[Tuple[int, str], List[int]] = {}
        self.pending_kmalloc: OrderedDict[int, KmallocLarge] = OrderedDict()
        self.pending_retry: OrderedDict[int, _Area] = OrderedDict()
        self.early_pages: OrderedDict[int, List[VmallocPageAlloc]] = OrderedDict()
        self.early_frees: OrderedDict[int, int] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self._iv = self._new_interval()

    @staticmethod
    def _new_interval() -> Dict[str, int]:
        return {"areas": 0, "frees": 0, "huge_areas": 0, "huge_pages": 0,
                "fallbacks": 0, "purges": 0}

    # -- bounded helpers ---------------------------------------------------
    @staticmethod
    def _put(d: OrderedDict[int, Any], key: int, value: Any, cap: int) -> bool:
        """Insert into a FIFO-bounded dict; return False when one was evicted."""
        d[key] = value
        d.move_to_end(key)
        if len(d) > cap:
            d.popitem(last=False)
            return False
        return True

    # -- events ------------------------------------------------------------
    def feed(self, ev: Any) -> None:
        t = ev.type
        if t == EV_ALLOC_VMAP_AREA:
            self._alloc(ev)
        elif t == EV_VMALLOC_PAGE_ALLOC:
            self._page(ev)
        elif t == EV_FREE_VMAP_AREA:
            self._free(ev)
        elif t == EV_KMALLOC_LARGE:
            self.counts["kmalloc_failures"] += 1
            if not self._put(self.pending_kmalloc, ev.pid, ev, MAX_PENDING):
                self.counts["pending_dropped"] += 1
        elif t == EV_PURGE_VMAP_AREA:
            self.counts["purges"] += 1
            self.counts["purged_areas"] += ev.nr_purged
            self._iv["purges"] += 1

    def _alloc(self, ev: AllocVmapArea) -> None:
        if ev.failed:
            self.counts["alloc_failed"] += 1
            return
        self.counts["allocs"] += 1
        self._iv["areas"] += 1
        a = _Area(ev, self.page_bytes, self.huge_bytes)
        self._pair_request(a, ev)
        att = self.pending_retry.pop(ev.pid, None)
        if att is not None:
            if (not a.huge_attempt and ev.ts_ns - (att.freed_ns or att.ts_ns) <= PAIR_WINDOW_NS
                    and a.size <= att.size):
                self._link_retry(a, att)
            else:
                self._close_record(att)  # the retry was not seen
        if ev.addr in self.live:  # a free was lost: close the stale one
            self.counts["replaced_unfreed"] += 1
            old = self.live.pop(ev.addr)
            self._close_record(old)
        early_free = self.early_frees.pop(ev.addr, None)
        if early_free is not None and early_free >= ev.ts_ns:
            a.freed_ns = early_free  # freed, but its free arrived first
            self._close_record(a)
            return
        if len(self.live) >= MAX_LIVE_AREAS:
            self.counts["areas_dropped"] += 1
            self._account(a, self._verdict(a, False)[0])
            return
        self.live[ev.addr] = a
        for p in self.early_pages.pop(ev.addr, []):
            if p.ts_ns >= a.ts_ns and p.pid == a.tid:
                self._apply_page(a, p)

    def _pair_request(self, a: _Area, ev: AllocVmapArea) -> None:
        """kvmalloc tried kmalloc first: a failed kmalloc of a matching size."""
        if a.requested is not None:
            return
        km = self.pending_kmalloc.get(ev.pid)
        if km is None or ev.ts_ns - km.ts_ns > PAIR_WINDOW_NS or km.ts_ns > ev.ts_ns:
            return
        req = km.bytes_req
        guard = self.page_bytes
        unit = self.huge_bytes if a.huge_attempt else self.page_bytes
        if _round_up(req, unit) + guard == a.size or _round_up(req, unit) == a.size:
            a.requested = req
            a.requested_from = "kmalloc"
            del self.pending_kmalloc[ev.pid]

    def _link_retry(self, a: _Area, att: _Area) -> None:
        a.attempt = {
            "addr": att.addr, "size": att.size, "align": att.align,
            "huge_pages_got": att.pages_ok, "huge_pages_needed": att.expected,
            "page_failed": att.page_failed,
        }
        if a.requested is None and att.requested is not None:
            a.requested, a.requested_from = att.requested, att.requested_from
        if a.vm_flags is None:
            a.vm_flags = att.vm_flags
        if a.stack_id < 0:
            a.stack_id = att.stack_id
        self.counts["fallback_retries_linked"] += 1

    def _page(self, ev: VmallocPageAlloc) -> None:
        self.counts["huge_page_events"] += 1
        a = self.live.get(ev.area_addr)
        if a is None or a.tid != ev.pid:
            self.counts["page_events_early"] += 1
            lst = self.early_pages.get(ev.area_addr)
            if lst is None:
                lst = []
                if not self._put(self.early_pages, ev.area_addr, lst, MAX_EARLY):
                    self.counts["early_dropped"] += 1
            if len(lst) < 512:
                lst.append(ev)
            return
        self._apply_page(a, ev)

    def _apply_page(self, a: _Area, ev: VmallocPageAlloc) -> None:
        a.page_events += 1
        if ev.failed:
            if not a.page_failed:
                a.page_failed = True
                self._iv["fallbacks"] += 1
            return
        a.pages_ok += 1
        self._iv["huge_pages"] += 1
        if a.expected and a.pages_ok == a.expected:
            self._iv["huge_areas"] += 1

    def _free(self, ev: FreeVmapArea) -> None:
        self.counts["frees"] += 1
        self._iv["frees"] += 1
        a = self.live.pop(ev.addr, None)
        if a is None:
            self.counts["frees_untracked"] += 1
            if not self._put(self.early_frees, ev.addr, ev.ts_ns, MAX_EARLY):
                self.counts["early_dropped"] += 1
            return
        a.freed_ns = ev.ts_ns
        if a.huge_attempt and (a.page_failed or a.pages_ok < a.expected) \
                and ev.pid == a.tid:
            # vm_area_alloc_pages() gave up: __vmalloc_node_range frees the
            # area and retries with 4 KiB pages, next, in the same task.
            if not a.page_failed:
                self._iv["fallbacks"] += 1
                a.page_failed = True
            old = self.pending_retry.pop(ev.pid, None)
            if old is not None:
                self._close_record(old)
            if not self._put(self.pending_retry, ev.pid, a, MAX_PENDING):
                self.counts["pending_dropped"] += 1
            return
        self._close_record(a)

    # -- verdicts ----------------------------------------------------------
    def _frames(self, stack_id: int) -> Optional[List[str]]:
        return self.stacks.get(stack_id) if stack_id >= 0 else None

    def _verdict(self, a: _Area, live: bool) -> Tuple[str, str, int]:
        """Return (verdict, why, huge_pages)."""
        hb = self.huge_bytes
        frames = self._frames(a.stack_id)
        nested = caller_of(frames)[1] if frames else False
        if a.attempt is not None:
            at = a.attempt
            return ("fallback", f"huge attempt got {at['huge_pages_got']} of "
                    f"{at['huge_pages_needed']} {hb >> 20} MiB pages; retried with "
                    f"{self.page_bytes >> 10} KiB pages", 0)
        if a.flags & VMAP_EV_ARM_FULL:
            return ("unknown", "huge attempt, but the in-kernel arm table was full: "
                    "its page allocations were not watched", 0)
        if a.flags & VMAP_EV_ARMED:
            if a.page_failed:
                why = (f"huge attempt got {a.pages_ok} of {a.expected} "
                       f"{hb >> 20} MiB pages")
                why += "; the 4 KiB retry was not seen" if a.freed_ns is not None \
                    else "; still in progress at the end"
                return "fallback", why, 0
            if a.pages_ok >= a.expected:
                return "huge", f"{a.pages_ok} x {hb >> 20} MiB", a.pages_ok
            if a.pages_ok == 0 and not a.page_events:
                return ("unknown", f"{hb >> 20} MiB-aligned but no huge-order page "
                        "allocations seen: an explicit alignment without "
                        "VM_ALLOW_HUGE_VMAP, a vmap of existing pages, or lost "
                        "events", 0)
            return ("unknown", f"huge attempt with {a.pages_ok} of {a.expected} huge "
                    "pages seen" + (" (still allocating at the end)" if live
                                    else " before its free"), 0)
        if nested:
            return ("not_eligible", "vmalloc's own page-pointer array for a larger "
                    "area (plain vmalloc)", 0)
        if a.vm_flags is not None:
            if not a.vm_flags & VM_ALLOW_HUGE_VMAP:
                return "not_eligible", "caller did not opt in (no VM_ALLOW_HUGE_VMAP)", 0
            if a.align < hb:
                return ("not_eligible", f"opted in, but under {hb >> 20} MiB per node "
                        "or not PAGE_KERNEL", 0)
        if a.align >= hb:
            return ("unknown", f"{hb >> 20} MiB-aligned with a size that is not whole "
                    f"{hb >> 20} MiB pages: an explicit alignment", 0)
        if a.align >= self.page_bytes:
            return ("not_eligible", f"page-aligned: opted in but under {hb >> 20} MiB "
                    "per node, or an explicit alignment", 0)
        return ("not_eligible", "caller did not opt in (align 1: plain vmalloc/vzalloc, "
                "or nohugevmalloc)", 0)

    def _waste(self, a: _Area, verdict: str, huge_pages: int) -> Tuple[Optional[int], str]:
        """Bytes mapped beyond the request, or None and a stated bound."""
        guard = 0 if a.vm_flags is not None and a.vm_flags & VM_NO_GUARD else self.page_bytes
        mapped = max(0, a.size - guard)
        if a.requested is not None and a.requested <= mapped:
            return mapped - a.requested, ""
        if verdict == "huge":
            return None, (f"< {self.huge_bytes >> 20} MiB (rounded up to "
                          f"{self.huge_bytes >> 20} MiB pages; request unknown)")
        return None, f"< {self.page_bytes >> 10} KiB (page rounding; request unknown)"

    def _record(self, a: _Area, live: bool) -> Dict[str, Any]:
        verdict, why, huge_pages = self._verdict(a, live)
        frames = self._frames(a.stack_id)
        if frames:
            caller, nested = caller_of(frames)
            if nested:
                caller = "page array: " + caller
        elif a.stack_id >= 0:
            caller = "[stack not symbolized]"
        else:
            caller = f"[no stack: error {a.stack_id}]"
        waste, bound = self._waste(a, verdict, huge_pages)
        rec: Dict[str, Any] = {
            "addr": f"0x{a.addr:x}", "size": a.size, "requested": a.requested,
            "requested_from": a.requested_from, "align": a.align, "verdict": verdict,
            "why": why, "huge_pages": huge_pages, "waste": waste, "waste_bound": bound,
            "caller": caller, "pid": a.pid, "tid": a.tid, "comm": a.comm,
            "ts_ns": a.ts_ns, "freed_ns": a.freed_ns, "live": live,
        }
        if a.vm_flags is not None:
            rec["vm_flags"] = a.vm_flags
        if a.attempt is not None:
            rec["attempt"] = dict(a.attempt, addr=f"0x{a.attempt['addr']:x}")
        return rec

    def _account(self, a: _Area, verdict: str) -> None:
        k = (a.stack_id, verdict)
        acc = self.by_key.get(k)
        if acc is None:
            if len(self.by_key) >= 4 * MAX_STACKS:
                k = (-1, verdict)
                acc = self.by_key.get(k)
            if acc is None:
                acc = self.by_key[k] = [0, 0, 0, 0, 0]
        huge = a.pages_ok if verdict == "huge" else 0
        acc[0] += 1
        acc[1] += a.size
        acc[2] += huge
        if a.requested is not None:
            acc[3] += max(0, a.size - self.page_bytes - a.requested)
            acc[4] += 1

    def _close_record(self, a: _Area) -> None:
        verdict = self._verdict(a, False)[0]
        self._account(a, verdict)
        if len(self.closed) < MAX_LISTED_AREAS:
            self.closed.append({"area": a})
        elif verdict != "not_eligible" and self.closed_notable < MAX_LISTED_NOTABLE:
            self.closed_notable += 1
            self.closed.append({"area": a})
        else:
            self.closed_not_listed += 1

    # -- what the episode builder asks -----------------------------------------
    _EPISODE_ROWS: ClassVar[Dict[int, str]] = {
        EV_ALLOC_VMAP_AREA: "alloc_vmap_area", EV_FREE_VMAP_AREA: "free_vmap_area",
        EV_PURGE_VMAP_AREA: "purge_vmap_area", EV_VMALLOC_PAGE_ALLOC: "page_alloc",
        EV_KMALLOC_LARGE: "kmalloc_large"}

    def episode_fact(self, ev: Any) -> Optional[EpisodeFact]:
        """Each record adds to its episode's row for its kind: areas mapped
        (bytes; huge attempts are PMD-aligned), failures."""
        t = ev.type
        size = align = failed = 0
        nid: Optional[int] = None
        if t == EV_ALLOC_VMAP_AREA:
            size, align, failed = ev.size_bytes, ev.align_bytes, ev.failed
        elif t == EV_VMALLOC_PAGE_ALLOC:
            failed = ev.failed
        elif t == EV_KMALLOC_LARGE:
            size, nid = ev.bytes_alloc, ev.node
        elif t not in self._EPISODE_ROWS:
            return None
        return EpisodeFact("vmalloc", self._EPISODE_ROWS[t], nid, {
            "count": 1, "bytes": size, "failed": 1 if failed else 0,
            "huge_attempts": 1 if align >= self.huge_bytes else 0})

    # -- samples, ticks, report ---------------------------------------------
    def on_sample(self, sample: Any) -> None:
        d = sample.data if isinstance(sample.data, dict) else {}
        for k, frames in (d.get("stacks") or {}).items():
            if len(self.stacks) < MAX_STACKS and isinstance(frames, list):
                self.stacks[int(k)] = [str(f) for f in frames[:STACK_DEPTH]]
        if isinstance(d.get("stats"), dict):
            self.stats = {str(k): int(v) for k, v in d["stats"].items()}
        if isinstance(d.get("vmallocinfo"), dict) and d.get("when"):
            self.vmallocinfo[str(d["when"])] = d["vmallocinfo"]

    def on_tick(self, ts_ns: int) -> Dict[str, Any]:
        row = dict(self._iv)
        self._iv = self._new_interval()
        return row

    def close(self, end_ns: int) -> None:
        """At the window end, attempts whose retry never came are fallbacks."""
        for att in list(self.pending_retry.values()):
            self._close_record(att)
        self.pending_retry.clear()

    def report(self) -> Dict[str, Any]:
        areas = [self._record(c["area"], False) for c in self.closed]
        live = [self._record(a, True) for a in sorted(self.live.values(),
                                                      key=lambda a: a.ts_ns)]
        pend = [self._record(a, False) for a in self.pending_retry.values()]
        all_listed = sorted(areas + pend, key=lambda r: r["ts_ns"]) + live
        by_verdict: Dict[str, Dict[str, int]] = {
            v: {"areas": 0, "bytes": 0, "huge_pages": 0, "waste_known": 0,
                "waste_known_areas": 0} for v in VERDICTS}
        by_caller: Dict[str, Dict[str, Any]] = {}

        def add(caller: str, verdict: str, n: int, size: int, huge: int, waste: int,
                wn: int) -> None:
            v = by_verdict[verdict]
            v["areas"] += n
            v["bytes"] += size
            v["huge_pages"] += huge
            v["waste_known"] += waste
            v["waste_known_areas"] += wn
            c = by_caller.setdefault(caller, {"caller": caller, "areas": 0, "bytes": 0,
                                              "huge_pages": 0,
                                              **{x: 0 for x in VERDICTS}})
            c["areas"] += n
            c["bytes"] += size
            c["huge_pages"] += huge
            c[verdict] += n

        for (sid, _v), (n, size, huge, waste, wn) in self.by_key.items():
            frames = self._frames(sid)
            caller = "[unknown caller]"
            verdict = _v
            if frames:
                caller, nested = caller_of(frames)
                if nested:
                    caller = "page array: " + caller
                    verdict = "not_eligible"
            add(caller, verdict, n, size, huge, waste, wn)
        for r in live + pend:
            add(r["caller"], r["verdict"], 1, r["size"], r["huge_pages"],
                r["waste"] or 0, 1 if r["waste"] is not None else 0)
        callers = sorted(by_caller.values(), key=lambda c: (-c["areas"], c["caller"]))
        return {
            "plan": self.plan,
            "huge_vmalloc": self.huge_possible,
            "huge_page_bytes": self.huge_bytes,
            "note": VMALLOCINFO_NOTE,
            "areas": all_listed,
            "live_at_end": [r["addr"] for r in live],
            "by_verdict": by_verdict,
            "by_caller": callers[:200],
            "callers_not_listed": max(0, len(callers) - 200),
            "counts": {
                "allocs": self.counts["allocs"], "alloc_failed": self.counts["alloc_failed"],
                "frees": self.counts["frees"],
                "frees_untracked": self.counts["frees_untracked"],
                "purges": self.counts["purges"], "purged_areas": self.counts["purged_areas"],
                "kmalloc_failures": self.counts["kmalloc_failures"],
                "huge_page_events": self.counts["huge_page_events"],
                "fallback_retries_linked": self.counts["fallback_retries_linked"],
                "areas_dropped": self.counts["areas_dropped"],
                "areas_not_listed": self.closed_not_listed,
                "replaced_unfreed": self.counts["replaced_unfreed"],
                "page_events_early": self.counts["page_events_early"],
                "state_dropped": self.counts["pending_dropped"] + self.counts["early_dropped"],
            },
            "kernel": self.stats,
            "vmallocinfo": self.vmallocinfo,
        }

    def totals(self, section: Dict[str, Any]) -> Dict[str, Any]:
        v = section["by_verdict"]
        return {
            "vmalloc_areas": sum(x["areas"] for x in v.values()),
            "vmalloc_huge_areas": v["huge"]["areas"],
            "vmalloc_huge_pages": v["huge"]["huge_pages"],
            "vmalloc_fallbacks": v["fallback"]["areas"],
            "vmalloc_live_at_end": len(section["live_at_end"]),
        }

    def render(self, section: Dict[str, Any]) -> List[str]:
        from trace_reclaim.report import fmt_bytes, table

        hp = section["huge_page_bytes"] >> 20
        v = section["by_verdict"]
        c = section["counts"]
        out = [f"vmalloc areas: {sum(x['areas'] for x in v.values())} allocated, "
               f"{c['frees']} frees ({c['frees_untracked']} of untracked areas), "
               f"{c['purges']} lazy purges",
               f"plan: {section['plan']}"]
        rows = []
        for name in VERDICTS:
            x = v[name]
            waste = fmt_bytes(x["waste_known"]) + f" ({x['waste_known_areas']} known)" \
                if x["waste_known_areas"] else "-"
            rows.append([name, x["areas"], fmt_bytes(x["bytes"]),
                         f"{x['huge_pages']} x {hp} MiB" if x["huge_pages"] else "-", waste])
        out += table(["VERDICT", "AREAS", "MAPPED", "HUGE PAGES", "WASTE"], rows)
        out.append("")
        out.append("By caller:")
        crow = [[_short(x["caller"], 46), x["areas"],
                 "/".join(str(x[k]) for k in VERDICTS)] for x in section["by_caller"][:12]]
        out += table(["CALLER", "AREAS", "HUGE/FB/NE/UNK"], crow)
        notable = [a for a in section["areas"] if a["verdict"] != "not_eligible"]
        if notable:
            out.append("")
            out.append("Huge-eligible areas:")
            for a in notable[:20]:
                req = fmt_bytes(a["requested"]) if a["requested"] is not None else "?"
                waste = fmt_bytes(a["waste"]) if a["waste"] is not None \
                    else a["waste_bound"]
                align = fmt_bytes(a["align"])
                if a.get("attempt"):
                    align += f" (attempt {fmt_bytes(a['attempt']['align'])})"
                out.append(f"  {a['verdict']:<8} {fmt_bytes(a['size']):>9} "
                           f"req {req:>9} align {align} {a['pid']}/{a['comm']}"[:80])
                out.append(f"           {a['why']}")
                out.append(f"           waste {waste}")
                out.append(f"           {_short(a['caller'], 68)}")
            if len(notable) > 20:
                out.append(f"  ... {len(notable) - 20} more (see -j)")
        live = [a for a in section["areas"] if a["live"]]
        out.append("")
        out.append(f"Live at the end: {len(live)} areas allocated in the window, "
                   f"{fmt_bytes(sum(a['size'] for a in live))}")
        for a in live[:8]:
            out.append(f"  {a['addr']} {fmt_bytes(a['size']):>9} {a['verdict']:<12} "
                       f"{_short(a['caller'], 36)}")
        if len(live) > 8:
            out.append(f"  ... {len(live) - 8} more (see -j)")
        lost = [f"{k} {c[k]}" for k in ("areas_dropped", "areas_not_listed",
                                         "state_dropped", "replaced_unfreed") if c[k]]
        if lost:
            out.append("Bounded state: " + ", ".join(lost))
        k = section["kernel"]
        if k:
            out.append(f"In-kernel: {k.get('armed', 0)} huge attempts armed, "
                       f"{k.get('arm_full', 0)} not (table full); disarmed: "
                       f"{k.get('disarm_done', 0)} complete,")
            out.append(f"  {k.get('disarm_failed', 0)} failed, {k.get('disarm_free', 0)} "
                       f"freed, {k.get('disarm_timeout', 0)} timed out, "
                       f"{k.get('disarm_misses', 0)} after {k.get('page_misses', 0)} "
                       f"other page allocs; {k.get('stale_armed', 0)} stale")
        vi = section["vmallocinfo"]
        if "start" in vi and "end" in vi:
            s, e = vi["start"], vi["end"]
            out.append(f"/proc/vmallocinfo: {s['areas']} -> {e['areas']} vmalloc'd areas "
                       f"({e['areas'] - s['areas']:+d}); traced allocs - frees "
                       f"{c['allocs'] - c['frees']:+d}")
        out.append("Note: /proc/vmallocinfo cannot show huge mappings: its pages=")
        out.append("  counts 4 KiB pages for a 2 MiB-mapped area too (addresses hashed).")
        return out


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "~"


def _round_up(n: int, unit: int) -> int:
    return (n + unit - 1) // unit * unit


def parse_vmallocinfo(text: str) -> Dict[str, Any]:
    """Count /proc/vmallocinfo's busy vmalloc'd areas and pages, by caller symbol."""
    areas = 0
    pages = 0
    by_caller: Counter[str] = Counter()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or "-" not in parts[0] or "vmalloc" not in parts[3:]:
            continue
        areas += 1
        caller = parts[2].split("+", 1)[0]
        by_caller[caller] += 1
        for p in parts[3:]:
            if p.startswith("pages="):
                pages += int(p[6:])
    return {"areas": areas, "pages": pages, "by_caller": dict(by_caller.most_common(50))}


_STAT_NAMES = ("armed", "arm_full", "disarm_done", "disarm_failed", "disarm_free",
               "disarm_rearm", "disarm_timeout", "disarm_misses", "page_misses",
               "stack_errors", "exact_stale")
_HUGE_ORDER_MAX = 20


class VmallocTracer(Tracer):
    name: ClassVar[str] = "vmalloc"
    bpf_source: ClassVar[str] = "vmalloc.bpf.c"
    cflag: ClassVar[str] = "WITH_VMALLOC"
    tracepoints: ClassVar[Any] = (
        ("vmalloc", "alloc_vmap_area"),
        ("vmalloc", "free_vmap_area_noflush"),
        ("vmalloc", "purge_vmap_area_lazy"),
        ("kmem", "mm_page_alloc"),
        ("kmem", "kmalloc"),
    )
    event_types: ClassVar[Any] = (EV_ALLOC_VMAP_AREA, EV_FREE_VMAP_AREA, EV_PURGE_VMAP_AREA,
                                  EV_VMALLOC_PAGE_ALLOC, EV_KMALLOC_LARGE)
    # TP_PROTO the raw tracepoint programs read (without the leading __data).
    RAW_PROTOS: ClassVar[Dict[str, List[str]]] = {
        "mm_page_alloc": ["struct page *", "unsigned int", "gfp_t"],
        "kmalloc": ["long unsigned int", "const void *", "size_t", "size_t", "gfp_t", "int"],
    }
    # The vmalloc core: since 6.10 (commit 88ae5fb755b0, "mm: vmalloc: enable
    # memory allocation profiling") named __vmalloc_node_range_noprof.
    FUNCS: ClassVar[Tuple[Tuple[str, str], ...]] = (
        ("__vmalloc_node_range_noprof", "_NOPROF"), ("__vmalloc_node_range", ""))

    def __init__(self) -> None:
        self._sent_stacks: set[int] = set()

    def geometry(self, probe: Any) -> Tuple[int, int, int]:
        """(page bytes, PMD bytes, PMD order) of this machine."""
        page = os.sysconf("SC_PAGE_SIZE")
        try:
            huge = int(probe.procfs.meminfo().get("Hugepagesize", 2048)) * 1024
        except (OSError, ValueError):
            huge = 2 << 20
        order = max(1, (huge // page).bit_length() - 1)
        return page, huge, min(order, _HUGE_ORDER_MAX)

    def plan(self, probe: Any) -> Tuple[List[Attach], List[str]]:
        attaches: List[Attach] = []
        page, huge, order = self.geometry(probe)
        cflags = [f"-DVMALLOC_HUGE_ORDER={order}", f"-DVMALLOC_HUGE_BYTES={huge}ULL",
                  f"-DVMALLOC_PAGE_BYTES={page}ULL", f"-DVMALLOC_KMALLOC_MIN={page + 1}"]
        for cat, ev in self.tracepoints[:3]:
            ok = probe.tracepoint_exists(cat, ev)
            attaches.append(Attach(f"{cat}:{ev}", f"tracepoint {cat}:{ev}" if ok else "none",
                                   [] if ok else [(f"tracepoint {cat}:{ev}",
                                                   "not in this kernel's tracefs")], ok))
        raw_ok = True
        raw_why = ""
        for ev, want in self.RAW_PROTOS.items():
            got = probe.raw_tracepoint_params(ev)
            if got is None:
                raw_ok, raw_why = False, "no BTF prototype to check (kernel BTF missing)"
            elif got[:len(want)] != want:
                raw_ok, raw_why = False, f"TP_PROTO of {ev} is ({', '.join(got)})"
        if raw_ok:
            cflags.append("-DVMALLOC_RAW_TP")
        for cat, ev in self.tracepoints[3:]:
            ok = probe.tracepoint_exists(cat, ev)
            why_tp = {"mm_page_alloc": "filtered to armed tasks: the raw tracepoint skips "
                                       "building a trace record per page allocation",
                      "kmalloc": "only failed kvmalloc tries matter: the raw tracepoint "
                                 "rejects the rest before a record is built"}[ev]
            if raw_ok and ok:
                attaches.append(Attach(f"{cat}:{ev}", f"raw tracepoint {ev} (TP_PROTO "
                                       "checked in BTF)",
                                       [(f"tracepoint {cat}:{ev}", why_tp)]))
            else:
                attaches.append(Attach(
                    f"{cat}:{ev}", f"tracepoint {cat}:{ev}" if ok else "none",
                    [(f"raw tracepoint {ev}", raw_why or "tracepoint missing")]
                    + ([] if ok else [(f"tracepoint {cat}:{ev}",
                                       "not in this kernel's tracefs")]), ok))
        # The exact request (size, vm_flags) where the kernel lets us see it.
        func = next(((f, sfx) for f, sfx in self.FUNCS
                     if probe.btf_func_params(f) is not None), None)
        fam = "vmalloc request (size, vm_flags)"
        tp_only = ("tracepoint-only: huge attempt from 2 MiB alignment, request size "
                   "from kvmalloc's failed kmalloc")
        if func is None:
            attaches.append(Attach(fam, tp_only, [
                ("fentry/kprobe __vmalloc_node_range[_noprof]",
                 "neither function is in this kernel's BTF (inlined or renamed)")]))
            return attaches, cflags
        fname, sfx = func
        fentry_ok, fentry_why = probe.fentry
        kprobe_ok, kprobe_why = probe.kprobes
        if fentry_ok:
            attaches.append(Attach(fam, f"fentry {fname}"))
            cflags.append(f"-DVMALLOC_FENTRY{sfx}")
        elif kprobe_ok:
            attaches.append(Attach(fam, f"kprobe {fname}", [(f"fentry {fname}", fentry_why)]))
            cflags.append(f"-DVMALLOC_KPROBE{sfx}")
        else:
            attaches.append(Attach(fam, tp_only, [(f"fentry {fname}", fentry_why),
                                                  (f"kprobe {fname}", kprobe_why)]))
        return attaches, cflags

    def header(self, probe: Any) -> Dict[str, Any]:
        page, huge, order = self.geometry(probe)
        hv = probe.huge_vmalloc
        try:
            _a, cflags = self.plan(probe)
        except Exception:  # the header must not fail the trace
            cflags = []
        plan = "tracepoint-only"
        for c in cflags:
            if c.startswith("-DVMALLOC_FENTRY"):
                plan = "fentry"
            elif c.startswith("-DVMALLOC_KPROBE"):
                plan = "kprobe"
        if "-DVMALLOC_RAW_TP" in cflags:
            plan += " (+raw tracepoints)"
        return {"page_bytes": page, "huge_bytes": huge, "huge_order": order,
                "plan": plan, "huge_vmalloc": {"possible": hv[0], "why": hv[1]}}

    def aggregator(self, window: Window) -> VmallocAggregator:
        return VmallocAggregator(window)

    def sample(self, bpf: Any, procfs: Any, ts_ns: int, when: str) -> List[Any]:
        """Symbolize new kernel stacks; read the arm statistics and vmallocinfo."""
        data: Dict[str, Any] = {"when": when}
        if when == "start":
            self._sent_stacks = set()
        stacks: Dict[str, List[str]] = {}
        try:
            table = bpf["vmalloc_stacks"]
            for k in list(table.keys()):
                sid = k.value
                if sid in self._sent_stacks or len(self._sent_stacks) >= MAX_STACKS:
                    continue
                frames = [bpf.ksym(addr).decode("utf-8", "replace")
                          for addr in list(table.walk(sid))[:STACK_DEPTH]]
                self._sent_stacks.add(sid)
                stacks[str(sid)] = frames
        except KeyError:
            pass
        if stacks:
            data["stacks"] = stacks
        try:
            st = bpf["vmalloc_stats"]
            data["stats"] = {name: int(sum(st[st.Key(i)]))
                             for i, name in enumerate(_STAT_NAMES)}
            data["stats"]["stale_armed"] = self._stale_armed(bpf)
        except KeyError:
            pass
        if when in ("start", "end"):
            text = procfs.try_read("/proc/vmallocinfo")
            if text:
                data["vmallocinfo"] = parse_vmallocinfo(text)
        return [events.Sample(ts_ns, self.name, data)]

    @staticmethod
    def _stale_armed(bpf: Any) -> int:
        """Tasks armed for over a second: left by an area that never got pages.

        Only counted: the kernel disarms them at the task's next page
        allocation or vmalloc; deleting them from here could not keep the
        gate count exact (user space has no atomic add on the map).
        """
        import time

        now = time.monotonic_ns()  # bpf_ktime_get_ns() is CLOCK_MONOTONIC
        return sum(1 for _k, v in bpf["vmalloc_armed"].items()
                   if now - v.ts_ns > 1_000_000_000)


TRACER = VmallocTracer()
