"""Build episodes from the event stream: kswapd spans, direct-reclaim bursts, facts.

Feeding only; the report documents are ``document.py``'s.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any, Callable, Dict, Final, List, Mapping, Optional, Tuple

# Event type numbers from bpf/events.h: the builder only needs the numbers.
from trace_reclaim.abi import (EV_COMPACT_RETRY, EV_COMPACTION, EV_DIRECT_RECLAIM,
                               EV_KSWAPD_SLEEP, EV_KSWAPD_WAKE, EV_MARK_VICTIM,
                               EV_RECLAIM_RETRY_ZONE, EV_WAKEUP_KSWAPD)
from trace_reclaim.episodes.document import episode_docs
from trace_reclaim.episodes.model import (BURST_GAP_NS, MAX_EPISODES, MAX_REPORTED, MAX_TASKS,
                                          TOP, Episode, EpisodeFact, Task)
from trace_reclaim.events import Event
from trace_reclaim.kswapd import Kswapd

if TYPE_CHECKING:
    # The records this builder reads, for their types only: at run time it
    # imports no tracer (they register these records; it only sees them).
    # Compiled (trace_reclaim.native), typed handlers read fields natively.
    from trace_reclaim.tracers.compaction import Compaction, CompactRetry
    from trace_reclaim.tracers.oom import MarkVictim, ReclaimRetryZone
    from trace_reclaim.tracers.reclaim import (DirectReclaim, KswapdSleep, KswapdWake,
                                               WakeupKswapd)

__all__ = ["EpisodeBuilder"]

# The types ``feed`` tells apart.  Final: compiled, each is read natively,
# where an imported name is a dict lookup at every record.
_WAKEUP_KSWAPD: Final = EV_WAKEUP_KSWAPD
_KSWAPD_WAKE: Final = EV_KSWAPD_WAKE
_KSWAPD_SLEEP: Final = EV_KSWAPD_SLEEP
_DIRECT_RECLAIM: Final = EV_DIRECT_RECLAIM
_COMPACTION: Final = EV_COMPACTION
_RECLAIM_RETRY_ZONE: Final = EV_RECLAIM_RETRY_ZONE
_COMPACT_RETRY: Final = EV_COMPACT_RETRY
_MARK_VICTIM: Final = EV_MARK_VICTIM


class EpisodeBuilder:
    """Feed every BPF event (in time order) and every snapshot; ``report()``."""

    def __init__(self, window: Any,
                 facts: Optional[Mapping[int, Callable[[Any], Optional[EpisodeFact]]]] = None,
                 burst_gap_ns: int = BURST_GAP_NS,
                 symbolize: Optional[Callable[[int], Optional[str]]] = None,
                 cgroup_name: Optional[Callable[[Tuple[str, int]], Optional[str]]] = None,
                 ) -> None:
        self.window = window
        # What another tracer's event adds, by record type (its aggregator's
        # episode_fact); types in neither this nor _dispatch count as "other".
        self.facts = dict(facts or {})
        # Names shrinker callbacks known only by address when their events
        # arrived (the slab tracer symbolizes them in later samples).
        self.symbolize = symbolize
        # Names a task's cgroup key (the memcg tracer's, when loaded).
        self.cgroup_name = cgroup_name
        self.gap = burst_gap_ns
        self.episodes: List[Episode] = []
        # Read once: compiled, a module global is a dict lookup at each use
        # (tests lower it here, before building).
        self.max_episodes = MAX_EPISODES
        self.dropped = 0
        self.dropped_stalls = 0
        # kswapd's state per node; its awake spans are the kswapd episodes.
        self.kswapd = Kswapd(window)
        self.kswapd_open: Dict[int, Episode] = {}  # the episode of each open span
        self.kswapd_last: Dict[int, Episode] = {}
        self.burst_open: Dict[int, Episode] = {}
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
    def _new(self, node: int, kind: str, start_ns: int) -> Optional[Episode]:
        ep = Episode(self._next_id, node, kind, start_ns, last_ns=start_ns)
        self._next_id += 1
        if len(self.episodes) >= self.max_episodes:
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
        """What ``handler(ev.type)`` does with ``ev``.

        Compiled, the correlator calls this natively: the chain below calls
        each handler directly (a type check on ``ev``, no Python-level call).
        """
        header: Event = ev  # compiled: checked here once, then read natively
        t = header.type
        if t == _WAKEUP_KSWAPD:
            self._wakeup_kswapd(ev)
        elif t == _KSWAPD_WAKE:
            self._kswapd_wake(ev)
        elif t == _DIRECT_RECLAIM:
            self._direct_reclaim(ev)
        elif t == _COMPACTION:
            self._compaction(ev)
        elif t == _KSWAPD_SLEEP:
            self._kswapd_sleep(ev)
        elif t == _RECLAIM_RETRY_ZONE:
            self._reclaim_retry_zone(ev)
        elif t == _COMPACT_RETRY:
            self._compact_retry(ev)
        elif t == _MARK_VICTIM:
            self._mark_victim(ev)
        else:
            fact_of = self.facts.get(t)
            self._fact_or_other(ev, None if fact_of is None else fact_of(ev))

    def _other(self, ev: Any) -> None:
        self.outside["other"] += 1

    def _fact_or_other(self, ev: Any, fact: Optional[EpisodeFact]) -> None:
        if fact is None:
            self.outside["other"] += 1
        else:
            self._fact(ev, fact)

    def _wakeup_kswapd(self, ev: WakeupKswapd) -> None:
        # The most frequent record under pressure: Episode.mark is inlined.
        nid = ev.nid
        if nid not in self.kswapd.nodes:
            nid = self.kswapd.node(nid).nid
        tid_node = self.tid_node
        if len(tid_node) > 8192:
            tid_node.clear()
        tid_node[ev.pid] = nid
        ep = self.kswapd_open.get(nid) or self.burst_open.get(nid)
        if ep is not None and ep.id < self.max_episodes:
            ep.wakeup_requests += 1
            seq = ep.sequence
            if "wakeup_kswapd" not in seq:
                seq["wakeup_kswapd"] = ev.ts_ns

    def _kswapd_wake(self, ev: KswapdWake) -> None:
        k, opened = self.kswapd.wake(ev.nid, ev.ts_ns, ev.order)
        nid = k.nid
        if opened:
            self._close_burst(nid)
            ep = self._new(nid, "kswapd", ev.ts_ns)
            assert ep is not None
            ep.span = k.span
            self.kswapd_open[nid] = ep
            ep.sequence["kswapd_wake"] = ev.ts_ns

    def _kswapd_sleep(self, ev: KswapdSleep) -> None:
        ep: Optional[Episode]
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

    def _direct_reclaim(self, ev: DirectReclaim) -> None:
        ts = ev.ts_ns
        d = ev.delta_ns
        start = ts - d
        if start < self.window.start_ns:
            self.stalls_before_window += 1
            return
        pid = ev.pid
        nid = self.tid_node.get(pid)
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
                if ts > ep.last_ns:
                    ep.last_ns = ts
        if ep.id >= self.max_episodes:
            # Counted, not kept: nothing reads a dropped episode's figures.
            self.dropped_stalls += 1
            return
        pages = ev.nr_reclaimed_pages
        ep.stalls += 1
        ep.stall_ns += d
        ep.pages += pages
        if d > ep.stall_max_ns:
            ep.stall_max_ns = d
        if awake:
            ep.stalls_kswapd_awake += 1
        seq = ep.sequence
        if "direct_reclaim" not in seq:
            seq["direct_reclaim"] = start
        tasks = ep.tasks
        task = tasks.get(pid)
        if task is None:
            key = pid if len(tasks) < MAX_TASKS else -1
            task = tasks.get(key)
            if task is None:
                task = tasks[key] = Task(key, ev.tgid if key >= 0 else -1,
                                         ev.comm if key >= 0 else "[other tasks]")
                # The task's cgroup (records since cgroup attribution carry it).
                memcg_id, cgroup_id = ev.memcg_id, ev.cgroup_id
                if key >= 0 and (memcg_id or cgroup_id):
                    task.cgroup = ("memcg", memcg_id) if memcg_id else ("cgroup", cgroup_id)
        task.stalls += 1
        task.total_ns += d
        task.pages += pages
        if d > task.max_ns:
            task.max_ns = d
        lg = ep.longest  # (-delta, start, ...): ascending is longest first
        if len(lg) < TOP or -d < lg[-1][0]:
            bisect.insort(lg, (-d, start, pid, ev.comm, pages, ev.order))
            del lg[TOP:]

    def _target(self, nid: Optional[int], ts: int, tid: int) -> Optional[Episode]:
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

    def _compaction(self, ev: Compaction) -> None:
        ep = self._target(None, ev.ts_ns, ev.pid)
        if ep is None:
            self.outside["compaction_runs"] += 1
            return
        if ep.id >= self.max_episodes:
            return  # counted, not kept
        d = ev.delta_ns
        ep.compaction_runs += 1
        ep.compaction_ns += d
        if not ev.comm.startswith("kcompactd"):
            ep.compaction_direct += 1
            seq = ep.sequence
            if "direct_compaction" not in seq:
                seq["direct_compaction"] = ev.ts_ns - d
        status = ev.status
        st = ep.compaction_status
        st[status] = st.get(status, 0) + 1

    def _reclaim_retry_zone(self, ev: ReclaimRetryZone) -> None:
        ep = self._target(ev.nid, ev.ts_ns, ev.pid)
        if ep is None:
            self.outside["other"] += 1
            return
        ep.reclaim_retries += 1
        ep.reclaim_retry_max_loops = max(ep.reclaim_retry_max_loops, ev.no_progress_loops)
        ep.mark("should_reclaim_retry", ev.ts_ns)

    def _compact_retry(self, ev: CompactRetry) -> None:
        ep = self._target(None, ev.ts_ns, ev.pid)
        if ep is None:
            self.outside["other"] += 1
            return
        ep.compact_retries += 1
        if not ev.retry:
            ep.compact_retry_gave_up += 1
        ep.mark("should_compact_retry", ev.ts_ns)

    def _mark_victim(self, ev: MarkVictim) -> None:
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

    def shrinker_name(self, key: str) -> str:
        """A shrinker row's name: its callback symbolized, when the key is an address."""
        if self.symbolize is not None and key.startswith("0x"):
            try:
                return self.symbolize(int(key, 16)) or key
            except ValueError:
                return key
        return key

    def reported(self) -> List[Episode]:
        """The episodes the report details: all, or those with OOM kills and most stall time."""
        eps = self.episodes
        if len(eps) <= MAX_REPORTED:
            return eps
        keep = sorted(eps, key=lambda e: (-len(e.victims), -e.stall_ns, -e.kswapd_wakes,
                                          e.id))[:MAX_REPORTED]
        return sorted(keep, key=lambda e: e.id)

    def report(self) -> List[Dict[str, Any]]:
        """The reported episodes as JSON-able documents."""
        return episode_docs(self)

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
