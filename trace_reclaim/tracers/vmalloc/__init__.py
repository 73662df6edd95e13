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
``vmalloc:purge_vmap_area_lazy`` (since Linux 6.2; before, fexit/fentry or
kprobes on the functions they sit in), ``kmem:mm_page_alloc`` and
``kmem:kmalloc`` (as raw tracepoints when BTF confirms their TP_PROTO), and
fentry or a kprobe on ``__vmalloc_node_range_noprof`` where the kernel allows
one (exact request size and vm_flags).  Huge vmalloc needs
CONFIG_HAVE_ARCH_HUGE_VMALLOC and no ``nohugevmalloc``; since Linux 5.18
(commit 559089e0a93d, "vmalloc: replace VM_NO_HUGE_VMAP with
VM_ALLOW_HUGE_VMAP") it is opt-in per caller (kvmalloc, vmalloc_huge).

This package is laid out by what the code does: ``records`` (the event
records and their decoders), ``areas`` (one area's verdict, waste and
caller), ``aggregate`` (the aggregator), ``render`` (the text section),
``vmallocinfo`` (reading /proc/vmallocinfo).  Here: the tracer (BPF program,
attach plan, ``sample()``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Dict, List, Tuple

from trace_reclaim import abi, events
from trace_reclaim.tracer import Attach, Tracer, Window, fentry_on
from trace_reclaim.tracers.vmalloc.aggregate import (MAX_EARLY, MAX_LISTED_AREAS,
                                                     MAX_LISTED_NOTABLE, MAX_LIVE_AREAS,
                                                     MAX_PENDING, MAX_STACKS, PAIR_WINDOW_NS,
                                                     RETRY_WINDOW_NS, STACK_DEPTH,
                                                     VmallocAggregator)
from trace_reclaim.tracers.vmalloc.areas import VERDICTS, caller_of
from trace_reclaim.tracers.vmalloc.records import (EV_ALLOC_VMAP_AREA,
                                                   EV_FREE_VMAP_AREA, EV_KMALLOC_LARGE,
                                                   EV_PURGE_VMAP_AREA, EV_VMALLOC_PAGE_ALLOC,
                                                   VM_ALLOW_HUGE_VMAP, VM_NO_GUARD,
                                                   VMAP_EV_ARM_FULL, VMAP_EV_ARMED,
                                                   VMAP_EV_EXACT, AllocVmapArea, FreeVmapArea,
                                                   KmallocLarge, PurgeVmapArea,
                                                   VmallocPageAlloc)
from trace_reclaim.tracers.vmalloc.vmallocinfo import (VMALLOCINFO_NOTE, parse_vmallocinfo,
                                                       read_vmallocinfo)

__all__ = [
    "EV_ALLOC_VMAP_AREA", "EV_FREE_VMAP_AREA", "EV_PURGE_VMAP_AREA",
    "EV_VMALLOC_PAGE_ALLOC", "EV_KMALLOC_LARGE",
    "VMAP_EV_ARMED", "VMAP_EV_EXACT", "VMAP_EV_ARM_FULL", "VM_NO_GUARD", "VM_ALLOW_HUGE_VMAP",
    "AllocVmapArea", "FreeVmapArea", "PurgeVmapArea", "VmallocPageAlloc", "KmallocLarge",
    "VmallocTracer", "VmallocAggregator", "TRACER", "caller_of", "VERDICTS",
    "MAX_LIVE_AREAS", "MAX_LISTED_AREAS", "MAX_LISTED_NOTABLE", "MAX_PENDING", "MAX_EARLY",
    "MAX_STACKS", "STACK_DEPTH", "PAIR_WINDOW_NS", "RETRY_WINDOW_NS", "VMALLOCINFO_NOTE",
    "parse_vmallocinfo",
]

_STAT_NAMES = abi.slots("vmalloc_stat", "VS_")  # vmalloc_stats' slots, in index order
_HUGE_ORDER_MAX = 20
# How long an armed task's huge-order page allocations still count for its
# area.  Each one may compact and reclaim first (the allocation that fails
# is the slow one): under emulation one took over a second (the 6.12 VM
# tier's tracepoint plan saw a fallback at the area's free but never its
# failed allocation), as it can on a loaded machine mid-incident.  The other
# disarm rules (all pages, a failure, the free, a new arm, page misses) end
# an arm first in every case but a lost event.
ARM_TIMEOUT_NS = 10_000_000_000


class VmallocTracer(Tracer):
    """vmap areas, their huge-page attempts and fallbacks, kvmalloc's failed kmallocs."""

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

    # Before 6.2: the functions the area tracepoints were placed in, the kind
    # of attach that sees what the tracepoint gives, their prototypes then.
    AREA_FUNCS: ClassVar[Tuple[Tuple[str, str, List[str]], ...]] = (
        ("alloc_vmap_area", "fexit", ["long unsigned int"] * 4 + ["int", "gfp_t"]),
        ("free_vmap_area_noflush", "fentry", ["struct vmap_area *"]),
        ("__purge_vmap_area_lazy", "fexit", ["long unsigned int"] * 2))

    def __init__(self) -> None:
        super().__init__()
        self._sent_stacks: set[int] = set()
        self._sent_callers: set[int] = set()

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
                  f"-DVMALLOC_PAGE_BYTES={page}ULL", f"-DVMALLOC_KMALLOC_MIN={page + 1}",
                  f"-DVMALLOC_ARM_TIMEOUT_NS={ARM_TIMEOUT_NS}ULL"]
        area_tps = [probe.tracepoint_exists(cat, ev) for cat, ev in self.tracepoints[:3]]
        if all(area_tps):
            attaches += [Attach(f"{cat}:{ev}", f"tracepoint {cat}:{ev}")
                         for cat, ev in self.tracepoints[:3]]
        else:
            area_attaches, area_flags = self._area_functions(probe)
            attaches += area_attaches
            cflags += area_flags
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
        # The exact request (size, vm_flags, caller) where the kernel lets us see it.
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
        # fentry must attach to this very function: the trampoline may refuse
        # its 9 arguments where a 1-argument function attaches (bpf/vmalloc.bpf.c).
        fentry_ok, fentry_why = fentry_on(probe, fname)
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

    def _area_functions(self, probe: Any) -> Tuple[List[Attach], List[str]]:
        """The area events from the functions the tracepoints sit in (before 6.2).

        Linux 6.2 added vmalloc:alloc_vmap_area, free_vmap_area_noflush and
        purge_vmap_area_lazy; before, fexit/fentry (else kprobes) on those
        functions, with prototypes checked in BTF and vmap_area.va_start's
        offset from it.  All three or none, like the tracepoints: an area
        seen allocated but never freed would be reported as leaked.
        """
        no_tp = [(f"tracepoint {cat}:{ev}", "not in this kernel's tracefs (added in Linux 6.2)")
                 for cat, ev in self.tracepoints[:3]]
        btf = probe.btf_types
        off = btf.member_offset("vmap_area", "va_start") if btf else None
        protos_ok = off is not None and all(probe.btf_func_params(fn) == want
                                            for fn, _kind, want in self.AREA_FUNCS)
        fe_ok, fe_why = probe.fentry
        kp_ok, kp_why = probe.kprobes
        if not protos_ok:
            why = ("vmap_area.va_start is not in this kernel's BTF" if off is None else
                   "alloc_vmap_area, free_vmap_area_noflush or __purge_vmap_area_lazy is "
                   "not in this kernel's BTF with the prototype of Linux 5.x-6.1")
            fe_ok, fe_why, kp_ok, kp_why = False, why, False, why
        fexit_why = ""
        if fe_ok:
            for fn, kind, _want in self.AREA_FUNCS:
                ok, why = probe.tracing_attach(fn, kind)
                if not ok:
                    fexit_why = f"{kind} {fn}: {why}"
                    break
        else:
            fexit_why = fe_why
        if not fexit_why:
            how, flag = "", "-DVMALLOC_AREA_FEXIT"
        elif kp_ok:
            how, flag = "kprobe", "-DVMALLOC_AREA_KPROBE"
        else:
            return [Attach(f"{cat}:{ev}", "none", [tp, (f"fentry/fexit {fn}", fexit_why),
                                                   (f"kprobe {fn}", kp_why)], False)
                    for (cat, ev), tp, (fn, _k, _w) in zip(self.tracepoints[:3], no_tp,
                                                           self.AREA_FUNCS)], []
        attaches = []
        for (cat, ev), tp, (fn, kind, _want) in zip(self.tracepoints[:3], no_tp,
                                                    self.AREA_FUNCS):
            if how == "kprobe":
                chosen = ("kprobe+kretprobe " if fn == "alloc_vmap_area" else "kprobe ") + fn
                rejected = [tp, (f"{kind} {fn}", fexit_why)]
            else:
                chosen, rejected = f"{kind} {fn}", [tp]
            attaches.append(Attach(f"{cat}:{ev}", chosen, rejected))
        return attaches, [flag, f"-DVMAP_AREA_VA_START_OFF={off}"]

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
        areas = ("fexit/fentry" if "-DVMALLOC_AREA_FEXIT" in cflags else
                 "kprobes" if "-DVMALLOC_AREA_KPROBE" in cflags else "tracepoints")
        return {"page_bytes": page, "huge_bytes": huge, "huge_order": order,
                "plan": plan, "area_events": areas,
                "huge_vmalloc": {"possible": hv[0], "why": hv[1]}}

    def aggregator(self, window: Window) -> VmallocAggregator:
        return VmallocAggregator(window)

    def sample(self, bpf: Any, procfs: Any, ts_ns: int, when: str) -> List[Any]:
        """Symbolize new kernel stacks; read the arm statistics and vmallocinfo."""
        data: Dict[str, Any] = {"when": when}
        if when == "start":
            self._sent_stacks = set()
            self._sent_callers = set()
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
        # vm_struct.caller of exact requests (fentry/kprobe plans), symbolized live
        callers: Dict[str, str] = {}
        try:
            for k in list(bpf["vmalloc_callers"].keys()):
                addr = k.value
                if addr in self._sent_callers or len(self._sent_callers) >= MAX_STACKS:
                    continue
                self._sent_callers.add(addr)
                sym = bpf.ksym(addr, show_offset=True)
                callers[f"{addr:x}"] = sym.decode("utf-8", "replace") if isinstance(
                    sym, bytes) else str(sym)
        except KeyError:
            pass
        if callers:
            data["callers"] = callers
        try:
            st = bpf["vmalloc_stats"]
            data["stats"] = {name: int(sum(st[st.Key(i)]))
                             for i, name in enumerate(_STAT_NAMES)}
            data["stats"]["stale_armed"] = self._stale_armed(bpf)
        except KeyError:
            pass
        if when in ("start", "end"):
            vi = read_vmallocinfo(procfs)
            if vi is not None:
                data["vmallocinfo"] = vi
        return [events.Sample(ts_ns, self.name, data)]

    @staticmethod
    def _stale_armed(bpf: Any) -> int:
        """Tasks armed past ARM_TIMEOUT_NS: left by an area that never got pages.

        Only counted: the kernel disarms them at the task's next page
        allocation or vmalloc; deleting them from here could not keep the
        gate count exact (user space has no atomic add on the map).
        """
        import time

        now = time.monotonic_ns()  # bpf_ktime_get_ns() is CLOCK_MONOTONIC
        return sum(1 for _k, v in bpf["vmalloc_armed"].items()
                   if now - v.ts_ns > ARM_TIMEOUT_NS)


TRACER = VmallocTracer()
