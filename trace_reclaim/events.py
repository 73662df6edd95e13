"""Decode records into typed events: the one schema for live and replay.

A record is ``(type, payload)``.  Types below ``USER_BASE`` are BPF records
whose payload is the C struct from ``bpf/events.h``, starting with
``struct event_header``; each tracer module registers a decoder for its
types, built from the struct's layout as ``trace_reclaim.abi`` parses it.
Types from ``USER_BASE`` up are written by trace-reclaim's own user space
(interval ticks, /proc snapshots, tracer samples) as JSON, so that a replay
sees everything the live run's correlator saw.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Final, List, Optional, Set, Tuple

from mypy_extensions import mypyc_attr

from trace_reclaim import abi, native, schema
from trace_reclaim.eventclass import record
from trace_reclaim.taskstats import DELAY_FIELDS

__all__ = [
    "HEADER",
    "USER_BASE",
    "USER_TICK",
    "USER_SNAPSHOT",
    "USER_SAMPLE",
    "USER_END",
    "Event",
    "record",
    "Tick",
    "Snapshot",
    "Sample",
    "End",
    "Decoder",
    "register",
    "decode",
    "DecodeError",
    "struct_decoder",
    "encode_user",
    "register_sample",
    "register_header",
    "check_header",
    "SNAPSHOT_DATA",
]

#: struct event_header: ts_ns, type, pid, tgid, cpu, comm.
HEADER = struct.Struct(abi.layout("event_header").fmt)

USER_BASE = 0x8000
USER_TICK = 0x8000
USER_SNAPSHOT = 0x8001
USER_SAMPLE = 0x8002
USER_END = 0x8003


class DecodeError(ValueError):
    """A record whose payload does not fit its type."""


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(slots=True)
class Event:
    """Fields every BPF record has (``struct event_header``)."""

    ts_ns: int
    type: int
    pid: int
    tgid: int
    cpu: int
    comm: str


@dataclass(slots=True)
class Tick:
    """The end of one live interval; ``lost`` is cumulative per event type."""

    ts_ns: int
    interval: int
    lost: Dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class Snapshot:
    """Kernel accounting read from /proc or /sys at ``ts_ns``.

    ``what`` names the source ("vmstat", "zoneinfo", "meminfo", "slabinfo",
    "psi", ...); ``when`` is "start", "end" or "tick".
    """

    ts_ns: int
    what: str
    when: str
    data: Any


@dataclass(slots=True)
class Sample:
    """A tracer's periodic reading of its BPF maps (in-kernel aggregates)."""

    ts_ns: int
    tracer: str
    data: Any


@dataclass(slots=True)
class End:
    """The trace window closed: events after ``ts_ns`` are outside it."""

    ts_ns: int
    reason: str


Decoder = Callable[[bytes], Any]
_DECODERS: Dict[int, Decoder] = {}
_comm_cache: Final[Dict[bytes, str]] = {}


def _comm(raw: bytes) -> str:
    """A NUL-terminated kernel string (comm, a cache name) as text."""
    name = _comm_cache.get(raw)
    if name is None:
        name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        if len(_comm_cache) < 4096:  # bounded: comms are few, but not trusted
            _comm_cache[raw] = name
    return name


def comm_at(buf: bytes, offset: int, size: int) -> str:
    """The kernel string of ``size`` bytes at ``offset`` of ``buf`` (``_comm``)."""
    raw = buf[offset:offset + size]
    name = _comm_cache.get(raw)
    return _comm(raw) if name is None else name


_native_decoders: Optional[Dict[Tuple[type, str], Dict[int, Callable[[bytes, int], Any]]]] = None


def in_place_decoders(decoder: Any) -> Dict[int, Callable[[bytes, int], Any]]:
    """The decoders of a record at an offset of a block, by record size, for a
    decoder of ``struct_decoder``: compiled (``trace_reclaim._decoders``)
    where the package runs compiled and has them, else ``decoder.in_place()``."""
    global _native_decoders
    cls = getattr(decoder, "cls", None)
    if cls is None:
        return {}
    if native.compiled():
        if _native_decoders is None:
            # imported late: it imports the tracer modules, which import this one
            from trace_reclaim._decoders import DECODERS
            _native_decoders = DECODERS
        found = _native_decoders.get((cls, decoder.layout.name))
        if found is not None:
            return found
    generic: Dict[int, Callable[[bytes, int], Any]] = decoder.in_place()
    return generic


def register(type_id: int, decoder: Decoder) -> None:
    """Make ``decode`` turn records of ``type_id`` into events."""
    if type_id in _DECODERS and _DECODERS[type_id] is not decoder:
        raise ValueError(f"event type {type_id} registered twice")
    _DECODERS[type_id] = decoder
    types = getattr(decoder, "types", None)
    if types is not None:
        types.add(type_id)


def _maker(cls: type, names: List[str], strings: List[int]) -> Callable[[Any, str], Any]:
    """A constructor from an unpacked tuple, for the per-record hot path.

    Plain slot stores, generated from the dataclass's own field list the way
    dataclasses generates __init__, cost half of calling that __init__.
    Value 5 is the header's comm, decoded by the caller; the values at
    ``strings`` are other char arrays.  Classes with __post_init__ keep the
    normal path.
    """
    if hasattr(cls, "__post_init__"):
        def make_slow(v: Any, comm: str) -> Any:
            args = list(v)
            args[5] = comm
            for i in strings:
                args[i] = _comm(args[i])
            return cls(*args)
        return make_slow
    def value(i: int) -> str:
        return "comm" if i == 5 else f"cstr(v[{i}])" if i in strings else f"v[{i}]"
    body = "".join(f"    o.{n} = {value(i)}\n" for i, n in enumerate(names))
    src = f"def make(v, comm):\n    o = new(cls)\n{body}    return o\n"
    scope: Dict[str, Any] = {"new": cls.__new__, "cls": cls, "cstr": _comm}
    exec(src, scope)  # noqa: S102 - field names of our own dataclasses, checked against events.h
    return scope["make"]


def _type_name(t: Any) -> str:
    return t if isinstance(t, str) else getattr(t, "__name__", repr(t))


def struct_decoder(cls: type, struct_name: str, since: Optional[str] = None) -> Decoder:
    """Build a decoder of ``struct struct_name`` of events.h into ``cls``.

    ``since`` names the first of the fields appended to the struct after
    recordings were made without them: a record that ends exactly where
    that field or a later one begins (the struct as it was then) decodes
    with the missing fields 0, so old recordings keep replaying.  Any
    other length is damage.

    The format, size and field order come from the struct's layout
    (``abi.layout``); pad fields are skipped.  ``cls``'s fields must be the
    struct's other fields, header first, in order and by name: ``int`` for
    numbers, ``str`` for char arrays.  A mismatch raises TypeError here, at
    import, not in a user's recording.
    """
    layout = abi.layout(struct_name)
    if layout.fields[0].ctype != "struct event_header" or layout.fields[0].offset != 0:
        raise TypeError(f"struct {struct_name} does not start with struct event_header")
    flat = [f for f in layout.flat if not abi.is_pad(f.name)]
    names = [f.name for f in dataclasses.fields(cls)]
    if names != [f.name for f in flat]:
        raise TypeError(f"{cls.__name__} fields {names} are not struct {struct_name}'s "
                        f"{[f.name for f in flat]} (bpf/events.h)")
    for f, d in zip(flat, dataclasses.fields(cls)):
        if f.length is not None and not f.is_string:
            raise TypeError(f"struct {struct_name}.{f.name}: only char arrays decode")
        want = "str" if f.is_string else "int"
        if _type_name(d.type) != want:
            raise TypeError(f"{cls.__name__}.{f.name} is {_type_name(d.type)}, "
                            f"struct {struct_name}.{f.name} decodes to {want}")
    fmt = layout.format(skip=[f.name for f in layout.flat if abi.is_pad(f.name)])
    compiled = struct.Struct(fmt)
    size = compiled.size
    unpack_from = compiled.unpack_from
    first = layout.field(since).offset if since is not None else size
    legacy = frozenset(f.offset for f in layout.flat if f.offset >= first)
    in_limits = _limits_check(cls, names)
    limits = getattr(cls, "LIMITS", {})
    # The record types this decoder is registered for (``register`` fills it):
    # a payload whose event_header.type is another type's is damage.
    types: Set[int] = set()
    name = cls.__name__
    fast = in_limits is None and not hasattr(cls, "__post_init__")
    make = None if fast else _maker(cls, names,
                                    [i for i, f in enumerate(flat) if f.is_string and i != 5])

    def decode_checked(buf: bytes, offset: int) -> Any:
        # The record of exactly ``size`` bytes at ``offset`` of ``buf``: replay
        # decodes in place in the block, without a copy of each record.
        v = unpack_from(buf, offset)
        if v[1] not in types:
            raise DecodeError(f"{name}: event_header.type {v[1]} is not its type")
        if in_limits is not None and not in_limits(v):
            raise DecodeError(f"{name}: a field outside its declared limits {limits}")
        raw = v[5]
        comm = _comm_cache.get(raw)
        if comm is None:
            comm = _comm(raw)
        assert make is not None
        return make(v, comm)

    by_size: Dict[int, Callable[[bytes, int], Any]] = {}

    def in_place() -> Dict[int, Callable[[bytes, int], Any]]:
        """The in-place decoder for each record size taken: the struct's, and
        for a class on the generated path, each older struct's (the fields it
        lacks read as from zero bytes, as decode_struct pads them).

        Generated at the first record of the type, not at import: a start
        pays only for the types its recording holds (each is a compile()).
        """
        if by_size:
            return by_size
        if not fast:
            by_size[size] = decode_checked
            return by_size
        by_size[size] = _fast_decoder(cls, names, flat, unpack_from, types)
        zero = compiled.unpack(bytes(size))
        for at in sorted(legacy):
            kept = [f for f in flat if f.offset < at]
            prefix = layout.format(skip=[f.name for f in layout.flat if abi.is_pad(f.name)
                                         or f.offset >= at])
            # the old struct's bytes only: the skipped tail is not read
            prefix = prefix.rstrip("0123456789x") or "<"
            by_size[at] = _fast_decoder(cls, names, flat, struct.Struct(prefix).unpack_from,
                                        types, zero[len(kept):])
        return by_size

    def decode_struct(payload: bytes) -> Any:
        n = len(payload)
        decoders = by_size or in_place()
        d = decoders.get(n)
        if d is not None:
            return d(payload, 0)
        if n not in legacy:
            raise DecodeError(f"{name}: {n} bytes, need {size}")
        # an older recording: the fields added since end it earlier; they read 0
        return decoders[size](bytes(payload) + bytes(size - n), 0)

    # What tests/unit/test_abi.py checks against the compiled header.
    decode_struct.size = size  # type: ignore[attr-defined]
    decode_struct.format = fmt  # type: ignore[attr-defined]
    decode_struct.layout = layout  # type: ignore[attr-defined]
    decode_struct.cls = cls  # type: ignore[attr-defined]
    decode_struct.types = types  # type: ignore[attr-defined]
    decode_struct.legacy_sizes = legacy  # type: ignore[attr-defined]
    decode_struct.in_place = in_place  # type: ignore[attr-defined]
    return decode_struct


def _fast_decoder(cls: type, names: List[str], flat: List[abi.Field], unpack_from: Any,
                  types: Set[int], tail: Tuple[Any, ...] = ()) -> Callable[[bytes, int], Any]:
    """``decode_checked`` as one generated function, for the per-record hot path.

    The same checks (event_header.type is one of ``types``) and the same
    object, without a tuple indexed field by field or a second call:
    the values unpack into locals that are stored in a new ``cls``'s slots.
    For classes without LIMITS or __post_init__.  ``unpack_from`` may
    unpack the first fields only (an older, shorter struct): ``tail`` holds
    the values of the others.
    """
    values = [f"_{i}" for i in range(len(names))]
    read = values[:len(values) - len(tail)]

    def value(i: int) -> str:
        return "comm" if i == 5 else f"cstr(_{i})" if flat[i].is_string else f"_{i}"
    stores = "".join(f"    o.{n} = {value(i)}\n" for i, n in enumerate(names))
    src = (f"def decode_at(buf, offset):\n"
           f"    {', '.join(read)}, = unpack_from(buf, offset)\n"
           + (f"    {', '.join(values[len(read):])}, = tail\n" if tail else "") +
           f"    if _1 not in types:\n"
           f"        raise DecodeError(f'{cls.__name__}: event_header.type {{_1}} "
           f"is not its type')\n"
           f"    comm = cache.get(_5)\n"
           f"    if comm is None:\n"
           f"        comm = cstr(_5)\n"
           f"    o = new(cls)\n{stores}    return o\n")
    scope: Dict[str, Any] = {"new": cls.__new__, "cls": cls, "cstr": _comm,
                             "cache": _comm_cache, "types": types,
                             "unpack_from": unpack_from, "DecodeError": DecodeError,
                             "tail": tail}
    exec(src, scope)  # noqa: S102 - field names of our own dataclasses, checked against events.h
    return scope["decode_at"]


def _limits_check(cls: type, names: List[str]) -> Optional[Callable[[Any], bool]]:
    """One generated expression testing every field of ``cls.LIMITS`` at once.

    ``LIMITS`` (field name -> inclusive (lo, hi)) narrows a field below what
    its C type allows, to what the kernel can send and the aggregators can
    take (an ``order`` past MAX_PAGE_ORDER is damage, not an allocation).
    """
    limits: Dict[str, Tuple[int, int]] = getattr(cls, "LIMITS", {})
    if not limits:
        return None
    terms = []
    for fname, (lo, hi) in sorted(limits.items()):
        if fname not in names:
            raise TypeError(f"{cls.__name__}.LIMITS names {fname}, not one of its fields")
        terms.append(f"{int(lo)} <= v[{names.index(fname)}] <= {int(hi)}")
    scope: Dict[str, Any] = {}
    exec(f"def in_limits(v):\n    return {' and '.join(terms)}\n", scope)  # noqa: S102
    return scope["in_limits"]


def _json(payload: bytes) -> Dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as e:
        # ValueError: not UTF-8, not JSON, or an integer past Python's
        # int_max_str_digits; RecursionError: nested deeper than the parser goes.
        raise DecodeError(f"bad JSON record: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise DecodeError("JSON record is not an object")
    return obj


# -- the declared shapes of the user records (trace_reclaim.schema) ----------
_TS = schema.U64
_COUNT = schema.Int(0)
_PSI_LINE = schema.Obj(optional={"avg10": schema.Num(0), "avg60": schema.Num(0),
                                 "avg300": schema.Num(0), "total": _COUNT})
# procfs.parse_zoneinfo() keeps zones with managed pages, which always have
# their free count and watermarks; promo (6.9+), boost, spanned, present vary.
_ZONE = schema.Obj({"node": schema.Int(0, 1 << 16), "zone": schema.STR,
                    **{k: _COUNT for k in ("free", "min", "low", "high", "managed")}},
                   {k: _COUNT for k in ("promo", "boost", "spanned", "present")})
_TASK = schema.Obj({"tid": schema.INT, "comm": schema.STR},
                   {"tgid": schema.Opt(schema.INT), **{k: _COUNT for k in DELAY_FIELDS}})
#: Snapshot.data by Snapshot.what, as session.py writes them from trace_reclaim.procfs
#: and taskstats; a ``what`` not listed here is kept but never read.
SNAPSHOT_DATA: Dict[str, schema.Check] = {
    "vmstat": schema.Map(schema.INT),
    "meminfo": schema.Map(schema.INT),
    "zoneinfo": schema.List(_ZONE),
    "psi": schema.Obj(optional={"some": _PSI_LINE, "full": _PSI_LINE}),
    "taskstats": schema.Obj({"tasks": schema.List(_TASK)},
                            {"enabled": schema.BOOL, "gone": _COUNT}),
    # when: "start" (attached then, and still pending), "attached" (with
    # /proc/vmstat as they began) or "failed" (the later object did not load).
    "attach": schema.Obj({"tracers": schema.List(schema.STR)},
                         {"pending": schema.List(schema.STR), "vmstat": schema.Map(schema.INT),
                          "pending_types": schema.List(schema.INT),
                          "types": schema.List(schema.INT), "error": schema.STR}),
}
_TICK = schema.Obj({"ts_ns": _TS, "interval": _COUNT}, {"lost": schema.Map(_COUNT)})
_SNAPSHOT = schema.Obj({"ts_ns": _TS, "what": schema.STR, "when": schema.STR, "data": schema.ANY})
_SAMPLE = schema.Obj({"ts_ns": _TS, "tracer": schema.STR, "data": schema.ANY})
_END = schema.Obj({"ts_ns": _TS}, {"reason": schema.STR})
#: Sample.data by tracer name: each tracer declares its own (``register_sample``).
_SAMPLE_DATA: Dict[str, schema.Check] = {}


def register_sample(tracer: str, data: schema.Check) -> None:
    """Declare the shape of ``tracer``'s Sample.data: a sample that does not fit is damage."""
    _SAMPLE_DATA[tracer] = data


#: Each tracer's entry in the header's "tracers" (Tracer.header()), by tracer name.
_HEADER_DATA: Dict[str, schema.Check] = {}


def register_header(tracer: str, data: schema.Check) -> None:
    """Declare the shape of ``tracer``'s entry in the recording header."""
    _HEADER_DATA[tracer] = data


def check_header(header: Dict[str, Any]) -> None:
    """Raise DecodeError unless each tracer's header entry has its declared shape.

    The rest of the header is checked by the reader (recording.HEADER_SCHEMA).
    """
    for name, entry in (header.get("tracers") or {}).items():
        shape = _HEADER_DATA.get(name)
        if shape is not None:
            _checked(shape, entry, f"header.tracers.{name}")


def _checked(shape: schema.Check, o: Any, what: str) -> None:
    try:
        schema.check(shape, o, what)
    except schema.SchemaError as e:
        raise DecodeError(str(e)) from None


def _decode_tick(payload: bytes) -> Tick:
    o = _json(payload)
    _checked(_TICK, o, "tick")
    try:
        lost = {int(k): v for k, v in o.get("lost", {}).items()}
    except ValueError as e:
        raise DecodeError(f"bad tick record: {e!r}") from None
    return Tick(o["ts_ns"], o["interval"], lost)


def _decode_snapshot(payload: bytes) -> Snapshot:
    o = _json(payload)
    _checked(_SNAPSHOT, o, "snapshot")
    shape = SNAPSHOT_DATA.get(o["what"])
    if shape is not None:
        _checked(shape, o["data"], f"snapshot {o['what']}")
    return Snapshot(o["ts_ns"], o["what"], o["when"], o["data"])


def _decode_sample(payload: bytes) -> Sample:
    o = _json(payload)
    _checked(_SAMPLE, o, "sample")
    shape = _SAMPLE_DATA.get(o["tracer"])
    if shape is not None:
        _checked(shape, o["data"], f"sample of {o['tracer']}")
    return Sample(o["ts_ns"], o["tracer"], o["data"])


def _decode_end(payload: bytes) -> End:
    o = _json(payload)
    _checked(_END, o, "end")
    return End(o["ts_ns"], o.get("reason", ""))


register(USER_TICK, _decode_tick)
register(USER_SNAPSHOT, _decode_snapshot)
register(USER_SAMPLE, _decode_sample)
register(USER_END, _decode_end)


def encode_user(obj: Any) -> bytes:
    """Encode a user-space record: compact, key-sorted, deterministic JSON."""
    if isinstance(obj, Tick):
        d: Dict[str, Any] = {"ts_ns": obj.ts_ns, "interval": obj.interval,
                             "lost": {str(k): v for k, v in sorted(obj.lost.items())}}
    elif isinstance(obj, Snapshot):
        d = {"ts_ns": obj.ts_ns, "what": obj.what, "when": obj.when, "data": obj.data}
    elif isinstance(obj, Sample):
        d = {"ts_ns": obj.ts_ns, "tracer": obj.tracer, "data": obj.data}
    elif isinstance(obj, End):
        d = {"ts_ns": obj.ts_ns, "reason": obj.reason}
    else:
        raise TypeError(f"not a user record: {obj!r}")
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


def user_type(obj: Any) -> int:
    """The record type of a user-space event object."""
    return {Tick: USER_TICK, Snapshot: USER_SNAPSHOT, Sample: USER_SAMPLE,
            End: USER_END}[type(obj)]


def decode(type_id: int, payload: bytes) -> Optional[Any]:
    """Decode one record; ``None`` for a type this version does not know.

    Raises DecodeError when a known type's payload is malformed.
    """
    dec = _DECODERS.get(type_id)
    if dec is None:
        return None
    return dec(payload)
