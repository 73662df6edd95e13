"""Turn a time-ordered stream of typed events into the report document.

Pure: no I/O, no clock, no knowledge of whether the events are live or
replayed.  The live session and ``report FILE`` both build a Correlator from
the recording header and feed it the same records in the same order, so
they produce the same report byte for byte.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from trace_reclaim import events, native
from trace_reclaim.events import _DECODERS
from trace_reclaim.episodes import EpisodeBuilder
from trace_reclaim.findings import findings
from trace_reclaim.procfs import VMSTAT_KEYS
from trace_reclaim.recording import LONG_LENGTH, RECORD_HEAD
from trace_reclaim.tracer import Aggregator, Tracer, Window

__all__ = ["Correlator", "MAX_INTERVAL_ROWS"]

# A type's hot path: its decoder, its aggregator's handler, the episode
# builder's, and the timestamp its tracer's records count from.
Feed = Callable[[Any], None]
HotPath = Tuple[Callable[[bytes], Any], Feed, Feed, int]
# The same with the type's decoders of a record in place, by record size
# (typed, so that compiled the tuple unpacks natively).
InPlace = Tuple[Dict[int, Callable[[bytes, int], Any]], Callable[[bytes], Any], Feed, Feed, int]

# Interval rows kept for the report (the live view prints them as they come).
MAX_INTERVAL_ROWS = 3600
# /proc/meminfo fields the report keeps per snapshot (kB; HugePages_* counts).
MEMINFO_KEYS = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached",
                "Active(file)", "Inactive(file)", "AnonPages", "Shmem", "SReclaimable",
                "SUnreclaim", "SwapTotal", "SwapFree", "Hugetlb", "HugePages_Total")
MAX_MEMINFO_SNAPSHOTS = 64


def _ignore(ev: Any) -> None:
    return None


def _chain(first: Any, then: Tuple[Any, ...]) -> Any:
    """Call ``first(ev)``, then each observer (one closure: the hot path)."""
    if len(then) == 1:
        (only,) = then

        def feed_one(ev: Any) -> None:
            first(ev)
            only(ev)
        return feed_one

    def feed_all(ev: Any) -> None:
        first(ev)
        for fn in then:
            fn(ev)
    return feed_all


class Correlator:
    """Dispatch events to each tracer's aggregator and assemble the report."""

    def __init__(self, header: Dict[str, Any], tracers: Iterable[Tracer],
                 history: bool = True) -> None:
        self.header = header
        # history=False keeps no interval rows and builds no episodes (their
        # per-tick series grow with the run): for ``serve``, which runs for
        # weeks and reads the aggregators, never the report.
        self.history = history
        self.window = Window(header=header)
        self.aggs: Dict[str, Aggregator] = {}
        self._by_type: Dict[int, Aggregator] = {}
        for t in tracers:
            agg = t.aggregator(self.window)
            self.aggs[t.name] = agg
            for ty in t.event_types:
                self._by_type[ty] = agg
        # Aggregators whose handlers hold records for ``flush`` to count.
        self._flushes = [a.flush for a in self.aggs.values()
                         if type(a).flush is not Aggregator.flush]
        # Aggregators that also see other tracers' records (Aggregator.observes).
        self._observers: Dict[int, List[Any]] = {}
        for agg in self.aggs.values():
            for ty, fn in agg.observes().items():
                self._observers.setdefault(ty, []).append(fn)
        self.snapshots: Dict[str, Dict[str, Any]] = {}  # what -> when -> data
        self.zone_snapshots: List[Dict[str, Any]] = []
        self.meminfo_snapshots: List[Dict[str, Any]] = []
        # Every BPF event also goes to the episode builder; what another
        # tracer's event adds (shrinker and vmalloc rows) its aggregator says,
        # and names the shrinker callbacks it symbolized.
        self.episodes = EpisodeBuilder(
            self.window, facts={ty: agg.episode_fact for ty, agg in self._by_type.items()},
            symbolize=self._symbolize, cgroup_name=self._cgroup_name)
        self._ep_feed = self.episodes.feed if history else _ignore
        self._hot: Dict[int, HotPath] = {}
        # by type number (below events.USER_BASE): compiled, indexing a list
        # is cheaper than a dict lookup at every record
        self._hot_in_place: List[Optional[InPlace]] = []
        # Types of no loaded tracer or without a decoder: the general path.
        self._cold: Set[int] = set()
        self.lost: Dict[int, int] = {}
        self.rows: List[Dict[str, Any]] = []
        self.rows_dropped = 0
        self.unknown_types: Dict[int, int] = {}
        self.decode_errors = 0
        self.events = 0
        self.after_window = 0
        self.before_window = 0
        self.ended: Optional[str] = None
        self._last_tick_ns = 0
        self._lost_at_tick: Dict[int, int] = {}
        # When the tracers' programs were attached, for a recording whose
        # BPF objects attached one after another ("attach" snapshots).
        self.attach: Optional[Dict[str, Any]] = None

    # -- input -------------------------------------------------------------
    def feed_record(self, type_id: int, payload: bytes) -> Optional[Dict[str, Any]]:
        """Decode and feed one record; return an interval row at a tick."""
        if type_id < events.USER_BASE:
            self.feed_records(((type_id, payload),))
            return None
        return self._decode_and_feed(type_id, payload)

    def _decode_and_feed(self, type_id: int, payload: bytes) -> Optional[Dict[str, Any]]:
        """The general path: user records, and types without a hot path."""
        try:
            ev = events.decode(type_id, payload)
        except events.DecodeError:
            self.decode_errors += 1
            return None
        if ev is None:
            self.unknown_types[type_id] = self.unknown_types.get(type_id, 0) + 1
            return None
        return self.feed(ev)

    def _hot_path(self, type_id: int) -> Optional[HotPath]:
        agg = self._by_type.get(type_id)
        dec = _DECODERS.get(type_id)
        if agg is None or dec is None:
            return None
        agg_feed = agg.handlers().get(type_id, agg.feed)
        observers = self._observers.get(type_id)
        if observers:
            agg_feed = _chain(agg_feed, tuple(observers))
        return (dec, agg_feed, self.episodes.handler(type_id) if self.history else _ignore,
                self.window.type_start.get(type_id, 0))

    def feed_records(self, records: Iterable[Tuple[int, bytes]]) -> None:
        """Feed each record: BPF records of a loaded tracer take the hot path
        (decode and dispatch in one go; same checks, same order as ``feed``).

        The window's bounds are held in locals: only a user record (through
        ``_decode_and_feed``) moves them, so they are read again after one.
        """
        hot_of = self._hot
        w = self.window
        start_ns, end_ns = w.start_ns, w.end_ns
        user_base = events.USER_BASE
        counted = 0
        try:
            for type_id, payload in records:
                hot = hot_of.get(type_id)
                if hot is None:
                    if type_id >= user_base:
                        self.events += counted
                        counted = 0
                        self._decode_and_feed(type_id, payload)
                        start_ns, end_ns = w.start_ns, w.end_ns
                        continue
                    path = None if type_id in self._cold else self._hot_path(type_id)
                    if path is None:  # decodes and counts as unknown or not-this-session
                        self._cold.add(type_id)
                        self._decode_and_feed(type_id, payload)
                        continue
                    hot = hot_of[type_id] = path
                dec, agg_feed, ep_feed, own_start = hot
                try:
                    ev = dec(payload)
                except events.DecodeError:
                    self.decode_errors += 1
                    continue
                ts = ev.ts_ns
                if ts < start_ns or ts < own_start:
                    if end_ns and ts > end_ns:
                        self.after_window += 1
                    else:
                        self.before_window += 1
                elif end_ns and ts > end_ns:
                    self.after_window += 1
                    self._by_type[type_id].after_window(ev)
                else:
                    counted += 1
                    agg_feed(ev)
                    ep_feed(ev)
        finally:
            self.events += counted
            self._flush()

    def _flush(self) -> None:
        for flush in self._flushes:
            flush()

    def feed_block(self, payload: bytes) -> None:
        """Feed every record of one block of a recording (``Reader.payloads``).

        What ``feed_records`` does with the block's records, in the same
        order with the same checks, but a hot path's record of a size its
        decoder takes in place (``by_size``) is decoded where it lies in the
        block, without a copy of it or a tuple for it.  The framing is
        recording.py's: ``u16 type, u16 len`` (``0xffff``: a u32 length
        follows), then the payload; ``payload`` must have been checked
        to frame its records exactly.
        """
        hot_of = self._hot_in_place
        cold = self._cold
        w = self.window
        start_ns, end_ns = w.start_ns, w.end_ns
        user_base = events.USER_BASE
        head = RECORD_HEAD.unpack_from
        long_length = LONG_LENGTH.unpack_from
        by_bytes = native.compiled()
        # compiled, the episode builder is called natively (its feed), not
        # through the handler in the hot tuple
        episodes = self.episodes
        ep_native = by_bytes and self.history
        if by_bytes:
            # imported here: it imports the tracer modules whose records it decodes
            from trace_reclaim import _decoders
        off = 0
        end = len(payload)
        counted = 0
        ev: events.Event
        try:
            while off < end:
                if by_bytes:  # compiled, reading the bytes is native: no call, no tuple
                    type_id = payload[off] | (payload[off + 1] << 8)
                    n = payload[off + 2] | (payload[off + 3] << 8)
                else:
                    type_id, n = head(payload, off)
                off += 4
                if n == 0xFFFF:
                    n = long_length(payload, off)[0]
                    off += 4
                at = off
                off += n
                hot = hot_of[type_id] if type_id < len(hot_of) else None
                if hot is None:
                    if type_id >= user_base:
                        self.events += counted
                        counted = 0
                        self._decode_and_feed(type_id, payload[at:off])
                        start_ns, end_ns = w.start_ns, w.end_ns
                        continue
                    path = None if type_id in cold else self._hot_path(type_id)
                    if path is None:  # decodes and counts as unknown or not-this-session
                        cold.add(type_id)
                        self._decode_and_feed(type_id, payload[at:off])
                        continue
                    # with the in-place decoders, by record size
                    hot = (events.in_place_decoders(path[0]), *path)
                    if type_id >= len(hot_of):
                        hot_of.extend([None] * (type_id + 1 - len(hot_of)))
                    hot_of[type_id] = hot
                by_size, dec, agg_feed, ep_feed, own_start = hot
                try:
                    # compiled: the generated decoder of this type and size, called natively
                    found = _decoders.decode(type_id, n, payload, at) if by_bytes else None
                    if found is not None:
                        ev = found
                    else:
                        decode_at = by_size.get(n)
                        ev = dec(payload[at:off]) if decode_at is None \
                            else decode_at(payload, at)
                except events.DecodeError:
                    self.decode_errors += 1
                    continue
                ts = ev.ts_ns
                if ts < start_ns or ts < own_start:
                    if end_ns and ts > end_ns:
                        self.after_window += 1
                    else:
                        self.before_window += 1
                elif end_ns and ts > end_ns:
                    self.after_window += 1
                    self._by_type[type_id].after_window(ev)
                else:
                    counted += 1
                    agg_feed(ev)
                    if ep_native:
                        episodes.feed(ev)
                    else:
                        ep_feed(ev)
        finally:
            self.events += counted
            self._flush()

    def feed(self, ev: Any) -> Optional[Dict[str, Any]]:
        agg = self._by_type.get(ev.type) if isinstance(ev, events.Event) else None
        if agg is not None:
            w = self.window
            if w.end_ns and ev.ts_ns > w.end_ns:
                self.after_window += 1
                agg.after_window(ev)
                return None
            if ev.ts_ns < w.start_ns or ev.ts_ns < w.type_start.get(ev.type, 0):
                self.before_window += 1
                return None
            self.events += 1
            agg.feed(ev)
            for fn in self._observers.get(ev.type, ()):
                fn(ev)
            self._ep_feed(ev)
            self._flush()
            return None
        # What the handlers held is counted before anything else reads it.
        self._flush()
        if isinstance(ev, events.Tick):
            return self._tick(ev)
        if isinstance(ev, events.Snapshot):
            self._snapshot(ev)
        elif isinstance(ev, events.Sample):
            a = self.aggs.get(ev.tracer)
            if a is not None:
                a.on_sample(ev)
        elif isinstance(ev, events.End):
            self.window.end_ns = ev.ts_ns
            self.ended = ev.reason
            for a in self.aggs.values():
                a.close(ev.ts_ns)
            if self.history:
                self.episodes.close(ev.ts_ns)
        elif isinstance(ev, events.Event):  # of a tracer this session did not load
            self.unknown_types[ev.type] = self.unknown_types.get(ev.type, 0) + 1
        else:
            raise TypeError(f"not an event: {ev!r}")
        return None

    def _symbolize(self, addr: int) -> Optional[str]:
        for a in self.aggs.values():
            name = a.symbolize(addr)
            if name is not None:
                return name
        return None

    def _cgroup_name(self, key: Tuple[str, int]) -> Optional[str]:
        for a in self.aggs.values():
            name = a.cgroup_name(key)
            if name is not None:
                return name
        return None

    def _attach_snapshot(self, snap: events.Snapshot) -> None:
        """Note when each tracer began; a later one's aggregator counts from then.

        Its aggregator sees the /proc/vmstat reading taken as it attached as
        its "start", so its kernel cross-checks cover the same time as its
        records.
        """
        d = snap.data if isinstance(snap.data, dict) else {}
        names = [n for n in d.get("tracers", []) if isinstance(n, str)]
        # Records of a tracer still attaching, or stamped before its attach
        # (its programs attach one by one as the object loads), are outside
        # its window.
        for ty in self.window.note_attach(snap.when, d, snap.ts_ns):
            self._hot.pop(ty, None)
            if ty < len(self._hot_in_place):
                self._hot_in_place[ty] = None
            self._cold.discard(ty)
        if snap.when == "start":
            self.attach = {"at_start": names, "later": [],
                           "not_attached": [n for n in d.get("pending", [])
                                            if isinstance(n, str)], "error": None}
            return
        if self.attach is None:
            self.attach = {"at_start": [], "later": [], "not_attached": [], "error": None}
        if snap.when == "failed":
            self.attach["error"] = str(d.get("error", ""))
            return
        if snap.when != "attached":
            return
        self.attach["later"].append({"tracers": names, "ts_ns": snap.ts_ns,
                                     "vmstat": d.get("vmstat") or {}})
        self.attach["not_attached"] = [n for n in self.attach["not_attached"]
                                       if n not in names]
        if isinstance(d.get("vmstat"), dict):
            vm = events.Snapshot(snap.ts_ns, "vmstat", "start", d["vmstat"])
            for n in names:
                if n in self.aggs:
                    self.aggs[n].on_snapshot(vm)

    def attach_report(self) -> Optional[Dict[str, Any]]:
        """When each tracer began recording (None: all at the start, in one object)."""
        if self.attach is None:
            return None
        a = self.attach
        end = self.snapshots.get("vmstat", {}).get("end") or {}
        later = []
        for p in a["later"]:
            vm = p["vmstat"]
            later.append({
                "tracers": p["tracers"],
                "after_start_ns": max(0, p["ts_ns"] - self.window.start_ns),
                "vmstat_delta": {k: end[k] - vm[k] for k in VMSTAT_KEYS
                                 if k in vm and k in end} if end else {},
            })
        return {"at_start": a["at_start"], "later": later,
                "not_attached": a["not_attached"], "error": a["error"]}

    def _snapshot(self, snap: events.Snapshot) -> None:
        if snap.what == "attach":
            self._attach_snapshot(snap)
            return
        if snap.what == "vmstat" and snap.when == "start":
            self.window.start_ns = snap.ts_ns
            self._last_tick_ns = snap.ts_ns
        elif snap.what == "vmstat" and snap.when == "end":
            # The counters everything is checked against end here: what the
            # drain after them brings (the End record follows it) is after.
            self.window.end_ns = snap.ts_ns
        if snap.what == "zoneinfo":
            if len(self.zone_snapshots) < 64:
                self.zone_snapshots.append(
                    {"ts_ns": snap.ts_ns, "when": snap.when, "zones": snap.data})
        else:
            self.snapshots.setdefault(snap.what, {})[snap.when] = snap.data
        if snap.what == "meminfo" and isinstance(snap.data, dict):
            m = {"ts_ns": snap.ts_ns, "when": snap.when,
                 **{k: snap.data[k] for k in MEMINFO_KEYS if k in snap.data}}
            if len(self.meminfo_snapshots) < MAX_MEMINFO_SNAPSHOTS:
                self.meminfo_snapshots.append(m)
            elif snap.when == "end":
                self.meminfo_snapshots[-1] = m
        if self.history:
            self.episodes.on_snapshot(snap)
        for a in self.aggs.values():
            a.on_snapshot(snap)

    def _tick(self, tick: events.Tick) -> Dict[str, Any]:
        lost_iv = {t: n - self._lost_at_tick.get(t, 0) for t, n in tick.lost.items()}
        self._lost_at_tick = dict(tick.lost)
        self.lost = dict(tick.lost)
        row: Dict[str, Any] = {
            "interval": tick.interval,
            "ts_ns": tick.ts_ns,
            "elapsed_ns": tick.ts_ns - self._last_tick_ns,
            "lost_events": sum(lost_iv.values()),
        }
        self._last_tick_ns = tick.ts_ns
        for name, a in self.aggs.items():
            row[name] = a.on_tick(tick.ts_ns)
        if self.history and len(self.rows) < MAX_INTERVAL_ROWS:
            self.rows.append(row)
        else:
            self.rows_dropped += 1
        return row

    # -- output ------------------------------------------------------------
    def vmstat_delta(self) -> Dict[str, int]:
        vm = self.snapshots.get("vmstat", {})
        start, end = vm.get("start"), vm.get("end")
        if not start or not end:
            return {}
        keys = [k for k in VMSTAT_KEYS if k in start and k in end]
        return {k: end[k] - start[k] for k in keys}

    def report(self) -> Dict[str, Any]:
        """The whole report as one JSON-able document (see docs/report-schema.md)."""
        h = self.header
        sections = {name: a.report() for name, a in self.aggs.items()}
        totals = self._totals({name: a.totals(sections[name]) for name, a in self.aggs.items()})
        totals["vmstat_delta"] = self.vmstat_delta()
        w = self.window
        doc: Dict[str, Any] = {
            "trace_reclaim": {"format": 1, "tool_version": h.get("tool_version")},
            "system": {
                "kernel": h.get("kernel_release"), "hostname": h.get("hostname"),
                "workload": h.get("workload"),
            },
            "window": {
                "start_ns": w.start_ns, "end_ns": w.end_ns,
                "duration_ns": max(0, w.end_ns - w.start_ns) if w.end_ns else None,
                "ended_by": self.ended, "intervals": len(self.rows) + self.rows_dropped,
            },
            "totals": totals,
            "lost": {
                "total": totals["lost_events"],
                "by_type": {str(k): v for k, v in sorted(self.lost.items()) if v},
                "events_outside_window": self.after_window + self.before_window,
                "unknown_records": sum(self.unknown_types.values()),
                "undecodable_records": self.decode_errors,
            },
            "zones": self.zone_snapshots,
            "meminfo": self.meminfo_snapshots,
            "delayacct": self.delayacct_state(),
            "intervals": self.rows,
        }
        attach = self.attach_report()
        if attach is not None:
            doc["attach"] = attach
        for name, a in self.aggs.items():
            for key in a.top_level:
                if key in sections[name]:
                    doc[key] = sections[name].pop(key)
        doc.update(sections)
        eps = self.episodes.report()
        doc["episodes"] = eps
        doc["episode_summary"] = self.episodes.summary(eps)
        doc["findings"] = findings(doc)
        return doc

    def _totals(self, per_tracer: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        """The report's ``totals`` from each tracer's entries (in tracer order)."""
        totals: Dict[str, Any] = {}
        for name in self.aggs:
            totals.update(per_tracer[name])
        totals["lost_events"] = sum(self.lost.values())
        return totals

    def live_totals(self) -> Dict[str, Any]:
        """The report's ``totals`` as they stand now, by the report's own code
        (``Aggregator.live_totals``), except the /proc/vmstat delta, which
        needs the end snapshot."""
        return self._totals({name: a.live_totals() for name, a in self.aggs.items()})

    def live_state(self) -> Dict[str, Any]:
        """What the live view shows between reports.

        ``totals`` are the report's totals so far (``live_totals``): what
        the view shows is what the report will count.
        """
        zones = self.episodes.zoneinfo[-1][2] if self.episodes.zoneinfo else []
        eps = self.episodes.live()
        return {
            "now_ns": self._last_tick_ns,
            "elapsed_ns": max(0, self._last_tick_ns - self.window.start_ns),
            "meminfo": self.meminfo_snapshots[-1] if self.meminfo_snapshots else {},
            "psi": self.snapshots.get("psi", {}).get("tick")
            or self.snapshots.get("psi", {}).get("start"),
            "zones": zones,
            "kswapd_awake": eps["kswapd_awake"],
            "episodes": eps,
            "totals": self.live_totals(),
        }

    def delayacct_state(self) -> Dict[str, Any]:
        """Whether per-task delay accounting was on, and who turned it on."""
        h = self.header.get("delayacct") or {}
        on = self.episodes.delayacct
        if on is None:
            on = h.get("during")
        return {"on": bool(on), "before": h.get("before"),
                "turned_on_for_run": bool(h.get("turned_on_for_run")),
                "tasks_read": len(self.episodes.taskstats)}
