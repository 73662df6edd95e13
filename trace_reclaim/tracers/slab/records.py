"""Slab records: what ``bpf/slab.bpf.c`` sends, decoded into typed events.

``EV_SHRINK_SLAB`` is one do_shrink_slab() call: ``vmscan:mm_shrink_slab_start``
and ``vmscan:mm_shrink_slab_end`` (since Linux 3.0) paired per thread in the
kernel, with the reclaim that ran it (``context``, from raw tracepoints on
``mm_vmscan_{direct,memcg,node}_reclaim_begin/end``).  ``EV_KMEM_CACHE_CREATE``,
``EV_KMEM_CACHE_DESTROY`` and ``EV_KMEM_CACHE_SHUTDOWN`` come from fexit or a
kretprobe on the creation function (``__kmem_cache_create_args``, before 6.12
``kmem_cache_create_usercopy``), fentry or a kprobe on ``kmem_cache_destroy``,
and fexit or a kretprobe on ``__kmem_cache_shutdown``, where they attach;
``EV_DROP_SLAB`` from fexit or a kretprobe on ``drop_slab()``, one per
drop_caches run.  The structs are ``shrink_slab_event``, ``kmem_cache_event``
and ``drop_slab_event`` in ``bpf/events.h``.
"""

from __future__ import annotations

from typing import ClassVar, Dict, Tuple

from trace_reclaim import abi, events, schema
from trace_reclaim.abi import (EV_DROP_SLAB, EV_KMEM_CACHE_CREATE, EV_KMEM_CACHE_DESTROY,
                               EV_KMEM_CACHE_SHUTDOWN, EV_SHRINK_SLAB, SLAB_CTX_DIRECT,
                               SLAB_CTX_MEMCG, SLAB_CTX_NODE, SLAB_CTX_OTHER)

__all__ = [
    "EV_SHRINK_SLAB", "EV_KMEM_CACHE_CREATE", "EV_KMEM_CACHE_DESTROY",
    "EV_KMEM_CACHE_SHUTDOWN", "EV_DROP_SLAB",
    "SLAB_CTX_OTHER", "SLAB_CTX_DIRECT", "SLAB_CTX_MEMCG", "SLAB_CTX_NODE",
    "ShrinkSlab", "KmemCacheEvent", "DropSlab",
]

# shrink_slab_event.context (SLAB_CTX_*, enum slab_reclaim_context of
# bpf/events.h): the reclaim the shrinker ran under.


@events.record
class ShrinkSlab(events.Event):
    """One do_shrink_slab() call; ``ts_ns`` is when it ended."""

    delta_ns: int
    shr: int
    shrink: int
    cache_items: int
    delta: int
    total_scan: int
    unscanned: int
    nr_deferred: int
    new_deferred: int
    gfp_flags: int
    freed: int
    nid: int
    priority: int
    context: int
    reclaim_start_ns: int
    cgroup_id: int = 0   # of the task running the shrinker (0: recorded before attribution)
    memcg_id: int = 0

    # Checked by the decoder: a context outside enum slab_reclaim_context is damage.
    LIMITS: ClassVar[Dict[str, Tuple[int, int]]] = {
        "context": abi.enum_range("slab_reclaim_context")}

    @property
    def scanned(self) -> int:
        """Objects the shrinker scanned: what SLABS_SCANNED counted for this call."""
        return max(0, self.total_scan - max(0, self.unscanned))


@events.record
class KmemCacheEvent(events.Event):
    """A cache created, destroyed or shut down (fentry/kprobe plans only)."""

    cache: int
    refcount: int     # create: after it; destroy: before it; -1: unknown
    err: int          # shutdown: __kmem_cache_shutdown()'s result, 0 = was empty
    name: str         # kmem_cache.name: a merged cache's own name
    requested: str    # create: the name asked for


@events.record
class DropSlab(events.Event):
    """drop_slab() returned (fexit/kretprobe plans): one drop_caches run, the
    kernel's DROP_SLAB count.  The header alone: who ran it, and when."""


events.register(EV_DROP_SLAB, events.struct_decoder(DropSlab, "drop_slab_event"))
events.register(EV_SHRINK_SLAB, events.struct_decoder(ShrinkSlab, "shrink_slab_event",
                                                     since="cgroup_id"))
for _t in (EV_KMEM_CACHE_CREATE, EV_KMEM_CACHE_DESTROY, EV_KMEM_CACHE_SHUTDOWN):
    events.register(_t, events.struct_decoder(KmemCacheEvent, "kmem_cache_event"))

_COUNT = schema.Int(0)
# /sys/kernel/slab as sysfs.read_sys_slab() gives it: attributes per cache
# directory, and each cache name's link (target directory, inode).
_SYS_SLAB = schema.Obj({"caches": schema.Map(schema.Map(schema.Opt(schema.INT))),
                        "links": schema.Map(schema.Tuple(schema.STR, schema.INT))},
                       {"readable": schema.BOOL})
# SlabTracer.header()
events.register_header("slab", schema.Obj(optional={
    "ncpus": schema.Int(1, 1 << 16), "kmem_cache_name_offset": schema.Opt(schema.INT),
    "lifecycle_exact": schema.BOOL, "lifecycle_method": schema.STR,
    "drop_runs_from": schema.STR,
    "kmem_cache_alloc_arg": schema.Opt(schema.INT),
    "kmem_cache_free_arg": schema.Opt(schema.INT)}))
# SlabTracer.sample()
events.register_sample("slab", schema.Obj({"when": schema.STR}, {
    "symbols": schema.Map(schema.STR, keys=schema.HEX),
    "shrinker_owners": schema.Map(schema.Map(schema.STR), keys=schema.HEX),
    "caches": schema.Map(schema.Tuple(_COUNT, _COUNT)),
    "overflow": _COUNT,
    "kmsg": schema.List(schema.STR),
    "dentry_state": schema.Map(schema.INT),
    "inode_state": schema.Map(schema.INT),
    "slabinfo": schema.Map(schema.Tuple(_COUNT, _COUNT, _COUNT, _COUNT)),
    "slabinfo_full": schema.BOOL,
    "sys_slab": _SYS_SLAB,
}))
