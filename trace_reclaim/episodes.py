"""Group reclaim events into episodes: one node's stretch of memory pressure.

An episode is either

* ``kswapd``: from ``mm_vmscan_kswapd_wake`` on a node until that node's
  kswapd goes back to sleep (``mm_vmscan_kswapd_sleep``).  kswapd may run
  balance_pgdat() several times in between (each is a ``kswapd_wake`` and a
  ``pageoutrun``): those are re-wakes inside one episode, because
  kswapd_try_to_sleep() only emits ``kswapd_sleep`` when kswapd really
  sleeps.  These are the awake spans of ``trace_reclaim.kswapd``, the
  state machine the reclaim tracer's per-node counts come from too; or
* ``direct``: a burst of direct-reclaim stalls while the node's kswapd
  sleeps.  Stalls belong to one burst while each starts within
  ``BURST_GAP_NS`` (100 ms) of the previous one's end.  100 ms is HZ/10,
  the longest reclaim_throttle() sleep (VMSCAN_THROTTLE_WRITEBACK) and the
  scale of the allocator's own retry loop: stalls closer together than that
  are one allocation spike retrying, a longer quiet gap means the allocator
  got its pages and the pressure went away.

Every direct-reclaim stall lands in exactly one episode: the kswapd
episode open on its node when it ended, or the kswapd episode it overlapped
(it began before kswapd slept), or else a direct burst.  The stall's node
is the node of the ``mm_vmscan_wakeup_kswapd`` the same thread issued last
(the allocator's slow path wakes kswapd before it reclaims directly); with
one node that is node 0.

Other events (compaction, the allocator's retry decisions, OOM kills, and
the slab and vmalloc tracers' events) attach to the episode open on their
node at their time.  This module knows the reclaim and OOM events itself;
what any other tracer's event adds (an :class:`EpisodeFact`) comes from that
tracer's declared hook, ``Aggregator.episode_fact`` in trace_reclaim.tracer,
passed in as ``facts`` by record type, so tracers plug in without this
module knowing their classes.

Pure: events and snapshots in, JSON-able episodes out.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from trace_reclaim.kswapd import AwakeSpan, Kswapd
from trace_reclaim.mmenums import COMPACT_STATUS

__all__ = [
    "BURST_GAP_NS", "MAX_EPISODES", "EpisodeFact", "EpisodeBuilder", "zone_state",
]

BURST_GAP_NS = 100_000_000
MAX_EPISODES = 2_000      # kept in memory; later ones are counted, not kept
# Episodes the report details; the rest are counted in the summary.  The
# ones kept are those with OOM kills, then the most direct-reclaim time.
MAX_REPORTED = 500
MAX_TASKS = 64            # per episode; later tasks fold into one row
TOP = 5

# Event type numbers (bpf/events.h); the builder only needs the numbers.
EV_WAKEUP_KSWAPD = 1
EV_KSWAPD_WAKE = 2
EV_KSWAPD_SLEEP = 3
EV_DIRECT_RECLAIM = 4
EV_MARK_VICTIM = 48
EV_COMPACTION = 49
EV_RECLAIM_RETRY_ZONE = 50
EV_COMPACT_RETRY = 51

TASKSTATS_FIELDS = ("freepages_count", "freepages_delay_total",
                    "thrashing_count", "thrashing_delay_total",
                    "compact_count", "compact_delay_total",
                    "swapin_count", "swapin_delay_total")


class EpisodeFact(NamedTuple):
    """What an event contributes to an episode.

    ``kind`` is "shrinker" (values: calls, scanned, freed, time_ns) or
    "vmalloc" (values: count, bytes, failed, huge_attempts); ``name`` keys
    the row (shrinker function, vmalloc record kind); ``nid`` is the NUMA
    node when the event knows it.
    """

    kind: str
    name: str
    nid: Optional[int]
    values: Dict[str, int]


def zone_state(z: Dict[str, Any]) -> str:
    """Where free pages stand against the zone's watermarks."""
    free = z.get("free", 0)
    if free < z.get("min", 0):
        return "below_min"
    if free < z.get("low", 0):
        return "below_low"
    if free < z.get("high", 0):
        return "below_high"
    return "ok"


class _Task:
    __slots__ = ("tid", "tgid", "comm", "stalls", "total_ns", "max_ns", "pages")

    def __init__(self, tid: int, tgid: int, comm: str) -> None:
        self.tid = tid
        self.tgid = tgid
        self.comm = comm
        self.stalls = 0
        self.total_ns = 0
        self.max_ns = 0
        self.pages = 0


@dataclass
class _Episode:
    id: int
    node: int
    kind: str
    start_ns: int
    end_ns: int = 0
    last_ns: int = 0            # last stall end (bursts) / last event
    began_before_trace: bool = False
    open: bool = True
    span: Optional[AwakeSpan] = None  # kswapd's awake span (kswapd episodes)
    wakeup_requests: int = 0
    stalls: int = 0
    stall_ns: int = 0
    stall_max_ns: int = 0
    pages: int = 0
    stalls_kswapd_awake: int = 0
    tasks: Dict[int, _Task] = field(default_factory=dict)
    longest: List[Tuple[int, int, int, str, int, int]] = field(default_factory=list)
    shrinkers: Dict[str, List[int]] = field(default_factory=dict)
    vmalloc: Dict[str, List[int]] = field(default_factory=dict)
    compaction_runs: int = 0
    compaction_direct: int = 0
    compaction_ns: int = 0
    compaction_status: Dict[int, int] = field(default_factory=dict)
    reclaim_retries: int = 0
    reclaim_retry_max_loops: int = 0
    compact_retries: int = 0
    compact_retry_gave_up: int = 0
    victims: List[Dict[str, Any]] = field(default_factory=list)
    sequence: Dict[str, int] = field(default_factory=dict)

    def mark(self, phase: str, ts: int) -> None:
        if phase not in self.sequence:
            self.sequence[phase] = ts

    @property
    def kswapd_wakes(self) -> int:
        return self.span.wakes if self.span is not None else 0

    @property
    def kswapd_re_wakes(self) -> int:
        return self.span.re_wakes if self.span is not None else 0

    @property
    def max_order(self) -> int:
        return self.span.max_order if self.span is not None else 0


class EpisodeBuilder:
    """Feed every BPF event (in time order) and every snapshot; ``report()``."""

    def __init__(self, window: Any,
                 facts: Optional[Mapping[int, Callable[[Any], Optional[EpisodeFact]]]] = None,
                 burst_gap_ns: int = BURST_GAP_NS,
                 symbolize: Optional[Callable[[int], Optional[str]]] = None) -> None:
        self.window = window
        # What another tracer's event adds, by record type (its aggregator's
        # episode_fact); types in neither this nor _dispatch count as "other".
        self.facts = dict(facts or {})
        # Names shrinker callbacks known only by address when their events
        # arrived (the slab tracer symbolizes them in later samples).
        self.symbolize = symbolize
        self.gap = burst_gap_ns
        self.episodes: List[_Episode] = []
        self.dropped = 0
        self.dropped_stalls = 0
        # kswapd's state per node; its awake spans are the kswapd episodes.
        self.kswapd = Kswapd(window)
        self.kswapd_open: Dict[int, _Episode] = {}  # the episode of each open span
        self.kswapd_last: Dict[int, _Episode] = {}
        self.burst_open: Dict[int, _Episode] = {}
        self.tid_node: Dict[int, int] = {}
        self.stalls_before_window = 0
        self.outside: Dict[str, int] = {"shrinker_calls": 0, "vmalloc_events": 0,
                                        "compaction_runs": 0, "other": 0}
        self.zoneinfo: List[Tuple[int, str, List[Dict[str, Any]]]] = []
        self.psi_ts: List[int] = []
        self.psi: List[Tuple[float, float, float, float]] = []
        self.taskstats: Dict[int, List[Tuple[int, Dict[str, Any]]]] = {}
        self.delayacct: Optional[bool] = None
        self._next_id = 0
        self._dispatch: Dict[int, Callable[[Any], None]] = {
            EV_WAKEUP_KSWAPD: self._wakeup_kswapd,
            EV_KSWAPD_WAKE: self._kswapd_wake,
            EV_KSWAPD_SLEEP: self._kswapd_sleep,
            EV_DIRECT_RECLAIM: self._direct_reclaim,
            EV_COMPACTION: self._compaction,
            EV_RECLAIM_RETRY_ZONE: self._reclaim_retry_zone,
            EV_COMPACT_RETRY: self._compact_retry,
            EV_MARK_VICTIM: self._mark_victim,
        }

    # -- episodes ----------------------------------------------------------
    def _new(self, node: int, kind: str, start_ns: int) -> Optional[_Episode]:
        ep = _Episode(self._next_id, node, kind, start_ns, last_ns=start_ns)
        self._next_id += 1
        if len(self.episodes) >= MAX_EPISODES:
            self.dropped += 1
        else:
            self.episodes.append(ep)
        return ep

    def _close_burst(self, node: int) -> None:
        b = self.burst_open.pop(node, None)
        if b is not None:
            b.end_ns = b.last_ns
            b.open = False

    def _default_node(self) -> int:
        nodes = self.kswapd.nodes
        return min(nodes) if nodes else 0

    # -- BPF events --------------------------------------------------------
    def handler(self, type_id: int) -> Callable[[Any], None]:
        """The function ``feed`` calls for events of ``type_id`` (for callers that cache it)."""
        h = self._dispatch.get(type_id)
        if h is not None:
            return h
        fact_of = self.facts.get(type_id)
        if fact_of is None:
            return self._other
        return lambda ev: self._fact_or_other(ev, fact_of(ev))

    def feed(self, ev: Any) -> None:
        h = self._dispatch.get(ev.type)
        if h is not None:
            h(ev)
            return
        fact_of = self.facts.get(ev.type)
        self._fact_or_other(ev, None if fact_of is None else fact_of(ev))

    def _other(self, ev: Any) -> None:
        self.outside["other"] += 1

    def _fact_or_other(self, ev: Any, fact: Optional[EpisodeFact]) -> None:
        if fact is None:
            self.outside["other"] += 1
        else:
            self._fact(ev, fact)

    def _wakeup_kswapd(self, ev: Any) -> None:
        nid = ev.nid
        if nid not in self.kswapd.nodes:
            nid = self.kswapd.node(nid).nid
        if len(self.tid_node) > 8192:
            self.tid_node.clear()
        self.tid_node[ev.pid] = nid
        ep = self.kswapd_open.get(nid)
        if ep is None:
            ep = self.burst_open.get(nid)
        if ep is not None:
            ep.wakeup_requests += 1
            ep.mark("wakeup_kswapd", ev.ts_ns)

    def _kswapd_wake(self, ev: Any) -> None:
        k, opened = self.kswapd.wake(ev.nid, ev.ts_ns, ev.order)
        nid = k.nid
        if opened:
            self._close_burst(nid)
            ep = self._new(nid, "kswapd", ev.ts_ns)
            assert ep is not None
            ep.span = k.span
            self.kswapd_open[nid] = ep
        else:
            ep = self.kswapd_open[nid]
        ep.mark("kswapd_wake", ev.ts_ns)

    def _kswapd_sleep(self, ev: Any) -> None:
        ep: Optional[_Episode]
        span = self.kswapd.sleep(ev.nid, ev.ts_ns)
        if span is None:
            return  # a second sleep without a wake: nothing to close
        nid = span.nid
        if span.began_before_trace:
            # kswapd was awake when the trace began: the episode started
            # before us.  A direct burst opened meanwhile was really inside it.
            ep = self.burst_open.pop(nid, None)
            if ep is not None:
                ep.kind = "kswapd"
                ep.stalls_kswapd_awake = ep.stalls
            else:
                ep = self._new(nid, "kswapd", span.start_ns)
                assert ep is not None
            ep.start_ns = span.start_ns
            ep.began_before_trace = True
            ep.span = span
        else:
            ep = self.kswapd_open.pop(nid)
        assert span.end_ns is not None
        ep.end_ns = span.end_ns
        ep.open = False
        ep.mark("kswapd_sleep", ev.ts_ns)
        self.kswapd_last[nid] = ep

    def _direct_reclaim(self, ev: Any) -> None:
        start = ev.ts_ns - ev.delta_ns
        if start < self.window.start_ns:
            self.stalls_before_window += 1
            return
        nid = self.tid_node.get(ev.pid)
        if nid is None:
            nid = self._default_node()
        ep = self.kswapd_open.get(nid)
        awake = True
        if ep is None:
            last = self.kswapd_last.get(nid)
            if last is not None and start < last.end_ns:
                ep = last  # it began while kswapd was still awake
            else:
                awake = False
                ep = self.burst_open.get(nid)
                if ep is not None and start - ep.last_ns > self.gap:
                    self._close_burst(nid)
                    ep = None
                if ep is None:
                    ep = self._new(nid, "direct", start)
                    assert ep is not None
                    self.burst_open[nid] = ep
                if ev.ts_ns > ep.last_ns:
                    ep.last_ns = ev.ts_ns
        if ep.id >= MAX_EPISODES:
            self.dropped_stalls += 1
        d = ev.delta_ns
        ep.stalls += 1
        ep.stall_ns += d
        ep.pages += ev.nr_reclaimed_pages
        if d > ep.stall_max_ns:
            ep.stall_max_ns = d
        if awake:
            ep.stalls_kswapd_awake += 1
        ep.mark("direct_reclaim", start)
        task = ep.tasks.get(ev.pid)
        if task is None:
            key = ev.pid if len(ep.tasks) < MAX_TASKS else -1
            task = ep.tasks.get(key)
            if task is None:
                task = ep.tasks[key] = _Task(key, ev.tgid if key >= 0 else -1,
                                             ev.comm if key >= 0 else "[other tasks]")
        task.stalls += 1
        task.total_ns += d
        task.pages += ev.nr_reclaimed_pages
        if d > task.max_ns:
            task.max_ns = d
        lg = ep.longest  # (-delta, start, ...): ascending is longest first
        if len(lg) < TOP or -d < lg[-1][0]:
            bisect.insort(lg, (-d, start, ev.pid, ev.comm, ev.nr_reclaimed_pages, ev.order))
            del lg[TOP:]

    def _target(self, nid: Optional[int], ts: int, tid: int) -> Optional[_Episode]:
        if nid is None or nid < 0:
            nid = self.tid_node.get(tid)
            if nid is None:
                nid = self._default_node()
        ep = self.kswapd_open.get(nid)
        if ep is not None:
            return ep
        b = self.burst_open.get(nid)
        if b is not None and ts <= b.last_ns + self.gap:
            return b
        return None

    def _compaction(self, ev: Any) -> None:
        ep = self._target(None, ev.ts_ns, ev.pid)
        if ep is None:
            self.outside["compaction_runs"] += 1
            return
        ep.compaction_runs += 1
        ep.compaction_ns += ev.delta_ns
        if not ev.comm.startswith("kcompactd"):
            ep.compaction_direct += 1
            ep.mark("direct_compaction", ev.ts_ns - ev.delta_ns)
        ep.compaction_status[ev.status] = ep.compaction_status.get(ev.status, 0) + 1

    def _reclaim_retry_zone(self, ev: Any) -> None:
        ep = self._target(ev.nid, ev.ts_ns, ev.pid)
        if ep is None:
            self.outside["other"] += 1
            return
        ep.reclaim_retries += 1
        ep.reclaim_retry_max_loops = max(ep.reclaim_retry_max_loops, ev.no_progress_loops)
        ep.mark("should_reclaim_retry", ev.ts_ns)

    def _compact_retry(self, ev: Any) -> None:
        ep = self._target(None, ev.ts_ns, ev.pid)
        if ep is None:
            self.outside["other"] += 1
            return
        ep.compact_retries += 1
        if not ev.retry:
            ep.compact_retry_gave_up += 1
        ep.mark("should_compact_retry", ev.ts_ns)

    def _mark_victim(self, ev: Any) -> None:
        ep = self._target(None, ev.ts_ns, ev.pid)
        if ep is None:
            # The OOM kill ends the episode that led to it: the last one.
            ep = self.episodes[-1] if self.episodes else None
        if ep is None:
            ep = self._new(self._default_node(), "direct", ev.ts_ns)
            assert ep is not None
            ep.end_ns = ev.ts_ns
            ep.open = False
        ep.victims.append(ev.as_json())
        ep.mark("oom_kill", ev.ts_ns)

    def _fact(self, ev: Any, fact: EpisodeFact) -> None:
        ep = self._target(fact.nid, ev.ts_ns, ev.pid)
        if ep is None:
            key = "shrinker_calls" if fact.kind == "shrinker" else \
                "vmalloc_events" if fact.kind == "vmalloc" else "other"
            self.outside[key] += 1
            return
        table = ep.shrinkers if fact.kind == "shrinker" else ep.vmalloc
        row = table.get(fact.name)
        vals = fact.values
        if row is None:
            if len(table) >= 256:
                return
            row = table[fact.name] = [0] * 4
        if fact.kind == "shrinker":
            row[0] += vals.get("calls", 1)
            row[1] += vals.get("scanned", 0)
            row[2] += vals.get("freed", 0)
            row[3] += vals.get("time_ns", 0)
            ep.mark("shrink_slab", ev.ts_ns)
        else:
            row[0] += vals.get("count", 1)
            row[1] += vals.get("bytes", 0)
            row[2] += vals.get("failed", 0)
            row[3] += vals.get("huge_attempts", 0)
            ep.mark("vmalloc", ev.ts_ns)

    # -- snapshots ---------------------------------------------------------
    def on_snapshot(self, snap: Any) -> None:
        what = snap.what
        if what == "zoneinfo":
            if isinstance(snap.data, list) and len(self.zoneinfo) < 100_000:
                self.zoneinfo.append((snap.ts_ns, snap.when, snap.data))
        elif what == "psi":
            d = snap.data if isinstance(snap.data, dict) else {}
            some, full = d.get("some") or {}, d.get("full") or {}
            if self.psi_ts and snap.ts_ns < self.psi_ts[-1]:
                return
            self.psi_ts.append(snap.ts_ns)
            self.psi.append((float(some.get("total", 0)), float(full.get("total", 0)),
                             float(some.get("avg10", 0.0)), float(full.get("avg10", 0.0))))
        elif what == "taskstats":
            d = snap.data if isinstance(snap.data, dict) else {}
            if "enabled" in d:
                self.delayacct = bool(d["enabled"])
            for t in d.get("tasks", []) or []:
                try:
                    tid = int(t["tid"])
                except (KeyError, TypeError, ValueError):
                    continue
                readings = self.taskstats.setdefault(tid, [])
                if len(readings) < 4096:
                    readings.append((snap.ts_ns, t))

    def close(self, end_ns: int) -> None:
        """The window closed: episodes still open end here."""
        for span in self.kswapd.close(end_ns):
            ep = self.kswapd_open.pop(span.nid)
            assert span.end_ns is not None
            ep.end_ns = span.end_ns
        for nid in list(self.burst_open):
            self._close_burst(nid)

    # -- output ------------------------------------------------------------
    def _watermarks(self, ep: _Episode, end: int) -> Optional[Dict[str, Any]]:
        """The zones of the episode's node at its start.

        A snapshot taken inside the episode (the first tick after kswapd
        woke) is preferred, since this kernel grows a lazily initialised
        zone's ``managed`` when memory is first needed; else the last one
        before the episode.
        """
        before = None
        chosen = None
        for ts, when, zones in self.zoneinfo:
            if ts <= ep.start_ns:
                before = (ts, when, zones)
            elif ts <= end:
                chosen = (ts, when, zones)
                break
            else:
                break
        pick = chosen or before
        if pick is None:
            return None
        ts, when, zones = pick
        rows = []
        for z in zones:
            if z.get("node") != ep.node:
                continue
            rows.append({"zone": z.get("zone"), "free": z.get("free"), "min": z.get("min"),
                         "low": z.get("low"), "high": z.get("high"),
                         "boost": z.get("boost", 0), "managed": z.get("managed"),
                         "state": zone_state(z)})
        return {"ts_ns": ts, "when": when, "inside_episode": chosen is not None,
                "zones": rows}

    def _psi(self, start: int, end: int) -> Optional[Dict[str, Any]]:
        """PSI memory stall time between the snapshots bracketing the episode.

        /proc/pressure/memory's totals are cumulative microseconds; ticks are
        an interval apart, so the bracket is at least as long as the episode.
        """
        ts = self.psi_ts
        if len(ts) < 2:
            return None
        i = bisect.bisect_right(ts, start) - 1
        j = bisect.bisect_left(ts, end)
        if i < 0 or j >= len(ts) or j <= i:
            return None
        a, b = self.psi[i], self.psi[j]
        inside = self.psi[i:j + 1]
        return {"some_us": int(b[0] - a[0]), "full_us": int(b[1] - a[1]),
                "bracket_ns": ts[j] - ts[i],
                "some_avg10_max": max(p[2] for p in inside),
                "full_avg10_max": max(p[3] for p in inside)}

    def _delays(self, tid: int, after: int) -> Optional[Dict[str, Any]]:
        readings = self.taskstats.get(tid)
        if not readings:
            return None
        pick = None
        for ts, t in readings:
            if ts >= after:
                pick = t
                break
        if pick is None:
            pick = readings[-1][1]
        return {k: pick.get(k) for k in TASKSTATS_FIELDS if k in pick}

    def _shrinker_name(self, key: str) -> str:
        if self.symbolize is not None and key.startswith("0x"):
            try:
                return self.symbolize(int(key, 16)) or key
            except ValueError:
                return key
        return key

    def _reported(self) -> List[_Episode]:
        eps = self.episodes
        if len(eps) <= MAX_REPORTED:
            return eps
        keep = sorted(eps, key=lambda e: (-len(e.victims), -e.stall_ns, -e.kswapd_wakes,
                                          e.id))[:MAX_REPORTED]
        return sorted(keep, key=lambda e: e.id)

    def report(self) -> List[Dict[str, Any]]:
        out = []
        w_end = self.window.end_ns
        for ep in self._reported():
            end = ep.end_ns or (ep.last_ns if ep.kind == "direct" else w_end) or ep.last_ns
            open_at_end = ep.open and ep.kind == "kswapd"
            tasks = sorted(ep.tasks.values(), key=lambda t: (-t.total_ns, t.tid))
            stalls = []
            for t in tasks[:10]:
                row: Dict[str, Any] = {
                    "tid": t.tid, "pid": t.tgid, "comm": t.comm, "stalls": t.stalls,
                    "total_ns": t.total_ns, "max_ns": t.max_ns, "pages_reclaimed": t.pages}
                if self.taskstats:
                    row["delays"] = self._delays(t.tid, end)
                stalls.append(row)
            shr: List[Dict[str, Any]] = [
                {"name": self._shrinker_name(k), "calls": v[0], "scanned": v[1],
                 "freed": v[2], "time_ns": v[3]} for k, v in ep.shrinkers.items()]
            seq = sorted(ep.sequence.items(), key=lambda kv: (kv[1], kv[0]))
            doc: Dict[str, Any] = {
                "id": ep.id, "node": ep.node, "kind": ep.kind,
                "start_ns": ep.start_ns, "end_ns": end,
                "duration_ns": max(0, end - ep.start_ns),
                "began_before_trace": ep.began_before_trace, "open_at_end": open_at_end,
                "kswapd_wakes": ep.kswapd_wakes,
                "kswapd_re_wakes": ep.kswapd_re_wakes,
                "wakeup_requests": ep.wakeup_requests, "max_order": ep.max_order,
                "direct_reclaim_stalls": ep.stalls, "direct_reclaim_ns": ep.stall_ns,
                "direct_reclaim_max_ns": ep.stall_max_ns,
                "stalls_while_kswapd_awake": ep.stalls_kswapd_awake,
                "pages_reclaimed": ep.pages,
                "stalls": stalls,
                "longest_stalls": [{"tid": x[2], "comm": x[3], "start_ns": x[1],
                                    "delta_ns": -x[0], "pages_reclaimed": x[4],
                                    "order": x[5]} for x in ep.longest],
                "shrinkers": {
                    "calls": sum(s["calls"] for s in shr),
                    "scanned": sum(s["scanned"] for s in shr),
                    "freed": sum(s["freed"] for s in shr),
                    "time_ns": sum(s["time_ns"] for s in shr),
                    "top_by_time": sorted(shr, key=lambda s: (-s["time_ns"], s["name"]))[:TOP],
                    "top_by_freed": sorted(shr, key=lambda s: (-s["freed"], s["name"]))[:TOP],
                },
                "vmalloc": {k: {"count": v[0], "bytes": v[1], "failed": v[2],
                                "huge_attempts": v[3]} for k, v in sorted(ep.vmalloc.items())},
                "compaction": {
                    "runs": ep.compaction_runs, "direct_runs": ep.compaction_direct,
                    "total_ns": ep.compaction_ns,
                    "status": {COMPACT_STATUS.get(k, str(k)): v
                               for k, v in sorted(ep.compaction_status.items())}},
                "reclaim_retry_zone": ep.reclaim_retries,
                "reclaim_retry_max_no_progress_loops": ep.reclaim_retry_max_loops,
                "compact_retry": ep.compact_retries,
                "compact_retry_gave_up": ep.compact_retry_gave_up,
                "oom_kills": ep.victims,
                "sequence": [[k, v - ep.start_ns] for k, v in seq],
                "watermarks": self._watermarks(ep, end),
                "psi": self._psi(ep.start_ns, end),
            }
            out.append(doc)
        return out

    def summary(self, episodes: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Counts over every episode, including those the report leaves out."""
        eps = self.episodes
        return {
            "count": len(eps) + self.dropped,
            "kswapd": sum(1 for e in eps if e.kind == "kswapd"),
            "direct": sum(1 for e in eps if e.kind == "direct"),
            "reported": len(episodes),
            "dropped": self.dropped,
            "dropped_stalls": self.dropped_stalls,
            "burst_gap_ns": self.gap,
            "direct_reclaim_stalls": sum(e.stalls for e in eps),
            "stalls_while_kswapd_awake": sum(e.stalls_kswapd_awake for e in eps),
            "kswapd_wakes": sum(e.kswapd_wakes for e in eps),
            "stalls_begun_before_window": self.stalls_before_window,
            "outside_episodes": dict(self.outside),
            "delayacct": self.delayacct,
        }

    def live(self, n: int = 5) -> Dict[str, Any]:
        """A small view of the latest episodes for the live display."""
        recent = []
        for ep in self.episodes[-n:]:
            recent.append({"id": ep.id, "node": ep.node, "kind": ep.kind,
                           "start_ns": ep.start_ns, "end_ns": ep.end_ns,
                           "open": ep.open and (ep.kind == "kswapd" or
                                                ep.node in self.burst_open),
                           "kswapd_wakes": ep.kswapd_wakes, "stalls": ep.stalls,
                           "stall_ns": ep.stall_ns, "pages": ep.pages,
                           "compaction_runs": ep.compaction_runs,
                           "oom_kills": len(ep.victims)})
        return {"count": self._next_id, "recent": recent,
                "kswapd_awake": self.kswapd.awake()}
