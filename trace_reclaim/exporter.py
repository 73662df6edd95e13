"""Prometheus metrics from the report's own aggregators, for ``serve``.

The live session ticks once per interval.  At each tick ``Exporter.update``
asks every aggregator for its report section and totals (the very code
``report`` runs) and the correlator for the interval's row, and moves its
counters up to those values: what the counters say is what a report of the
same window would say.  Only the direct-reclaim latency histogram needs each
event (a bucket count needs every value): ``ObservedReclaimTracer`` is the
reclaim tracer whose aggregator, having counted a stall, shows it to the
exporter too.  Each interval's values are published at once, so a scrape
never sees a stall in the stall counter and not yet in the histogram.

Cardinality and memory are bounded: label values come from small fixed
sets (nodes, reclaimers, vmalloc verdicts, compaction contexts, the loaded
BPF programs), shrinkers and cgroups are cut to the top N by time with
the rest folded into ``other``, and nothing is labelled by pid or comm.  A shrinker's
label is the report's stable name, callback and owner
(``super_cache_scan (ext4 vda)``), where the kernel told what it shrinks;
else its callback, all its instances together (instance numbers change
from run to run).  A cgroup's label is its path in its hierarchy (the
report's row: the memory controller's, else cgroup v2), with the
hierarchy beside it: each reclaim is counted under one of them, never both.

Cost: a refresh runs every tracer's ``report()``, percentiles included, and
that grows with what the aggregators hold (bounded by their caps, but a
week of stalls from hundreds of processes means millions of exact latencies
to sort).  So a refresh happens at most once per interval, and after a
costly one the next waits until refreshing takes no more than
MAX_REFRESH_SHARE of the time: the counters then move in larger steps, never
to wrong values.  Between refreshes each interval costs only its row.

Pure: no HTTP, no /proc, the clock injected.  ``families()`` builds
prometheus_client metric families (imported only there: the core runs
without the library).
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Set, Tuple, TypeVar

from trace_reclaim.tracer import Window
from trace_reclaim.tracers.reclaim import (EV_DIRECT_RECLAIM, EV_WAKEUP_KSWAPD, RECLAIMERS,
                                           ReclaimAggregator, ReclaimTracer)

__all__ = ["Exporter", "Family", "FAMILIES", "STALL_BUCKETS_NS", "DEFAULT_TOP_SHRINKERS",
           "DEFAULT_TOP_CGROUPS", "MAX_REFRESH_SHARE", "ObservedReclaimTracer", "OTHER",
           "shrinker_label", "cgroup_label"]

# Direct-reclaim stalls run from ~10 us (a few pages off the inactive list)
# to seconds (throttled writeback, OOM-adjacent retries): 1-2.5-5 steps.
STALL_BUCKETS_NS = (
    10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000,
    100_000_000, 250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000,
    5_000_000_000, 10_000_000_000,
)
DEFAULT_TOP_SHRINKERS = 10
DEFAULT_TOP_CGROUPS = 20
# At most this share of the time goes to refreshing from the reports.
MAX_REFRESH_SHARE = 0.05
OTHER = "other"
# The episode builder's bound on its thread -> node map (same rule, same bound).
MAX_TID_NODES = 8192
VERDICTS = ("huge", "fallback", "not_eligible", "unknown")
COMPACTORS = ("direct", "kcompactd")


@dataclass(frozen=True)
class Family:
    """One metric family: its name without ``_total``, kind, help and labels."""

    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    labels: Tuple[str, ...] = ()
    unit: str = ""


FAMILIES: Tuple[Family, ...] = (
    Family("trace_reclaim_direct_reclaim_stall_seconds", "histogram",
           "Direct-reclaim stalls (mm_vmscan_direct_reclaim_begin to _end) by the node "
           "whose kswapd the stalling thread woke last", ("node",), "seconds"),
    Family("trace_reclaim_direct_reclaim_stalls", "counter",
           "Direct-reclaim stalls; stalls + retries counts what /proc/vmstat allocstall_* "
           "counts"),
    Family("trace_reclaim_direct_reclaim_retries", "counter",
           "Extra passes of do_try_to_free_pages()'s priority loop inside a stall "
           "(each is one more allocstall)"),
    Family("trace_reclaim_direct_reclaim_reclaimed_pages", "counter",
           "Pages direct reclaim reported freed (mm_vmscan_direct_reclaim_end nr_reclaimed, "
           "slab pages included)"),
    Family("trace_reclaim_kswapd_wakes", "counter",
           "kswapd runs of balance_pgdat() (mm_vmscan_kswapd_wake; /proc/vmstat pageoutrun)",
           ("node",)),
    Family("trace_reclaim_kswapd_wakeup_requests", "counter",
           "Requests to wake kswapd (mm_vmscan_wakeup_kswapd)", ("node",)),
    Family("trace_reclaim_kswapd_awake_seconds", "counter",
           "Time kswapd spent awake, from kswapd_wake to kswapd_sleep", ("node",), "seconds"),
    Family("trace_reclaim_lru_scanned_pages", "counter",
           "LRU pages scanned by shrink_inactive_list() (pgscan_*)", ("reclaimer",)),
    Family("trace_reclaim_lru_reclaimed_pages", "counter",
           "LRU pages reclaimed by shrink_inactive_list() (pgsteal_*)", ("reclaimer",)),
    Family("trace_reclaim_shrinker_calls", "counter",
           "do_shrink_slab() calls by shrinker: scan_objects callback and what it "
           "shrinks (top N by time, the rest in 'other')", ("shrinker",)),
    Family("trace_reclaim_shrinker_scanned_objects", "counter",
           "Objects shrinkers scanned (slabs_scanned)", ("shrinker",)),
    Family("trace_reclaim_shrinker_freed_objects", "counter",
           "Objects shrinkers freed", ("shrinker",)),
    Family("trace_reclaim_shrinker_seconds", "counter",
           "Time spent in do_shrink_slab()", ("shrinker",), "seconds"),
    Family("trace_reclaim_cgroup_reclaims", "counter",
           "Reclaims run by a cgroup's tasks: direct-reclaim stalls (reclaim=direct) and "
           "memcg reclaims at the cgroup's limits (reclaim=memcg; in no /proc/vmstat "
           "counter); top N cgroups by reclaim time, the rest in 'other'",
           ("cgroup", "hierarchy", "reclaim")),
    Family("trace_reclaim_cgroup_reclaim_seconds", "counter",
           "Time a cgroup's tasks spent in those reclaims", ("cgroup", "hierarchy", "reclaim"),
           "seconds"),
    Family("trace_reclaim_cgroup_reclaimed_pages", "counter",
           "Pages those reclaims reported freed (their _end tracepoint's nr_reclaimed)",
           ("cgroup", "hierarchy", "reclaim")),
    Family("trace_reclaim_cgroup_oom_kills", "counter",
           "OOM victims in the cgroup (oom:mark_victim)", ("cgroup", "hierarchy")),
    Family("trace_reclaim_slab_caches_never_draining", "gauge",
           "Reclaimable slab caches that did not drain after memory pressure"),
    Family("trace_reclaim_compaction_runs", "counter",
           "compact_zone() runs (mm_compaction_begin to _end)", ("context",)),
    Family("trace_reclaim_compaction_seconds", "counter",
           "Time in compact_zone()", ("context",), "seconds"),
    Family("trace_reclaim_vmalloc_areas", "counter",
           "vmalloc areas by huge-page verdict (an open area's verdict may still settle: "
           "a counter never goes back)", ("verdict",)),
    Family("trace_reclaim_vmalloc_huge_pages", "counter",
           "PMD-sized pages mapping huge vmalloc areas"),
    Family("trace_reclaim_oom_kills", "counter", "OOM victims (oom:mark_victim)"),
    Family("trace_reclaim_lost_events", "counter",
           "Events the ring buffer had no room for (counted in the kernel)"),
    Family("trace_reclaim_damaged_records", "counter",
           "Records that could not be decoded, or of an unknown type"),
    Family("trace_reclaim_recording_unwritten_records", "counter",
           "Records not written to the recording (-o) since a write to it failed "
           "(a full disk); the metrics still count them"),
    Family("trace_reclaim_intervals", "counter", "Intervals the tracer has ticked"),
    Family("trace_reclaim_refresh_duration_seconds", "gauge",
           "How long the last refresh from the tracers' reports took (see "
           "trace_reclaim_refreshes_total)", (), "seconds"),
    Family("trace_reclaim_refreshes", "counter",
           "Refreshes from the tracers' reports: one per interval unless they are costly"),
    Family("trace_reclaim_bpf_stats_enabled", "gauge",
           "1 when kernel.bpf_stats_enabled is on, so the BPF run-time counters move"),
    Family("trace_reclaim_bpf_run_seconds", "counter",
           "Run time of each of this tool's BPF programs (kernel bpf_stats run_time_ns; "
           "moves only while kernel.bpf_stats_enabled is 1)", ("program",), "seconds"),
    Family("trace_reclaim_bpf_runs", "counter",
           "Runs of each of this tool's BPF programs (bpf_stats run_cnt)", ("program",)),
)
_BY_NAME = {f.name: f for f in FAMILIES}


class _Histogram:
    __slots__ = ("buckets", "sum_ns", "count")

    def __init__(self) -> None:
        self.buckets = [0] * (len(STALL_BUCKETS_NS) + 1)  # the last is +Inf
        self.sum_ns = 0
        self.count = 0

    def copy(self) -> _Histogram:
        h = _Histogram()
        h.buckets = list(self.buckets)
        h.sum_ns, h.count = self.sum_ns, self.count
        return h


def cgroup_label(row: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
    """A report cgroup row's (cgroup, hierarchy) labels: its path (None while
    its id is not resolved to one, and for the row of cgroups beyond the
    aggregator's cap)."""
    path = row.get("path")
    return (str(path), str(row["hierarchy"])) if path else None


# A cgroup row's counts, in the order _cgroups() reads them.
_CG_COUNTS = ("direct_stalls", "direct_stall_ns", "direct_pages", "memcg_reclaims",
              "memcg_reclaim_ns", "memcg_pages", "oom_kills")


def shrinker_label(row: Mapping[str, Any]) -> Optional[str]:
    """A report shrinker row's label: its name when that names the owner, else
    its callback (None while the callback is not symbolized yet)."""
    if row.get("owner"):
        return str(row["name"])
    cb = row.get("callback")
    return str(cb) if cb else None


class Exporter:
    """Counters and gauges fed once per interval, histograms once per stall."""

    def __init__(self, top_shrinkers: int = DEFAULT_TOP_SHRINKERS,
                 clock: Callable[[], float] = time.monotonic,
                 top_cgroups: int = DEFAULT_TOP_CGROUPS) -> None:
        self.top_shrinkers = top_shrinkers
        self.top_cgroups = top_cgroups
        self.clock = clock
        self._next_refresh = 0.0
        # What the session thread builds up between ticks.
        self._values: Dict[str, Dict[Tuple[str, ...], float]] = {f.name: {} for f in FAMILIES}
        self._stalls: Dict[str, _Histogram] = {}
        self._tid_node: Dict[int, int] = {}
        self._nodes_seen: Set[int] = set()
        self._shr_prev: Dict[str, Tuple[int, int, int, int]] = {}
        self._shr_named: Set[str] = set()
        # By report row (hierarchy, id): bounded by the memcg aggregator's cap.
        self._cg_prev: Dict[Tuple[str, int], Tuple[int, ...]] = {}
        self._cg_named: Set[Tuple[str, str]] = set()
        # What scrapes read: swapped in whole at each tick.
        self._lock = threading.Lock()
        self._published: Optional[Tuple[Dict[str, Dict[Tuple[str, ...], float]],
                                        Dict[str, _Histogram]]] = None
        self.held = 0  # report values seen below a counter (kept, never lowered)

    # -- per event (from ObservedReclaimTracer's aggregator) ------------------
    def wakeup_kswapd(self, ev: Any) -> None:
        """Remember the node each thread last woke kswapd on (as episodes.py does)."""
        if len(self._tid_node) > MAX_TID_NODES:
            self._tid_node.clear()
        self._tid_node[ev.pid] = ev.nid
        self._nodes_seen.add(ev.nid)

    def direct_reclaim(self, ev: Any) -> None:
        """Count one stall the reclaim aggregator counted, under its node.

        The node is the one whose kswapd the thread woke last (the slow path
        wakes kswapd before it reclaims), else the lowest node seen: the
        episode builder's rule.
        """
        nid = self._tid_node.get(ev.pid)
        if nid is None:
            nid = min(self._nodes_seen) if self._nodes_seen else 0
        h = self._stalls.get(str(nid))
        if h is None:
            h = self._stalls[str(nid)] = _Histogram()
        d = ev.delta_ns
        h.buckets[bisect.bisect_left(STALL_BUCKETS_NS, d)] += 1
        h.sum_ns += d
        h.count += 1

    # -- per interval --------------------------------------------------------
    def update(self, aggs: Mapping[str, Any], row: Mapping[str, Any], *,
               damaged_records: int = 0, unwritten_records: int = 0,
               bpf_stats: Optional[Tuple[bool, Mapping[str, Tuple[int, int]]]] = None,
               ) -> bool:
        """Fold one interval in: ``aggs`` are the correlator's aggregators,
        ``row`` the interval row it just returned.  Refresh from the reports
        and publish unless the last refresh was too costly; return whether
        it did."""
        # The row's own values are this interval's: they count every tick.
        self._add("trace_reclaim_intervals", (), 1)
        self._add("trace_reclaim_lost_events", (), max(0, int(row.get("lost_events", 0))))
        # The interval rows split kswapd's awake time by interval, the time
        # it is still awake included: a kswapd that never sleeps shows.
        for nid, ns in ((row.get("reclaim") or {}).get("kswapd_awake_ns") or {}).items():
            self._add("trace_reclaim_kswapd_awake_seconds", (str(nid),), max(0, ns) / 1e9)
        start = self.clock()
        if start < self._next_refresh:
            return False
        sections = {name: a.report() for name, a in aggs.items()}
        totals: Dict[str, Any] = {}
        for name, a in aggs.items():
            totals.update(a.totals(sections[name]))
        self._rise("trace_reclaim_damaged_records", (), damaged_records)
        self._rise("trace_reclaim_recording_unwritten_records", (), unwritten_records)
        if "reclaim" in sections:
            self._reclaim(sections["reclaim"], totals)
        if "slab" in sections:
            self._slab(sections["slab"], totals)
        if "oom" in sections:
            self._oom(sections["oom"], totals)
        if "vmalloc" in sections:
            self._vmalloc(sections["vmalloc"], totals)
        if "memcg" in sections:
            self._cgroups(sections["memcg"]["cgroups"])
        if bpf_stats is not None:
            self._bpf(*bpf_stats)
        took = self.clock() - start
        self._next_refresh = start + took / MAX_REFRESH_SHARE
        self._add("trace_reclaim_refreshes", (), 1)
        self._set("trace_reclaim_refresh_duration_seconds", (), took)
        self._publish()
        return True

    def _reclaim(self, sec: Dict[str, Any], t: Dict[str, Any]) -> None:
        self._rise("trace_reclaim_direct_reclaim_stalls", (), t["direct_reclaim_stalls"])
        self._rise("trace_reclaim_direct_reclaim_retries", (), t["direct_reclaim_retries"])
        self._rise("trace_reclaim_direct_reclaim_reclaimed_pages", (),
                   t["direct_reclaim_pages"])
        for n in sec["kswapd"]:
            node = (str(n["nid"]),)
            self._rise("trace_reclaim_kswapd_wakes", node, n["kswapd_wakes"])
            self._rise("trace_reclaim_kswapd_wakeup_requests", node, n["wakeup_requests"])
        for who in RECLAIMERS:
            if who not in sec["lru"]:  # memcg: counted with direct (older plans)
                continue
            lru = sec["lru"][who]
            self._rise("trace_reclaim_lru_scanned_pages", (who,), lru.get("nr_scanned", 0))
            self._rise("trace_reclaim_lru_reclaimed_pages", (who,), lru.get("nr_reclaimed", 0))

    def _slab(self, sec: Dict[str, Any], t: Dict[str, Any]) -> None:
        """Shrinkers by stable name: the top N by time keep their own label for
        good (a counter must not move between series), the rest are 'other'."""
        rows = sec["shrinkers"]
        by_name: Dict[str, int] = {}
        for r in rows:
            name = shrinker_label(r)
            if name and r.get("shr") != "0x0":
                by_name[name] = by_name.get(name, 0) + r["time_ns"]
        _name_top(self._shr_named, by_name, self.top_shrinkers)
        for r in rows:
            key = r["shr"]
            now = (r["calls"], r["scanned"], r["freed"], r["time_ns"])
            prev = self._shr_prev.get(key, (0, 0, 0, 0))
            self._shr_prev[key] = now
            name = shrinker_label(r)
            label = (name if name in self._shr_named else OTHER,)
            for name, a, b, scale in (
                    ("trace_reclaim_shrinker_calls", now[0], prev[0], 1),
                    ("trace_reclaim_shrinker_scanned_objects", now[1], prev[1], 1),
                    ("trace_reclaim_shrinker_freed_objects", now[2], prev[2], 1),
                    ("trace_reclaim_shrinker_seconds", now[3], prev[3], 1e9)):
                self._add(name, label, max(0, a - b) / scale if scale != 1 else max(0, a - b))
        self._set("trace_reclaim_slab_caches_never_draining", (),
                  t.get("slab_caches_never_drain", 0))

    def _cgroups(self, rows: List[Dict[str, Any]]) -> None:
        """Per cgroup, what its report row gained since the last refresh.

        Like the shrinkers: the top N by reclaim time (direct and memcg) get
        their own labels when first seen, for good; the rest, and a row
        whose path is not known yet, count under cgroup "other".
        """
        by_label: Dict[Tuple[str, str], int] = {}
        for r in rows:
            label = cgroup_label(r)
            if label:
                by_label[label] = by_label.get(label, 0) + r["direct_stall_ns"] + \
                    r["memcg_reclaim_ns"]
        _name_top(self._cg_named, by_label, self.top_cgroups)
        for r in rows:
            key = (str(r["hierarchy"]), int(r["id"]))
            now = tuple(int(r[k]) for k in _CG_COUNTS)
            prev = self._cg_prev.get(key, (0,) * len(_CG_COUNTS))
            self._cg_prev[key] = now
            d = [max(0, a - b) for a, b in zip(now, prev)]
            label = cgroup_label(r)
            cg = label if label in self._cg_named else (OTHER, key[0])
            for i, reclaim in ((0, "direct"), (3, "memcg")):
                labels = (*cg, reclaim)
                self._add("trace_reclaim_cgroup_reclaims", labels, d[i])
                self._add("trace_reclaim_cgroup_reclaim_seconds", labels, d[i + 1] / 1e9)
                self._add("trace_reclaim_cgroup_reclaimed_pages", labels, d[i + 2])
            self._add("trace_reclaim_cgroup_oom_kills", cg, d[6])

    def _oom(self, sec: Dict[str, Any], t: Dict[str, Any]) -> None:
        comp = sec.get("compaction") or {}
        for who in COMPACTORS:
            c = comp.get(who) or {}
            self._rise("trace_reclaim_compaction_runs", (who,), c.get("runs", 0))
            self._rise("trace_reclaim_compaction_seconds", (who,), c.get("total_ns", 0) / 1e9)
        self._rise("trace_reclaim_oom_kills", (), t.get("oom_kills", 0))

    def _vmalloc(self, sec: Dict[str, Any], t: Dict[str, Any]) -> None:
        by = sec.get("by_verdict") or {}
        for v in VERDICTS:
            self._rise("trace_reclaim_vmalloc_areas", (v,), (by.get(v) or {}).get("areas", 0))
        self._rise("trace_reclaim_vmalloc_huge_pages", (), t.get("vmalloc_huge_pages", 0))

    def _bpf(self, enabled: bool, progs: Mapping[str, Tuple[int, int]]) -> None:
        self._set("trace_reclaim_bpf_stats_enabled", (), 1 if enabled else 0)
        for name, (run_ns, cnt) in progs.items():
            # Zero while the stats were never on: not a measured zero, not shown.
            if run_ns or cnt or (name,) in self._values["trace_reclaim_bpf_runs"]:
                self._rise("trace_reclaim_bpf_run_seconds", (name,), run_ns / 1e9)
                self._rise("trace_reclaim_bpf_runs", (name,), cnt)

    # -- values --------------------------------------------------------------
    def _add(self, name: str, labels: Tuple[str, ...], by: float) -> None:
        v = self._values[name]
        v[labels] = v.get(labels, 0) + by

    def _rise(self, name: str, labels: Tuple[str, ...], to: float) -> None:
        """Move a counter up to the report's cumulative value; never down."""
        v = self._values[name]
        old = v.get(labels, 0)
        if to >= old:
            v[labels] = to
        else:
            self.held += 1

    def _set(self, name: str, labels: Tuple[str, ...], to: float) -> None:
        self._values[name][labels] = to

    def _publish(self) -> None:
        values = {k: dict(v) for k, v in self._values.items()}
        stalls = {k: h.copy() for k, h in self._stalls.items()}
        with self._lock:
            self._published = (values, stalls)

    def snapshot(self) -> Dict[str, Dict[Tuple[str, ...], float]]:
        """The published values by family (histograms as _count/_sum/_bucket)."""
        with self._lock:
            pub = self._published
        if pub is None:
            return {}
        values, stalls = pub
        out = {k: dict(v) for k, v in values.items()}
        base = "trace_reclaim_direct_reclaim_stall_seconds"
        out[base + "_count"] = {(n,): h.count for n, h in stalls.items()}
        out[base + "_sum"] = {(n,): h.sum_ns / 1e9 for n, h in stalls.items()}
        return out

    # -- prometheus_client's custom collector ----------------------------------
    def describe(self) -> List[Any]:
        return []  # no describe-time families: collect() is cheap and may be empty

    def collect(self) -> Iterator[Any]:
        return iter(self.families())

    def families(self) -> List[Any]:
        """The last published interval as prometheus_client metric families
        (none before the first interval)."""
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        from prometheus_client.utils import floatToGoString

        with self._lock:
            pub = self._published
        if pub is None:
            return []
        values, stalls = pub
        out: List[Any] = []
        for f in FAMILIES:
            if f.kind == "histogram":
                h = HistogramMetricFamily(f.name, f.help, labels=f.labels, unit=f.unit)
                for node in sorted(stalls, key=_node_key):
                    s = stalls[node]
                    cum, buckets = 0, []
                    for le, n in zip(STALL_BUCKETS_NS, s.buckets):
                        cum += n
                        buckets.append((floatToGoString(le / 1e9), cum))
                    buckets.append(("+Inf", cum + s.buckets[-1]))
                    h.add_metric([node], buckets, s.sum_ns / 1e9)
                out.append(h)
                continue
            series = values[f.name]
            if not series:
                continue
            cls = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
            fam = cls(f.name, f.help, labels=f.labels, unit=f.unit)
            for labels in sorted(series, key=lambda ls: tuple(_node_key(x) for x in ls)):
                fam.add_metric(list(labels), series[labels])
            out.append(fam)
        return out


L = TypeVar("L", str, Tuple[str, str])


def _name_top(named: Set[L], time_ns: Mapping[L, int], top: int) -> None:
    """Give the free label slots (``top`` in all) to the not yet named with the
    most time, for good: a label once given is kept (a counter that moved to
    another series would read as a reset)."""
    free = top - len(named)
    if free > 0:
        new = sorted(((ns, lb) for lb, ns in time_ns.items() if lb not in named and ns > 0),
                     reverse=True)
        named.update(lb for _ns, lb in new[:free])


def _node_key(s: str) -> Tuple[int, Any]:
    """Sort numeric labels (nodes) as numbers, the rest as text."""
    return (0, int(s)) if s.lstrip("-").isdigit() else (1, s)


class _ObservedReclaimAggregator(ReclaimAggregator):
    """The reclaim aggregator; each wakeup and each stall it counted also
    goes to the exporter (its declared handler table, so both the hot path
    and ``feed`` see them)."""

    def __init__(self, window: Window, exporter: Exporter) -> None:
        self._exporter = exporter
        super().__init__(window)

    def handlers(self) -> Dict[int, Any]:
        h = dict(super().handlers())
        direct, wakeup = h[EV_DIRECT_RECLAIM], h[EV_WAKEUP_KSWAPD]
        exp = self._exporter

        def direct_reclaim(ev: Any) -> None:
            skipped = self.stalls_before_window
            direct(ev)
            if self.stalls_before_window == skipped:  # counted: not begun before the window
                exp.direct_reclaim(ev)

        def wakeup_kswapd(ev: Any) -> None:
            wakeup(ev)
            exp.wakeup_kswapd(ev)

        h[EV_DIRECT_RECLAIM] = direct_reclaim
        h[EV_WAKEUP_KSWAPD] = wakeup_kswapd
        return h


class ObservedReclaimTracer(ReclaimTracer):
    """The reclaim tracer, whose aggregator also hands its stalls to ``exporter``."""

    def __init__(self, exporter: Exporter) -> None:
        super().__init__()
        self.exporter = exporter

    def aggregator(self, window: Window) -> ReclaimAggregator:
        return _ObservedReclaimAggregator(window, self.exporter)
