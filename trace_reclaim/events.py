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
from typing import Any, Callable, Dict, List, Optional

from trace_reclaim import abi

__all__ = [
    "HEADER",
    "USER_BASE",
    "USER_TICK",
    "USER_SNAPSHOT",
    "USER_SAMPLE",
    "USER_END",
    "Event",
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
_comm_cache: Dict[bytes, str] = {}


def _comm(raw: bytes) -> str:
    """A NUL-terminated kernel string (comm, a cache name) as text."""
    name = _comm_cache.get(raw)
    if name is None:
        name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        if len(_comm_cache) < 4096:  # bounded: comms are few, but not trusted
            _comm_cache[raw] = name
    return name


def register(type_id: int, decoder: Decoder) -> None:
    """Make ``decode`` turn records of ``type_id`` into events."""
    if type_id in _DECODERS and _DECODERS[type_id] is not decoder:
        raise ValueError(f"event type {type_id} registered twice")
    _DECODERS[type_id] = decoder


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
    scope: Dict[str, Any] = {"new": object.__new__, "cls": cls, "cstr": _comm}
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
    unpack = compiled.unpack_from
    first = layout.field(since).offset if since is not None else size
    legacy = frozenset(f.offset for f in layout.flat if f.offset >= first)
    make = _maker(cls, names, [i for i, f in enumerate(flat) if f.is_string and i != 5])

    def decode_struct(payload: bytes) -> Any:
        try:
            v = unpack(payload)
        except struct.error:
            if len(payload) not in legacy:
                raise DecodeError(f"{cls.__name__}: {len(payload)} bytes, "
                                  f"need {size}") from None
            v = unpack(bytes(payload) + bytes(size - len(payload)))
        raw = v[5]
        comm = _comm_cache.get(raw)
        if comm is None:
            comm = _comm(raw)
        return make(v, comm)

    # What tests/unit/test_abi.py checks against the compiled header.
    decode_struct.size = size  # type: ignore[attr-defined]
    decode_struct.format = fmt  # type: ignore[attr-defined]
    decode_struct.layout = layout  # type: ignore[attr-defined]
    decode_struct.cls = cls  # type: ignore[attr-defined]
    decode_struct.legacy_sizes = legacy  # type: ignore[attr-defined]
    return decode_struct


def _json(payload: bytes) -> Dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DecodeError(f"bad JSON record: {e}") from None
    if not isinstance(obj, dict):
        raise DecodeError("JSON record is not an object")
    return obj


def _decode_tick(payload: bytes) -> Tick:
    o = _json(payload)
    try:
        return Tick(int(o["ts_ns"]), int(o["interval"]),
                    {int(k): int(v) for k, v in o.get("lost", {}).items()})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DecodeError(f"bad tick record: {e!r}") from None


def _decode_snapshot(payload: bytes) -> Snapshot:
    o = _json(payload)
    try:
        return Snapshot(int(o["ts_ns"]), str(o["what"]), str(o["when"]), o["data"])
    except (KeyError, TypeError, ValueError) as e:
        raise DecodeError(f"bad snapshot record: {e!r}") from None


def _decode_sample(payload: bytes) -> Sample:
    o = _json(payload)
    try:
        return Sample(int(o["ts_ns"]), str(o["tracer"]), o["data"])
    except (KeyError, TypeError, ValueError) as e:
        raise DecodeError(f"bad sample record: {e!r}") from None


def _decode_end(payload: bytes) -> End:
    o = _json(payload)
    try:
        return End(int(o["ts_ns"]), str(o.get("reason", "")))
    except (KeyError, TypeError, ValueError) as e:
        raise DecodeError(f"bad end record: {e!r}") from None


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
