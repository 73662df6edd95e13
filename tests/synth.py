"""Build records and recordings the way the kernel side lays them out.

Records are packed from the struct layouts of bpf/events.h (trace_reclaim.abi,
checked against the compiler by tests/unit/test_abi.py), so pure tests
exercise the real decoders on realistic bytes.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Dict, List, Optional, Tuple

from trace_reclaim import abi, events
from trace_reclaim.recording import Writer


def record(struct_name: str, type_id: int, ts_ns: int, pid: int = 100,
           tgid: Optional[int] = None, cpu: int = 0, comm: str = "task",
           **fields: Any) -> bytes:
    """Pack ``struct struct_name``: the header, then ``fields`` by C name (missing: 0)."""
    lay = abi.layout(struct_name)
    given = dict(fields, ts_ns=ts_ns, type=type_id, pid=pid,
                 tgid=pid if tgid is None else tgid, cpu=cpu, comm=comm)
    values = []
    for f in lay.flat:
        v = given.pop(f.name, b"" if f.is_string else 0)
        values.append(v.encode() if isinstance(v, str) else v)
    if given:
        raise TypeError(f"struct {struct_name} has no fields {sorted(given)}")
    return struct.pack(lay.fmt, *values)


def header(ts_ns: int, type_id: int, pid: int = 100, tgid: Optional[int] = None,
           cpu: int = 0, comm: str = "task") -> bytes:
    return record("event_header", type_id, ts_ns, pid, tgid, cpu, comm)


def wakeup_kswapd(ts: int, nid: int = 0, zid: int = 2, order: int = 0,
                  gfp: int = 0xCC0, **kw: Any) -> Tuple[int, bytes]:
    t = abi.EV_WAKEUP_KSWAPD
    return t, record("wakeup_kswapd_event", t, ts, gfp_flags=gfp, nid=nid, zid=zid,
                     order=order, **kw)


def kswapd_wake(ts: int, nid: int = 0, zid: int = 2, order: int = 0) -> Tuple[int, bytes]:
    t = abi.EV_KSWAPD_WAKE
    return t, record("kswapd_wake_event", t, ts, pid=90, comm=f"kswapd{nid}", nid=nid, zid=zid,
                     order=order)


def kswapd_sleep(ts: int, nid: int = 0) -> Tuple[int, bytes]:
    t = abi.EV_KSWAPD_SLEEP
    return t, record("kswapd_wake_event", t, ts, pid=90, comm=f"kswapd{nid}", nid=nid, zid=-1,
                     order=-1)


def direct_reclaim(end_ts: int, delta_ns: int, pages: int = 32, order: int = 0,
                   gfp: int = 0xCC0, retries: int = 0, **kw: Any) -> Tuple[int, bytes]:
    t = abi.EV_DIRECT_RECLAIM
    return t, record("direct_reclaim_event", t, end_ts, delta_ns=delta_ns, gfp_flags=gfp,
                     nr_reclaimed_pages=pages, order=order, retries=retries, **kw)


def user(obj: Any) -> Tuple[int, bytes]:
    return events.user_type(obj), events.encode_user(obj)


def vmstat_snapshot(ts: int, when: str, **values: int) -> Tuple[int, bytes]:
    return user(events.Snapshot(ts, "vmstat", when, values))


def recording(records: List[Tuple[int, bytes]], header_obj: Optional[Dict[str, Any]] = None,
              flush_every: int = 0) -> bytes:
    buf = io.BytesIO()
    w = Writer(buf, header_obj if header_obj is not None else
               {"tool": "trace-reclaim", "kernel_release": "test",
                "plan": {"tracers": ["reclaim"]}})
    for i, (t, p) in enumerate(records):
        w.write(t, p)
        if flush_every and (i + 1) % flush_every == 0:
            w.flush()
    w.close()
    return buf.getvalue()


def pressure_story(base: int = 1_000_000_000) -> List[Tuple[int, bytes]]:
    """A small, plausible trace: start counters, kswapd episode, stalls, end."""
    recs = [
        vmstat_snapshot(base, "start", allocstall_normal=10, allocstall_movable=5,
                        pgsteal_direct=100, pgsteal_kswapd=1000, pageoutrun=7),
        wakeup_kswapd(base + 10, order=0),
        kswapd_wake(base + 20),
        direct_reclaim(base + 5_000, 3_000, pages=40, pid=200, comm="dd"),
        direct_reclaim(base + 9_000, 1_000, pages=8, pid=200, comm="dd", retries=1),
        user(events.Tick(base + 500_000_000, 1, {})),
        kswapd_sleep(base + 600_000_000),
        direct_reclaim(base + 700_000_000, 50_000, pages=64, pid=300, comm="cc1", order=3),
        user(events.Tick(base + 1_000_000_000, 2, {abi.EV_WAKEUP_KSWAPD: 2})),
        vmstat_snapshot(base + 1_000_000_001, "end", allocstall_normal=12,
                        allocstall_movable=7, pgsteal_direct=200, pgsteal_kswapd=5000,
                        pageoutrun=8),
        user(events.End(base + 1_000_000_001, "duration")),
    ]
    return recs
