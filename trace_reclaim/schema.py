"""Declared shapes of the JSON a recording carries, checked once on reading.

A recording's header and its user records (ticks, /proc snapshots, tracer
samples) are JSON written by trace-reclaim itself; a replay trusts them only
after checking them against the shape their writer declares here, the way
the BPF records are checked against their struct in ``bpf/events.h``
(``events.struct_decoder``).  A schema is built once from these combinators
into a chain of closures; ``check(schema, value)`` walks the value once and
raises ``SchemaError`` naming the first path that does not fit.

Objects (``Obj``) allow keys they do not declare, so a newer writer's extra
keys pass; the keys a reader uses are declared, required when every writer
so far has written them, optional (and then typed) otherwise.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, Optional

__all__ = ["SchemaError", "Check", "Int", "Num", "STR", "BOOL", "ANY", "Opt", "List",
           "Tuple", "Map", "DECIMAL", "HEX", "Obj", "Either", "check", "INT", "U64", "NUM"]


class SchemaError(ValueError):
    """A JSON value that does not have its declared shape."""


#: A compiled schema: returns None, or raises SchemaError (message without the path).
Check = Callable[[Any], None]

_U64_MAX = (1 << 64) - 1
_S64_MIN = -(1 << 63)


def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def Int(lo: int = _S64_MIN, hi: int = _U64_MAX) -> Check:
    """An integer (not a bool) in [lo, hi]; by default what fits 64 bits."""
    def check_int(v: Any) -> None:
        if type(v) is not int:
            raise SchemaError(f"expected an integer, not {_type(v)}")
        if not lo <= v <= hi:
            raise SchemaError(f"{v} outside [{lo}, {hi}]")
    return check_int


def Num(lo: float = -math.inf, hi: float = math.inf) -> Check:
    """A finite number (int or float, not a bool) in [lo, hi]."""
    def check_num(v: Any) -> None:
        t = type(v)
        if t is not int and t is not float:
            raise SchemaError(f"expected a number, not {_type(v)}")
        if t is float and not math.isfinite(v):
            raise SchemaError(f"{v} is not finite")
        if not lo <= v <= hi:
            raise SchemaError(f"{v} outside [{lo}, {hi}]")
    return check_num


def _join(where: str, e: SchemaError) -> str:
    """``where`` prefixed to an inner error: ".a.b[2]: why"."""
    msg = str(e)
    return f"{where}{msg}" if msg.startswith((".", "[")) else f"{where}: {msg}"


def _is(t: type, name: str) -> Check:
    def check_type(v: Any) -> None:
        if type(v) is not t:
            raise SchemaError(f"expected {name}, not {_type(v)}")
    return check_type


INT = Int()
U64 = Int(0, _U64_MAX)
NUM = Num()
STR = _is(str, "a string")
BOOL = _is(bool, "true or false")


def ANY(v: Any) -> None:
    """Any JSON value (kept, never interpreted)."""


def Opt(inner: Check) -> Check:
    """``inner`` or null."""
    def check_opt(v: Any) -> None:
        if v is not None:
            inner(v)
    return check_opt


def List(item: Check, max_len: Optional[int] = None) -> Check:
    """A list of ``item``s, at most ``max_len`` long."""
    def check_list(v: Any) -> None:
        if type(v) is not list:
            raise SchemaError(f"expected a list, not {_type(v)}")
        if max_len is not None and len(v) > max_len:
            raise SchemaError(f"{len(v)} items, at most {max_len}")
        for i, x in enumerate(v):
            try:
                item(x)
            except SchemaError as e:
                raise SchemaError(_join(f"[{i}]", e)) from None
    return check_list


def Tuple(*items: Check) -> Check:
    """A list of exactly ``len(items)`` values, each of its own schema."""
    n = len(items)

    def check_tuple(v: Any) -> None:
        if type(v) is not list or len(v) != n:
            raise SchemaError(f"expected a list of {n}, not {_type(v)}"
                              + (f" of {len(v)}" if type(v) is list else ""))
        for i, (c, x) in enumerate(zip(items, v)):
            try:
                c(x)
            except SchemaError as e:
                raise SchemaError(_join(f"[{i}]", e)) from None
    return check_tuple


#: Map keys that a reader turns into numbers: int(k), int(k, 16).
DECIMAL = r"-?[0-9]{1,20}"
HEX = r"[0-9a-fA-F]{1,16}"


def Map(value: Check, keys: Optional[str] = None, max_len: Optional[int] = None) -> Check:
    """An object used as a map: keys matching the regex ``keys`` (any if None),
    every value a ``value``, at most ``max_len`` entries."""
    key_ok = re.compile(keys).fullmatch if keys is not None else None

    def check_map(v: Any) -> None:
        if type(v) is not dict:
            raise SchemaError(f"expected an object, not {_type(v)}")
        if max_len is not None and len(v) > max_len:
            raise SchemaError(f"{len(v)} entries, at most {max_len}")
        for k, x in v.items():
            if key_ok is not None and key_ok(k) is None:
                raise SchemaError(f"key {k[:40]!r} is not {keys}")
            try:
                value(x)
            except SchemaError as e:
                raise SchemaError(_join(f".{k}", e)) from None
    return check_map


def Obj(required: Optional[Dict[str, Check]] = None,
        optional: Optional[Dict[str, Check]] = None) -> Check:
    """An object with the ``required`` keys and, if present, the ``optional`` ones."""
    req = list((required or {}).items())
    opt = list((optional or {}).items())

    def check_obj(v: Any) -> None:
        if type(v) is not dict:
            raise SchemaError(f"expected an object, not {_type(v)}")
        for k, c in req:
            if k not in v:
                raise SchemaError(f"lacks key {k!r}")
            try:
                c(v[k])
            except SchemaError as e:
                raise SchemaError(_join(f".{k}", e)) from None
        for k, c in opt:
            if k in v:
                try:
                    c(v[k])
                except SchemaError as e:
                    raise SchemaError(_join(f".{k}", e)) from None
    return check_obj


def Either(*alternatives: Check) -> Check:
    """A value of the first alternative it fits."""
    def check_either(v: Any) -> None:
        errors = []
        for c in alternatives:
            try:
                c(v)
                return
            except SchemaError as e:
                errors.append(str(e))
        raise SchemaError(" or ".join(errors))
    return check_either


def check(schema: Check, value: Any, what: str = "value") -> None:
    """Raise SchemaError("WHAT.path: why") unless ``value`` fits ``schema``."""
    try:
        schema(value)
    except SchemaError as e:
        raise SchemaError(_join(what, e)) from None
