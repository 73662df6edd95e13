"""vmalloc records: what ``bpf/vmalloc.bpf.c`` sends, decoded into typed events.

``vmalloc:alloc_vmap_area``, ``vmalloc:free_vmap_area_noflush`` and
``vmalloc:purge_vmap_area_lazy`` (since Linux 6.2; before, the functions
they sit in) give the areas; order-9
``kmem:mm_page_alloc`` by an armed task gives a huge attempt's pages, and a
failed large ``kmem:kmalloc`` the request a kvmalloc() falls back from.  The
structs are the ``*_event`` ones in ``bpf/events.h``; ``flags`` of
``alloc_vmap_area_event`` say how the BPF side saw the area (armed for huge
pages, exact request from fentry/kprobe).
"""

from __future__ import annotations


from trace_reclaim import events, schema
from trace_reclaim.abi import (EV_ALLOC_VMAP_AREA, EV_FREE_VMAP_AREA, EV_KMALLOC_LARGE,
                               EV_PURGE_VMAP_AREA, EV_VMALLOC_PAGE_ALLOC, VMAP_EV_ARM_FULL,
                               VMAP_EV_ARMED, VMAP_EV_EXACT)

__all__ = [
    "EV_ALLOC_VMAP_AREA", "EV_FREE_VMAP_AREA", "EV_PURGE_VMAP_AREA",
    "EV_VMALLOC_PAGE_ALLOC", "EV_KMALLOC_LARGE",
    "VMAP_EV_ARMED", "VMAP_EV_EXACT", "VMAP_EV_ARM_FULL", "VM_NO_GUARD", "VM_ALLOW_HUGE_VMAP",
    "AllocVmapArea", "FreeVmapArea", "PurgeVmapArea", "VmallocPageAlloc", "KmallocLarge",
]

# include/linux/vmalloc.h
VM_NO_GUARD = 0x40
VM_ALLOW_HUGE_VMAP = 0x400


@events.record
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
    caller: int = 0    # vm_struct.caller (VMAP_EV_EXACT only): what /proc/vmallocinfo shows
    cgroup_id: int = 0   # of the allocating task (0: recorded before attribution)
    memcg_id: int = 0


@events.record
class FreeVmapArea(events.Event):
    addr: int
    nr_lazy_pages: int
    nr_lazy_max_pages: int


@events.record
class PurgeVmapArea(events.Event):
    start: int
    end: int
    nr_purged: int


@events.record
class VmallocPageAlloc(events.Event):
    area_addr: int
    gfp_flags: int
    order: int
    failed: int
    index: int
    expected: int


@events.record
class KmallocLarge(events.Event):
    bytes_req: int
    bytes_alloc: int
    gfp_flags: int
    node: int


# Recordings made before the record carried the caller (then the cgroup ids)
# end earlier: caller 0 (not exact), cgroup ids 0.
events.register(EV_ALLOC_VMAP_AREA, events.struct_decoder(AllocVmapArea, "alloc_vmap_area_event",
                                                          since="caller"))
events.register(EV_FREE_VMAP_AREA, events.struct_decoder(FreeVmapArea, "free_vmap_area_event"))
events.register(EV_PURGE_VMAP_AREA,
                events.struct_decoder(PurgeVmapArea, "purge_vmap_area_event"))
events.register(EV_VMALLOC_PAGE_ALLOC,
                events.struct_decoder(VmallocPageAlloc, "vmalloc_page_alloc_event"))
events.register(EV_KMALLOC_LARGE, events.struct_decoder(KmallocLarge, "kmalloc_large_event"))
_COUNT = schema.Int(0)
# VmallocTracer.header()
events.register_header("vmalloc", schema.Obj(optional={
    "page_bytes": schema.Int(512, 1 << 30), "huge_bytes": schema.Int(1, 1 << 40),
    "huge_order": schema.Int(0, 63), "plan": schema.STR,
    "huge_vmalloc": schema.Obj(optional={"possible": schema.Opt(schema.BOOL),
                                         "why": schema.Opt(schema.STR)})}))
# VmallocTracer.sample(): stacks by id, callers by address, vmalloc_stats, /proc/vmallocinfo.
events.register_sample("vmalloc", schema.Obj({"when": schema.STR}, {
    "stacks": schema.Map(schema.List(schema.STR), keys=schema.DECIMAL),
    "callers": schema.Map(schema.STR, keys=schema.HEX),
    "stats": schema.Map(schema.INT),
    "vmallocinfo": schema.Obj({"areas": _COUNT, "pages": _COUNT},
                              {"by_caller": schema.Map(_COUNT)}),
}))
