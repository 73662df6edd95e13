"""Export a recording as tables: one per event type, for pandas and DuckDB.

Every BPF record type becomes a table named after its ``enum event_type``
member in ``bpf/events.h`` (``EV_DIRECT_RECLAIM`` -> ``direct_reclaim``),
one row per record (every type of the recording's tracers has its table,
empty when none came), its columns the decoded event's fields in order:
the ``event_header`` (``ts_ns``, ``pid`` (the thread), ``tgid``, ``cpu``,
``comm``) and the event's own.  Added columns:

* ``start_ns`` for events that carry ``delta_ns`` (``ts_ns`` is their end);
* ``in_window``: the correlator counted the event (inside the trace window,
  as the window stood when the record was read); ``began_in_window``
  (events with a duration): it also began inside it.  The report's
  direct-reclaim stall count is ``in_window AND began_in_window``;
* names: ``gfp`` (the gfp_flags' names), ``zone`` (zid), ``status_name``,
  ``result_name``, ``priority_name`` (compaction), ``shrinker`` and
  ``callback`` (shrink_slab, named as the report names them), ``name``
  (kmem_cache events).

Snapshots become long tables: ``vmstat``, ``meminfo`` (ts_ns, when, key,
value), ``zoneinfo`` (ts_ns, when, node, zone, key, value), ``psi``
(ts_ns, when, kind, avg10, avg60, avg300, total_us), ``taskstats`` (one row
per task and field) and ``snapshot_WHAT`` for others (numeric leaves).
``intervals`` has the ticks, ``lost`` the ring-buffer losses per record
type (cumulative, as the kernel counted them), ``run`` one row about the
recording.  Tracer samples (in-kernel map readings) are not exported.

Integers are BIGINT, or UBIGINT for a column holding a value past
2**63 - 1 (kernel addresses).  Rows go to CSV as they are decoded (the
memory used does not grow with the recording); Parquet is made from those
CSV files by DuckDB (``COPY ... TO``), with the column types declared.
Files are created exclusively: nothing that exists is overwritten.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import struct
import tempfile
from collections import Counter
from typing import Any, Callable, Dict, IO, Iterable, List, Optional, Tuple

from trace_reclaim import abi, events, gfp
from trace_reclaim.events import _DECODERS
from trace_reclaim.env import Environment, UserError
from trace_reclaim.mmenums import COMPACT_PRIORITY, COMPACT_RETRY_RESULT, COMPACT_STATUS
from trace_reclaim.recording import Reader, RecordingError
from trace_reclaim.replay import follow_window, replay
from trace_reclaim.tracer import Tracer, Window

__all__ = ["FORMATS", "export", "table_name", "MANIFEST"]

FORMATS = ("parquet", "csv")
MANIFEST = "export.json"
INT64_MAX = (1 << 63) - 1
# x86-64's node_zones[] order, for recordings without the header's zone_names.
ZONE_NAMES = ("DMA", "DMA32", "Normal", "Movable", "Device")

# event_header.type, to make a zero record of a given type.
_TYPE_FIELD = struct.Struct("<I")
_TYPE_OFFSET = abi.layout("event_header").field("type").offset
_TYPE_NAMES = {v: k[3:].lower() for k, v in abi.EVENT_TYPES.items() if k.startswith("EV_")}


def table_name(type_id: int) -> str:
    """The table of a BPF record type: its events.h name without ``EV_``."""
    return _TYPE_NAMES.get(type_id, f"type_{type_id}")


class _Column:
    __slots__ = ("name", "kind", "big")

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = ""      # "int", "float", "bool", "str" (first non-null value)
        self.big = False    # an int past INT64_MAX

    def see(self, v: Any) -> None:
        if v is None:
            return
        if not self.kind:
            self.kind = ("bool" if isinstance(v, bool) else "int" if isinstance(v, int)
                         else "float" if isinstance(v, float) else "str")
        if self.kind == "int" and isinstance(v, int) and v > INT64_MAX:
            self.big = True

    @property
    def sql_type(self) -> str:
        if self.kind == "int":
            return "UBIGINT" if self.big else "BIGINT"
        return {"float": "DOUBLE", "bool": "BOOLEAN"}.get(self.kind, "VARCHAR")


class _Table:
    """One table's CSV file, written row by row, with its columns' types."""

    def __init__(self, name: str, columns: List[str], path: str) -> None:
        self.name = name
        self.columns = [_Column(c) for c in columns]
        self.path = path
        self.rows = 0
        self._f: IO[str] = open(path, "x", newline="")
        self._w = csv.writer(self._f, lineterminator="\n")
        self._w.writerow(columns)

    def write(self, row: List[Any]) -> None:
        cols = self.columns
        out = []
        for c, v in zip(cols, row):
            c.see(v)
            out.append("" if v is None else ("true" if v else "false")
                       if isinstance(v, bool) else v)
        self._w.writerow(out)
        self.rows += 1

    def close(self) -> None:
        self._f.close()

    def schema(self) -> Dict[str, str]:
        return {c.name: c.sql_type for c in self.columns}


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class _EventRows:
    """Turn one record type's events into rows: fields, then the added columns."""

    def __init__(self, t: int, ev: Any, header: Dict[str, Any],
                 names: Dict[str, Dict[int, str]]) -> None:
        fields = [f.name for f in dataclasses.fields(ev) if f.name != "type"]
        self.fields = fields
        self.columns = [f[4:] if f.startswith("raw_") and isinstance(getattr(ev, f), bytes)
                        else f for f in fields]
        extra: List[Tuple[str, Callable[[Any], Any]]] = []
        self.duration = "delta_ns" in fields
        if self.duration:
            extra.append(("start_ns", lambda e: e.ts_ns - e.delta_ns))
        bits = header.get("gfp_bits") or gfp.DEFAULT_BITS
        zones = header.get("zone_names") or ZONE_NAMES
        if "gfp_flags" in fields:
            extra.append(("gfp", lambda e: gfp.names(e.gfp_flags, bits)))
        if "zid" in fields:
            extra.append(("zone", lambda e: str(zones[e.zid]) if 0 <= e.zid < len(zones)
                          else None))
        if t == abi.value("EV_COMPACTION"):
            extra.append(("status_name", lambda e: COMPACT_STATUS.get(e.status)))
        elif t == abi.value("EV_COMPACT_RETRY"):
            extra.append(("result_name", lambda e: COMPACT_RETRY_RESULT.get(e.result)))
            extra.append(("priority_name", lambda e: COMPACT_PRIORITY.get(e.priority)))
        elif t == abi.value("EV_SHRINK_SLAB"):
            by_shr, by_fn = names.get("shrinker", {}), names.get("callback", {})
            extra.append(("shrinker", lambda e: by_shr.get(e.shr)))
            extra.append(("callback", lambda e: by_fn.get(e.shrink)))
        self.extra = extra

    def header_row(self) -> List[str]:
        cols = self.columns + [n for n, _ in self.extra] + ["in_window"]
        return cols + (["began_in_window"] if self.duration else [])

    def row(self, ev: Any, w: Window) -> List[Any]:
        vals = [getattr(ev, f) for f in self.fields]
        vals = [_cstr(v) if isinstance(v, bytes) else v for v in vals]
        vals += [fn(ev) for _, fn in self.extra]
        vals.append(w.contains_event(ev.type, ev.ts_ns))
        if self.duration:
            vals.append(ev.ts_ns - ev.delta_ns >= w.start_ns)
        return vals


def _flatten(prefix: str, obj: Any) -> Iterable[Tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix, obj


class _Exporter:
    """The second pass: every record decoded again, each into its table."""

    def __init__(self, header: Dict[str, Any], stage: str,
                 names: Dict[str, Dict[int, str]]) -> None:
        self.header = header
        self.stage = stage
        self.names = names
        self.tables: Dict[str, _Table] = {}
        self.rows_of: Dict[int, _EventRows] = {}
        self.window = Window()
        self.undecodable = 0
        self.unknown: Counter[int] = Counter()
        self.records = 0

    def _table(self, name: str, columns: List[str]) -> _Table:
        t = self.tables.get(name)
        if t is None:
            t = self.tables[name] = _Table(name, columns,
                                           os.path.join(self.stage, f"{name}.csv"))
        return t

    def feed(self, records: Iterable[Tuple[int, bytes]]) -> None:
        for type_id, payload in records:
            self.records += 1
            try:
                ev = events.decode(type_id, payload)
            except events.DecodeError:
                self.undecodable += 1
                continue
            if ev is None:
                self.unknown[type_id] += 1
                continue
            if type_id >= events.USER_BASE:
                follow_window(self.window, ev)
                self._user(ev)
                continue
            r = self.rows_of.get(type_id)
            if r is None:
                r = self.rows_of[type_id] = _EventRows(type_id, ev, self.header, self.names)
            self._table(table_name(type_id), r.header_row()).write(r.row(ev, self.window))

    def _user(self, ev: Any) -> None:
        if isinstance(ev, events.Tick):
            self._table("intervals", ["interval", "ts_ns"]).write([ev.interval, ev.ts_ns])
            lost = self._table("lost", ["ts_ns", "interval", "type", "table", "lost_total"])
            for t, n in sorted(ev.lost.items()):
                if n:
                    lost.write([ev.ts_ns, ev.interval, t, table_name(t), n])
        elif isinstance(ev, events.Snapshot):
            self._snapshot(ev)

    def _snapshot(self, s: events.Snapshot) -> None:
        d = s.data
        if s.what in ("vmstat", "meminfo") and isinstance(d, dict):
            t = self._table(s.what, ["ts_ns", "when", "key", "value"])
            for k, v in d.items():
                t.write([s.ts_ns, s.when, k, v])
        elif s.what == "zoneinfo" and isinstance(d, list):
            t = self._table("zoneinfo", ["ts_ns", "when", "node", "zone", "key", "value"])
            for z in d:
                if not isinstance(z, dict):
                    continue
                for k, v in z.items():
                    if k not in ("node", "zone"):
                        t.write([s.ts_ns, s.when, z.get("node"), z.get("zone"), k, v])
        elif s.what == "psi" and isinstance(d, dict):
            t = self._table("psi", ["ts_ns", "when", "kind", "avg10", "avg60", "avg300",
                                    "total_us"])
            for kind in ("some", "full"):
                p = d.get(kind)
                if isinstance(p, dict):
                    t.write([s.ts_ns, s.when, kind, _float(p.get("avg10")),
                             _float(p.get("avg60")), _float(p.get("avg300")),
                             p.get("total")])
        elif s.what == "taskstats" and isinstance(d, dict):
            t = self._table("taskstats", ["ts_ns", "when", "tid", "tgid", "comm", "key",
                                          "value"])
            for task in d.get("tasks") or []:
                if not isinstance(task, dict):
                    continue
                for k, v in task.items():
                    if k not in ("tid", "tgid", "comm") and isinstance(v, (int, float)):
                        t.write([s.ts_ns, s.when, task.get("tid"), task.get("tgid"),
                                 task.get("comm"), k, v])
        else:
            safe = "".join(c if c.isalnum() or c == "_" else "_" for c in s.what)
            t = self._table(f"snapshot_{safe}", ["ts_ns", "when", "key", "value"])
            for k, v in _flatten("", d):
                t.write([s.ts_ns, s.when, k, float(v)])

    def declare(self, types: Iterable[int]) -> None:
        """Give every event type of the recording's tracers a table, if only a header.

        A recording without direct-reclaim stalls still has a ``direct_reclaim``
        table, empty, so the same query runs on every recording.  Its columns
        come from decoding an all-zero record (typed from those zeros).
        """
        for t in types:
            if t in self.rows_of:
                continue
            size = getattr(_DECODERS.get(t), "size", None)
            if not size:
                continue
            zeros = bytearray(size)  # but for its own type: decoders check the header's
            _TYPE_FIELD.pack_into(zeros, _TYPE_OFFSET, t)
            try:
                ev = events.decode(t, bytes(zeros))
            except events.DecodeError:
                continue
            if ev is None:
                continue
            r = self.rows_of[t] = _EventRows(t, ev, self.header, self.names)
            table = self._table(table_name(t), r.header_row())
            for c, v in zip(table.columns, r.row(ev, self.window)):
                c.see(v)

    def close(self) -> None:
        for t in self.tables.values():
            t.close()


def _float(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) else None


def _names(doc: Dict[str, Any]) -> Dict[str, Dict[int, str]]:
    """Shrinker names as the report gives them, by struct shrinker * and callback."""
    by_shr: Dict[int, str] = {}
    by_fn: Dict[int, str] = {}
    for s in (doc.get("slab") or {}).get("shrinkers") or []:
        try:
            if s.get("shr") and s.get("name"):
                by_shr[int(s["shr"], 16)] = s["name"]
            if s.get("shrink_addr") and s.get("callback"):
                by_fn[int(s["shrink_addr"], 16)] = s["callback"]
        except (TypeError, ValueError):
            continue
    return {"shrinker": by_shr, "callback": by_fn}


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _to_parquet(con: Any, t: _Table, tmp: str) -> None:
    cols = ", ".join(f"{_sql_str(n)}: {_sql_str(ty)}" for n, ty in t.schema().items())
    con.execute(
        f"COPY (SELECT * FROM read_csv({_sql_str(t.path)}, header = true, "
        f"auto_detect = false, delim = ',', quote = '\"', escape = '\"', "
        f"columns = {{{cols}}})) TO {_sql_str(tmp)} (FORMAT parquet, COMPRESSION zstd)")


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError as e:
        raise UserError(f"--format parquet needs duckdb, which is not importable: {e}",
                        "install the export extra: pip install 'trace-reclaim[export]' "
                        "(./bootstrap.sh does), or use --format csv") from None
    return duckdb


def export(path: str, out_dir: str, fmt: str, env: Environment,
           registry: Dict[str, Tracer]) -> Dict[str, Any]:
    """Write the recording's tables to ``out_dir``; return the manifest.

    The first pass is the report's own replay (window, shrinker names,
    damage warnings); the second decodes every record into its table.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}",
                        f"use --format {' or --format '.join(FORMATS)}")
    duckdb = _duckdb() if fmt == "parquet" else None
    corr = replay(path, env, registry)
    doc = corr.report()
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"{out_dir} exists and is not a directory",
                        "choose a directory with -o DIR")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out_dir}: {e.strerror}",
                        "choose a writable directory with -o DIR") from None
    manifest_path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(manifest_path):
        raise UserError(f"{manifest_path} exists: {out_dir} holds an export already",
                        "export never overwrites: remove it, or choose another -o DIR")
    stage = tempfile.mkdtemp(prefix=".trace-reclaim-export-", dir=out_dir)
    try:
        ex = _Exporter(corr.header, stage, _names(doc))
        try:
            with open(path, "rb") as f:
                reader = Reader(f)
                for block in reader.blocks_of_records():
                    ex.feed(block)
            ex.declare(t for name in corr.aggs for t in registry[name].event_types)
        except (OSError, RecordingError) as e:
            raise UserError(f"{path}: {e}", "the file changed since it was replayed") from None
        finally:
            ex.close()
        ext = "csv" if fmt == "csv" else "parquet"
        ex_tables = dict(sorted(ex.tables.items()))
        targets = {n: os.path.join(out_dir, f"{n}.{ext}") for n in ex_tables}
        taken = [p for p in targets.values() if os.path.exists(p)]
        if taken:
            raise UserError(f"{taken[0]} exists" + (f" (and {len(taken) - 1} more)"
                                                    if len(taken) > 1 else ""),
                            "export never overwrites: remove them, or choose another -o DIR")
        run_table = _run_table(stage, corr, doc, path, ex)
        ex_tables["run"] = run_table
        targets["run"] = os.path.join(out_dir, f"run.{ext}")
        if os.path.exists(targets["run"]):
            raise UserError(f"{targets['run']} exists",
                            "export never overwrites: remove it, or choose another -o DIR")
        con = duckdb.connect() if duckdb is not None else None
        for name, t in ex_tables.items():
            staged = t.path
            if con is not None:
                staged = os.path.join(stage, f"{name}.parquet")
                _to_parquet(con, t, staged)
            try:
                os.link(staged, targets[name])   # fails, never replaces, if it exists
            except FileExistsError:
                raise UserError(f"{targets[name]} exists",
                                "export never overwrites: remove it, or choose another "
                                "-o DIR") from None
        manifest = {
            "recording": os.path.abspath(path), "format": fmt,
            "window": {"start_ns": corr.window.start_ns, "end_ns": corr.window.end_ns},
            "tables": {n: {"file": os.path.basename(targets[n]), "rows": t.rows,
                           "columns": [[c, ty] for c, ty in t.schema().items()]}
                       for n, t in ex_tables.items()},
            "undecodable_records": ex.undecodable,
            "unknown_records": dict(sorted((str(k), v) for k, v in ex.unknown.items())),
        }
        with open(manifest_path, "x") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
        return manifest
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _run_table(stage: str, corr: Any, doc: Dict[str, Any], path: str,
               ex: _Exporter) -> _Table:
    h = corr.header
    w = doc.get("window") or {}
    row = {
        "recording": os.path.abspath(path), "kernel_release": h.get("kernel_release"),
        "hostname": h.get("hostname"), "machine": h.get("machine"),
        "tool_version": h.get("tool_version"), "interval_s": _float(h.get("interval_s")),
        "page_size": h.get("page_size"),
        "tracers": ",".join(str(t) for t in (h.get("plan") or {}).get("tracers") or []),
        "start_ns": w.get("start_ns"), "end_ns": w.get("end_ns") or None,
        "ended_by": w.get("ended_by"), "records": ex.records,
        "events_in_window": corr.events, "lost_events": (doc.get("lost") or {}).get("total"),
        "undecodable_records": ex.undecodable, "unknown_records": sum(ex.unknown.values()),
    }
    t = _Table("run", list(row), os.path.join(stage, "run.csv"))
    t.write(list(row.values()))
    t.close()
    return t
