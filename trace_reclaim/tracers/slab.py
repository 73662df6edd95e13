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

There is no tracepoint for kmem_cache_create/destroy.  fentry/fexit on
``kmem_cache_destroy``/``__kmem_cache_create_args`` give exact events where
they load (cflag SLAB_LIFECYCLE_FENTRY); otherwise creation and destruction
are found by comparing /sys/kernel/slab and /proc/slabinfo between
intervals, so their timing is only known to the interval.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Set, Tuple

from trace_reclaim import events
from trace_reclaim.stats import LatencyStats
from trace_reclaim.tracer import Aggregator, Attach, EpisodeFact, Tracer, Window

__all__ = [
    "EV_SHRINK_SLAB", "EV_KMEM_CACHE_CREATE", "EV_KMEM_CACHE_DESTROY",
    "ShrinkSlab", "KmemCacheEvent", "SlabTracer", "SlabAggregator", "TRACER",
    "MAX_SLAB_CACHES", "MAX_SHRINKERS", "diff_lifecycle", "never_drains",
    "slabinfo_tolerance",
]

EV_SHRINK_SLAB = 32
EV_KMEM_CACHE_CREATE = 33
EV_KMEM_CACHE_DESTROY = 34

SLAB_CTX_OTHER, SLAB_CTX_DIRECT, SLAB_CTX_MEMCG, SLAB_CTX_NODE = 0, 1, 2, 3

# Bounds: caches counted in the kernel, shrinkers and caches kept here.
MAX_SLAB_CACHES = 2048
MAX_SHRINKERS = 1024
MAX_LIFECYCLE = 512
MAX_SERIES = 512          # active_objs samples kept per cache (decimated beyond)
MAX_DIRECT_PIDS = 16
OTHER = "[other]"

# A shrinker "asked again and again that frees nothing": this many calls
# with objects to scan and not one object freed.
FUTILE_CALLS = 10
# Never-drains: the cache fell by less than this fraction after pressure ...
DRAIN_FRACTION = 0.10
# ... and either grew by at least this many objects in the window before the
# pressure, or held this many (objects of a large, long-lived leak).
MIN_GROWTH = 1000
MIN_HELD = 200_000
# A sample this long after the last shrink counts as settled (dentries and
# inodes are freed after an RCU grace period, see d_free()/i_callback()).
SETTLE_NS = 500_000_000


@dataclass(slots=True)
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

    @property
    def scanned(self) -> int:
        """Objects the shrinker scanned: what SLABS_SCANNED counted for this call."""
        return max(0, self.total_scan - max(0, self.unscanned))


@dataclass(slots=True)
class KmemCacheEvent(events.Event):
    cache: int
    raw_name: bytes

    @property
    def name(self) -> str:
        return self.raw_name.split(b"\0", 1)[0].decode("utf-8", "replace")


# The C struct behind each record type (tests/test_events_h.py compares sizes).
C_STRUCTS = {
    EV_SHRINK_SLAB: "shrink_slab_event",
    EV_KMEM_CACHE_CREATE: "kmem_cache_event",
    EV_KMEM_CACHE_DESTROY: "kmem_cache_event",
}

events.register(EV_SHRINK_SLAB,
                events.struct_decoder(ShrinkSlab, "QQQQQQqqqQiiiIQ", 15))
events.register(EV_KMEM_CACHE_CREATE, events.struct_decoder(KmemCacheEvent, "Q40s", 2))
events.register(EV_KMEM_CACHE_DESTROY, events.struct_decoder(KmemCacheEvent, "Q40s", 2))


# -- pure helpers (unit-tested on synthetic snapshots) -----------------------

def _root_name(sysfs: Dict[str, Any], target: str, slabinfo: Set[str]) -> str:
    """The name /proc/slabinfo shows for merged cache directory ``target``."""
    if not target.startswith(":"):
        return target
    names = sorted(n for n, (t, _i) in sysfs.get("links", {}).items() if t == target)
    for n in names:
        if n in slabinfo:
            return n
    return names[0] if names else target


def diff_lifecycle(prev: Dict[str, Any], cur: Dict[str, Any], ts_ns: int,
                   prev_ts_ns: int, slabinfo: Set[str],
                   destroyed_aliases: Set[Tuple[str, int]]) -> List[Dict[str, Any]]:
    """Cache creations and destructions between two /sys/kernel/slab snapshots.

    ``prev``/``cur`` are ``slabfs.read_sys_slab()`` documents.  A new
    directory, or a new (or re-created: new kernfs inode) symlink, is a
    creation; a vanished directory a destruction.  A merged directory whose
    ``aliases`` count fell lost an alias: the kernel leaves that alias's
    symlink in place, so the alias is inferred (newest link first) and
    ``destroyed_aliases`` (name, inode) remembers it.
    """
    out: List[Dict[str, Any]] = []
    pc, cc = prev.get("caches", {}), cur.get("caches", {})
    pl, cl = prev.get("links", {}), cur.get("links", {})

    def ev(name: str, event: str, **kw: Any) -> Dict[str, Any]:
        d = {"name": name, "event": event, "ts_ns": ts_ns, "after_ns": prev_ts_ns,
             "alias_of": None, "merged_dir": None, "shared_by": None,
             "objects_at_destroy": None, "stale_link": False, "note": ""}
        d.update(kw)
        return d

    new_dirs = [d for d in cc if d not in pc or cc[d].get("ino") != pc[d].get("ino")]
    gone_dirs = [d for d in pc if d not in cc or cc[d].get("ino") != pc[d].get("ino")]
    for d in sorted(gone_dirs):
        names = sorted(n for n, (t, _i) in pl.items() if t == d)
        name = d if not d.startswith(":") else _root_name(prev, d, slabinfo)
        left = [n for n in names if n in cl]
        out.append(ev(name, "destroy", merged_dir=d if d.startswith(":") else None,
                      objects_at_destroy=pc[d].get("objects"),
                      stale_link=bool(left),
                      note=("its alias link{} {} left dangling".format(
                          "s" if len(left) > 1 else "", ", ".join(left))) if left else ""))
    created_links = {n for n, (t, ino) in cl.items() if n not in pl or pl[n][1] != ino}
    for d in sorted(new_dirs):
        if d.startswith(":"):
            links = sorted(n for n in created_links if cl[n][0] == d)
            name = links[0] if links else _root_name(cur, d, slabinfo)
            out.append(ev(name, "create", merged_dir=d, shared_by=1,
                          note=f"new mergeable cache {d}"))
            created_links -= set(links)
        else:
            out.append(ev(d, "create"))
    for n in sorted(created_links):
        t = cl[n][0]
        if t in cc and t in pc and cc[t].get("ino") == pc[t].get("ino"):
            aliases = cc[t].get("aliases")
            out.append(ev(n, "create", alias_of=_root_name(cur, t, slabinfo), merged_dir=t,
                          shared_by=(aliases + 1) if aliases is not None else None,
                          note=f"merged into existing cache {t}"))
    # Aliases gone from a surviving merged directory.
    for d in sorted(set(pc) & set(cc)):
        if d in new_dirs or not d.startswith(":"):
            continue
        a0, a1 = pc[d].get("aliases"), cc[d].get("aliases")
        if a0 is None or a1 is None or a1 >= a0:
            continue
        cands = sorted(((ino, n) for n, (t, ino) in cl.items()
                        if t == d and (n, ino) not in destroyed_aliases), reverse=True)
        root = _root_name(cur, d, slabinfo)
        cands = [c for c in cands if c[1] != root]
        for i in range(a0 - a1):
            if i < len(cands):
                ino, n = cands[i]
                destroyed_aliases.add((n, ino))
                out.append(ev(n, "destroy", alias_of=root, merged_dir=d, shared_by=a1 + 1,
                              stale_link=True,
                              note=f"alias destroyed (inferred from {d} aliases {a0} -> {a1}); "
                                   f"merged cache {d} lives on"))
            else:
                out.append(ev("?", "destroy", alias_of=root, merged_dir=d, shared_by=a1 + 1,
                              note=f"an alias of {d} went; the kernel did not say which"))
    return out


def slabinfo_tolerance(cache: Dict[str, Any], ncpus: int) -> int:
    """How far /proc/slabinfo active_objs may differ from allocs - frees.

    SLUB's get_slabinfo() reports active_objs = total objects - free objects
    on the *node* partial lists (count_partial_free_approx()).  Free objects
    in each CPU's active slab and on its per-CPU partial list still count as
    active.  Per CPU that is at most one slab (objs_per_slab) plus the per-CPU
    partial slabs, capped by slub_set_cpu_partial() at about 2 * cpu_partial
    objects rounded up to whole slabs; either end of the interval can be
    anywhere in that range.
    """
    per_slab = cache.get("objs_per_slab") or 1
    cpu_partial = cache.get("cpu_partial") or 0
    partial_slabs = -(-2 * cpu_partial // per_slab) if cpu_partial else 0
    return ncpus * per_slab * (1 + partial_slabs)


def never_drains(series: List[Tuple[int, int]], pressure: List[Tuple[int, int]],
                 ) -> Optional[Dict[str, Any]]:
    """Decide from one cache's (ts_ns, active_objs) samples and the pressure
    episodes [(first_ns, last_ns)] whether it failed to drain.

    Returns the evidence (before, after, growth, fell) when the cache did not
    fall by DRAIN_FRACTION after the pressure although it had grown (or was
    large) before it; None when it drained, or there is nothing to judge.
    """
    if not pressure or not series:
        return None
    first, last = pressure[0][0], pressure[-1][1]
    before = [a for t, a in series if t <= first]
    if not before:
        return None
    b = before[-1]
    # The first sample after the pressure settled (RCU frees done) judges
    # it; later falls have other causes (the holder let go).
    settled = [a for t, a in series if t >= last + SETTLE_NS]
    after = settled[:1] or [a for t, a in series if t > last][-1:]
    if not after:
        return None
    a_after = after[0]
    fell = b - a_after
    growth = b - min(before)
    ev = {"before": b, "after": a_after, "fell": fell,
          "growth_before": growth, "settled": bool(settled)}
    if fell >= DRAIN_FRACTION * b:
        return None          # it drained: never flag it
    if growth < MIN_GROWTH and b < MIN_HELD:
        return None          # nothing built up that should have gone
    return ev


def _context(ev: ShrinkSlab) -> str:
    if ev.comm.startswith("kswapd"):
        return "kswapd"
    if ev.context == SLAB_CTX_DIRECT:
        return "direct"
    if ev.context == SLAB_CTX_MEMCG:
        return "memcg"
    if ev.context == SLAB_CTX_NODE:
        return "node_reclaim"
    # drop_slab() calls shrink_slab() at priority 0 outside any reclaim;
    # reclaim only reaches priority 0 after 12 failed passes, inside
    # direct/memcg reclaim or kswapd, which are all matched above.
    if ev.priority == 0:
        return "drop_caches"
    return "other"


class _Shrinker:
    __slots__ = ("shr", "shrink", "calls", "asked", "scanned", "freed", "lat",
                 "contexts", "direct_pids", "nids", "min_priority", "items_last",
                 "items_max", "futile", "futile_run", "futile_run_max", "iv_calls",
                 "iv_freed", "drop_comms")

    def __init__(self, shr: int, shrink: int) -> None:
        self.shr = shr
        self.shrink = shrink
        self.calls = self.asked = self.scanned = self.freed = 0
        self.lat = LatencyStats()
        self.contexts: Counter[str] = Counter()
        self.direct_pids: Counter[str] = Counter()
        self.drop_comms: Counter[str] = Counter()
        self.nids: Set[int] = set()
        self.min_priority = 99
        self.items_last = self.items_max = 0
        self.futile = self.futile_run = self.futile_run_max = 0
        self.iv_calls = self.iv_freed = 0


class _Cache:
    __slots__ = ("name", "allocs", "frees", "iv_allocs", "iv_frees", "series",
                 "active_start", "active_end", "num_start", "num_end", "seen_counts",
                 "slab_start_ts", "slab_end_ts")

    def __init__(self, name: str) -> None:
        self.name = name
        self.allocs = self.frees = self.iv_allocs = self.iv_frees = 0
        self.series: List[Tuple[int, int]] = []
        self.active_start: Optional[int] = None
        self.active_end: Optional[int] = None
        self.num_start: Optional[int] = None
        self.num_end: Optional[int] = None
        self.seen_counts = False

    def add_sample(self, ts: int, active: int) -> None:
        s = self.series
        s.append((ts, active))
        if len(s) > MAX_SERIES:
            # keep the first and the recent half, thin the middle
            self.series = s[:1] + s[1:-MAX_SERIES // 2:2] + s[-MAX_SERIES // 2:]


class SlabAggregator(Aggregator):
    """Shrinkers, per-cache counts joined with slabinfo, lifecycle, never-drains."""

    section: ClassVar[str] = "slab"

    def __init__(self, window: Window) -> None:
        super().__init__(window)
        self.shrinkers: Dict[int, _Shrinker] = {}
        self.symbols: Dict[int, str] = {}
        self.caches: Dict[str, _Cache] = {}
        self.caches_dropped = 0
        self.overflow = 0
        self.lifecycle: List[Dict[str, Any]] = []
        self.lifecycle_dropped = 0
        self.kmsg: List[str] = []
        self.sys_slab: Optional[Dict[str, Any]] = None
        self.sys_slab_start: Optional[Dict[str, Any]] = None
        self.sys_ts = 0
        self.cache_info: Dict[str, Dict[str, Any]] = {}   # slabinfo name -> sysfs attrs
        self.slabinfo_names: Set[str] = set()
        self.slabinfo_last: Dict[str, List[int]] = {}
        self.counts_prev: Dict[str, List[int]] = {}
        self.destroyed_aliases: Set[Tuple[str, int]] = set()
        self.fs_state: Dict[str, Dict[str, Dict[str, int]]] = {}  # when -> what -> data
        self.pressure: List[List[int]] = []      # shrink episodes [first, last]
        self.drop_episodes = 0
        self._last_drop: Tuple[int, int] = (0, 0)
        self.contexts: Counter[str] = Counter()
        self.before_window = 0
        self.exact_lifecycle = False
        self.ncpus = int(window.header.get("tracers", {}).get("slab", {}).get("ncpus") or 1)
        self.vm_start: Dict[str, int] = {}
        self.vm_end: Dict[str, int] = {}
        self._iv = self._new_interval()

    @staticmethod
    def _new_interval() -> Dict[str, int]:
        return {"shrink_calls": 0, "scanned": 0, "freed": 0, "shrink_ns": 0,
                "allocs": 0, "frees": 0, "creates": 0, "destroys": 0}

    # -- events ----------------------------------------------------------
    def feed(self, ev: Any) -> None:
        if ev.type == EV_SHRINK_SLAB:
            self._shrink(ev)
        elif ev.type in (EV_KMEM_CACHE_CREATE, EV_KMEM_CACHE_DESTROY):
            self.exact_lifecycle = True
            self._add_lifecycle({
                "name": ev.name, "event": "create" if ev.type == EV_KMEM_CACHE_CREATE
                else "destroy", "ts_ns": ev.ts_ns, "after_ns": ev.ts_ns, "alias_of": None,
                "merged_dir": None, "shared_by": None, "objects_at_destroy": None,
                "stale_link": False, "note": "fentry (exact time)"})

    def _shrink(self, ev: ShrinkSlab) -> None:
        if ev.ts_ns - ev.delta_ns < self.window.start_ns:
            self.before_window += 1
            return
        s = self.shrinkers.get(ev.shr)
        if s is None:
            if len(self.shrinkers) >= MAX_SHRINKERS:
                s = self.shrinkers.setdefault(0, _Shrinker(0, 0))
            else:
                s = self.shrinkers[ev.shr] = _Shrinker(ev.shr, ev.shrink)
        ctx = _context(ev)
        scanned = ev.scanned
        freed = max(0, ev.freed)
        s.calls += 1
        s.asked += ev.total_scan
        s.scanned += scanned
        s.freed += freed
        s.lat.add(ev.delta_ns)
        s.contexts[ctx] += 1
        self.contexts[ctx] += 1
        if ctx == "direct" and len(s.direct_pids) < MAX_DIRECT_PIDS:
            s.direct_pids[f"{ev.tgid} ({ev.comm})"] += 1
        if ctx == "drop_caches" and len(s.drop_comms) < MAX_DIRECT_PIDS:
            s.drop_comms[f"{ev.tgid} ({ev.comm})"] += 1
            if ev.pid != self._last_drop[0] or ev.ts_ns - self._last_drop[1] > 1_000_000_000:
                self.drop_episodes += 1
            self._last_drop = (ev.pid, ev.ts_ns)
        s.nids.add(ev.nid)
        s.min_priority = min(s.min_priority, ev.priority)
        s.items_last = ev.cache_items
        s.items_max = max(s.items_max, ev.cache_items)
        if ev.total_scan > 0 and freed == 0:
            s.futile += 1
            s.futile_run += 1
            s.futile_run_max = max(s.futile_run_max, s.futile_run)
        elif freed > 0:
            s.futile_run = 0
        s.iv_calls += 1
        s.iv_freed += freed
        iv = self._iv
        iv["shrink_calls"] += 1
        iv["scanned"] += scanned
        iv["freed"] += freed
        iv["shrink_ns"] += ev.delta_ns
        start = ev.ts_ns - ev.delta_ns
        if self.pressure and start - self.pressure[-1][1] < 1_000_000_000:
            self.pressure[-1][1] = max(self.pressure[-1][1], ev.ts_ns)
        elif len(self.pressure) < 256:
            self.pressure.append([start, ev.ts_ns])
        else:
            self.pressure[-1][1] = ev.ts_ns

    def _add_lifecycle(self, d: Dict[str, Any]) -> None:
        if len(self.lifecycle) >= MAX_LIFECYCLE:
            self.lifecycle_dropped += 1
            return
        self.lifecycle.append(d)
        self._iv["creates" if d["event"] == "create" else "destroys"] += 1

    # -- what the episode builder asks -----------------------------------------
    def episode_fact(self, ev: Any) -> Optional[EpisodeFact]:
        """A shrink_slab call adds to its episode's row for the shrinker's
        callback, keyed by address (named at report time by ``symbolize``)."""
        if ev.type != EV_SHRINK_SLAB:
            return None
        return EpisodeFact("shrinker", f"{ev.shrink:#x}", ev.nid, {
            "calls": 1, "scanned": ev.scanned, "freed": max(0, ev.freed),
            "time_ns": ev.delta_ns})

    def symbolize(self, addr: int) -> Optional[str]:
        """Shrinker callbacks, symbolized live by ``SlabTracer.sample``."""
        return self.symbols.get(addr)

    # -- samples (recorded by SlabTracer.sample) ----------------------------
    def _cache(self, name: str) -> Optional[_Cache]:
        c = self.caches.get(name)
        if c is None:
            if len(self.caches) >= MAX_SLAB_CACHES:
                self.caches_dropped += 1
                return None
            c = self.caches[name] = _Cache(name)
        return c

    def on_snapshot(self, snap: Any) -> None:
        if snap.what == "vmstat":
            if snap.when == "start":
                self.vm_start = snap.data
            elif snap.when == "end":
                self.vm_end = snap.data

    def on_sample(self, sample: Any) -> None:
        d = sample.data
        ts = sample.ts_ns
        when = d.get("when", "tick")
        for k, v in d.get("symbols", {}).items():
            if len(self.symbols) < MAX_SHRINKERS * 2:
                self.symbols[int(k, 16)] = v
        self.overflow = max(self.overflow, int(d.get("overflow", 0)))
        for line in d.get("kmsg", []):
            if len(self.kmsg) < 64:
                self.kmsg.append(line)
        for what in ("dentry_state", "inode_state"):
            if what in d:
                self.fs_state.setdefault(when, {})[what] = d[what]
                self.fs_state.setdefault("last", {})[what] = d[what]
        # per-cache cumulative counts since attach
        for name, (a, f) in d.get("caches", {}).items():
            c = self._cache(name)
            if c is None:
                continue
            pa, pf = self.counts_prev.get(name, (0, 0))
            if when != "start":
                da, df = max(0, a - pa), max(0, f - pf)
                c.allocs += da
                c.frees += df
                c.iv_allocs += da
                c.iv_frees += df
                self._iv["allocs"] += da
                self._iv["frees"] += df
            c.seen_counts = True
            self.counts_prev[name] = [a, f]
        # slabinfo (full at start/end, changed rows at ticks)
        si = d.get("slabinfo")
        if si is not None:
            if d.get("slabinfo_full"):
                self.slabinfo_names = set(si)
            else:
                self.slabinfo_names |= set(si)
            self.slabinfo_last.update(si)
        # /sys/kernel/slab: structure, and attributes of the reclaimable caches
        sysfs = d.get("sys_slab")
        if sysfs is not None:
            if self.sys_slab is None:
                self.sys_slab_start = sysfs
                self._learn_caches(sysfs)
            elif not self.exact_lifecycle:
                for ev in diff_lifecycle(self.sys_slab, sysfs, ts, self.sys_ts,
                                         self.slabinfo_names, self.destroyed_aliases):
                    if ev["event"] == "destroy" and not ev["alias_of"]:
                        # kmem_cache_destroy() removes the sysfs directory only
                        # after __kmem_cache_shutdown() found the cache empty;
                        # with objects left it warns and keeps the cache.
                        row = self.slabinfo_last.get(ev["name"])
                        ev["objects_last_seen"] = row[0] if row else ev["objects_at_destroy"]
                        ev["objects_at_destroy"] = 0
                    self._add_lifecycle(ev)
            self._merge_attrs(sysfs)
            self.sys_slab = sysfs
            self.sys_ts = ts
        if si is None:
            return
        names = set(si) | set(self.cache_info) if when == "tick" else self.slabinfo_names
        for name in names:
            row = self.slabinfo_last.get(name)
            if row is None or name not in self.slabinfo_names:
                continue
            c = self.caches.get(name)
            if c is None and (when == "start" or name in self.cache_info):
                c = self._cache(name)
            if c is None:
                continue
            if c.active_start is None:
                c.active_start, c.num_start = row[0], row[1]
            if when != "start":
                c.active_end, c.num_end = row[0], row[1]
            if name in self.cache_info:
                c.add_sample(ts, row[0])

    def _learn_caches(self, sysfs: Dict[str, Any]) -> None:
        """Reclaimable caches (SLAB_RECLAIM_ACCOUNT), by their slabinfo name."""
        for d, attrs in sysfs.get("caches", {}).items():
            if attrs.get("reclaim_account") == 1:
                name = _root_name(sysfs, d, self.slabinfo_names)
                self.cache_info[name] = dict(attrs, dir=d)

    def _merge_attrs(self, sysfs: Dict[str, Any]) -> None:
        for _name, info in self.cache_info.items():
            attrs = sysfs.get("caches", {}).get(info["dir"])
            if attrs:
                info.update({k: v for k, v in attrs.items() if v is not None})

    def on_tick(self, ts_ns: int) -> Dict[str, Any]:
        row: Dict[str, Any] = dict(self._iv)
        top = sorted((c for c in self.caches.values() if c.iv_allocs or c.iv_frees),
                     key=lambda c: -abs(c.iv_allocs - c.iv_frees))[:5]
        row["top_net"] = {c.name: c.iv_allocs - c.iv_frees for c in top}
        for c in self.caches.values():
            c.iv_allocs = c.iv_frees = 0
        for s in self.shrinkers.values():
            s.iv_calls = s.iv_freed = 0
        self._iv = self._new_interval()
        return row

    # -- report ----------------------------------------------------------
    def _shrinker_name(self, s: _Shrinker) -> str:
        if s.shr == 0:
            return OTHER
        sym = self.symbols.get(s.shrink) or f"0x{s.shrink:x}"
        same = [x for x in self.shrinkers.values() if x.shrink == s.shrink and x.shr]
        if len(same) > 1:
            # several instances (super_cache_scan: one per superblock)
            idx = sorted(x.shr for x in same).index(s.shr) + 1
            return f"{sym}#{idx}"
        return sym

    def _reason(self, name: str, info: Dict[str, Any], evidence: Dict[str, Any],
                destroyed: Dict[str, Dict[str, Any]]) -> Tuple[str, str]:
        if name in destroyed:
            return ("destroyed_with_objects",
                    "destroyed with live objects: {}".format(destroyed[name].get("why", "")))
        aliases = info.get("aliases") or 0
        fs_last = self.fs_state.get("end") or self.fs_state.get("last", {})
        if name == "dentry" and "dentry_state" in fs_last:
            st = fs_last["dentry_state"]
            used = st["nr_dentry"] - st["nr_unused"]
            if st["nr_dentry"] and used >= 0.5 * st["nr_dentry"]:
                return ("pinned", f"objects pinned: {used} of {st['nr_dentry']} dentries in use "
                        "(not on the LRU: held by open files, cwd or mounts)")
        if "inode" in name and "inode_state" in fs_last:
            st = fs_last["inode_state"]
            used = st["nr_inodes"] - st["nr_unused"]
            if st["nr_inodes"] and used >= 0.5 * st["nr_inodes"]:
                return ("pinned", f"objects pinned: {used} of {st['nr_inodes']} inodes in use "
                        "(referenced: open files, dentries still holding them)")
        if not evidence.get("settled") and (info.get("destroy_by_rcu") or
                                            name in ("dentry",) or "inode" in name):
            return ("rcu", "objects waiting for an RCU grace period: no sample came "
                    "%.1fs after the last shrink" % (SETTLE_NS / 1e9))
        if name == "buffer_head":
            # try_to_free_buffers() runs when the page cache page goes; no
            # shrinker frees buffer heads, so drop_caches=2 leaves them
            return ("page_cache", "buffer heads are freed with the page-cache pages "
                    "they map (drop_caches 1, LRU reclaim), not by any shrinker")
        if aliases > 0:
            return ("merged", f"merged cache shared with {aliases} other caches: their "
                    "objects keep it from draining")
        freeable = [s.items_last for s in self.shrinkers.values()]
        if freeable and evidence["before"] and max(freeable) < 0.1 * evidence["before"]:
            return ("pinned", f"objects pinned: no shrinker counted more than {max(freeable)} "
                    "freeable objects")
        return ("in_use", "objects in use (no shrinker could free them)")

    def report(self) -> Dict[str, Any]:
        shrinkers = []
        for s in sorted(self.shrinkers.values(), key=lambda s: (-s.lat.total, s.shr)):
            summ = s.lat.summary()
            futile = s.calls >= FUTILE_CALLS and s.freed == 0 and s.asked > 0
            shrinkers.append({
                "name": self._shrinker_name(s), "callback": self.symbols.get(s.shrink),
                "shrink_addr": f"0x{s.shrink:x}", "shr": f"0x{s.shr:x}",
                "calls": s.calls, "objects": s.items_last, "objects_max": s.items_max,
                "asked": s.asked, "scanned": s.scanned, "freed": s.freed,
                "time_ns": summ["total"], "p50_ns": summ["p50"], "p99_ns": summ["p99"],
                "max_ns": summ["max"], "percentiles_exact": s.lat.exact,
                "nids": sorted(s.nids), "min_priority": s.min_priority,
                "contexts": dict(s.contexts.most_common()),
                "direct_reclaim_by": dict(s.direct_pids.most_common()),
                "drop_caches_by": dict(s.drop_comms.most_common()),
                "futile_calls": s.futile, "futile_run_max": s.futile_run_max,
                "frees_nothing": futile,
            })
        pressure = [(a, b) for a, b in self.pressure]
        destroyed: Dict[str, Dict[str, Any]] = {}
        for line in self.kmsg:
            # "kmem_cache_destroy NAME: Slab cache still has objects when called from ..."
            head = line.split(":", 1)[0].split()
            if len(head) >= 2:
                destroyed[head[-1]] = {"why": line[:160]}
        for ev in self.lifecycle:
            if ev["event"] == "destroy" and (ev.get("objects_at_destroy") or 0) > 0 \
                    and not ev.get("alias_of"):
                ev["flag"] = f"destroyed with {ev['objects_at_destroy']} objects"
                destroyed.setdefault(ev["name"], {"why": ev["flag"]})
        caches: List[Dict[str, Any]] = []
        for c in self.caches.values():
            info = self.cache_info.get(c.name, {})
            evid = never_drains(c.series, pressure) if info else None
            nd = evid is not None or c.name in destroyed
            reason = detail = None
            if nd:
                reason, detail = self._reason(c.name, info, evid or {}, destroyed)
            net = c.allocs - c.frees
            slab_delta = (c.active_end - c.active_start) if (
                c.active_end is not None and c.active_start is not None) else None
            tol = slabinfo_tolerance(info, self.ncpus) if info.get("objs_per_slab") else None
            interesting = nd or (c.allocs or c.frees) or (
                slab_delta is not None and abs(slab_delta) >= MIN_GROWTH)
            if not interesting:
                continue
            caches.append({
                "name": c.name, "allocs": c.allocs, "frees": c.frees, "net": net,
                "counted": c.seen_counts,
                "active_start": c.active_start, "active_end": c.active_end,
                "num_start": c.num_start, "num_end": c.num_end,
                "slabinfo_delta": slab_delta,
                "net_minus_slabinfo": (net - slab_delta) if (
                    slab_delta is not None and c.seen_counts) else None,
                "tolerance": tol,
                # kfree(), kfree_rcu() and kmem_cache_free_bulk() free without
                # the kmem_cache_free tracepoint: the net then overstates
                "frees_untraced": bool(slab_delta is not None and c.seen_counts and
                                       net - slab_delta > max(tol or 0, MIN_GROWTH)),
                "reclaimable": bool(info),
                "aliases": info.get("aliases"),
                "never_drains": nd, "reason": reason, "reason_detail": detail,
                "evidence": evid,
            })
        caches.sort(key=lambda x: (not x["never_drains"], -abs(x["net"]), x["name"]))
        merged = self._merged_summary()
        vm = self.vm_end and self.vm_start
        return {
            "shrinkers": shrinkers,
            "caches": caches,
            "lifecycle": self.lifecycle,
            "lifecycle_method": ("fentry/fexit on kmem_cache_destroy/__kmem_cache_create_args"
                                 if self.exact_lifecycle else
                                 "/sys/kernel/slab and /proc/slabinfo compared between "
                                 "intervals: times are approximate (between after_ns and "
                                 "ts_ns)"),
            "merged": merged,
            "kmsg": self.kmsg,
            "contexts": dict(self.contexts.most_common()),
            "drop_caches_runs": self.drop_episodes,
            "drop_slab_vmstat": (self.vm_end.get("drop_slab", 0) -
                                 self.vm_start.get("drop_slab", 0)) if vm else None,
            "pressure_episodes": [{"start_ns": a, "end_ns": b} for a, b in pressure[:32]],
            "shrinks_begun_before_window": self.before_window,
            "caches_not_counted_map_full": self.overflow,
            "caches_dropped": self.caches_dropped + self.lifecycle_dropped,
            "ncpus": self.ncpus,
        }

    def _merged_summary(self) -> List[Dict[str, Any]]:
        """Merged caches that lifecycle events touched: who shares them."""
        out = []
        sysfs = self.sys_slab or {}
        dirs = sorted({ev["merged_dir"] for ev in self.lifecycle if ev.get("merged_dir")})
        for d in dirs[:32]:
            links = sorted(n for n, (t, _i) in sysfs.get("links", {}).items() if t == d)
            attrs = sysfs.get("caches", {}).get(d)
            out.append({"dir": d, "exists": attrs is not None,
                        "name": _root_name(sysfs, d, self.slabinfo_names),
                        "aliases": attrs.get("aliases") if attrs else None,
                        "links": links[:32], "links_total": len(links)})
        return out

    def totals(self, section: Dict[str, Any]) -> Dict[str, Any]:
        sh = section["shrinkers"]
        return {
            "shrink_slab_calls": sum(s["calls"] for s in sh),
            "shrink_slab_scanned": sum(s["scanned"] for s in sh),
            "shrink_slab_freed": sum(s["freed"] for s in sh),
            "shrink_slab_ns": sum(s["time_ns"] for s in sh),
            "slab_caches_never_drain": sum(1 for c in section["caches"] if c["never_drains"]),
            "kmem_cache_lifecycle_events": len(section["lifecycle"]),
            "drop_caches_runs": section["drop_caches_runs"],
        }

    def vmstat_rows(self, totals: Dict[str, Any], vm: Dict[str, int]) -> List[List[Any]]:
        """Traced vs /proc/vmstat.  do_shrink_slab() adds shrinkctl->nr_scanned
        to SLABS_SCANNED after each scan_objects() batch and subtracts the same
        from total_scan, so start.total_scan - end.total_scan per call sums to
        exactly slabs_scanned (calls that straddle the window edges aside)."""
        return [
            ["shrinker objects scanned", totals.get("shrink_slab_scanned", "-"),
             vm.get("slabs_scanned", "-"), "slabs_scanned"],
            ["drop_caches (slab) runs", totals.get("drop_caches_runs", "-"),
             vm.get("drop_slab", "-"), "drop_slab"],
        ]

    def render(self, section: Dict[str, Any]) -> List[str]:
        from trace_reclaim.report import fmt_ns, table

        out: List[str] = []
        sh = section["shrinkers"]
        ctx = ", ".join(f"{k} {v}" for k, v in section["contexts"].items()) or "none"
        out.append(f"Shrinkers: {sum(s['calls'] for s in sh)} calls "
                   f"({ctx}); drop_caches runs {section['drop_caches_runs']}")
        if sh:
            rows = []
            for s in sh[:15]:
                who = ",".join(s["contexts"]) or "-"
                rows.append([s["name"][:26], s["calls"], s["objects"], s["scanned"],
                             s["freed"], fmt_ns(s["time_ns"]), fmt_ns(s["p99_ns"]),
                             s["min_priority"], who[:18]])
            out += table(["SHRINKER", "CALLS", "OBJS", "SCANNED", "FREED", "TIME",
                          "P99", "PRIO", "CONTEXT"], rows)
            if len(sh) > 15:
                out.append(f"  ... {len(sh) - 15} more shrinkers (see -j)")
            for s in sh:
                if s["direct_reclaim_by"]:
                    out.append(f"  {s['name']}: direct reclaim by pid "
                               + ", ".join(s["direct_reclaim_by"]))
                if s["frees_nothing"]:
                    out.append(f"  ! {s['name']}: asked {s['calls']} times to scan "
                               f"{s['asked']} objects, freed nothing")
        out.append("")
        nd = [c for c in section["caches"] if c["never_drains"]]
        out.append(f"Caches that never drained: {len(nd) or 'none'}")
        for c in nd:
            ev = c["evidence"] or {}
            out.append(f"  ! {c['name']}: active {ev.get('before', c['active_start'])} "
                       f"before shrink -> {ev.get('after', c['active_end'])} after"
                       f" (fell {ev.get('fell', '-')})")
            out.append(f"      {c['reason']}: {c['reason_detail']}")
        grew = [c for c in section["caches"] if c["counted"]][:10]
        if grew:
            out.append("Per-cache kmem_cache_alloc/free (largest net change):")
            rows = [[c["name"][:22], c["allocs"], c["frees"], c["net"],
                     "-" if c["active_start"] is None else c["active_start"],
                     "-" if c["active_end"] is None else c["active_end"],
                     "-" if c["slabinfo_delta"] is None else c["slabinfo_delta"]]
                    for c in grew]
            out += table(["CACHE", "ALLOCS", "FREES", "NET", "ACT START", "ACT END",
                          "SLAB DELTA"], rows)
        untraced = [c["name"] for c in section["caches"] if c.get("frees_untraced")]
        if untraced:
            out.append("  net above the slabinfo change (frees by kfree/kfree_rcu/bulk, "
                       "not traced): " + ", ".join(untraced[:6]))
        if section["caches_not_counted_map_full"]:
            out.append(f"  {section['caches_not_counted_map_full']} events not counted "
                       "(per-cache map full)")
        out.append("")
        lc = section["lifecycle"]
        out.append(f"kmem_cache lifecycle: {len(lc) or 'none'} "
                   f"({section['lifecycle_method']})")
        for ev in lc[:30]:
            what = ev["event"]
            extra = []
            if ev.get("alias_of"):
                extra.append(f"alias of {ev['alias_of']} ({ev['merged_dir']}, "
                             f"shared by {ev['shared_by']})")
            elif ev.get("merged_dir"):
                extra.append(f"merged dir {ev['merged_dir']}")
            if ev.get("objects_last_seen"):
                extra.append(f"{ev['objects_last_seen']} objects at the last sample, "
                             f"{ev['objects_at_destroy']} at destroy")
            if ev.get("note"):
                extra.append(ev["note"])
            out.append(f"  {what:<7} {ev['name']}: " + "; ".join(extra))
        for m in section["merged"]:
            state = "still exists" if m["exists"] else "is gone"
            out.append(f"  merged cache {m['dir']} ({m['name']}) {state}: "
                       f"{m['aliases'] if m['aliases'] is not None else '-'} aliases; "
                       f"{m['links_total']} names link to it")
        if any(ev.get("stale_link") for ev in lc):
            out.append("  Destroying a merged alias only drops the merged cache's "
                       "refcount: the cache and the alias's /sys/kernel/slab link stay.")
        for line in section["kmsg"]:
            out.append(f"  kernel: {line[:74]}")
        return out


class SlabTracer(Tracer):
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
                                  EV_KMEM_CACHE_DESTROY)

    def __init__(self) -> None:
        self._state: Dict[str, Any] = {}
        self._btf_facts: Optional[Dict[str, Any]] = None

    def btf_facts(self, probe: Any) -> Dict[str, Any]:
        """kmem_cache.name offset and raw tracepoint argument indexes, from BTF."""
        if self._btf_facts is None:

            btf = probe.btf_types
            self._btf_facts = {
                "name_off": btf.member_offset("kmem_cache", "name") if btf else None,
                "alloc_arg": btf.raw_tp_arg("kmem_cache_alloc", "kmem_cache") if btf else None,
                "free_arg": btf.raw_tp_arg("kmem_cache_free", "kmem_cache") if btf else None,
                "btf": btf is not None,
            }
        return self._btf_facts

    def plan(self, probe: Any) -> Tuple[List[Attach], List[str]]:
        attaches, cflags = super().plan(probe)
        f = self.btf_facts(probe)
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
        rejected = []
        kp_ok, kp_why = probe.kprobes
        if not kp_ok:
            rejected.append(("kprobe kmem_cache_destroy", kp_why))
        fe_ok, fe_why = probe.fentry
        if fe_ok and f["name_off"] is not None:
            cflags.append("-DSLAB_LIFECYCLE_FENTRY")
            chosen = "fentry kmem_cache_destroy, fexit __kmem_cache_create_args"
        else:
            rejected.append(("fentry kmem_cache_destroy", fe_why))
            chosen = ("/sys/kernel/slab + /proc/slabinfo compared each interval "
                      "(timing approximate to the interval)")
        attaches.append(Attach(family="kmem_cache lifecycle", chosen=chosen,
                               rejected=rejected))
        return attaches, cflags

    def aggregator(self, window: Window) -> SlabAggregator:
        return SlabAggregator(window)

    def header(self, probe: Any) -> Dict[str, Any]:
        f = self.btf_facts(probe)
        return {"ncpus": os.cpu_count() or 1, "kmem_cache_name_offset": f["name_off"],
                "kmem_cache_alloc_arg": f["alloc_arg"], "kmem_cache_free_arg": f["free_arg"]}

    # -- live reading -----------------------------------------------------
    def sample(self, bpf: Any, procfs: Any, ts_ns: int, when: str) -> List[Any]:
        from trace_reclaim.tracers import slabfs

        st = self._state
        if when == "start" or st.get("bpf") is not bpf:
            if st.get("kmsg") is not None:
                st["kmsg"].close()
            st.clear()
            st.update(bpf=bpf, symbols=set(), slabinfo={}, sys_key=None, reclaimable=[],
                      kmsg=slabfs.KmsgReader(procfs.path("/dev/kmsg")))
        data: Dict[str, Any] = {"when": when}
        # shrinker callbacks, symbolized live (the replay has no kernel)
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
        if syms:
            data["symbols"] = syms
        # per-cache cumulative counts
        try:
            names_map = bpf["slab_cache_names"]
            counts_map = bpf["slab_cache_counts"]
        except KeyError:
            names_map = counts_map = None
        if counts_map is not None:
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
            data["caches"] = caches
            data["overflow"] = sum(bpf["slab_cache_overflow"][0])
        # /proc/slabinfo: everything at start and end, changed rows at ticks
        text = procfs.try_read("/proc/slabinfo")
        if text is not None:
            from trace_reclaim.procfs import parse_slabinfo

            si = {n: [r["active_objs"], r["num_objs"], r["objsize"], r["objperslab"]]
                  for n, r in parse_slabinfo(text).items()}
            full = when != "tick"
            prev_si = st["slabinfo"]
            data["slabinfo"] = si if full else {
                n: r for n, r in si.items() if prev_si.get(n) != r}
            data["slabinfo_full"] = full or set(si) != set(prev_si)
            if data["slabinfo_full"]:
                data["slabinfo"] = si
            st["slabinfo"] = si
        # /sys/kernel/slab: full at start/end; at ticks the structure, plus
        # attributes of the reclaimable caches, only when something changed
        root = procfs.path(slabfs.SYS_SLAB)
        sysfs = slabfs.read_sys_slab(root, full=(when != "tick"), only=st["reclaimable"])
        if when == "start":
            st["reclaimable"] = [d for d, a in sysfs["caches"].items()
                                 if a.get("reclaim_account") == 1]
        key = (tuple(sorted((d, a["ino"], a["aliases"]) for d, a in sysfs["caches"].items())),
               tuple(sorted((n, t, i) for n, (t, i) in sysfs["links"].items())))
        if when != "tick" or key != st["sys_key"]:
            data["sys_slab"] = sysfs
        st["sys_key"] = key
        for what, path, parse in (
                ("dentry_state", "/proc/sys/fs/dentry-state", slabfs.parse_dentry_state),
                ("inode_state", "/proc/sys/fs/inode-state", slabfs.parse_inode_state)):
            t = procfs.try_read(path)
            if t:
                data[what] = parse(t)
        kmsg = st["kmsg"].read()
        if kmsg:
            data["kmsg"] = kmsg
        if when == "end":
            st["kmsg"].close()
        return [events.Sample(ts_ns, self.name, data)]


TRACER = SlabTracer()
