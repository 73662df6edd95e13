"""The vmalloc aggregator: areas paired with their pages, frees and retries.

Consumes the vmalloc tracer's records (``records``) and recorded samples
(symbolized stacks, the BPF side's arm statistics, /proc/vmallocinfo) and
builds the report's ``vmalloc`` section: per-area verdicts (``areas``), waste,
callers.  It pairs a kvmalloc()'s failed kmalloc with the vmalloc that
follows, a huge attempt with its order-9 pages, and a failed attempt with
the 4 KiB retry __vmalloc_node_range() makes next in the same task.  All
state is bounded.  Pure: the same code runs live and on replay.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from trace_reclaim.abi import VMALLOC_PURGED_UNKNOWN
from trace_reclaim.tracer import Aggregator, EpisodeFact, Window
from trace_reclaim.tracers.vmalloc.areas import (VERDICTS, Area, area_record, area_verdict,
                                                 caller_of)
from trace_reclaim.tracers.vmalloc.records import (EV_ALLOC_VMAP_AREA, EV_FREE_VMAP_AREA,
                                                   EV_KMALLOC_LARGE, EV_PURGE_VMAP_AREA,
                                                   EV_VMALLOC_PAGE_ALLOC, AllocVmapArea,
                                                   FreeVmapArea, KmallocLarge,
                                                   VmallocPageAlloc)
from trace_reclaim.tracers.vmalloc.render import render as render_section
from trace_reclaim.tracers.vmalloc.vmallocinfo import VMALLOCINFO_NOTE

__all__ = ["VmallocAggregator", "MAX_LIVE_AREAS", "MAX_LISTED_AREAS", "MAX_LISTED_NOTABLE",
           "MAX_PENDING", "MAX_EARLY", "MAX_STACKS", "STACK_DEPTH", "PAIR_WINDOW_NS",
           "RETRY_WINDOW_NS"]

# Bounds on user-space state.
MAX_LIVE_AREAS = 8192        # areas allocated in the window and not yet freed
MAX_LISTED_AREAS = 2048      # closed areas listed one by one (all are counted)
MAX_LISTED_NOTABLE = 2048    # ... plus this many huge/fallback/unknown ones
MAX_PENDING = 1024           # per-task kmalloc failures and failed huge attempts
MAX_EARLY = 1024             # page events / frees seen before their area
MAX_STACKS = 4096
STACK_DEPTH = 16
# A kvmalloc's vmalloc follows its failed kmalloc at once; a fallback's retry
# follows the failed attempt's free at once.
PAIR_WINDOW_NS = 100_000_000
# ... but between them the attempt's huge pages and page tables are freed
# and the retry's vmap_area is allocated with the caller's gfp, under the
# same shortage that failed the huge pages: it may reclaim first.  Under CPU
# emulation (the VM tier, QEMU TCG) that took over a second.  What ties the
# retry to its attempt is its size instead: both come from one request,
# rounded to 2 MiB for the attempt and to a page for the retry (plus the
# guard page), in the same task; the window only bounds how long a failed
# attempt waits for it.
RETRY_WINDOW_NS = 10_000_000_000


class VmallocAggregator(Aggregator):
    """Per-area verdicts (huge, fallback, not_eligible, unknown), waste and callers."""

    section: ClassVar[str] = "vmalloc"

    def __init__(self, window: Window) -> None:
        super().__init__(window)
        tr = (window.header.get("tracers") or {}).get("vmalloc") or {}
        self.page_bytes = int(tr.get("page_bytes") or window.header.get("page_size") or 4096)
        self.huge_bytes = int(tr.get("huge_bytes") or 2 << 20)
        self.plan = str(tr.get("plan") or "tracepoint")
        # What saw the areas: the tracepoints, or (before 6.2) their functions.
        self.area_events = str(tr.get("area_events") or "tracepoints")
        # What saw the exact request: the first word of the plan (fentry, kprobe).
        first = self.plan.split()[0] if self.plan.split() else ""
        self.exact_from = first if first in ("fentry", "kprobe") else "fentry"
        self.symbols: Dict[int, str] = {}   # vm_struct.caller address -> "func+0x.."
        self.huge_possible = tr.get("huge_vmalloc")
        self.live: Dict[int, Area] = {}
        self.closed: List[Dict[str, Any]] = []
        self.closed_notable = 0
        self.closed_not_listed = 0
        self.stacks: Dict[int, List[str]] = {}
        self.stats: Dict[str, int] = {}
        self.vmallocinfo: Dict[str, Any] = {}
        # (stack_id, verdict) -> [areas, mapped bytes, huge pages, waste known]
        self.by_key: Dict[Tuple[int, str], List[int]] = {}
        self.pending_kmalloc: OrderedDict[int, KmallocLarge] = OrderedDict()
        self.pending_retry: OrderedDict[int, Area] = OrderedDict()
        self.early_pages: OrderedDict[int, List[VmallocPageAlloc]] = OrderedDict()
        self.early_frees: OrderedDict[int, int] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self._iv = self._new_interval()

    @staticmethod
    def _new_interval() -> Dict[str, int]:
        return {"areas": 0, "frees": 0, "huge_areas": 0, "huge_pages": 0,
                "fallbacks": 0, "purges": 0}

    # -- bounded helpers ---------------------------------------------------
    @staticmethod
    def _put(d: OrderedDict[int, Any], key: int, value: Any, cap: int) -> bool:
        """Insert into a FIFO-bounded dict; return False when one was evicted."""
        d[key] = value
        d.move_to_end(key)
        if len(d) > cap:
            d.popitem(last=False)
            return False
        return True

    # -- events ------------------------------------------------------------
    def feed(self, ev: Any) -> None:
        t = ev.type
        if t == EV_ALLOC_VMAP_AREA:
            self._alloc(ev)
        elif t == EV_VMALLOC_PAGE_ALLOC:
            self._page(ev)
        elif t == EV_FREE_VMAP_AREA:
            self._free(ev)
        elif t == EV_KMALLOC_LARGE:
            self.counts["kmalloc_failures"] += 1
            if not self._put(self.pending_kmalloc, ev.pid, ev, MAX_PENDING):
                self.counts["pending_dropped"] += 1
        elif t == EV_PURGE_VMAP_AREA:
            self.counts["purges"] += 1
            if ev.nr_purged == VMALLOC_PURGED_UNKNOWN:
                self.counts["purges_uncounted"] += 1  # before 6.2: a function, no count
            else:
                self.counts["purged_areas"] += ev.nr_purged
            self._iv["purges"] += 1

    def _alloc(self, ev: AllocVmapArea) -> None:
        if ev.failed:
            self.counts["alloc_failed"] += 1
            att = self.pending_retry.pop(ev.pid, None)
            if att is not None:
                self._close_record(att)  # its retry found no address space
            return
        self.counts["allocs"] += 1
        self._iv["areas"] += 1
        a = Area(ev, self.page_bytes, self.huge_bytes, self.exact_from)
        self._pair_request(a, ev)
        att = self.pending_retry.pop(ev.pid, None)
        if att is not None:
            if self._is_retry(a, att):
                self._link_retry(a, att)
            elif ev.ts_ns - (att.freed_ns or att.ts_ns) <= RETRY_WINDOW_NS:
                self.pending_retry[ev.pid] = att   # another area: wait on
            else:
                self._close_record(att)  # the retry was not seen
        if ev.addr in self.live:  # a free was lost: close the stale one
            self.counts["replaced_unfreed"] += 1
            old = self.live.pop(ev.addr)
            self._close_record(old)
        early_free = self.early_frees.pop(ev.addr, None)
        if early_free is not None and early_free >= ev.ts_ns:
            a.freed_ns = early_free  # freed, but its free arrived first
            self._close_record(a)
            return
        if len(self.live) >= MAX_LIVE_AREAS:
            self.counts["areas_dropped"] += 1
            self._account(a, self._verdict(a, False)[0])
            return
        self.live[ev.addr] = a
        for p in self.early_pages.pop(ev.addr, []):
            if p.ts_ns >= a.ts_ns and p.pid == a.tid:
                self._apply_page(a, p)

    def _pair_request(self, a: Area, ev: AllocVmapArea) -> None:
        """kvmalloc tried kmalloc first: a failed kmalloc of a matching size."""
        if a.requested is not None:
            return
        km = self.pending_kmalloc.get(ev.pid)
        if km is None or ev.ts_ns - km.ts_ns > PAIR_WINDOW_NS or km.ts_ns > ev.ts_ns:
            return
        req = km.bytes_req
        guard = self.page_bytes
        unit = self.huge_bytes if a.huge_attempt else self.page_bytes
        if _round_up(req, unit) + guard == a.size or _round_up(req, unit) == a.size:
            a.requested = req
            a.requested_from = "kmalloc"
            del self.pending_kmalloc[ev.pid]

    def _is_retry(self, a: Area, att: Area) -> bool:
        """Whether ``a`` is __vmalloc_node_range's 4 KiB retry of ``att``."""
        if a.huge_attempt or a.ts_ns - (att.freed_ns or att.ts_ns) > RETRY_WINDOW_NS:
            return False
        guard = self.page_bytes
        return a.size > guard and _round_up(a.size - guard, self.huge_bytes) + guard == att.size

    def _link_retry(self, a: Area, att: Area) -> None:
        a.attempt = {
            "addr": att.addr, "size": att.size, "align": att.align,
            "huge_pages_got": att.pages_ok, "huge_pages_needed": att.expected,
            "page_failed": att.page_failed,
        }
        # __vmalloc_node_range() retries inside the same call: the request
        # fentry/kprobe saw belongs to the retry as much as to the attempt,
        # and is exact where the retry's own pairing with kvmalloc's failed
        # kmalloc is an inference.
        if att.requested is not None and (a.requested is None or (
                a.requested_from == "kmalloc" and att.requested_from != "kmalloc")):
            a.requested, a.requested_from = att.requested, att.requested_from
        if a.vm_flags is None:
            a.vm_flags = att.vm_flags
        if a.vm_caller is None:
            a.vm_caller = att.vm_caller
        if a.stack_id < 0:
            a.stack_id = att.stack_id
        self.counts["fallback_retries_linked"] += 1

    def _page(self, ev: VmallocPageAlloc) -> None:
        self.counts["huge_page_events"] += 1
        a = self.live.get(ev.area_addr)
        if a is None or a.tid != ev.pid:
            self.counts["page_events_early"] += 1
            lst = self.early_pages.get(ev.area_addr)
            if lst is None:
                lst = []
                if not self._put(self.early_pages, ev.area_addr, lst, MAX_EARLY):
                    self.counts["early_dropped"] += 1
            if len(lst) < 512:
                lst.append(ev)
            return
        self._apply_page(a, ev)

    def _apply_page(self, a: Area, ev: VmallocPageAlloc) -> None:
        a.page_events += 1
        if ev.failed:
            if not a.page_failed:
                a.page_failed = True
                self._iv["fallbacks"] += 1
            return
        a.pages_ok += 1
        self._iv["huge_pages"] += 1
        if a.expected and a.pages_ok == a.expected:
            self._iv["huge_areas"] += 1

    def _free(self, ev: FreeVmapArea) -> None:
        self.counts["frees"] += 1
        self._iv["frees"] += 1
        a = self.live.pop(ev.addr, None)
        if a is None:
            self.counts["frees_untracked"] += 1
            if not self._put(self.early_frees, ev.addr, ev.ts_ns, MAX_EARLY):
                self.counts["early_dropped"] += 1
            return
        a.freed_ns = ev.ts_ns
        if a.huge_attempt and (a.page_failed or a.pages_ok < a.expected) \
                and ev.pid == a.tid:
            # vm_area_alloc_pages() gave up: __vmalloc_node_range frees the
            # area and retries with 4 KiB pages, next, in the same task.
            if not a.page_failed:
                self._iv["fallbacks"] += 1
                a.page_failed = True
            old = self.pending_retry.pop(ev.pid, None)
            if old is not None:
                self._close_record(old)
            if not self._put(self.pending_retry, ev.pid, a, MAX_PENDING):
                self.counts["pending_dropped"] += 1
            return
        self._close_record(a)

    # -- verdicts ----------------------------------------------------------
    def _frames(self, stack_id: int) -> Optional[List[str]]:
        return self.stacks.get(stack_id) if stack_id >= 0 else None

    def _verdict(self, a: Area, live: bool) -> Tuple[str, str, int]:
        return area_verdict(a, live, self._frames(a.stack_id), self.page_bytes,
                            self.huge_bytes)

    def _record(self, a: Area, live: bool) -> Dict[str, Any]:
        return area_record(a, live, self._frames(a.stack_id), self.page_bytes,
                           self.huge_bytes, self.symbols)

    def _account(self, a: Area, verdict: str) -> None:
        k = (a.stack_id, verdict)
        acc = self.by_key.get(k)
        if acc is None:
            if len(self.by_key) >= 4 * MAX_STACKS:
                k = (-1, verdict)
                acc = self.by_key.get(k)
            if acc is None:
                acc = self.by_key[k] = [0, 0, 0, 0, 0]
        huge = a.pages_ok if verdict == "huge" else 0
        acc[0] += 1
        acc[1] += a.size
        acc[2] += huge
        if a.requested is not None:
            acc[3] += max(0, a.size - self.page_bytes - a.requested)
            acc[4] += 1

    def _close_record(self, a: Area) -> None:
        verdict = self._verdict(a, False)[0]
        self._account(a, verdict)
        if len(self.closed) < MAX_LISTED_AREAS:
            self.closed.append({"area": a})
        elif verdict != "not_eligible" and self.closed_notable < MAX_LISTED_NOTABLE:
            self.closed_notable += 1
            self.closed.append({"area": a})
        else:
            self.closed_not_listed += 1

    # -- what the episode builder asks -----------------------------------------
    _EPISODE_ROWS: ClassVar[Dict[int, str]] = {
        EV_ALLOC_VMAP_AREA: "alloc_vmap_area", EV_FREE_VMAP_AREA: "free_vmap_area",
        EV_PURGE_VMAP_AREA: "purge_vmap_area", EV_VMALLOC_PAGE_ALLOC: "page_alloc",
        EV_KMALLOC_LARGE: "kmalloc_large"}

    def episode_fact(self, ev: Any) -> Optional[EpisodeFact]:
        """Each record adds to its episode's row for its kind: areas mapped
        (bytes; huge attempts are PMD-aligned), failures."""
        t = ev.type
        size = align = failed = 0
        nid: Optional[int] = None
        if t == EV_ALLOC_VMAP_AREA:
            size, align, failed = ev.size_bytes, ev.align_bytes, ev.failed
        elif t == EV_VMALLOC_PAGE_ALLOC:
            failed = ev.failed
        elif t == EV_KMALLOC_LARGE:
            size, nid = ev.bytes_alloc, ev.node
        elif t not in self._EPISODE_ROWS:
            return None
        return EpisodeFact("vmalloc", self._EPISODE_ROWS[t], nid, {
            "count": 1, "bytes": size, "failed": 1 if failed else 0,
            "huge_attempts": 1 if align >= self.huge_bytes else 0})

    # -- samples, ticks, report ---------------------------------------------
    def on_sample(self, sample: Any) -> None:
        d = sample.data if isinstance(sample.data, dict) else {}
        for k, frames in (d.get("stacks") or {}).items():
            if len(self.stacks) < MAX_STACKS and isinstance(frames, list):
                self.stacks[int(k)] = [str(f) for f in frames[:STACK_DEPTH]]
        for k, sym in (d.get("callers") or {}).items():
            if len(self.symbols) < MAX_STACKS:
                self.symbols[int(k, 16)] = str(sym)
        if isinstance(d.get("stats"), dict):
            self.stats = {str(k): int(v) for k, v in d["stats"].items()}
        if isinstance(d.get("vmallocinfo"), dict) and d.get("when"):
            self.vmallocinfo[str(d["when"])] = d["vmallocinfo"]

    def on_tick(self, ts_ns: int) -> Dict[str, Any]:
        row = dict(self._iv)
        self._iv = self._new_interval()
        return row

    def close(self, end_ns: int) -> None:
        """At the window end, attempts whose retry never came are fallbacks."""
        for att in list(self.pending_retry.values()):
            self._close_record(att)
        self.pending_retry.clear()

    def report(self) -> Dict[str, Any]:
        areas = [self._record(c["area"], False) for c in self.closed]
        live = [self._record(a, True) for a in sorted(self.live.values(),
                                                      key=lambda a: a.ts_ns)]
        pend = [self._record(a, False) for a in self.pending_retry.values()]
        all_listed = sorted(areas + pend, key=lambda r: r["ts_ns"]) + live
        by_verdict, callers = self._summaries(live + pend)
        return {
            "plan": self.plan,
            "area_events": self.area_events,
            "huge_vmalloc": self.huge_possible,
            "huge_page_bytes": self.huge_bytes,
            "note": VMALLOCINFO_NOTE,
            "areas": all_listed,
            "live_at_end": [r["addr"] for r in live],
            "by_verdict": by_verdict,
            "by_caller": callers[:200],
            "callers_not_listed": max(0, len(callers) - 200),
            "counts": {
                "allocs": self.counts["allocs"], "alloc_failed": self.counts["alloc_failed"],
                "frees": self.counts["frees"],
                "frees_untracked": self.counts["frees_untracked"],
                "purges": self.counts["purges"],
                # None: some purges came without their count (kernels before 6.2)
                "purged_areas": None if self.counts["purges_uncounted"]
                else self.counts["purged_areas"],
                "kmalloc_failures": self.counts["kmalloc_failures"],
                "huge_page_events": self.counts["huge_page_events"],
                "fallback_retries_linked": self.counts["fallback_retries_linked"],
                "areas_dropped": self.counts["areas_dropped"],
                "areas_not_listed": self.closed_not_listed,
                "replaced_unfreed": self.counts["replaced_unfreed"],
                "page_events_early": self.counts["page_events_early"],
                "state_dropped": self.counts["pending_dropped"] + self.counts["early_dropped"],
            },
            "kernel": self.stats,
            "vmallocinfo": self.vmallocinfo,
        }

    def _summaries(self, open_records: List[Dict[str, Any]],
                   ) -> Tuple[Dict[str, Dict[str, int]], List[Dict[str, Any]]]:
        """Totals by verdict and by caller: the closed areas (accounted as they
        closed) plus ``open_records``, the areas still live or awaiting a retry."""
        by_verdict: Dict[str, Dict[str, int]] = {
            v: {"areas": 0, "bytes": 0, "huge_pages": 0, "waste_known": 0,
                "waste_known_areas": 0} for v in VERDICTS}
        by_caller: Dict[str, Dict[str, Any]] = {}

        def add(caller: str, verdict: str, n: int, size: int, huge: int, waste: int,
                wn: int) -> None:
            v = by_verdict[verdict]
            v["areas"] += n
            v["bytes"] += size
            v["huge_pages"] += huge
            v["waste_known"] += waste
            v["waste_known_areas"] += wn
            c = by_caller.setdefault(caller, {"caller": caller, "areas": 0, "bytes": 0,
                                              "huge_pages": 0,
                                              **{x: 0 for x in VERDICTS}})
            c["areas"] += n
            c["bytes"] += size
            c["huge_pages"] += huge
            c[verdict] += n

        for (sid, _v), (n, size, huge, waste, wn) in self.by_key.items():
            frames = self._frames(sid)
            caller = "[unknown caller]"
            verdict = _v
            if frames:
                caller, nested = caller_of(frames)
                if nested:
                    caller = "page array: " + caller
                    verdict = "not_eligible"
            add(caller, verdict, n, size, huge, waste, wn)
        for r in open_records:
            add(r["caller"], r["verdict"], 1, r["size"], r["huge_pages"],
                r["waste"] or 0, 1 if r["waste"] is not None else 0)
        callers = sorted(by_caller.values(), key=lambda c: (-c["areas"], c["caller"]))
        return by_verdict, callers

    def totals(self, section: Dict[str, Any]) -> Dict[str, Any]:
        v = section["by_verdict"]
        return {
            "vmalloc_areas": sum(x["areas"] for x in v.values()),
            "vmalloc_huge_areas": v["huge"]["areas"],
            "vmalloc_huge_pages": v["huge"]["huge_pages"],
            "vmalloc_fallbacks": v["fallback"]["areas"],
            "vmalloc_live_at_end": len(section["live_at_end"]),
        }


    def render(self, section: Dict[str, Any]) -> List[str]:
        return render_section(section)


def _round_up(n: int, unit: int) -> int:
    return (n + unit - 1) // unit * unit

