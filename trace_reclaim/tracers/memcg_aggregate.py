"""The memcg tracer's records and aggregation (pure): memcg reclaim, and every
attributed event per cgroup.  The tracer itself (BPF program, live sampling)
is ``trace_reclaim.tracers.memcg``; its text section ``memcg_render``.

What follows is the tracer's full description.

Kernel side: ``bpf/memcg.bpf.c`` on ``vmscan:mm_vmscan_memcg_reclaim_begin/end``
(try_to_free_mem_cgroup_pages(): a cgroup at memory.max / limit_in_bytes,
over memory.high, a proactive memory.reclaim, a limit being lowered) and
``mm_vmscan_memcg_softlimit_reclaim_begin/end`` (v1 soft limit), paired per
thread in the kernel.  Memcg reclaim appears in neither ``allocstall_*`` nor
/proc/vmstat's ``pgsteal_*``: only here and in the cgroup's own memory.stat.

The cgroup of every direct-reclaim stall, shrinker call, vmalloc area and
OOM kill comes with the record (``cgroup_id``, ``memcg_id`` in bpf/events.h);
this tracer's aggregator observes those records too and sums them per
cgroup.  Ids are named in user space (``trace_reclaim.cgroupfs``): each
sample carries the paths and memory counters of the cgroups seen so far, so
a replay elsewhere shows the same names and counter deltas.

Which limit made a cgroup reclaim is read from the kernel stack above the
tracepoint (the caller of try_to_free_mem_cgroup_pages), symbolized live.
On cgroup v2, memory.high throttling itself (the sleep in
mem_cgroup_handle_over_high()) has no tracepoint: it shows as memory.high
reclaim here, as ``memory.events`` ``high`` deltas and as the cgroup's
``memory.pressure``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Set, Tuple

from trace_reclaim import abi, cgroupfs, events, schema
from trace_reclaim.abi import EV_CGROUP_MKDIR, EV_MEMCG_RECLAIM
from trace_reclaim.stats import LatencyStats
from trace_reclaim.tracer import Aggregator, Window

__all__ = [
    "EV_MEMCG_RECLAIM", "EV_CGROUP_MKDIR", "MemcgReclaim", "CgroupMkdir", "MemcgAggregator",
    "limit_of_callers", "slim_counters", "MAX_CGROUPS", "MAX_COUNTED", "MAX_CALLERS",
    "RECENT_SAMPLES",
]

#: Cgroups kept per report (the rest are summed as "other").
MAX_CGROUPS = 256
#: Tasks whose last reclaim is remembered for the OOM kill that may follow.
MAX_TASKS = 4096
MAX_OOM_KILLS = 256
#: An OOM kill follows its task's failed reclaim at once (MAX_RECLAIM_RETRIES
#: passes, then out_of_memory()); a reclaim longer ago is not its trigger.
TRIGGER_WINDOW_NS = 1_000_000_000
#: Cgroups whose counters one sample reads.
MAX_COUNTED = 256
MAX_CALLERS = 256
#: Samples after a cgroup's last record that still read its counters.
RECENT_SAMPLES = 3
OTHER = ("other", 0)

KIND_LIMIT = abi.MEMCG_RECLAIM_LIMIT
KIND_SOFTLIMIT = abi.MEMCG_RECLAIM_SOFTLIMIT

# The caller of try_to_free_mem_cgroup_pages() says which limit (mm/memcontrol.c):
# memory.high reclaim runs on the way back to user space,
# mem_cgroup_handle_over_high() -> reclaim_high() (inlined or not); a charge at
# the hard limit reclaims in try_charge_memcg(), called try_charge() in older
# kernels.  Names not listed read as "unknown", never as a guess.
CALLER_LIMITS = {
    "try_charge_memcg": "max", "try_charge": "max",
    "reclaim_high": "high", "mem_cgroup_handle_over_high": "high",
    "memory_high_write": "high_write", "memory_max_write": "max_write",
    "mem_cgroup_resize_max": "limit_write", "memory_reclaim": "proactive",
    "user_proactive_reclaim": "proactive", "mem_cgroup_force_empty": "force_empty",
}
LIMITS = ("max", "high", "proactive", "max_write", "high_write", "limit_write",
          "force_empty", "softlimit", "unknown")

# memory.stat keys kept in samples (the rest would only grow recordings).
V1_STAT_KEYS = ("cache", "rss", "mapped_file", "pgpgin", "pgpgout", "pgfault",
                "inactive_file", "active_file", "total_pgpgout")
V2_STAT_KEYS = ("anon", "file", "pgscan", "pgsteal", "pgscan_direct", "pgsteal_direct",
                "pgscan_kswapd", "pgsteal_kswapd", "pgscan_proactive", "pgsteal_proactive",
                "workingset_refault_file", "workingset_refault_anon", "pgfault")


@events.record
class MemcgReclaim(events.Event):
    """One memcg reclaim; ``ts_ns`` is when it ended."""

    delta_ns: int
    gfp_flags: int
    nr_reclaimed_pages: int
    cgroup_id: int
    memcg_id: int
    caller0_ip: int
    caller1_ip: int
    caller2_ip: int
    order: int
    kind: int


@events.record
class CgroupMkdir(events.Event):
    """A cgroup was created (names its id even if it is gone before a sample)."""

    id: int
    root: int
    level: int
    path: str


events.register(EV_MEMCG_RECLAIM, events.struct_decoder(MemcgReclaim, "memcg_reclaim_event"))
events.register(EV_CGROUP_MKDIR, events.struct_decoder(CgroupMkdir, "cgroup_mkdir_event"))

# What MemcgTracer.sample() writes (a cgroup's counters come from
# cgroupfs.read_memory_counters() through slim_counters()); a sample that does
# not fit is damage, counted and skipped before the aggregator sees it.
_BYTES = schema.Opt(schema.Int(0))
_COUNTERS = schema.Obj({"version": schema.Int(1, 2)}, {
    **{k: _BYTES for k in ("usage_bytes", "limit_bytes", "max_usage_bytes",
                           "soft_limit_bytes", "current_bytes", "max_bytes", "high_bytes",
                           "low_bytes", "min_bytes", "peak_bytes")},
    "failcnt": schema.Int(0),
    "events": schema.Map(schema.Int(0)),
    "stat": schema.Map(schema.Int(0)),
    "pressure_total_us": schema.Map(schema.Int(0)),
})
_CGROUPS = schema.Map(schema.Obj(optional={"path": schema.STR, "counters": _COUNTERS}),
                      keys=schema.DECIMAL)
events.register_sample("memcg", schema.Obj(optional={
    "mounts": schema.Obj(optional={
        "memory": schema.Opt(schema.Obj({"path": schema.STR, "version": schema.Int(1, 2)},
                                        {"hierarchy_id": schema.Int(0)})),
        "unified": schema.Opt(schema.STR)}),
    "filter": schema.List(schema.STR),
    "memcg": _CGROUPS,
    "cgroup": _CGROUPS,
    "callers": schema.Map(schema.STR, keys=schema.HEX),
}))
events.register_header("memcg", schema.Obj(optional={"cgroups": schema.List(schema.STR)}))


def limit_of_callers(names: List[Optional[str]], kind: int) -> str:
    """Which limit a memcg reclaim served, from its callers' function names."""
    if kind == KIND_SOFTLIMIT:
        return "softlimit"
    for n in names:
        if not n:
            continue
        base = n.split("+", 1)[0]
        if base in CALLER_LIMITS:
            return CALLER_LIMITS[base]
    return "unknown"


def slim_counters(c: Dict[str, Any]) -> Dict[str, Any]:
    """Keep a sample's counters small: the limits, events and a few stat keys."""
    out = {k: v for k, v in c.items() if k not in ("stat", "pressure", "events_local")}
    keys = V1_STAT_KEYS if c.get("version") == cgroupfs.V1 else V2_STAT_KEYS
    stat = c.get("stat") or {}
    out["stat"] = {k: stat[k] for k in keys if k in stat}
    p = c.get("pressure")
    if isinstance(p, dict):
        out["pressure_total_us"] = {k: int(v.get("total", 0)) for k, v in p.items()
                                    if isinstance(v, dict)}
    return out


class _Zeros(dict):
    """Counters of a cgroup just created: every key reads 0."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> int:
        return 0

    def get(self, key: str, default: Any = None) -> int:
        return 0


def _part(reading: Dict[str, Any], key: str) -> Dict[str, Any]:
    """A reading's sub-dict (events, stat, ...); {} when absent (a _Zeros is kept:
    an empty dict is falsy, so ``or {}`` would lose it)."""
    v = reading.get(key)
    return v if isinstance(v, dict) else {}


class _Cg:
    """One cgroup's row."""

    __slots__ = ("key", "direct", "direct_pages", "memcg", "memcg_pages", "limits",
                 "shrink_calls", "shrink_freed", "shrink_ns", "vmalloc_areas",
                 "vmalloc_bytes", "oom_kills", "comms", "iv_stall_ns", "iv_memcg_ns")

    def __init__(self, key: Tuple[str, int]) -> None:
        self.key = key
        self.direct = LatencyStats()
        self.direct_pages = 0
        self.memcg = LatencyStats()
        self.memcg_pages = 0
        self.limits: Dict[Tuple[int, int, int, int], int] = {}
        self.shrink_calls = 0
        self.shrink_freed = 0
        self.shrink_ns = 0
        self.vmalloc_areas = 0
        self.vmalloc_bytes = 0
        self.oom_kills = 0
        self.comms: Dict[str, int] = {}
        self.iv_stall_ns = 0
        self.iv_memcg_ns = 0


def _key(ev: Any) -> Optional[Tuple[str, int]]:
    """The row an attributed event belongs to: its memcg, else its cgroup v2."""
    if ev.memcg_id:
        return ("memcg", ev.memcg_id)
    if ev.cgroup_id:
        return ("cgroup", ev.cgroup_id)
    return None   # recorded before attribution


class MemcgAggregator(Aggregator):
    """Memcg reclaim by limit; stalls, shrinker calls, vmalloc and OOM per cgroup."""

    section: ClassVar[str] = "memcg"
    top_level: ClassVar[Tuple[str, ...]] = ("cgroups",)

    def __init__(self, window: Window) -> None:
        super().__init__(window)
        self.cgs: Dict[Tuple[str, int], _Cg] = {}
        self.total = LatencyStats()
        self.total_pages = 0
        self.by_callers: Dict[Tuple[int, int, int, int], int] = {}
        self.before_window = 0
        # From samples: names and counters (first and last reading per cgroup).
        self.paths: Dict[Tuple[str, int], str] = {}
        self.first: Dict[Tuple[str, int], Dict[str, Any]] = {}
        self.last: Dict[Tuple[str, int], Dict[str, Any]] = {}
        self.symbols: Dict[int, str] = {}
        self.created: Set[Tuple[str, int]] = set()
        self.mounts: Dict[str, Any] = {}
        self.filter: List[str] = []
        self._iv: Dict[str, int] = {"memcg_reclaims": 0, "memcg_reclaim_ns": 0,
                                    "memcg_pages": 0}
        # Each task's last reclaim (memcg or direct): the allocation an OOM
        # kill the task then makes was that reclaim's (out_of_memory() runs in
        # the charging/allocating task right after its reclaim gave up).
        self._last_reclaim: Dict[int, Tuple[str, int, int, int, Tuple[str, int] | None]] = {}
        self.oom_kills: List[Dict[str, Any]] = []

    # -- events ---------------------------------------------------------------
    def _cg(self, key: Tuple[str, int]) -> _Cg:
        c = self.cgs.get(key)
        if c is None:
            if len(self.cgs) >= MAX_CGROUPS:
                key = OTHER
                c = self.cgs.get(key)
                if c is not None:
                    return c
            c = self.cgs[key] = _Cg(key)
        return c

    def handlers(self) -> Dict[int, Callable[[Any], None]]:
        return {EV_MEMCG_RECLAIM: self._memcg_reclaim, EV_CGROUP_MKDIR: self._mkdir}

    def observes(self) -> Mapping[int, Callable[[Any], None]]:
        return {abi.EV_DIRECT_RECLAIM: self._direct_reclaim, abi.EV_SHRINK_SLAB: self._shrink,
                abi.EV_ALLOC_VMAP_AREA: self._vmalloc, abi.EV_MARK_VICTIM: self._oom}

    def feed(self, ev: Any) -> None:
        h = self.handlers().get(ev.type)
        if h is not None:
            h(ev)

    def _mkdir(self, ev: CgroupMkdir) -> None:
        """Name the new id in its hierarchy (the memory one's id is in the samples)."""
        mem = self.mounts.get("memory") or {}
        hiers = []
        if ev.root == 0:
            hiers.append("cgroup")
        if ev.root == mem.get("hierarchy_id", -1) or (ev.root == 0 and mem.get("version") == 2):
            hiers.append("memcg")
        for hier in hiers:
            if len(self.paths) < 4 * MAX_CGROUPS:
                self.paths.setdefault((hier, ev.id), ev.path)
                # A new cgroup's counters start at zero: its exact baseline.
                self.created.add((hier, ev.id))

    def _memcg_reclaim(self, ev: MemcgReclaim) -> None:
        d = ev.delta_ns
        if ev.ts_ns - d < self.window.start_ns:
            self.before_window += 1
            return
        # Named at report time: a caller's symbol arrives with the sample
        # that follows its first records.
        callers = (ev.caller0_ip, ev.caller1_ip, ev.caller2_ip, ev.kind)
        self.total.add(d)
        self.total_pages += ev.nr_reclaimed_pages
        self._count(self.by_callers, callers)
        iv = self._iv
        iv["memcg_reclaims"] += 1
        iv["memcg_reclaim_ns"] += d
        iv["memcg_pages"] += ev.nr_reclaimed_pages
        key = _key(ev)
        self._remember(ev.pid, "memcg", ev, key)
        if key is None:
            return
        c = self._cg(key)
        c.memcg.add(d)
        c.memcg_pages += ev.nr_reclaimed_pages
        self._count(c.limits, callers)
        c.iv_memcg_ns += d
        self._comm(c, ev.comm)

    @staticmethod
    def _count(d: Dict[Tuple[int, int, int, int], int],
               callers: Tuple[int, int, int, int]) -> None:
        if callers in d:
            d[callers] += 1
        elif len(d) < MAX_CALLERS:
            d[callers] = 1
        else:
            unknown = (0, 0, 0, callers[3])
            d[unknown] = d.get(unknown, 0) + 1

    def by_limit(self, counts: Dict[Tuple[int, int, int, int], int]) -> Dict[str, int]:
        """Counts by caller stack -> counts by the limit each served."""
        out: Dict[str, int] = {}
        for (ip0, ip1, ip2, kind), n in counts.items():
            limit = limit_of_callers([self.symbols.get(ip) for ip in (ip0, ip1, ip2)], kind)
            out[limit] = out.get(limit, 0) + n
        return {k: out[k] for k in LIMITS if k in out}

    @staticmethod
    def _comm(c: _Cg, comm: str) -> None:
        if comm in c.comms:
            c.comms[comm] += 1
        elif len(c.comms) < 8:
            c.comms[comm] = 1

    def _remember(self, pid: int, kind: str, ev: Any,
                  key: Optional[Tuple[str, int]]) -> None:
        last = self._last_reclaim
        if pid not in last and len(last) >= MAX_TASKS:
            del last[next(iter(last))]   # the oldest task
        last[pid] = (kind, ev.ts_ns, ev.gfp_flags, ev.order, key)

    def _direct_reclaim(self, ev: Any) -> None:
        key = _key(ev)
        self._remember(ev.pid, "direct", ev, key)
        if key is None or ev.ts_ns - ev.delta_ns < self.window.start_ns:
            return
        c = self._cg(key)
        c.direct.add(ev.delta_ns)
        c.direct_pages += ev.nr_reclaimed_pages
        c.iv_stall_ns += ev.delta_ns
        self._comm(c, ev.comm)

    def _shrink(self, ev: Any) -> None:
        key = _key(ev)
        if key is None:
            return
        c = self._cg(key)
        c.shrink_calls += 1
        c.shrink_freed += max(0, ev.freed)
        c.shrink_ns += ev.delta_ns

    def _vmalloc(self, ev: Any) -> None:
        key = _key(ev)
        if key is None or ev.failed:
            return
        c = self._cg(key)
        c.vmalloc_areas += 1
        c.vmalloc_bytes += ev.size_bytes

    def _oom(self, ev: Any) -> None:
        key = _key(ev)
        if key is not None:
            self._cg(key).oom_kills += 1
        if len(self.oom_kills) >= MAX_OOM_KILLS:
            return
        kill: Dict[str, Any] = {"ts_ns": ev.ts_ns, "victim_pid": ev.victim_pid,
                                "by_pid": ev.pid, "memcg_oom": False, "cgroup": None,
                                "trigger": None}
        if key is not None:
            kill["cgroup"] = {"hierarchy": "memory" if key[0] == "memcg" else "unified",
                              "id": key[1]}
        last = self._last_reclaim.get(ev.pid)
        if last is not None and ev.ts_ns - last[1] <= TRIGGER_WINDOW_NS:
            kind, ts, gfp, order, rkey = last
            kill["trigger"] = {"reclaim": kind, "ts_ns": ts, "before_kill_ns": ev.ts_ns - ts,
                               "gfp_flags": gfp, "order": order}
            # The killing task's last reclaim was its own cgroup's, at its
            # limit: mem_cgroup_out_of_memory(), not the global OOM killer.
            kill["memcg_oom"] = kind == "memcg" and rkey == key
        self.oom_kills.append(kill)

    # -- samples ----------------------------------------------------------------
    def on_sample(self, sample: Any) -> None:
        data = sample.data if isinstance(sample.data, dict) else {}
        if isinstance(data.get("mounts"), dict):
            self.mounts = data["mounts"]
        if isinstance(data.get("filter"), list):
            self.filter = [str(x) for x in data["filter"]]
        for k, sym in (data.get("callers") or {}).items():
            if len(self.symbols) < MAX_CALLERS:
                self.symbols[int(k, 16)] = str(sym)
        for hier in ("memcg", "cgroup"):
            for sid, info in (data.get(hier) or {}).items():
                key = (hier, int(sid))
                if "path" in info:
                    self.paths[key] = str(info["path"])
                cnt = info.get("counters")
                if isinstance(cnt, dict) and (key in self.last
                                              or len(self.last) < 4 * MAX_CGROUPS):
                    self.first.setdefault(key, {**cnt, "ts_ns": sample.ts_ns})
                    self.last[key] = {**cnt, "ts_ns": sample.ts_ns}

    def on_tick(self, ts_ns: int) -> Dict[str, Any]:
        row: Dict[str, Any] = dict(self._iv)
        top = sorted((c for c in self.cgs.values() if c.iv_stall_ns or c.iv_memcg_ns),
                     key=lambda c: -(c.iv_stall_ns + c.iv_memcg_ns))[:3]
        row["top"] = [{"name": self.name_of(c.key)[1], "stall_ns": c.iv_stall_ns,
                       "memcg_ns": c.iv_memcg_ns} for c in top]
        for c in self.cgs.values():
            c.iv_stall_ns = c.iv_memcg_ns = 0
        self._iv = {k: 0 for k in self._iv}
        return row

    # -- report -----------------------------------------------------------------
    def cgroup_name(self, key: Tuple[str, int]) -> Optional[str]:
        kind, name, path = self.name_of(key)
        return name if path is not None else None

    def name_of(self, key: Tuple[str, int]) -> Tuple[str, str, Optional[str]]:
        """(kind, name, path) of a row; path None when the id was never resolved."""
        if key == OTHER:
            return "other", f"(beyond {MAX_CGROUPS} cgroups)", None
        path = self.paths.get(key)
        if path is None:
            return "unknown", f"id {key[1]}", None
        kind, name = cgroupfs.classify(path)
        return kind, name, path

    def _first(self, key: Tuple[str, int]) -> Optional[Dict[str, Any]]:
        """The baseline reading: zeros for a cgroup created in the window."""
        if key in self.created:
            return {"ts_ns": None, "failcnt": 0, "events": _Zeros(), "stat": _Zeros(),
                    "pressure_total_us": _Zeros()}
        return self.first.get(key)

    def _limit_events(self, key: Tuple[str, int]) -> Dict[str, Any]:
        a, b = self._first(key), self.last.get(key)
        if not a or not b:
            return {}
        out: Dict[str, Any] = {}
        if "failcnt" in a and "failcnt" in b:
            out["failcnt"] = b["failcnt"] - a["failcnt"]
        ea, eb = _part(a, "events"), _part(b, "events")
        for k in ("low", "high", "max", "oom", "oom_kill", "oom_group_kill"):
            if k in ea and k in eb:
                out[k] = eb[k] - ea[k]
        return out

    def _counters(self, key: Tuple[str, int]) -> Dict[str, Any]:
        a, b = self._first(key), self.last.get(key)
        if not a or not b:
            return {}
        out: Dict[str, Any] = {"baseline": "created" if key in self.created else "sampled",
                               "first_ts_ns": a["ts_ns"], "last_ts_ns": b["ts_ns"]}
        for k in ("limit_bytes", "max_bytes", "high_bytes", "low_bytes", "min_bytes",
                  "usage_bytes", "current_bytes", "max_usage_bytes", "peak_bytes"):
            if k in b:
                out[k] = b[k]
        sa, sb = _part(a, "stat"), _part(b, "stat")
        out["stat_delta"] = {k: sb[k] - sa[k] for k in sorted(sb) if k in sa
                             and k not in ("cache", "rss", "anon", "file", "mapped_file",
                                           "inactive_file", "active_file")}
        pa, pb = _part(a, "pressure_total_us"), _part(b, "pressure_total_us")
        if pb:
            out["pressure_us"] = {k: pb[k] - pa.get(k, 0) for k in sorted(pb)}
        return out

    def report(self) -> Dict[str, Any]:
        rows: List[Dict[str, Any]] = []
        for c in self.cgs.values():
            kind, name, path = self.name_of(c.key)
            d, m = c.direct.summary(), c.memcg.summary()
            rows.append({
                "path": path, "id": c.key[1],
                "hierarchy": "memory" if c.key[0] == "memcg" else "unified",
                "name": name, "kind": kind,
                "direct_stalls": d["count"], "direct_stall_ns": d["total"],
                "direct_p99_ns": d["p99"], "direct_max_ns": d["max"],
                "direct_pages": c.direct_pages,
                "memcg_reclaims": m["count"], "memcg_reclaim_ns": m["total"],
                "memcg_p50_ns": m["p50"], "memcg_p99_ns": m["p99"], "memcg_max_ns": m["max"],
                "memcg_pages": c.memcg_pages,
                "memcg_by_limit": self.by_limit(c.limits),
                "limit_events": self._limit_events(c.key),
                "counters": self._counters(c.key),
                "shrinker_calls": c.shrink_calls, "shrinker_freed": c.shrink_freed,
                "shrinker_ns": c.shrink_ns,
                "vmalloc_areas": c.vmalloc_areas, "vmalloc_bytes": c.vmalloc_bytes,
                "oom_kills": c.oom_kills,
                "comms": dict(sorted(c.comms.items(), key=lambda kv: (-kv[1], kv[0]))),
            })
        rows.sort(key=lambda r: (-(r["direct_stall_ns"] + r["memcg_reclaim_ns"]),
                                 -r["shrinker_calls"], r["hierarchy"], r["id"]))
        s = self.total.summary()
        return {
            "memcg_reclaim": {
                "reclaims": s["count"], "total_ns": s["total"], "p50_ns": s["p50"],
                "p99_ns": s["p99"], "max_ns": s["max"], "pages_reclaimed": self.total_pages,
                "by_limit": self.by_limit(self.by_callers),
                "begun_before_window": self.before_window,
                "percentiles_exact": self.total.exact,
            },
            "mounts": self.mounts,
            "filter": self.filter,
            "oom_kills": self.oom_kills,
            "cgroups": rows,
        }

    def totals(self, section: Dict[str, Any]) -> Dict[str, Any]:
        m = section["memcg_reclaim"]
        return {"memcg_reclaims": m["reclaims"], "memcg_reclaim_ns": m["total_ns"],
                "memcg_reclaim_pages": m["pages_reclaimed"]}

    def render(self, section: Dict[str, Any]) -> List[str]:
        from trace_reclaim.tracers.memcg_render import render_memcg

        return render_memcg(section)
