"""kswapd and direct reclaim: who stalled, for how long, and what kswapd did.

Kernel side: ``bpf/reclaim.bpf.c`` on the vmscan tracepoints
``mm_vmscan_wakeup_kswapd``, ``mm_vmscan_kswapd_wake``, ``mm_vmscan_kswapd_sleep``
and ``mm_vmscan_direct_reclaim_begin/end`` (paired in the kernel by thread).
These exist since Linux 2.6.36; no kprobe or fentry would see more.
kswapd's wakes, re-wakes and awake time come from ``trace_reclaim.kswapd``,
the state machine the episode builder runs too.  LRU pages scanned and
reclaimed per reclaimer come from ``mm_vmscan_lru_shrink_inactive`` and
``mm_vmscan_lru_isolate``: which of them equals the kernel's pgscan_* depends
on whether the multi-gen LRU runs (``/sys/kernel/mm/lru_gen/enabled``, read
at every sample; see bpf/reclaim_lru.bpf.c).  A direct reclaim's retries (more
passes of do_try_to_free_pages()' priority loop, each one more ALLOCSTALL) are
counted exactly by fentry or a kprobe on ``vmpressure_prio()``, called once per
priority of every pass; without either they are inferred from the priority of
the LRU shrinks and of ``mm_shrink_slab_start``, a lower bound.

The LRU counts and the inferred retries only count in the kernel, and need
not hold up the start of a trace: they are the tracer's later part,
"reclaim.lru" (``reclaim_lru.bpf.c``), attached with the next BPF object.
They count from their attach on, and the report checks them against
/proc/vmstat over that same time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from mypy_extensions import mypyc_attr

from trace_reclaim import abi, events, gfp, schema
from trace_reclaim.abi import (EV_DIRECT_RECLAIM, EV_KSWAPD_SLEEP, EV_KSWAPD_WAKE,
                               EV_WAKEUP_KSWAPD)
from trace_reclaim.kswapd import Kswapd, KswapdNode
from trace_reclaim.stats import LatencyStats
from trace_reclaim.tracer import Aggregator, Attach, Tracer, Window, fentry_on

__all__ = [
    "EV_WAKEUP_KSWAPD", "EV_KSWAPD_WAKE", "EV_KSWAPD_SLEEP", "EV_DIRECT_RECLAIM",
    "WakeupKswapd", "KswapdWake", "KswapdSleep", "DirectReclaim",
    "ReclaimTracer", "ReclaimAggregator", "TRACER", "MAX_PROCESSES",
]

# Per-process state is capped; later processes are folded into one row.
MAX_PROCESSES = 512
# Direct-reclaim stalls held before they are folded into the per-process
# figures in one go (``_fold``): a bound on memory, not a unit of meaning.
STALL_BATCH = 4096
# Stalls that ended during the final drain kept for the in-flight count: a
# bound on memory (the ring buffer holds at most a few thousand such records).
MAX_ENDED_AFTER = 65536
OTHER = "[other processes]"
RECLAIMERS = abi.slots("reclaimer", "RECLAIMER_")  # lru_reclaim's slots, in index order
LRU_GEN_ENABLED = "/sys/kernel/mm/lru_gen/enabled"
LRU_GEN_CORE = 0x1   # the main switch of /sys/kernel/mm/lru_gen/enabled
SCAN_CLASSIC = "mm_vmscan_lru_shrink_inactive nr_scanned"
SCAN_LRU_GEN = "mm_vmscan_lru_isolate nr_taken (multi-gen LRU)"
# x86-64's node_zones[] order, for recordings without the header's zone_names.
ZONE_NAMES = ("DMA", "DMA32", "Normal", "Movable", "Device")


@dataclass(slots=True)
class WakeupKswapd(events.Event):
    gfp_flags: int
    nid: int
    zid: int
    order: int


@dataclass(slots=True)
class KswapdWake(events.Event):
    nid: int
    zid: int
    order: int


@dataclass(slots=True)
class KswapdSleep(events.Event):
    nid: int
    zid: int
    order: int


@dataclass(slots=True)
class DirectReclaim(events.Event):
    """One direct-reclaim stall; ``ts_ns`` is when it ended."""

    delta_ns: int
    gfp_flags: int
    nr_reclaimed_pages: int
    order: int
    retries: int
    cgroup_id: int = 0   # the task's cgroup v2 (0: recorded before attribution)
    memcg_id: int = 0    # the memory cgroup it charges to (v1 memory or v2)

    @property
    def start_ns(self) -> int:
        return self.ts_ns - self.delta_ns


events.register(EV_WAKEUP_KSWAPD, events.struct_decoder(WakeupKswapd, "wakeup_kswapd_event"))
events.register(EV_KSWAPD_WAKE, events.struct_decoder(KswapdWake, "kswapd_wake_event"))
events.register(EV_KSWAPD_SLEEP, events.struct_decoder(KswapdSleep, "kswapd_wake_event"))
events.register(EV_DIRECT_RECLAIM, events.struct_decoder(DirectReclaim, "direct_reclaim_event",
                                                         since="cgroup_id"))
_LRU = schema.Obj({"calls": schema.Int(0), "nr_scanned": schema.Int(0),
                   "nr_reclaimed": schema.Int(0)}, {"nr_taken": schema.Int(0)})
# ReclaimTracer.sample(): lru_reclaim per reclaimer; /sys/kernel/mm/lru_gen/enabled.
events.register_sample("reclaim", schema.Obj(optional={
    "lru": schema.Obj(optional={who: _LRU for who in RECLAIMERS}),
    "lru_gen": schema.Opt(schema.INT),
    "khugepaged_counted": schema.BOOL,
    # at "end", right after the vmstat snapshot: [begin ts_ns, retries so
    # far, thread id] of each direct reclaim still running
    "in_flight": schema.List(schema.Tuple(schema.Int(0), schema.Int(0), schema.Int(0)))}))
# ReclaimTracer.header(): what saw the retries (fentry/kprobe vmpressure_prio, or inferred).
# lru_memcg: memcg reclaim's LRU pages have their own slot (else in "direct").
events.register_header("reclaim", schema.Obj(optional={"retries_from": schema.STR,
                                                       "lru_memcg": schema.BOOL}))


class _Proc:
    __slots__ = ("tgid", "comm", "lat", "pages", "orders", "gfp", "stalls")

    def __init__(self, tgid: int, comm: str) -> None:
        self.tgid = tgid
        self.comm = comm
        self.lat = LatencyStats()
        self.pages = 0
        self.orders: Dict[int, int] = {}
        self.gfp: Dict[int, int] = {}
        self.stalls: List[DirectReclaim] = []  # not folded in yet


class _Interval:
    """What one interval (tick to tick) counted: the start of its row."""

    __slots__ = ("wakeup_requests", "kswapd_wakes", "stalls", "stall_ns", "stall_max_ns",
                 "pages")

    def __init__(self) -> None:
        # attributes, not a dict: compiled, a kswapd wake adds to one natively
        self.wakeup_requests = 0
        self.kswapd_wakes = 0
        self.stalls = 0
        self.stall_ns = 0
        self.stall_max_ns = 0
        self.pages = 0

    def row(self) -> Dict[str, Any]:
        return {"wakeup_requests": self.wakeup_requests, "kswapd_wakes": self.kswapd_wakes,
                "stalls": self.stalls, "stall_ns": self.stall_ns,
                "stall_max_ns": self.stall_max_ns, "pages": self.pages}


class _Node:
    """One node's row: kswapd's state machine plus what only this report keeps."""

    __slots__ = ("k", "requests", "interval_awake_ns")

    def __init__(self, k: KswapdNode) -> None:
        self.k = k
        self.requests: Dict[Tuple[int, int], int] = {}  # (zid, order)
        self.interval_awake_ns = 0

    @property
    def nid(self) -> int:
        return self.k.nid

    @property
    def wakes(self) -> int:
        return self.k.wakes


@mypyc_attr(allow_interpreted_subclasses=True)
class ReclaimAggregator(Aggregator):
    """Per-process direct-reclaim stalls and per-node kswapd activity."""

    section: ClassVar[str] = "reclaim"

    def __init__(self, window: Window) -> None:
        super().__init__(window)
        self.procs: Dict[int, _Proc] = {}
        self.kswapd = Kswapd(window)
        self.nodes: Dict[int, _Node] = {}  # by the node id kswapd counts under
        self.stalls_before_window = 0
        self.retries = 0
        # Retries seen on every pass (fentry/kprobe vmpressure_prio), or
        # inferred from the passes' events (a lower bound).
        tr = (window.header.get("tracers") or {}).get("reclaim") or {}
        self.retries_from = str(tr.get("retries_from") or "inferred")
        # Whether memcg reclaim's LRU pages were counted apart from "direct"
        # (older recordings and plans without the tracepoints: in it).
        self.lru_memcg = tr.get("lru_memcg") is True
        # Direct reclaims running at the end counters: those the kernel still
        # ran when the recorder looked, [begin ts_ns, retries so far, tid],
        # and those that ended while the ring buffer was drained after them,
        # (tid, begin ts_ns, retries); and when the recorder looked.
        self.in_flight: List[Any] = []
        self.ended_after: List[Tuple[int, int, int]] = []
        self.counters_read_ns = 0
        self.lru_first: Optional[Dict[str, Dict[str, int]]] = None
        self.lru_last: Optional[Dict[str, Dict[str, int]]] = None
        # /sys/kernel/mm/lru_gen/enabled at each sample (None: no multi-gen LRU)
        self.lru_gen: List[Optional[int]] = []
        # Whether /proc/vmstat counts khugepaged's reclaim apart (None: unknown)
        self.khugepaged_counted: Optional[bool] = None
        self._iv = _Interval()
        self._tick_ns = 0
        self.gfp_bits = window.header.get("gfp_bits") or gfp.DEFAULT_BITS
        self.zone_names = window.header.get("zone_names") or ZONE_NAMES
        # wakeup_kswapd records not counted yet (``_fold_wakeups``).
        self._wakeups: List[WakeupKswapd] = []
        self._handlers = self.handlers()
        # Processes with stalls not folded in yet, and how many stalls.
        self._unfolded: List[_Proc] = []
        self._unfolded_n = 0
        self._stall_batch = STALL_BATCH  # read once (tests lower it)

    def _node(self, nid: int) -> _Node:
        k = self.kswapd.node(nid)
        n = self.nodes.get(k.nid)
        if n is None:
            n = self.nodes[k.nid] = _Node(k)
        return n

    def _proc(self, tgid: int, comm: str) -> _Proc:
        p = self.procs.get(tgid)
        if p is None:
            if len(self.procs) >= MAX_PROCESSES:
                p = self.procs.get(-1)
                if p is None:
                    p = self.procs[-1] = _Proc(-1, OTHER)
                return p
            p = self.procs[tgid] = _Proc(tgid, comm)
        return p

    def handlers(self) -> Dict[int, Any]:
        """The function for each record type (the correlator calls them directly)."""
        return {EV_WAKEUP_KSWAPD: self._wakeups.append, EV_DIRECT_RECLAIM: self._direct_reclaim,
                EV_KSWAPD_WAKE: self._kswapd_wake, EV_KSWAPD_SLEEP: self._kswapd_sleep}

    def feed(self, ev: Any) -> None:
        h = self._handlers.get(ev.type)
        if h is not None:
            h(ev)

    def flush(self) -> None:
        self._fold_wakeups()

    def _fold_wakeups(self) -> None:
        """Count the wakeup_kswapd records held so far (the most frequent
        record under pressure: its handler only keeps it).

        What one record at a time would count: each (node, zone, order) is
        met in order of first appearance, so nodes register in that order
        and the cap of 256 requests per node keeps the same ones.  A kswapd
        wake or sleep that would register a node first folds these in.
        """
        evs = self._wakeups
        if not evs:
            return
        self._iv.wakeup_requests += len(evs)
        nodes = self.nodes
        for e in evs:
            nid = e.nid
            n = nodes.get(nid) or self._node(nid)
            req = n.requests
            key = (e.zid, e.order)
            c = req.get(key)
            if c is not None:
                req[key] = c + 1
            elif len(req) < 256:
                req[key] = 1
        evs.clear()

    def after_window(self, ev: Any) -> None:
        # A stall that ended while the recorder drained its ring buffer.
        if ev.type == EV_DIRECT_RECLAIM and len(self.ended_after) < MAX_ENDED_AFTER:
            self.ended_after.append((ev.pid, ev.ts_ns - ev.delta_ns, ev.retries))

    def _in_flight(self) -> Tuple[List[int], int]:
        """Stalls begun in the window and not ended by its end: the retries of
        each, and how many began while the end counters were read.

        Each began before the end counters were read, so ALLOCSTALL counted
        it (and each retry so far) there, as it did the stalls above.  Seen
        either in the kernel's table of running stalls, read right after the
        counters, or ended since (drained after them): one stall can be in
        both, and is counted once.  Where a stall began after the window's
        end timestamp but before the reading was done, the counters may or
        may not hold it: those are counted apart.
        """
        w = self.window
        end = w.end_ns
        if not end:
            return [], 0
        read = max(self.counters_read_ns, end)
        seen: Dict[Tuple[int, int], int] = {}
        for ts, retries, tid in self.in_flight:
            seen[(tid, ts)] = retries
        for tid, ts, retries in self.ended_after:
            seen.setdefault((tid, ts), retries)
        running = [r for (_tid, ts), r in seen.items() if w.start_ns <= ts <= end]
        during = sum(1 for (_tid, ts) in seen if end < ts <= read)
        return running, during

    def _direct_reclaim(self, ev: DirectReclaim) -> None:
        # Which process row a stall goes to is decided now (rows are capped
        # in order of arrival); its figures are added in batches (``_fold``).
        if ev.ts_ns - ev.delta_ns < self.window.start_ns:
            self.stalls_before_window += 1
            return
        p = self.procs.get(ev.tgid) or self._proc(ev.tgid, ev.comm)
        stalls = p.stalls
        if not stalls:
            self._unfolded.append(p)
        stalls.append(ev)
        self._unfolded_n += 1
        if self._unfolded_n >= self._stall_batch:
            self._fold()

    def _fold(self) -> None:
        """Add the stalls held so far to their processes and to this interval.

        What one ``_direct_reclaim`` at a time would have added, in one loop
        per process; orders and gfp flags meet their dicts in order of first
        appearance, as one at a time, so the cap of 64 flag sets keeps the same.
        """
        iv = self._iv
        for p in self._unfolded:
            evs = p.stalls
            deltas: List[int] = []
            pages = retries = 0
            orders = p.orders
            g = p.gfp
            for e in evs:
                deltas.append(e.delta_ns)
                pages += e.nr_reclaimed_pages
                retries += e.retries
                o = e.order
                orders[o] = orders.get(o, 0) + 1
                flags = e.gfp_flags
                if flags in g:
                    g[flags] += 1
                elif len(g) < 64:
                    g[flags] = 1
            p.lat.add_many(deltas)
            p.pages += pages
            self.retries += retries
            iv.stalls += len(evs)
            iv.stall_ns += sum(deltas)
            iv.pages += pages
            d = max(deltas)
            if d > iv.stall_max_ns:
                iv.stall_max_ns = d
            evs.clear()
        self._unfolded.clear()
        self._unfolded_n = 0

    def _kswapd_wake(self, ev: KswapdWake) -> None:
        if self._wakeups and ev.nid not in self.kswapd.nodes:
            self._fold_wakeups()  # nodes register in the order the records came
        k, _ = self.kswapd.wake(ev.nid, ev.ts_ns, ev.order)
        if k.nid not in self.nodes:
            self.nodes[k.nid] = _Node(k)
        self._iv.kswapd_wakes += 1

    def _kswapd_sleep(self, ev: KswapdSleep) -> None:
        if self._wakeups and ev.nid not in self.kswapd.nodes:
            self._fold_wakeups()
        n = self._node(ev.nid)
        span = self.kswapd.sleep(ev.nid, ev.ts_ns)
        if span is not None and span.duration_ns > 0:
            # The part of the span inside this interval.
            n.interval_awake_ns += span.duration_ns - max(0, self._tick_ns - span.start_ns)

    def on_sample(self, sample: Any) -> None:
        data = sample.data if isinstance(sample.data, dict) else {}
        if "khugepaged_counted" in data:
            self.khugepaged_counted = bool(data["khugepaged_counted"])
        if "in_flight" in data:
            self.in_flight = data["in_flight"]
            self.counters_read_ns = sample.ts_ns
        lru = data.get("lru")
        if not isinstance(lru, dict):
            return   # the LRU counts (reclaim_lru.bpf.c) are not attached yet
        if self.lru_first is None:
            self.lru_first = lru
        self.lru_last = lru
        if "lru_gen" in data and len(self.lru_gen) < 2:
            self.lru_gen.append(data["lru_gen"])
        elif "lru_gen" in data:
            self.lru_gen[1] = data["lru_gen"]

    def _scan_source(self) -> Tuple[str, str]:
        """Which sum equals pgscan_*: (source, note).  The multi-gen LRU counts
        isolated folios; the classic LRU, the pages shrink_inactive_list scanned."""
        on = [v is not None and bool(int(v) & LRU_GEN_CORE) for v in self.lru_gen]
        if not on or not any(on):
            return SCAN_CLASSIC, ""
        if all(on):
            return SCAN_LRU_GEN, ""
        return SCAN_LRU_GEN, ("the multi-gen LRU was switched during the window: "
                              "pages scanned by the other LRU are not counted")

    def _lru_delta(self) -> Dict[str, Dict[str, int]]:
        """LRU pages per reclaimer since the counts attached; none if they never did."""
        if self.lru_first is None:
            return {}
        first, last = self.lru_first, self.lru_last or {}
        lru_gen = self._scan_source()[0] == SCAN_LRU_GEN
        out = {}
        for who in RECLAIMERS:
            if who == "memcg" and not self.lru_memcg:
                continue
            a, b = first.get(who, {}), last.get(who, {})
            d = {k: int(b.get(k, 0)) - int(a.get(k, 0))
                 for k in ("calls", "nr_scanned", "nr_reclaimed", "nr_taken")}
            taken = d.pop("nr_taken")
            if lru_gen:
                d["nr_scanned"] = taken
            out[who] = d
        if self.khugepaged_counted is False and "khugepaged" in out:
            # A kernel without pgscan_khugepaged/pgsteal_khugepaged (Debian's
            # 6.1) counts khugepaged's reclaim in pgscan_direct/pgsteal_direct:
            # so does "direct" here; the khugepaged row still shows its part.
            # (6.1 tier: 47 pages short in "direct" until this.)
            out["direct"] = {k: v + out["khugepaged"][k] for k, v in out["direct"].items()}
        return out

    def on_tick(self, ts_ns: int) -> Dict[str, Any]:
        self._fold_wakeups()
        self._fold()
        awake = {}
        for n in self.nodes.values():
            extra = 0
            span = n.k.span
            if span is not None:
                extra = ts_ns - max(span.start_ns, self._tick_ns)
            awake[n.nid] = n.interval_awake_ns + max(0, extra)
            n.interval_awake_ns = 0
        row = self._iv.row()
        row["kswapd_awake_ns"] = awake
        self._iv = _Interval()
        self._tick_ns = ts_ns
        return row

    def close(self, end_ns: int) -> None:
        """At the window end, count kswapd still awake up to it."""
        self.kswapd.close(end_ns)

    def report(self) -> Dict[str, Any]:
        self._fold_wakeups()
        self._fold()
        procs = []
        for p in sorted(self.procs.values(), key=lambda p: (-p.lat.total, p.tgid)):
            s = p.lat.summary()
            procs.append({
                "pid": p.tgid, "comm": p.comm, "stalls": s["count"],
                "total_ns": s["total"], "p50_ns": s["p50"], "p99_ns": s["p99"],
                "max_ns": s["max"], "pages_reclaimed": p.pages,
                "percentiles_exact": p.lat.exact,
                "orders": {str(k): v for k, v in sorted(p.orders.items())},
                "gfp_flags": {gfp.names(k, self.gfp_bits): v
                              for k, v in sorted(p.gfp.items())},
            })
        nodes = []
        for n in sorted(self.nodes.values(), key=lambda n: n.nid):
            k = n.k
            nodes.append({
                "nid": k.nid, "wakeup_requests": sum(n.requests.values()),
                "requests": [{"zone": _zone(z, self.zone_names), "order": o, "count": c}
                             for (z, o), c in sorted(n.requests.items())],
                "kswapd_wakes": k.wakes, "kswapd_sleeps": k.sleeps,
                "re_wakes": k.re_wakes, "awake_ns": k.awake_ns,
                "max_order": k.max_order,
            })
        # All stalls: merged from the per-process statistics (one add per stall).
        s = LatencyStats.merged([p.lat for p in self.procs.values()]).summary()
        running, during_read = self._in_flight()
        return {
            "direct_reclaim": {
                "stalls": s["count"], "total_ns": s["total"], "p50_ns": s["p50"],
                "p99_ns": s["p99"], "max_ns": s["max"],
                "pages_reclaimed": sum(p.pages for p in self.procs.values()),
                "stalls_begun_before_window": self.stalls_before_window,
                # Each retry is one more ALLOCSTALL for the same stall.
                "retries": self.retries,
                "retries_exact": self.retries_from in ("fentry", "kprobe"),
                "in_flight_at_end": len(running),
                "in_flight_retries": sum(running),
                "begun_during_end_read": during_read,
                "processes": procs,
            },
            "kswapd": nodes,
            # LRU pages per reclaimer as mm/vmscan.c's pgscan_*/pgsteal_* count them.
            "lru": self._lru_delta(),
            "lru_scanned_from": self._scan_source()[0],
            "lru_direct_includes_khugepaged": self.khugepaged_counted is False,
            "lru_note": self._scan_source()[1],
        }

    def totals(self, section: Dict[str, Any]) -> Dict[str, Any]:
        d = section["direct_reclaim"]
        return {
            "direct_reclaim_stalls": d["stalls"],
            "direct_reclaim_retries": d["retries"],
            "direct_reclaim_in_flight": d.get("in_flight_at_end", 0),
            "direct_reclaim_in_flight_retries": d.get("in_flight_retries", 0),
            "direct_reclaim_begun_during_end_read": d.get("begun_during_end_read", 0),
            "direct_reclaim_pages": d["pages_reclaimed"],
            "direct_reclaim_ns": d["total_ns"],
            "kswapd_wakeup_requests": sum(n["wakeup_requests"] for n in section["kswapd"]),
            "kswapd_wakes": sum(n["kswapd_wakes"] for n in section["kswapd"]),
            "kswapd_awake_ns": sum(n["awake_ns"] for n in section["kswapd"]),
            # Absent when the LRU counts never attached: not a zero.
            **({"lru_reclaimed_direct": section["lru"]["direct"]["nr_reclaimed"],
                "lru_reclaimed_kswapd": section["lru"]["kswapd"]["nr_reclaimed"],
                "lru_scanned_direct": section["lru"]["direct"]["nr_scanned"],
                "lru_scanned_kswapd": section["lru"]["kswapd"]["nr_scanned"]}
               if section["lru"] else {}),
            **({"lru_reclaimed_memcg": section["lru"]["memcg"]["nr_reclaimed"],
                "lru_scanned_memcg": section["lru"]["memcg"]["nr_scanned"]}
               if "memcg" in section["lru"] else {}),
        }

    def render(self, section: Dict[str, Any]) -> List[str]:
        from trace_reclaim.report import NBSP, fmt_ns, table, wrap

        d = section["direct_reclaim"]
        retries = ""
        if d["retries"]:
            # Inferred from the passes' events, a pass that shows none is missed.
            least = "" if d.get("retries_exact", False) else "at least "
            retries = f" ({least}{d['retries']} retried their priority loop)"
        out = wrap(f"Direct reclaim: {d['stalls']} stalls{retries}, {fmt_ns(d['total_ns'])} "
                   f"total, p50 {fmt_ns(d['p50_ns'])}, p99 {fmt_ns(d['p99_ns'])}, "
                   f"max {fmt_ns(d['max_ns'])}, {d['pages_reclaimed']}{NBSP}pages{NBSP}reclaimed",
                   hang="  ")
        if d.get("in_flight_at_end"):
            out += wrap(f"  {d['in_flight_at_end']} more still in direct reclaim when the "
                        "trace ended (not in the figures above)", hang="    ")
        if d.get("begun_during_end_read"):
            out += wrap(f"  {d['begun_during_end_read']} began while the end counters were "
                        "read: /proc/vmstat may or may not count them", hang="    ")
        if d["processes"]:
            # identifiers as text: a count too wide may become 1.2M, a pid not
            rows = [[str(p["pid"]), p["comm"], p["stalls"], fmt_ns(p["total_ns"]),
                     fmt_ns(p["p50_ns"]), fmt_ns(p["p99_ns"]), fmt_ns(p["max_ns"]),
                     p["pages_reclaimed"],
                     ",".join(p["orders"]) or "-"]
                    for p in d["processes"][:20]]
            out += table(["PID", "COMM", "STALLS", "TOTAL", "P50", "P99", "MAX",
                          "PAGES", "ORDERS"], rows, flex=8, breaks=",")
            more = len(d["processes"]) - 20
            if more > 0:
                out.append(f"  ... {more} more processes (see -j)")
            flags = Counter[str]()
            for p in d["processes"]:
                flags.update(p["gfp_flags"])
            # Break after a "|", never inside a flag name.
            out += wrap(", ".join(f"{k} x{v}" for k, v in flags.most_common(4)),
                        "  gfp flags: ", hang="    ", breaks="|")
        m = section["lru"].get("memcg")
        if m and (m["nr_scanned"] or m["nr_reclaimed"]):
            out += wrap(f"Memcg reclaim (cgroups at their limits): {m['nr_scanned']}{NBSP}LRU "
                        f"pages scanned, {m['nr_reclaimed']}{NBSP}reclaimed; /proc/vmstat's "
                        "pgscan_* and pgsteal_* count global reclaim only, so these are in "
                        "no row of the table above (see the memcg section)", hang="  ")
        out.append("")
        out.append("kswapd:")
        if not section["kswapd"]:
            out.append("  no kswapd activity")
        rows = []
        for n in section["kswapd"]:
            zones = Counter[str]()
            for r in n["requests"]:
                zones[f"{r['zone']}/o{r['order']}"] += r["count"]
            rows.append([str(n["nid"]), n["wakeup_requests"], n["kswapd_wakes"],
                         n["re_wakes"], fmt_ns(n["awake_ns"]),
                         " ".join(f"{k}:{v}" for k, v in zones.most_common(3)) or "-"])
        if rows:
            out += table(["NODE", "REQUESTS", "WAKES", "RE-WAKES", "AWAKE",
                          "REQUESTS BY ZONE/ORDER"], rows, flex=5)
        return out


def _zone(zid: int, names: Any = ZONE_NAMES) -> str:
    return str(names[zid]) if 0 <= zid < len(names) else str(zid)


@mypyc_attr(allow_interpreted_subclasses=True)
class ReclaimTracer(Tracer):
    """kswapd and direct reclaim; LRU page counts summed in the kernel."""

    name: ClassVar[str] = "reclaim"
    bpf_source: ClassVar[str] = "reclaim.bpf.c"
    # The LRU page counts and inferred retries: counting only, they attach
    # with the next object and the trace begins without waiting for them.
    later_part: ClassVar[str] = "lru"
    later_source: ClassVar[str] = "reclaim_lru.bpf.c"
    cflag: ClassVar[str] = "WITH_RECLAIM"
    tracepoints: ClassVar[Any] = (
        ("vmscan", "mm_vmscan_wakeup_kswapd"),
        ("vmscan", "mm_vmscan_kswapd_wake"),
        ("vmscan", "mm_vmscan_kswapd_sleep"),
        ("vmscan", "mm_vmscan_direct_reclaim_begin"),
        ("vmscan", "mm_vmscan_direct_reclaim_end"),
        ("vmscan", "mm_vmscan_lru_shrink_inactive"),
        ("vmscan", "mm_vmscan_lru_isolate"),
    )
    event_types: ClassVar[Any] = (EV_WAKEUP_KSWAPD, EV_KSWAPD_WAKE, EV_KSWAPD_SLEEP,
                                  EV_DIRECT_RECLAIM)
    # lru_reclaim and the direct reclaims in flight, next to /proc/vmstat.
    end_sample_with_snapshots: ClassVar[bool] = True

    # The bracket of memcg reclaim, (begin, end): try_to_free_mem_cgroup_pages()
    # (a limit, memory.high, memory.reclaim) and the v1 soft limit's
    # mem_cgroup_shrink_node(), with the cflag that attaches each.
    MEMCG_BRACKETS: ClassVar[Tuple[Tuple[str, str, str], ...]] = (
        ("mm_vmscan_memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_end",
         "-DRECLAIM_MEMCG_LRU"),
        ("mm_vmscan_memcg_softlimit_reclaim_begin", "mm_vmscan_memcg_softlimit_reclaim_end",
         "-DRECLAIM_MEMCG_SOFTLIMIT_LRU"),
    )

    # do_try_to_free_pages() calls it once per priority of every pass.
    PASS_FUNC: ClassVar[str] = "vmpressure_prio"
    PASS_PROTO: ClassVar[List[str]] = ["gfp_t", "struct mem_cgroup *", "int"]

    def plan(self, probe: Any) -> Tuple[List[Attach], List[str]]:
        """The vmscan tracepoints, and how a direct reclaim's retries are seen.

        Exactly from fentry (else a kprobe) on vmpressure_prio(), with its
        prototype checked in BTF; else inferred from the priority of the LRU
        shrinks and of mm_shrink_slab_start, whose TP_PROTO (shr, sc,
        nr_objects_to_shrink, cache_items, delta, total_scan, priority) has had
        the priority last since Linux 3.x.
        """
        attaches, cflags = super().plan(probe)
        self._plan_memcg_lru(probe, attaches, cflags)
        fam = "direct reclaim retries (another pass of the priority loop)"
        func = self.PASS_FUNC
        if probe.btf_func_params(func) != self.PASS_PROTO:
            why = f"{func}({', '.join(self.PASS_PROTO)}) is not in this kernel's BTF"
            fe_ok, fe_why, kp_ok, kp_why = False, why, False, why
        else:
            fe_ok, fe_why = fentry_on(probe, func)
            kp_ok, kp_why = probe.kprobes
        if fe_ok:
            attaches.append(Attach(fam, f"fentry {func} (exact)"))
            return attaches, cflags + ["-DRECLAIM_PASS_FENTRY"]
        if kp_ok:
            attaches.append(Attach(fam, f"kprobe {func} (exact)", [(f"fentry {func}", fe_why)]))
            return attaches, cflags + ["-DRECLAIM_PASS_KPROBE"]
        rejected = [(f"fentry {func}", fe_why), (f"kprobe {func}", kp_why)]
        params = probe.raw_tracepoint_params("mm_shrink_slab_start")
        lru = "the LRU shrinks' priority (mm_vmscan_lru_shrink_inactive)"
        if params and len(params) >= 7 and params[6] == "int":
            cflags.append("-DRECLAIM_SHRINK_PRIORITY_ARG=6")
            attaches.append(Attach(fam, lru + " and raw tracepoint mm_shrink_slab_start's "
                                   "(priority checked in BTF): a lower bound, a pass that "
                                   "evicts nothing and shrinks no slab is missed", rejected))
        else:
            why = ("no BTF prototype to check" if params is None
                   else f"its TP_PROTO is ({', '.join(params)})")
            attaches.append(Attach(fam, lru + " only: a lower bound, a multi-gen LRU pass "
                                   "that evicts nothing is missed",
                                   rejected + [("raw tracepoint mm_shrink_slab_start", why)]))
        return attaches, cflags

    def _plan_memcg_lru(self, probe: Any, attaches: List[Attach], cflags: List[str]) -> None:
        """Which LRU pages are memcg reclaim's: those of the threads between a
        memcg reclaim's begin and end tracepoints (the memcg tracer's programs
        on them where it is in the same BPF object, else reclaim.bpf.c's).
        The limit's pair is needed, the soft limit's is taken where the
        kernel has it (v1 memory controller code)."""
        fam = "LRU pages of memcg reclaim, apart from the global reclaim /proc/vmstat counts"
        have = [(b, e, flag) for b, e, flag in self.MEMCG_BRACKETS
                if probe.tracepoint_exists("vmscan", b) and probe.tracepoint_exists("vmscan", e)]
        if have and have[0][2] == self.MEMCG_BRACKETS[0][2]:
            cflags += [flag for _b, _e, flag in have]
            attaches.append(Attach(fam, "tracepoints " + ", ".join(
                f"{b.removesuffix('_begin')}_begin/end" for b, _e, _f in have)))
            return
        b, e, _flag = self.MEMCG_BRACKETS[0]
        attaches.append(Attach(fam, 'none: counted with "direct"',
                               [(f"tracepoints {b}/end", "not in this kernel's tracefs")],
                               ok=True))

    def header(self, probe: Any) -> Dict[str, Any]:
        try:
            _a, cflags = self.plan(probe)
        except Exception:  # the header must not fail the trace
            cflags = []
        how = ("fentry" if "-DRECLAIM_PASS_FENTRY" in cflags else
               "kprobe" if "-DRECLAIM_PASS_KPROBE" in cflags else "inferred")
        return {"retries_from": how, "lru_memcg": self.MEMCG_BRACKETS[0][2] in cflags}

    def aggregator(self, window: Window) -> ReclaimAggregator:
        return ReclaimAggregator(window)

    def sample(self, bpf: Any, procfs: Any, ts_ns: int, when: str) -> List[Any]:
        """The LRU counts once reclaim.lru is attached (its "start" sample is
        taken then), the direct reclaims in flight at the end."""
        data: Dict[str, Any] = {}
        try:
            table = bpf["lru_reclaim"]
        except KeyError:   # reclaim.lru: not attached yet
            table = None
        if table is not None:
            lru: Dict[str, Dict[str, int]] = {}
            for i, who in enumerate(RECLAIMERS):
                vals = table[table.Key(i)]
                lru[who] = {"calls": sum(v.calls for v in vals),
                            "nr_scanned": sum(v.nr_scanned for v in vals),
                            "nr_reclaimed": sum(v.nr_reclaimed for v in vals),
                            "nr_taken": sum(v.nr_taken for v in vals)}
            text = procfs.try_read(LRU_GEN_ENABLED)
            try:
                lru_gen: Optional[int] = int(text.strip(), 16) if text else None
            except ValueError:
                lru_gen = None
            data.update(lru=lru, lru_gen=lru_gen)
        if when == "end":
            data["in_flight"] = sorted([int(v.ts_ns), int(v.retries), int(k.value)]
                                       for k, v in bpf["direct_reclaim_begin"].items())
        if when == "start":
            # Whether /proc/vmstat counts khugepaged's reclaim apart (6.3+).
            data["khugepaged_counted"] = "pgsteal_khugepaged" in procfs.vmstat()
        return [events.Sample(ts_ns, self.name, data)]


TRACER = ReclaimTracer()
