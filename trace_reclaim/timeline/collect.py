"""Collect what a timeline picture of a run needs and the report does not keep.

The report keeps totals, percentiles and episodes; a picture needs each
direct-reclaim stall's and compaction run's time and latency, kswapd's awake
spans, the shrinkers' time as it passed, and the zoneinfo and PSI readings
over the run.  ``TimelineCollector`` is fed the same records as the correlator
(``replay(..., tap=collector)``) and keeps them bounded:

* direct-reclaim stalls and compaction runs are marks, up to ``MAX_MARKS``
  each; beyond that the longest are kept (every stall is still counted in
  the time bins);
* kswapd awake spans per node, up to ``MAX_SPANS`` per node; beyond that the
  picture draws kswapd's awake time per bin instead;
* rates (stalls, wakeup_kswapd requests, shrinker time and frees per
  shrinker, kswapd awake time) in ``NBINS`` time bins whose
  width doubles whenever the run outgrows them;
* zoneinfo and PSI readings, thinned to every other one past
  ``MAX_READINGS`` (the last is always kept).

An event counts when the correlator counted it: ``follow_window`` moves the
window at the same records, and stalls and shrinker calls begun before the
window are left out as the reclaim and slab aggregators leave them out.

Pure: records in, plain data out; drawing is ``timeline.draw``.
"""

from __future__ import annotations

import heapq
import struct
from array import array
from typing import Any, Dict, List, Optional, Tuple

from trace_reclaim import abi, events
from trace_reclaim.kswapd import AwakeSpan, Kswapd
from trace_reclaim.replay import follow_window
from trace_reclaim.tracer import Window

__all__ = ["TimelineCollector", "Bins", "Thinned", "MAX_MARKS", "MAX_SPANS", "NBINS",
           "MAX_READINGS", "MAX_SHRINKER_SERIES"]

MAX_MARKS = 20_000
MAX_SPANS = 50_000
NBINS = 2048
MAX_READINGS = 4096
MAX_SHRINKER_SERIES = 32   # shrinkers binned one by one; later ones share "other"
FIRST_BIN_NS = 1_000_000

EV_WAKEUP_KSWAPD = abi.value("EV_WAKEUP_KSWAPD")
EV_KSWAPD_WAKE = abi.value("EV_KSWAPD_WAKE")
EV_KSWAPD_SLEEP = abi.value("EV_KSWAPD_SLEEP")
EV_DIRECT_RECLAIM = abi.value("EV_DIRECT_RECLAIM")
EV_SHRINK_SLAB = abi.value("EV_SHRINK_SLAB")
EV_COMPACTION = abi.value("EV_COMPACTION")
_DECODED = frozenset((EV_KSWAPD_WAKE, EV_KSWAPD_SLEEP, EV_DIRECT_RECLAIM, EV_SHRINK_SLAB,
                      EV_COMPACTION))
_TS_FIELD = abi.layout("event_header").field("ts_ns")  # in every BPF record
_TS, _TS_OFF, _TS_END = (struct.Struct("<" + _TS_FIELD.code), _TS_FIELD.offset,
                         _TS_FIELD.offset + _TS_FIELD.size)
OTHER = 0                  # the shrinker series key of the ones past the cap


class Bins:
    """Sums per time bin, for any number of series; bounded at ``nbins`` bins.

    Bin ``i`` covers ``[t0 + i * width, t0 + (i + 1) * width)``.  When a time
    falls past the last bin, the width doubles and neighbours merge, so the
    bins always cover the run seen so far.
    """

    def __init__(self, nbins: int = NBINS, width_ns: int = FIRST_BIN_NS) -> None:
        self.nbins = nbins
        self.width = width_ns
        self.t0: Optional[int] = None
        self.series: Dict[Any, array] = {}

    def _index(self, ts: int) -> int:
        t0 = self.t0
        if t0 is None:
            t0 = self.t0 = ts
        i = (ts - t0) // self.width
        if i >= self.nbins:
            while i >= self.nbins:
                self._coarsen()
                i = (ts - t0) // self.width
        return i if i > 0 else 0

    def _coarsen(self) -> None:
        self.width *= 2
        for key, a in self.series.items():
            merged = array("d", (a[j] + a[j + 1] for j in range(0, self.nbins, 2)))
            merged.extend([0.0] * (self.nbins - len(merged)))
            self.series[key] = merged

    def _row(self, key: Any) -> array:
        a = self.series.get(key)
        if a is None:
            a = self.series[key] = array("d", bytes(8 * self.nbins))
        return a

    def add(self, key: Any, ts: int, value: float = 1.0) -> None:
        i = self._index(ts)    # first: coarsening replaces the rows
        a = self.series.get(key)
        if a is None:
            a = self._row(key)
        a[i] += value

    def spread(self, key: Any, start: int, end: int) -> None:
        """Add the nanoseconds of ``[start, end)`` to the bins they fall in."""
        if end <= start:
            return
        j = self._index(end)   # coarsen first: the span's bins must not move under us
        i = self._index(start)
        a = self.series.get(key)
        if a is None:
            a = self._row(key)
        if i == j:             # most calls: shorter than a bin
            a[i] += end - start
            return
        t0, w = self.t0 or 0, self.width
        t = start
        while t < end:
            edge = t0 + (i + 1) * w
            step = min(end, edge) - t
            a[min(i, self.nbins - 1)] += step
            t += step
            i += 1

    def used(self) -> int:
        """Bins up to the last one with anything in it."""
        last = 0
        for a in self.series.values():
            for i in range(len(a) - 1, last - 1, -1):
                if a[i]:
                    last = i + 1
                    break
        return last


class Thinned:
    """A list kept under ``cap`` items by dropping every other one when full.

    After each thinning only every ``stride``-th new item is kept, so the
    items stay evenly spaced; ``last`` always holds the newest item.
    """

    def __init__(self, cap: int = MAX_READINGS) -> None:
        self.cap = cap
        self.items: List[Any] = []
        self.stride = 1
        self.seen = 0
        self.last: Any = None

    def append(self, item: Any) -> None:
        self.last = item
        if self.seen % self.stride == 0:
            self.items.append(item)
            if len(self.items) > self.cap:
                self.items = self.items[::2]
                self.stride *= 2
        self.seen += 1

    def all(self) -> List[Any]:
        if self.last is not None and (not self.items or self.items[-1] is not self.last):
            return self.items + [self.last]
        return list(self.items)


class _Marks:
    """Up to ``cap`` (key, ...) tuples; past the cap the ones with the largest key."""

    def __init__(self, cap: int = MAX_MARKS) -> None:
        self.cap = cap
        self.items: List[Tuple[Any, ...]] = []
        self.count = 0
        self._heap = False

    def add(self, item: Tuple[Any, ...]) -> None:
        self.count += 1
        if len(self.items) < self.cap:
            self.items.append(item)
            return
        if not self._heap:
            heapq.heapify(self.items)
            self._heap = True
        if item > self.items[0]:
            heapq.heapreplace(self.items, item)

    @property
    def capped(self) -> bool:
        return self.count > len(self.items)


class _Spans:
    """One node's kswapd awake spans as drawn: (start_ns, end_ns), bounded."""

    __slots__ = ("spans", "spans_dropped")

    def __init__(self) -> None:
        self.spans: List[Tuple[int, int]] = []
        self.spans_dropped = 0


class TimelineCollector:
    """Per-event times for the timeline, from the records the correlator saw.

    Call it with each block of ``(type, payload)`` records in recorded order
    (it is a ``replay`` tap), then ``finish()``.
    """

    def __init__(self, max_marks: int = MAX_MARKS, max_spans: int = MAX_SPANS,
                 nbins: int = NBINS) -> None:
        self.window = Window()
        self.bins = Bins(nbins)
        self.max_spans = max_spans
        # (delta_ns, start_ns, order, tid): the key sorts the longest last.
        self.stalls = _Marks(max_marks)
        # (delta_ns, start_ns, kcompactd, status)
        self.compactions = _Marks(max_marks)
        # kswapd's state per node: the state machine the reclaim aggregator
        # and the episode builder run, fed the same events.
        self.kswapd_state = Kswapd(self.window)
        self.kswapd: Dict[int, _Spans] = {}
        self.shrinker_keys: Dict[int, int] = {}   # struct shrinker * -> series key
        self.shrinker_calls = 0
        self.zoneinfo = Thinned()
        self.psi = Thinned()

    # -- input -------------------------------------------------------------
    def __call__(self, block: List[Tuple[int, bytes]]) -> None:
        self.feed_block(block)

    def feed_block(self, block: List[Tuple[int, bytes]]) -> None:
        w = self.window
        user_base = events.USER_BASE
        bins = self.bins
        for type_id, payload in block:
            if type_id >= user_base:
                self._user(type_id, payload)
            elif type_id == EV_WAKEUP_KSWAPD:
                # The most frequent record under pressure: only its time is needed.
                if len(payload) >= _TS_END:
                    ts = _TS.unpack_from(payload, _TS_OFF)[0]
                    if ts >= w.start_ns and not (w.end_ns and ts > w.end_ns):
                        bins.add("wakeup_kswapd", ts)
            elif type_id in _DECODED:
                try:
                    ev = events.decode(type_id, payload)
                except events.DecodeError:
                    continue  # the correlator counts it as undecodable
                if ev is None:
                    continue
                ts = ev.ts_ns
                if ts < w.start_ns or (w.end_ns and ts > w.end_ns) or \
                        ts < w.type_start.get(type_id, 0):
                    continue  # outside the window, as Window.contains_event says
                if type_id == EV_DIRECT_RECLAIM:
                    self._direct_reclaim(ev)
                elif type_id == EV_KSWAPD_WAKE:
                    self._kswapd_wake(ev)
                elif type_id == EV_KSWAPD_SLEEP:
                    self._kswapd_sleep(ev)
                elif type_id == EV_SHRINK_SLAB:
                    self._shrink_slab(ev)
                else:
                    self._compaction(ev)

    def _user(self, type_id: int, payload: bytes) -> None:
        if type_id not in (events.USER_SNAPSHOT, events.USER_END):
            return
        try:
            ev = events.decode(type_id, payload)
        except events.DecodeError:
            return
        follow_window(self.window, ev)
        if isinstance(ev, events.End):
            self._close(ev.ts_ns)
            return
        if not isinstance(ev, events.Snapshot):
            return
        if ev.what == "vmstat" and ev.when == "start" and self.bins.t0 is None:
            self.bins.t0 = ev.ts_ns
        if ev.what == "zoneinfo" and isinstance(ev.data, list):
            zones = []
            for z in ev.data:
                if isinstance(z, dict):
                    zones.append((z.get("node", 0), str(z.get("zone", "?")),
                                  z.get("free"), z.get("min"), z.get("low"), z.get("high"),
                                  z.get("managed")))
            self.zoneinfo.append((ev.ts_ns, ev.when, zones))
        elif ev.what == "psi" and isinstance(ev.data, dict):
            some = ev.data.get("some") or {}
            full = ev.data.get("full") or {}
            if "total" in some:
                self.psi.append((ev.ts_ns, float(some["total"]),
                                 float(full["total"]) if "total" in full else None))

    def _direct_reclaim(self, ev: Any) -> None:
        start = ev.ts_ns - ev.delta_ns
        if start < self.window.start_ns:
            return  # begun before the window: the reclaim aggregator leaves it out
        self.stalls.add((ev.delta_ns, start, ev.order, ev.pid))
        self.bins.add("stalls", start)

    def _kswapd_wake(self, ev: Any) -> None:
        n, _ = self.kswapd_state.wake(ev.nid, ev.ts_ns, ev.order)
        self.kswapd.setdefault(n.nid, _Spans())

    def _kswapd_sleep(self, ev: Any) -> None:
        span = self.kswapd_state.sleep(ev.nid, ev.ts_ns)
        if span is not None:
            self._span(span)

    def _span(self, span: AwakeSpan) -> None:
        k = self.kswapd.setdefault(span.nid, _Spans())
        start, end = span.start_ns, span.end_ns
        if end is None or end <= start:
            return
        if len(k.spans) < self.max_spans:
            k.spans.append((start, end))
        else:
            k.spans_dropped += 1
        self.bins.spread(("kswapd_awake_ns", span.nid), start, end)

    def _shrink_slab(self, ev: Any) -> None:
        start = ev.ts_ns - ev.delta_ns
        if start < self.window.start_ns:
            return  # as the slab aggregator: begun before the window
        self.shrinker_calls += 1
        key = self.shrinker_keys.get(ev.shr)
        if key is None:
            key = ev.shr if len(self.shrinker_keys) < MAX_SHRINKER_SERIES else OTHER
            if key != OTHER:
                self.shrinker_keys[ev.shr] = key
        self.bins.spread(("shrink_ns", key), start, ev.ts_ns)
        self.bins.add(("shrink_freed", key), start, max(0, ev.freed))

    def _compaction(self, ev: Any) -> None:
        start = ev.ts_ns - ev.delta_ns
        self.compactions.add((ev.delta_ns, start, ev.comm.startswith("kcompactd"), ev.status))

    def _close(self, end_ns: int) -> None:
        """At the window end, kswapd still awake is awake up to it."""
        for span in self.kswapd_state.close(end_ns):
            self._span(span)

    def finish(self) -> None:
        """Close what is still open; a recording cut before its End closes nothing."""
        if self.window.end_ns:
            self._close(self.window.end_ns)
