"""One run's numbers: replay a recording and reduce its report to per-metric values.

Part of ``trace-reclaim diff`` (see the package docstring).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from trace_reclaim import abi
from trace_reclaim.env import Environment, UserError
from trace_reclaim.tracer import Tracer

__all__ = ["Run", "load_run", "run_metrics", "shrinker_key", "fold_shrinkers", "cgroup_key",
           "cgroup_metrics",
           "never_drain_caches", "metric_unit", "metric_order", "doc_get", "fmt_value"]


@dataclass
class Run:
    """One recording reduced for the diff."""

    path: str
    header: Dict[str, Any]
    doc: Dict[str, Any]
    latencies_ns: List[int] = field(default_factory=list)

    @property
    def metrics(self) -> Dict[str, Optional[float]]:
        return run_metrics(self.doc)


def doc_get(doc: Dict[str, Any], *path: str) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        return v
    return None


# (name, unit, where in the document); unit "ns" prints as time.
BASE_METRICS: Tuple[Tuple[str, str, Callable[[Dict[str, Any]], Any]], ...] = (
    ("direct_reclaim.stalls", "count", lambda d: doc_get(d, "totals", "direct_reclaim_stalls")),
    ("direct_reclaim.p50_ns", "ns", lambda d: _latency(d, "p50_ns")),
    ("direct_reclaim.p99_ns", "ns", lambda d: _latency(d, "p99_ns")),
    ("direct_reclaim.max_ns", "ns", lambda d: _latency(d, "max_ns")),
    ("direct_reclaim.total_ns", "ns", lambda d: doc_get(d, "totals", "direct_reclaim_ns")),
    ("kswapd.wakes", "count", lambda d: doc_get(d, "totals", "kswapd_wakes")),
    ("kswapd.awake_ns", "ns", lambda d: doc_get(d, "totals", "kswapd_awake_ns")),
    ("reclaimed.direct_pages", "pages", lambda d: _reclaimed(d, "direct")),
    ("reclaimed.kswapd_pages", "pages", lambda d: _reclaimed(d, "kswapd")),
    # Memcg reclaim's LRU pages, where the recording told them apart from direct.
    ("reclaimed.memcg_pages", "pages", lambda d: doc_get(d, "totals", "lru_reclaimed_memcg")),
)


def _latency(doc: Dict[str, Any], key: str) -> Any:
    # A run without stalls has no latency: missing, not zero.
    if not doc_get(doc, "reclaim", "direct_reclaim", "stalls"):
        return None
    return doc_get(doc, "reclaim", "direct_reclaim", key)


def _reclaimed(doc: Dict[str, Any], who: str) -> Any:
    v = doc_get(doc, "totals", f"lru_reclaimed_{who}")
    if v is None:  # an older recording: the kernel's own count
        v = doc_get(doc, "totals", "vmstat_delta", f"pgsteal_{who}")
    return v


def run_metrics(doc: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """One run's value of every metric (None where the run has no such data)."""
    out: Dict[str, Optional[float]] = {}
    for name, _unit, get in BASE_METRICS:
        out[name] = _num(get(doc))
    slab = doc.get("slab")
    if isinstance(slab, dict):
        shrinkers = slab.get("shrinkers")
        if isinstance(shrinkers, list):
            for s in shrinkers:
                if not isinstance(s, dict) or not s.get("name"):
                    continue
                n = shrinker_key(s)
                for k in ("time_ns", "freed"):
                    v = _num(s.get(k))
                    if v is not None:
                        key = f"shrinker.{n}.{k}"
                        out[key] = (out.get(key) or 0) + v
        caches = slab.get("caches")
        if isinstance(caches, list):
            out["slab.never_drain_caches"] = float(len(never_drain_caches(doc)))
    out.update(cgroup_metrics(doc))
    vm = doc.get("vmalloc")
    by = vm.get("by_verdict") if isinstance(vm, dict) else None
    if isinstance(by, dict) and all(isinstance(by.get(v), dict) for v in ("huge", "fallback")):
        # Every area counted, including those the (capped) areas list leaves out.
        out["vmalloc.huge"] = _num(by["huge"].get("areas"))
        out["vmalloc.fallback"] = _num(by["fallback"].get("areas"))
        out["vmalloc.huge_pages"] = _num(by["huge"].get("huge_pages"))
    elif isinstance(vm, dict) and isinstance(vm.get("areas"), list):
        areas = [a for a in vm["areas"] if isinstance(a, dict)]
        out["vmalloc.huge"] = float(sum(1 for a in areas if a.get("verdict") == "huge"))
        out["vmalloc.fallback"] = float(sum(1 for a in areas if a.get("verdict") == "fallback"))
        out["vmalloc.huge_pages"] = float(sum(_num(a.get("huge_pages")) or 0 for a in areas))
    return out


# Per-cgroup values diff compares (report's top-level ``cgroups`` rows).
CGROUP_VALUES = ("direct_stall_ns", "memcg_reclaims", "memcg_reclaim_ns", "memcg_pages")


def cgroup_key(row: Dict[str, Any]) -> str:
    """What a cgroup row is compared by across runs: its name, with the pid
    in our own test cgroups' names (``trace-reclaim-test-<pid>-x``) elided."""
    return re.sub(r"^trace-reclaim-test-\d+-", "trace-reclaim-test-*-", str(row.get("name")))


def cgroup_metrics(doc: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """``memcg.*`` totals and ``cgroup.<name>.<value>`` of every named cgroup row."""
    out: Dict[str, Optional[float]] = {}
    m = doc_get(doc, "memcg", "memcg_reclaim")
    if not isinstance(m, dict):
        return out
    out["memcg.reclaims"] = _num(m.get("reclaims"))
    out["memcg.total_ns"] = _num(m.get("total_ns"))
    for r in doc.get("cgroups") or []:
        if not isinstance(r, dict) or not r.get("path"):
            continue
        key = cgroup_key(r)
        wanted = (["direct_stall_ns"] if r.get("direct_stalls") else []) + \
            (list(CGROUP_VALUES[1:]) if r.get("memcg_reclaims") else [])
        for k in wanted:
            v = _num(r.get(k))
            if v is not None:
                name = f"cgroup.{key}.{k}"
                out[name] = (out.get(name) or 0) + v
    return out


def shrinker_key(row: Dict[str, Any]) -> str:
    """What a shrinker row is compared by across runs.

    A shrinker named by what it shrinks (``super_cache_scan (ext4 vda)``:
    the row has an ``owner``) is the same shrinker in every run.  Otherwise
    the name is the callback, numbered when several share it
    (``super_cache_scan#3``, the third superblock in that run's pointer
    order, or an old recording made before shrinkers had owners): those
    numbers are not stable across runs, so the callback is compared, all
    its instances together.
    """
    name = str(row["name"])
    if row.get("owner"):
        return name
    return re.sub(r"#\d+$", "", name)


def _shrinker_function(metric: str) -> Optional[str]:
    """The callback of a ``shrinker.<key>.<value>`` metric: the key up to " (owner)"."""
    if not metric.startswith("shrinker."):
        return None
    key = metric[len("shrinker."):].rsplit(".", 1)[0]
    return key.split(" (", 1)[0]


def fold_shrinkers(runs: Sequence[Dict[str, Optional[float]]],
                   ) -> List[Dict[str, Optional[float]]]:
    """Compare per callback where any run knows a callback's shrinkers only so.

    A run without owners (an old recording, a kernel without BTF) has one
    ``shrinker.super_cache_scan`` metric for every superblock; a run with
    them has ``shrinker.super_cache_scan (ext4 vda)`` and its siblings.
    Comparing those would show every superblock as gone on one side and
    new on the other, so such a callback is compared as a whole in every run.
    """
    whole = {fn for m in runs for k in m
             if (fn := _shrinker_function(k)) is not None and k == _whole_metric(k, fn)}
    out: List[Dict[str, Optional[float]]] = []
    for m in runs:
        folded: Dict[str, Optional[float]] = {}
        for k, v in m.items():
            fn = _shrinker_function(k)
            if fn is not None and fn in whole:
                k = _whole_metric(k, fn)
                if v is not None:
                    folded[k] = (folded.get(k) or 0) + v
                else:
                    folded.setdefault(k, None)
            else:
                folded[k] = v
        out.append(folded)
    return out


def _whole_metric(metric: str, fn: str) -> str:
    return f"shrinker.{fn}.{metric.rsplit('.', 1)[1]}"


def never_drain_caches(doc: Dict[str, Any]) -> List[str]:
    caches = doc_get(doc, "slab", "caches")
    if not isinstance(caches, list):
        return []
    return sorted({str(c.get("name")) for c in caches
                   if isinstance(c, dict) and c.get("never_drains")})


def metric_unit(name: str) -> str:
    for n, unit, _ in BASE_METRICS:
        if n == name:
            return unit
    if name.endswith("_ns"):
        return "ns"
    if name.endswith(".freed"):
        return "objects"
    if name == "vmalloc.huge_pages" or name.endswith(".memcg_pages"):
        return "pages"
    return "count"


def metric_order(name: str) -> Tuple[int, str]:
    for i, (n, _u, _g) in enumerate(BASE_METRICS):
        if n == name:
            return (i, "")
    return (len(BASE_METRICS), name)


def load_run(path: str, env: Environment, registry: Dict[str, Tracer]) -> Run:
    """Replay a recording: its report document and its per-stall latencies."""
    from trace_reclaim import events
    from trace_reclaim.recording import Reader, RecordingError
    from trace_reclaim.replay import replay

    corr = replay(path, env, registry)
    doc = corr.report()
    start, end = corr.window.start_ns, corr.window.end_ns
    lat: List[int] = []
    try:
        with open(path, "rb") as f:
            reader = Reader(f)
            for type_id, payload in reader.records():
                if type_id != abi.EV_DIRECT_RECLAIM:
                    continue
                try:
                    ev = events.decode(type_id, payload)
                except events.DecodeError:
                    continue
                if ev is None:
                    continue
                # The same window the correlator applied.
                if ev.ts_ns - ev.delta_ns < start or (end and ev.ts_ns > end):
                    continue
                lat.append(int(ev.delta_ns))
    except (OSError, RecordingError) as e:  # it replayed a moment ago
        raise UserError(f"{path}: {e}", "the file changed while it was read") from None
    return Run(path, corr.header, doc, lat)


def fmt_value(v: Optional[float], unit: str) -> str:
    """A metric value in its unit, for the table and notes."""
    if v is None:
        return "-"
    if unit == "ns":
        a = abs(v)
        sign = "-" if v < 0 else ""
        if a < 1e3:
            return f"{sign}{a:.0f}ns"
        if a < 1e6:
            return f"{sign}{a / 1e3:.1f}us"
        if a < 1e9:
            return f"{sign}{a / 1e6:.1f}ms"
        return f"{sign}{a / 1e9:.2f}s"
    if float(v).is_integer():
        v = int(v)
        if abs(v) >= 10_000_000:
            return f"{v / 1e6:.1f}M"
        return str(v)
    return f"{v:.1f}"
