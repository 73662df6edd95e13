"""vmalloc records: what ``bpf/vmalloc.bpf.c`` sends, decoded into typed events.

``vmalloc:alloc_vmap_area``, ``vmalloc:free_vmap_area_noflush`` and
``vmalloc:purge_vmap_area_lazy`` (since Linux 6.1) give the areas; order-9
``kmem:mm_page_alloc`` by an armed task gives a huge attempt's pages, and a
failed large ``kmem:kmalloc`` the request a kvmalloc() falls back from.  The
structs are the ``*_event`` ones in ``bpf/events.h``; ``flags`` of
``alloc_vmap_area_event`` say how the BPF side saw the area (armed for huge
pages, exact request from fentry/kprobe).
"""

from __future__ import annotations

from dataclasses import dataclass

from trace_reclaim import events

__all__ = [
    "EV_ALLOC_VMAP_AREA", "EV_FREE_VMAP_AREA", "EV_PURGE_VMAP_AREA",
    "EV_VMALLOC_PAGE_ALLOC", "EV_KMALLOC_LARGE",
    "VMAP_EV_ARMED", "VMAP_EV_EXACT", "VMAP_EV_ARM_FULL", "VM_NO_GUARD", "VM_ALLOW_HUGE_VMAP",
    "AllocVmapArea", "FreeVmapArea", "PurgeVmapArea", "VmallocPageAlloc", "KmallocLarge",
    "C_STRUCTS",
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
