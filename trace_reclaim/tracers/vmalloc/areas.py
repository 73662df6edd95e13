"""One vmap area: its state, its verdict (huge, fallback, ...), its waste, its caller.

``Area`` is what the aggregator keeps for an area between alloc_vmap_area
and its free; the functions here judge it.  On the tracepoint-only plan what
__vmalloc_node_range() decided is inferred from what it did (see the
package docstring); where fentry or a kprobe on
``__vmalloc_node_range_noprof`` loads, ``vm_flags`` and the request are
exact.  Callers come from the kernel stack at alloc_vmap_area
(``BPF_STACK_TRACE``), symbolized live.  Pure.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from trace_reclaim.tracers.vmalloc.records import (VM_ALLOW_HUGE_VMAP, VM_NO_GUARD,
                                                   VMAP_EV_ARM_FULL, VMAP_EV_ARMED,
                                                   VMAP_EV_EXACT, AllocVmapArea)

__all__ = ["Area", "VERDICTS", "caller_of", "area_verdict", "area_waste", "area_record"]

VERDICTS = ("huge", "fallback", "not_eligible", "unknown")

# vmalloc's own frames: the caller is the first frame after these.
_INTERNAL = frozenset((
    "alloc_vmap_area", "__get_vm_area_node", "__get_vm_area_caller",
    "__vmalloc_node_range_noprof", "__vmalloc_node_range",
    "__vmalloc_node_noprof", "__vmalloc_node", "__vmalloc_area_node",
))
_RANGE = frozenset(("__vmalloc_node_range_noprof", "__vmalloc_node_range"))
# Our own frames on top of a stack taken in an fexit program (the program,
# then the trampoline that ran it); a tracepoint's or kprobe's stack has none.
_TRACER_FRAMES = ("bpf_prog_", "bpf_trampoline_")


def caller_of(frames: Sequence[str]) -> Tuple[str, bool]:
    """Return ("first <- second" frame outside vmalloc, nested) for a stack.

    ``nested`` is true for vmalloc's own page-pointer array: a vmalloc made
    from inside another one (``__vmalloc_node_range`` twice on the stack).
    """
    frames = frames[next((i for i, f in enumerate(frames)
                          if not f.startswith(_TRACER_FRAMES)), len(frames)):]
    nested = sum(1 for f in frames if f in _RANGE) > 1
    rest = [f for f in frames[next((i for i, f in enumerate(frames)
                                    if f not in _INTERNAL), len(frames)):]]
    rest = [f for f in rest if f not in _INTERNAL]
    if not rest:
        return "[vmalloc internals only]", nested
    return " <- ".join(rest[:2]), nested


class Area:
    """What is known of one vmap area, from its alloc_vmap_area on."""

    __slots__ = ("addr", "size", "align", "ts_ns", "tid", "pid", "comm", "stack_id",
                 "flags", "requested", "requested_from", "vm_flags", "expected",
                 "pages_ok", "page_failed", "freed_ns", "attempt", "page_events",
                 "vm_caller")

    def __init__(self, ev: AllocVmapArea, page_bytes: int, huge_bytes: int,
                 exact_from: str = "fentry") -> None:
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
        # what saw the request itself: "fentry" or "kprobe" (the plan)
        self.requested_from = exact_from if self.requested is not None else None
        self.vm_caller: Optional[int] = ev.caller if ev.flags & VMAP_EV_EXACT else None
        self.expected = ev.size_bytes // huge_bytes if ev.flags & VMAP_EV_ARMED else 0
        self.pages_ok = 0
        self.page_failed = False
        self.page_events = 0
        self.freed_ns: Optional[int] = None
        self.attempt: Optional[Dict[str, Any]] = None

    @property
    def huge_attempt(self) -> bool:
        return bool(self.flags & (VMAP_EV_ARMED | VMAP_EV_ARM_FULL))


def area_verdict(a: Area, live: bool, frames: Optional[List[str]], page_bytes: int,
                 huge_bytes: int) -> Tuple[str, str, int]:
    """Return (verdict, why, huge_pages) for an area; ``live`` if not freed yet."""
    hb = huge_bytes
    nested = caller_of(frames)[1] if frames else False
    if a.attempt is not None:
        at = a.attempt
        return ("fallback", f"huge attempt got {at['huge_pages_got']} of "
                f"{at['huge_pages_needed']} {hb >> 20} MiB pages; retried with "
                f"{page_bytes >> 10} KiB pages", 0)
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
    if a.align >= page_bytes:
        return ("not_eligible", f"page-aligned: opted in but under {hb >> 20} MiB "
                "per node, or an explicit alignment", 0)
    return ("not_eligible", "caller did not opt in (align 1: plain vmalloc/vzalloc, "
            "or nohugevmalloc)", 0)


def area_waste(a: Area, verdict: str, page_bytes: int, huge_bytes: int,
               ) -> Tuple[Optional[int], str]:
    """Bytes mapped beyond the request, or None and a stated bound."""
    guard = 0 if a.vm_flags is not None and a.vm_flags & VM_NO_GUARD else page_bytes
    mapped = max(0, a.size - guard)
    if a.requested is not None and a.requested <= mapped:
        return mapped - a.requested, ""
    if verdict == "huge":
        return None, (f"< {huge_bytes >> 20} MiB (rounded up to "
                      f"{huge_bytes >> 20} MiB pages; request unknown)")
    return None, f"< {page_bytes >> 10} KiB (page rounding; request unknown)"


def area_record(a: Area, live: bool, frames: Optional[List[str]], page_bytes: int,
                huge_bytes: int, symbols: Optional[Dict[int, str]] = None) -> Dict[str, Any]:
    """The area as the report lists it (``symbols``: vm_struct.caller addresses)."""
    verdict, why, huge_pages = area_verdict(a, live, frames, page_bytes, huge_bytes)
    if frames:
        caller, nested = caller_of(frames)
        if nested:
            caller = "page array: " + caller
    elif a.stack_id >= 0:
        caller = "[stack not symbolized]"
    else:
        caller = f"[no stack: error {a.stack_id}]"
    waste, bound = area_waste(a, verdict, page_bytes, huge_bytes)
    rec: Dict[str, Any] = {
        "addr": f"0x{a.addr:x}", "size": a.size, "requested": a.requested,
        "requested_from": a.requested_from, "align": a.align, "verdict": verdict,
        "why": why, "huge_pages": huge_pages, "waste": waste, "waste_bound": bound,
        "caller": caller, "pid": a.pid, "tid": a.tid, "comm": a.comm,
        "ts_ns": a.ts_ns, "freed_ns": a.freed_ns, "live": live,
    }
    if a.vm_flags is not None:
        rec["vm_flags"] = a.vm_flags
    if a.vm_caller is not None:
        # vm_struct.caller: the call site /proc/vmallocinfo names
        rec["vm_caller"] = (symbols or {}).get(a.vm_caller) or f"0x{a.vm_caller:x}"
    if a.attempt is not None:
        rec["attempt"] = dict(a.attempt, addr=f"0x{a.attempt['addr']:x}")
    return rec
