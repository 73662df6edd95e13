"""Turn a built episode into its report document: watermarks, PSI, delays, shrinkers.

Pure functions of the builder's state (``builder.py``), called once, at report time.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from trace_reclaim.episodes.model import TASKSTATS_FIELDS, TOP, Episode, zone_state
from trace_reclaim.mmenums import COMPACT_STATUS

if TYPE_CHECKING:
    from trace_reclaim.episodes.builder import EpisodeBuilder

__all__ = ["episode_docs", "watermarks", "psi", "delays"]


def watermarks(zoneinfo: List[Tuple[int, str, List[Dict[str, Any]]]], ep: Episode,
               end: int) -> Optional[Dict[str, Any]]:
    """The zones of the episode's node at its start.

    A snapshot taken inside the episode (the first tick after kswapd
    woke) is preferred, since this kernel grows a lazily initialised
    zone's ``managed`` when memory is first needed; else the last one
    before the episode.
    """
    before = None
    chosen = None
    for ts, when, zones in zoneinfo:
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

def psi(psi_ts: List[int], psi_vals: List[Tuple[float, float, float, float]], start: int,
        end: int) -> Optional[Dict[str, Any]]:
    """PSI memory stall time between the snapshots bracketing the episode.

    /proc/pressure/memory's totals are cumulative microseconds; ticks are
    an interval apart, so the bracket is at least as long as the episode.
    """
    ts = psi_ts
    if len(ts) < 2:
        return None
    i = bisect.bisect_right(ts, start) - 1
    j = bisect.bisect_left(ts, end)
    if i < 0 or j >= len(ts) or j <= i:
        return None
    a, b = psi_vals[i], psi_vals[j]
    inside = psi_vals[i:j + 1]
    return {"some_us": int(b[0] - a[0]), "full_us": int(b[1] - a[1]),
            "bracket_ns": ts[j] - ts[i],
            "some_avg10_max": max(p[2] for p in inside),
            "full_avg10_max": max(p[3] for p in inside)}

def delays(taskstats: Mapping[int, List[Tuple[int, Dict[str, Any]]]], tid: int,
           after: int) -> Optional[Dict[str, Any]]:
    readings = taskstats.get(tid)
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


def episode_docs(b: EpisodeBuilder) -> List[Dict[str, Any]]:
    """The reported episodes as JSON-able documents (the report's ``episodes``)."""
    out = []
    w_end = b.window.end_ns
    for ep in b.reported():
        end = ep.end_ns or (ep.last_ns if ep.kind == "direct" else w_end) or ep.last_ns
        open_at_end = ep.open and ep.kind == "kswapd"
        tasks = sorted(ep.tasks.values(), key=lambda t: (-t.total_ns, t.tid))
        stalls = []
        for t in tasks[:10]:
            row: Dict[str, Any] = {
                "tid": t.tid, "pid": t.tgid, "comm": t.comm, "stalls": t.stalls,
                "total_ns": t.total_ns, "max_ns": t.max_ns, "pages_reclaimed": t.pages}
            if b.taskstats:
                row["delays"] = delays(b.taskstats, t.tid, end)
            stalls.append(row)
        cgroups = _episode_cgroups(b, tasks)
        shr: List[Dict[str, Any]] = [
            {"name": b.shrinker_name(k), "calls": v[0], "scanned": v[1],
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
            "watermarks": watermarks(b.zoneinfo, ep, end),
            "psi": psi(b.psi_ts, b.psi, ep.start_ns, end),
        }
        if cgroups:  # only recordings with cgroup attribution have them
            doc["cgroups"] = cgroups
        out.append(doc)
    return out


def _episode_cgroups(b: EpisodeBuilder, tasks: List[Any]) -> List[Dict[str, Any]]:
    """The cgroups whose tasks stalled in the episode, most stall time first."""
    by: Dict[Tuple[str, int], List[int]] = {}
    for t in tasks:
        if t.cgroup is not None:
            v = by.setdefault(t.cgroup, [0, 0, 0])
            v[0] += t.stalls
            v[1] += t.total_ns
            v[2] += 1
    rows: List[Dict[str, Any]] = []
    for (hier, cgid), (n, ns, ntasks) in by.items():
        name = b.cgroup_name((hier, cgid)) if b.cgroup_name is not None else None
        rows.append({"hierarchy": "memory" if hier == "memcg" else "unified", "id": cgid,
                     "name": name if name is not None else f"id {cgid}",
                     "stalls": n, "stall_ns": ns, "tasks": ntasks})
    rows.sort(key=lambda r: (-r["stall_ns"], r["id"]))
    return rows[:TOP]
