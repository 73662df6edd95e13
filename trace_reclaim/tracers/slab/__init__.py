"""Slab: shrink_slab per shrinker, per-cache accounting, kmem_cache lifecycle.

Kernel side: ``bpf/slab.bpf.c``.  ``vmscan:mm_shrink_slab_start/end``
(since Linux 3.0) are paired per thread into one record; raw tracepoints on
``mm_vmscan_{direct,memcg,node}_reclaim_begin/end`` say which reclaim ran
the shrinker.  ``kmem:kmem_cache_alloc/free`` are counted in the kernel
per ``struct kmem_cache *`` (raw tracepoints, per-CPU hash) and read once per
interval; the cache name is read once per pointer at the offset BTF gives
for ``kmem_cache.name``.  kmalloc()/kfree() fire ``kmem:kmalloc/kfree``,
which carry no cache pointer, so the kmalloc-* caches are not counted, and
neither are kmem_cache_alloc_bulk/free_bulk (no per-object tracepoint).
Objects a task allocates where no tracepoint fires are not counted either:
on the development VM the sandbox's init looks up /proc/PID/fd/N of every
process, unseen by any tracepoint (kmem, syscalls, sched_switch out of it),
so each file held open gains a dentry and a proc inode that only
/proc/slabinfo sees (their frees, by drop_caches or the process's exit, are
traced).  Each cache row says when its traced net and /proc/slabinfo
disagree beyond the per-CPU slack (``allocs_untraced``/``frees_untraced``).

There is no tracepoint for kmem_cache_create/destroy.  Where fentry or
kprobes reach them, the creation function (``__kmem_cache_create_args``,
``kmem_cache_create_usercopy`` before 6.12), ``kmem_cache_destroy`` and
``__kmem_cache_shutdown`` (the kernel's own "is it empty" check) give exact
events: times, the cache a merge returned, its refcount, and whether objects
were left.  Otherwise creation and destruction are found by comparing
/sys/kernel/slab and /proc/slabinfo between intervals, so their timing is
only known to the interval.

This package is laid out by what the code does: ``records`` (the event
records and their decoders), ``aggregate`` (the aggregator), ``shrinkers``,
``owners`` (what each shrinker shrinks, read in the kernel once per shrinker),
``drain`` (never-drains verdicts), ``lifecycle`` (merged caches and
creations/destructions from /sys/kernel/slab), ``render`` (the text section);
``slabinfo``, ``sysfs`` and ``kmsg`` read /proc, /sys/kernel/slab and
/dev/kmsg in a live session.  Here: the tracer (BPF program, attach plan,
``sample()``).
"""


from __future__ import annotations

import os
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from trace_reclaim import abi, events
from trace_reclaim.tracer import Attach, Tracer, Window
from trace_reclaim.tracers.slab import kmsg, owners, slabinfo, sysfs
from trace_reclaim.tracers.slab.aggregate import (MAX_LIFECYCLE, MAX_SERIES, MAX_SHRINKERS,
                                                  MAX_SLAB_CACHES, SlabAggregator)
from trace_reclaim.tracers.slab.drain import (BASIS_DENTRY_STATE, BASIS_SLABINFO,
                                              DRAIN_FRACTION, MIN_GROWTH, MIN_HELD, SETTLE_NS,
                                              never_drains, pinned_never_drains)
from trace_reclaim.tracers.slab.lifecycle import diff_lifecycle
from trace_reclaim.tracers.slab.records import (EV_DROP_SLAB, EV_KMEM_CACHE_CREATE,
                                                EV_KMEM_CACHE_DESTROY, EV_KMEM_CACHE_SHUTDOWN,
                                                EV_SHRINK_SLAB,
                                                KmemCacheEvent, ShrinkSlab)
from trace_reclaim.tracers.slab.shrinkers import FUTILE_CALLS
from trace_reclaim.tracers.slab.slabinfo import slabinfo_tolerance

__all__ = [
    "EV_SHRINK_SLAB", "EV_KMEM_CACHE_CREATE", "EV_KMEM_CACHE_DESTROY",
    "EV_KMEM_CACHE_SHUTDOWN", "EV_DROP_SLAB",
    "ShrinkSlab", "KmemCacheEvent", "SlabTracer", "SlabAggregator", "TRACER",
    "MAX_SLAB_CACHES", "MAX_SHRINKERS", "MAX_LIFECYCLE", "MAX_SERIES", "FUTILE_CALLS",
    "DRAIN_FRACTION", "MIN_GROWTH", "MIN_HELD", "SETTLE_NS", "BASIS_SLABINFO",
    "BASIS_DENTRY_STATE", "diff_lifecycle", "never_drains", "pinned_never_drains",
    "slabinfo_tolerance",
]


class SlabTracer(Tracer):
    """shrink_slab per shrinker, kmem_cache_alloc/free per cache, cache lifecycle."""

    name: ClassVar[str] = "slab"
    bpf_source: ClassVar[str] = "slab.bpf.c"
    cflag: ClassVar[str] = "WITH_SLAB"
    tracepoints: ClassVar[Any] = (
        ("vmscan", "mm_shrink_slab_start"),
        ("vmscan", "mm_shrink_slab_end"),
    )
    raw_tracepoints: ClassVar[Any] = (
        ("kmem", "kmem_cache_alloc"), ("kmem", "kmem_cache_free"),
        ("vmscan", "mm_vmscan_direct_reclaim_begin"),
        ("vmscan", "mm_vmscan_direct_reclaim_end"),
        ("vmscan", "mm_vmscan_memcg_reclaim_begin"),
        ("vmscan", "mm_vmscan_memcg_reclaim_end"),
        ("vmscan", "mm_vmscan_node_reclaim_begin"),
        ("vmscan", "mm_vmscan_node_reclaim_end"),
    )
    event_types: ClassVar[Any] = (EV_SHRINK_SLAB, EV_KMEM_CACHE_CREATE,
                                  EV_KMEM_CACHE_DESTROY, EV_KMEM_CACHE_SHUTDOWN, EV_DROP_SLAB)
    # The function every kmem_cache creation goes through, newest first, with
    # its cflag suffix: since Linux 6.12 (the struct kmem_cache_args series)
    # __kmem_cache_create_args; kmem_cache_create_usercopy before it.
    CREATE_FUNCS: ClassVar[Tuple[Tuple[str, str], ...]] = (
        ("__kmem_cache_create_args", "ARGS"), ("kmem_cache_create_usercopy", "USERCOPY"))

    def __init__(self) -> None:
        super().__init__()
        self._state: Dict[str, Any] = {}
        self._btf_facts: Optional[Dict[str, Any]] = None
        self._owner_facts: Optional[Tuple[List[str], List[str], List[Tuple[str, str]]]] = None

    def btf_facts(self, probe: Any) -> Dict[str, Any]:
        """kmem_cache.name offset and raw tracepoint argument indexes, from BTF."""
        if self._btf_facts is None:

            btf = probe.btf_types
            self._btf_facts = {
                "name_off": btf.member_offset("kmem_cache", "name") if btf else None,
                "refcount_off": btf.member_offset("kmem_cache", "refcount") if btf else None,
                "alloc_arg": btf.raw_tp_arg("kmem_cache_alloc", "kmem_cache") if btf else None,
                "free_arg": btf.raw_tp_arg("kmem_cache_free", "kmem_cache") if btf else None,
                "btf": btf is not None,
            }
        return self._btf_facts

    def owner_facts(self, probe: Any) -> Tuple[List[str], List[str], List[Tuple[str, str]]]:
        """What names shrinkers here: (cflags, callbacks named, [(callback, why not)])."""
        if self._owner_facts is None:
            self._owner_facts = owners.owner_cflags(probe.btf_types, probe.kernel_symbol)
        return self._owner_facts

    def plan(self, probe: Any) -> Tuple[List[Attach], List[str]]:
        attaches, cflags = super().plan(probe)
        f = self.btf_facts(probe)
        own_flags, named, unnamed = self.owner_facts(probe)
        cflags += own_flags
        attaches.append(Attach(
            family="shrinker owners (what each shrinker shrinks)",
            chosen=(f"read once per struct shrinker * for {', '.join(named)} "
                    "(offsets from BTF)" if named else
                    "shrinker->name only (CONFIG_SHRINKER_DEBUG)" if own_flags else
                    "none: shrinkers named by their callback only"),
            rejected=unnamed, ok=True))
        acct = f["alloc_arg"] is not None and f["free_arg"] is not None and all(
            probe.tracepoint_exists("kmem", e) for e in ("kmem_cache_alloc", "kmem_cache_free"))
        if acct and not self.options.slab_cache_accounting:
            attaches.append(Attach(
                family="kmem:kmem_cache_alloc/free per cache", chosen="off (--no-slab-accounting)",
                rejected=[("raw tracepoints", "turned off: every allocation would pay the "
                           "kernel's BPF dispatch; /proc/slabinfo deltas remain")]))
        elif acct:
            name_off = -1 if f["name_off"] is None else f["name_off"]
            cflags += ["-DSLAB_CACHE_ACCOUNTING",
                       f"-DKMEM_CACHE_ALLOC_ARG={f['alloc_arg']}",
                       f"-DKMEM_CACHE_FREE_ARG={f['free_arg']}",
                       f"-DKMEM_CACHE_NAME_OFF={name_off}",
                       f"-DMAX_SLAB_CACHES={MAX_SLAB_CACHES}",
                       f"-DMAX_SHRINKERS={MAX_SHRINKERS}"]
            names = ("names read at kmem_cache.name offset {} from BTF".format(f["name_off"])
                     if f["name_off"] is not None else "no names: kmem_cache.name not in BTF")
            attaches.append(Attach(
                family="kmem:kmem_cache_alloc/free per cache",
                chosen=f"raw tracepoints, per-CPU slots by struct kmem_cache * "
                       f"(args[{f['alloc_arg']}]/args[{f['free_arg']}]); {names}",
                rejected=[("tracepoint kmem:kmem_cache_alloc name string",
                           "string-keyed counting costs ~9x the pointer key")]))
        else:
            attaches.append(Attach(
                family="kmem:kmem_cache_alloc/free per cache", chosen="none",
                rejected=[("raw tracepoints", "no btf_trace_kmem_cache_* prototype with "
                           "a struct kmem_cache * in this kernel's BTF")], ok=True))
        a, extra = self._lifecycle_plan(probe, f)
        attaches.append(a)
        cflags += extra
        if extra and not any(c.startswith("-DKMEM_CACHE_NAME_OFF=") for c in cflags):
            cflags.append(f"-DKMEM_CACHE_NAME_OFF={f['name_off']}")
        a, extra = self._drop_plan(probe)
        attaches.append(a)
        cflags += extra
        return attaches, cflags

    #: drop_caches_sysctl_handler() calls it for each "echo 2 (or 3) > drop_caches",
    #: then counts DROP_SLAB.
    DROP_FUNC: ClassVar[str] = "drop_slab"
    DROP_INFERRED: ClassVar[str] = (
        "inferred from the shrinker calls: one task's at priority 0 outside reclaim, "
        "a new run after a pause over a second (a lower bound: runs closer together "
        "count once)")

    def _drop_plan(self, probe: Any) -> Tuple[Attach, List[str]]:
        """drop_caches runs: fexit (else a kretprobe) on drop_slab(), one event
        per run, exact; else inferred from the shrinker calls, a lower bound."""
        family = "drop_caches runs (drop_slab())"
        fn = self.DROP_FUNC
        fe_ok, fe_why = probe.fentry
        kp_ok, kp_why = probe.kprobes
        if (fe_ok or kp_ok) and probe.btf_func_params(fn) != []:
            why = f"{fn}(void) is not in this kernel's BTF"
            return Attach(family, self.DROP_INFERRED,
                          [(f"fexit {fn}", why), (f"kretprobe {fn}", why)]), []
        if fe_ok:
            fe_ok, fe_why = probe.tracing_attach(fn, "fexit")
        if fe_ok:
            return Attach(family, f"fexit {fn} (exact)"), ["-DSLAB_DROP_FEXIT"]
        if kp_ok:
            return (Attach(family, f"kretprobe {fn} (exact)", [(f"fexit {fn}", fe_why)]),
                    ["-DSLAB_DROP_KPROBE"])
        return Attach(family, self.DROP_INFERRED,
                      [(f"fexit {fn}", fe_why), (f"kretprobe {fn}", kp_why)]), []

    def _lifecycle_plan(self, probe: Any, f: Dict[str, Any]) -> Tuple[Attach, List[str]]:
        """fentry/fexit per function where its trampoline attaches, else kprobes.

        Needs kmem_cache.name from BTF (the events name the cache).  All three
        functions or none: a creation seen without its destruction (or the
        reverse) would make the exact events and the sysfs comparison disagree.
        """
        family = "kmem_cache lifecycle"
        sysfs_way = ("/sys/kernel/slab + /proc/slabinfo compared each interval "
                     "(timing approximate to the interval)")
        fe_ok, fe_why = probe.fentry
        kp_ok, kp_why = probe.kprobes
        if not fe_ok and not kp_ok:
            return Attach(family, sysfs_way, [("fentry kmem_cache_destroy", fe_why),
                                              ("kprobe kmem_cache_destroy", kp_why)]), []
        create = next(((fn, sfx) for fn, sfx in self.CREATE_FUNCS
                       if probe.btf_func_params(fn) is not None), None)
        if f["name_off"] is None or create is None or \
                probe.btf_func_params("kmem_cache_destroy") is None or \
                probe.btf_func_params("__kmem_cache_shutdown") is None:
            why = ("kmem_cache.name not in this kernel's BTF" if f["name_off"] is None else
                   "the creation function, kmem_cache_destroy or __kmem_cache_shutdown is "
                   "not in this kernel's BTF (inlined or renamed)")
            return Attach(family, sysfs_way, [("fentry/kprobe kmem_cache_destroy", why)]), []
        picks: List[str] = []
        rejected: List[Tuple[str, str]] = []
        cflags = ["-DSLAB_LIFECYCLE"]
        for fn, kind, macro in ((create[0], "fexit", f"SLAB_CREATE_%s_{create[1]}"),
                                ("kmem_cache_destroy", "fentry", "SLAB_DESTROY_%s"),
                                ("__kmem_cache_shutdown", "fexit", "SLAB_SHUTDOWN_%s")):
            ok, why = probe.tracing_attach(fn, kind) if fe_ok else (fe_ok, fe_why)
            if ok:
                picks.append(f"{kind} {fn}")
                cflags.append("-D" + macro % kind.upper())
                continue
            rejected.append((f"{kind} {fn}", why))
            if not kp_ok:
                rejected.append((f"kprobe {fn}", kp_why))
                return Attach(family, sysfs_way, rejected), []
            picks.append(("kretprobe " if kind == "fexit" else "kprobe ") + fn)
            cflags.append("-D" + macro % "KPROBE")
        if f.get("refcount_off") is not None:
            cflags.append(f"-DKMEM_CACHE_REFCOUNT_OFF={f['refcount_off']}")
        return Attach(family, ", ".join(picks), rejected), cflags

    def aggregator(self, window: Window) -> SlabAggregator:
        return SlabAggregator(window)

    def header(self, probe: Any) -> Dict[str, Any]:
        f = self.btf_facts(probe)
        try:
            lifecycle, extra = self._lifecycle_plan(probe, f)
            exact, method = bool(extra), lifecycle.chosen
        except Exception:  # the header must not fail the trace
            exact, method = False, "unknown"
        try:
            _a, drop = self._drop_plan(probe)
            drop_from = ("fexit" if "-DSLAB_DROP_FEXIT" in drop else
                         "kretprobe" if "-DSLAB_DROP_KPROBE" in drop else "inferred")
        except Exception:  # the header must not fail the trace
            drop_from = "inferred"
        return {"ncpus": os.cpu_count() or 1, "kmem_cache_name_offset": f["name_off"],
                "lifecycle_exact": exact, "lifecycle_method": method,
                "drop_runs_from": drop_from,
                "kmem_cache_alloc_arg": f["alloc_arg"], "kmem_cache_free_arg": f["free_arg"],
                "shrinker_owners": self.owner_facts(probe)[1]}

    # -- live reading -----------------------------------------------------
    def sample(self, bpf: Any, procfs: Any, ts_ns: int, when: str) -> List[Any]:
        st = self._state
        if when == "start" or st.get("bpf") is not bpf:
            if st.get("kmsg") is not None:
                st["kmsg"].close()
            st.clear()
            st.update(bpf=bpf, symbols=set(), owners=set(), slabinfo={}, sys_key=None,
                      reclaimable=[],
                      kmsg=kmsg.KmsgReader(procfs.path("/dev/kmsg")))
        if when == "start":
            _instantiate_own_fds(procfs)
        data: Dict[str, Any] = {"when": when}
        syms = self._read_symbols(bpf)
        if syms:
            data["symbols"] = syms
        own = owners.read_owners(bpf, st["owners"], MAX_SHRINKERS)
        if own:
            data["shrinker_owners"] = own
        caches = _read_cache_counts(bpf)
        if caches is not None:
            data["caches"] = caches
            data["overflow"] = sum(bpf["slab_cache_overflow"][abi.SLAB_OVERFLOW_UNCOUNTED])
        slabinfo.read_slabinfo(procfs, when, st, data)
        sysfs.sample_sys_slab(procfs, when, st, data)
        slabinfo.read_fs_state(procfs, data)
        lines = st["kmsg"].read()
        if lines:
            data["kmsg"] = lines
        if when == "end":
            st["kmsg"].close()
        return [events.Sample(ts_ns, self.name, data)]

    def _read_symbols(self, bpf: Any) -> Dict[str, str]:
        """Shrinker callbacks not sent yet, symbolized live (the replay has no kernel)."""
        st = self._state
        syms = {}
        try:
            for v in bpf["slab_shrinkers"].values():
                if v.value not in st["symbols"] and len(st["symbols"]) < MAX_SHRINKERS * 2:
                    st["symbols"].add(v.value)
                    name = bpf.ksym(v.value)
                    syms[f"{v.value:x}"] = name.decode("utf-8", "replace") if isinstance(
                        name, bytes) else str(name)
        except KeyError:
            pass
        return syms


def _instantiate_own_fds(procfs: Any) -> None:
    """List /proc/self/fd before the start sample: the tracer's own fds.

    Whoever first looks up /proc/PID/fd/N makes its dentry and proc inode
    (fs/proc/fd.c proc_fd_instantiate(); readdir makes them all through
    proc_fill_cache()).  A process monitor listing the tracer's ~80 BPF and
    perf fds would make ~80 of each inside the window, objects of the
    tracer's own making in the dentry and proc_inode_cache counts, and
    untraced when that monitor runs where tracepoints do not fire (the
    development VM's init).  Made here, they come before the start counts.
    """
    try:
        os.listdir(procfs.path("/proc/self/fd"))
    except OSError:
        pass


def _read_cache_counts(bpf: Any) -> Optional[Dict[str, List[int]]]:
    """Per-cache cumulative [allocs, frees] by cache name, from the BPF maps.

    None when the program counts no caches (--no-slab-accounting, or no BTF).
    """
    try:
        names_map = bpf["slab_cache_names"]
        counts_map = bpf["slab_cache_counts"]
    except KeyError:
        return None
    names = {k.value: bytes(v.name).split(b"\0", 1)[0].decode("utf-8", "replace")
             for k, v in names_map.items()}
    by_ptr: Dict[int, List[int]] = {}
    for k, per_cpu in counts_map.items():
        c = by_ptr.setdefault(k.value, [0, 0])
        c[0] += sum(x.allocs for x in per_cpu)
        c[1] += sum(x.frees for x in per_cpu)
    for per_cpu in bpf["slab_cache_slots"].values():
        for x in per_cpu:
            if x.cache:
                c = by_ptr.setdefault(x.cache, [0, 0])
                c[0] += x.allocs
                c[1] += x.frees
    caches: Dict[str, List[int]] = {}
    for ptr, (a, f) in by_ptr.items():
        name = names.get(ptr) or f"cache@{ptr:x}"
        prev = caches.get(name)
        if prev:  # two live caches with one name: add them up
            a, f = a + prev[0], f + prev[1]
        caches[name] = [a, f]
    return caches


TRACER = SlabTracer()
