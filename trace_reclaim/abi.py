"""The kernel/Python ABI, read from its one source: ``bpf/events.h``.

Event type numbers (``enum event_type``), the map-slot enums, the ``#define``
constants and the layout of every ``struct`` of ``events.h`` are parsed from
the header that the BPF programs include, so Python never keeps a copy that
could disagree.  The parser knows the small C subset the header is written
in (fixed-width ``__u8``..``__s64`` fields, ``char`` arrays, nested structs
of the header, integer ``#define``s and enums) and raises ``ABIError`` at
import on anything else rather than guessing a layout.
``tests/unit/test_abi.py`` compiles the header with the C compiler and checks
every size, offset and value against what is parsed here.

Layouts follow the C rules of the BPF targets and x86-64/arm64 (every
``__uN`` aligned to its size, structs to their widest member) and the
little-endian byte order the records are written in; ``Layout.fmt`` is the
``struct`` module format with C's padding written out as ``x`` bytes.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

__all__ = ["EVENTS_H", "source", "parse", "ABIError", "Field", "Layout", "ENUMS", "DEFINES",
           "LAYOUTS", "EVENT_TYPES", "value", "layout", "slots", "is_pad", "enum_range"]


class ABIError(ValueError):
    """events.h holds something this parser does not understand."""


#: bpf/events.h as shipped in the package (package data, beside this module).
EVENTS_H = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpf", "events.h")


def source() -> str:
    """The text of ``bpf/events.h`` as shipped in the package."""
    with open(EVENTS_H) as f:
        return f.read()


# Fixed-width kernel types (include/uapi/asm-generic/int-ll64.h): struct code, size.
_SCALARS: Dict[str, Tuple[str, int]] = {
    "__u8": ("B", 1), "__s8": ("b", 1), "__u16": ("H", 2), "__s16": ("h", 2),
    "__u32": ("I", 4), "__s32": ("i", 4), "__u64": ("Q", 8), "__s64": ("q", 8),
}
_PAD = re.compile(r"pad\d*")


def is_pad(name: str) -> bool:
    """A field that only fills a hole (``pad``, ``pad2``): written as 0, never decoded."""
    return _PAD.fullmatch(name) is not None


@dataclass(frozen=True)
class Field:
    """One member of a struct, at its byte offset in the enclosing struct."""

    name: str
    ctype: str                      # as written: "__u64", "char", "struct event_header"
    offset: int
    size: int                       # bytes of the whole member (all array elements)
    length: Optional[int] = None    # array length; None for a scalar or a struct
    code: str = ""                  # struct module code: "Q", "16s", "4I"; "" for a struct
    layout: Optional[Layout] = None  # the nested struct's layout

    @property
    def is_string(self) -> bool:
        """A ``char`` array: a NUL-terminated kernel string."""
        return self.ctype == "char"


@dataclass(frozen=True)
class Layout:
    """A struct of events.h: its members, C size and alignment, and its format."""

    name: str
    fields: Tuple[Field, ...]       # top-level members, nested structs as one Field
    size: int
    align: int

    @functools.cached_property
    def flat(self) -> Tuple[Field, ...]:
        """Every scalar or array member, nested structs inlined, offsets from the start."""
        out: List[Field] = []
        for f in self.fields:
            if f.layout is None:
                out.append(f)
                continue
            for g in f.layout.flat:
                out.append(Field(g.name, g.ctype, f.offset + g.offset, g.size, g.length,
                                 g.code, None))
        return tuple(out)

    def field(self, name: str) -> Field:
        """A member by name, nested ones included (``event_header``'s ``pid``)."""
        for f in self.fields + self.flat:
            if f.name == name:
                return f
        raise KeyError(f"struct {self.name} has no field {name}")

    def format(self, skip: Iterable[str] = ()) -> str:
        """The little-endian struct format: one value per member not in ``skip``.

        C's alignment holes and the skipped members are ``x`` pad bytes, so
        the format is exactly ``size`` bytes long.
        """
        skipped = set(skip)
        codes: List[str] = []
        at = 0
        for f in self.flat:
            if f.offset > at:
                codes.append(f"{f.offset - at}x")
            codes.append(f"{f.size}x" if f.name in skipped else f.code)
            at = f.offset + f.size
        if self.size > at:
            codes.append(f"{self.size - at}x")
        return "<" + "".join(codes)

    @property
    def fmt(self) -> str:
        """The format unpacking every member, pad fields included."""
        return self.format()


def _strip_comments(text: str) -> str:
    """Blank out comments, keeping line numbers for error messages."""
    def blank(m: re.Match[str]) -> str:
        return " " + "\n" * m.group(0).count("\n")
    text = re.sub(r"/\*.*?\*/", blank, text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


_INT = re.compile(r"(-?(?:0[xX][0-9a-fA-F]+|\d+))[uUlL]*")


class _Parser:
    """Read events.h top to bottom; every construct must be one it knows."""

    _TOP = re.compile(
        r"(?P<ws>\s+)"
        r"|(?P<pp>\#[^\n]*)"
        r"|(?P<enum>enum\s+(?P<ename>\w+)\s*\{(?P<ebody>[^{}]*)\}\s*;)"
        r"|(?P<struct>struct\s+(?P<sname>\w+)\s*\{(?P<sbody>[^{}]*)\}\s*;)", re.S)
    _MEMBER = re.compile(r"(?P<type>struct\s+\w+|\w+)\s+(?P<name>\w+)"
                         r"\s*(?:\[\s*(?P<len>\w+)\s*\])?")

    def __init__(self, text: str) -> None:
        self.text = text
        self.enums: Dict[str, Dict[str, int]] = {}
        self.defines: Dict[str, int] = {}
        self.layouts: Dict[str, Layout] = {}
        self.guard: Optional[str] = None

    def fail(self, pos: int, what: str) -> ABIError:
        line = self.text.count("\n", 0, pos) + 1
        return ABIError(f"bpf/events.h line {line}: {what}")

    def parse(self) -> None:
        pos = 0
        while pos < len(self.text):
            m = self._TOP.match(self.text, pos)
            if m is None:
                snippet = self.text[pos:pos + 40].split("\n", 1)[0]
                raise self.fail(pos, f"cannot parse {snippet!r} (abi.py reads only integer "
                                     "#defines, enums and structs of fixed-width fields)")
            if m.group("pp"):
                self.directive(m.group("pp").strip(), pos)
            elif m.group("enum"):
                self.enum(m.group("ename"), m.group("ebody"), m.start("ebody"))
            elif m.group("struct"):
                self.struct(m.group("sname"), m.group("sbody"), m.start("sbody"))
            pos = m.end()

    def constant(self, token: str, pos: int) -> int:
        token = token.strip()
        m = _INT.fullmatch(token)
        if m:
            return int(m.group(1), 0)
        if token in self.defines:
            return self.defines[token]
        for members in self.enums.values():
            if token in members:
                return members[token]
        raise self.fail(pos, f"{token!r} is not an integer or a constant defined above")

    def name_free(self, name: str, pos: int) -> None:
        if name in self.defines or any(name in e for e in self.enums.values()):
            raise self.fail(pos, f"{name} defined twice")

    def directive(self, line: str, pos: int) -> None:
        m = re.fullmatch(r"#\s*(\w+)\s*(.*)", line)
        word, rest = (m.group(1), m.group(2).strip()) if m else ("", "")
        if word == "ifndef" and self.guard is None and re.fullmatch(r"\w+", rest):
            self.guard = rest
        elif word == "define" and rest == self.guard:
            pass
        elif word == "define":
            d = re.fullmatch(r"(\w+)\s+(\S+)", rest)
            if d is None or _INT.fullmatch(d.group(2)) is None:
                raise self.fail(pos, f"{line!r}: only '#define NAME <integer>' is understood")
            self.name_free(d.group(1), pos)
            self.defines[d.group(1)] = int(_INT.fullmatch(d.group(2)).group(1), 0)  # type: ignore[union-attr]
        elif word == "endif":
            pass
        else:
            raise self.fail(pos, f"{line!r}: preprocessor directive not understood")

    def enum(self, name: str, body: str, pos: int) -> None:
        if name in self.enums:
            raise self.fail(pos, f"enum {name} defined twice")
        members: Dict[str, int] = {}
        self.enums[name] = members
        nxt = 0
        for item in body.split(","):
            if not item.strip():
                continue
            m = re.fullmatch(r"\s*(\w+)\s*(?:=\s*(.+?))?\s*", item, flags=re.S)
            if m is None:
                raise self.fail(pos, f"enum {name}: cannot parse member {item.strip()!r}")
            self.name_free(m.group(1), pos)
            nxt = self.constant(m.group(2), pos) if m.group(2) else nxt
            members[m.group(1)] = nxt
            nxt += 1

    def struct(self, name: str, body: str, pos: int) -> None:
        if name in self.layouts:
            raise self.fail(pos, f"struct {name} defined twice")
        fields: List[Field] = []
        at = align = 0
        stmts = body.split(";")
        if stmts[-1].strip():
            raise self.fail(pos, f"struct {name}: {stmts[-1].strip()!r} lacks its ';'")
        for stmt in stmts[:-1]:
            stmt = " ".join(stmt.split())
            m = self._MEMBER.fullmatch(stmt)
            if m is None:
                raise self.fail(pos, f"struct {name}: member {stmt!r} not understood "
                                     "(one fixed-width field, char array or struct per line; "
                                     "no pointers, bitfields, unions or attributes)")
            ctype, fname, length = m.group("type"), m.group("name"), m.group("len")
            n = None if length is None else self.constant(length, pos)
            if n is not None and n <= 0:
                raise self.fail(pos, f"struct {name}.{fname}: array length {n}")
            nested = None
            if ctype.startswith("struct"):
                ctype = "struct " + ctype.split()[1]
                nested = self.layouts.get(ctype[7:])
                if nested is None:
                    raise self.fail(pos, f"struct {name}.{fname}: {ctype} is not defined above")
                if n is not None:
                    raise self.fail(pos, f"struct {name}.{fname}: arrays of structs not understood")
                size, falign, code = nested.size, nested.align, ""
            elif ctype == "char":
                if n is None:
                    raise self.fail(pos, f"struct {name}.{fname}: a single char (signedness "
                                         "differs by target): use __u8/__s8 or a char array")
                size, falign, code = n, 1, f"{n}s"
            elif ctype in _SCALARS:
                c, width = _SCALARS[ctype]
                size, falign = width * (n or 1), width
                code = c if n is None else f"{n}{c}"
            else:
                raise self.fail(pos, f"struct {name}.{fname}: type {ctype!r} not understood "
                                     "(use the fixed-width __u8..__s64)")
            if any(f.name == fname for f in fields):
                raise self.fail(pos, f"struct {name}: field {fname} twice")
            at = -(-at // falign) * falign
            fields.append(Field(fname, ctype, at, size, n, code, nested))
            at += size
            align = max(align, falign)
        if not fields:
            raise self.fail(pos, f"struct {name} has no members")
        lay = Layout(name, tuple(fields), -(-at // align) * align, align)
        names = [f.name for f in lay.flat]
        if len(names) != len(set(names)):
            raise self.fail(pos, f"struct {name}: a nested struct repeats a field name")
        if struct.calcsize(lay.fmt) != lay.size:  # a bug here, not in the header
            raise self.fail(pos, f"struct {name}: format {lay.fmt} is not {lay.size} bytes")
        self.layouts[name] = lay


def parse(text: str) -> Tuple[Dict[str, Dict[str, int]], Dict[str, int], Dict[str, Layout]]:
    """Parse header text into (enums, #defines, struct layouts); ABIError if not understood."""
    p = _Parser(_strip_comments(text))
    p.parse()
    return p.enums, p.defines, p.layouts


ENUMS: Dict[str, Dict[str, int]]
DEFINES: Dict[str, int]
#: struct name (without "struct ") -> its layout.
LAYOUTS: Dict[str, Layout]
ENUMS, DEFINES, LAYOUTS = parse(source())
#: EV_* name -> record type number.
EVENT_TYPES: Dict[str, int] = ENUMS["event_type"]


def value(name: str) -> int:
    """An enum member or #define of events.h by name (KeyError if it has none)."""
    if name in DEFINES:
        return DEFINES[name]
    for members in ENUMS.values():
        if name in members:
            return members[name]
    raise KeyError(f"events.h has no constant {name}")


def layout(name: str) -> Layout:
    """The layout of ``struct name`` of events.h (KeyError if it has none)."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"events.h has no struct {name}") from None


def enum_range(enum: str) -> Tuple[int, int]:
    """The smallest and largest value of ``enum``: a field of that enum outside is damage."""
    members = ENUMS[enum].values()
    return min(members), max(members)


def slots(enum: str, prefix: str) -> Tuple[str, ...]:
    """The slot names of a map indexed by ``enum``, in index order.

    The enum lists slots 0..N-1, each ``PREFIX_NAME``, then ``PREFIX_NR`` = N
    (the map's size); the names are returned lower case without the prefix
    (``VS_DISARM_FREE`` -> ``"disarm_free"``).  Anything else raises.
    """
    members = ENUMS[enum]
    order = sorted(members.items(), key=lambda kv: kv[1])
    if not order or order[-1][0] != f"{prefix}NR" or \
            [v for _n, v in order] != list(range(len(order))) or \
            not all(n.startswith(prefix) for n, _v in order):
        raise ABIError(f"enum {enum}: not slots {prefix}* numbered 0.. with {prefix}NR last")
    return tuple(n[len(prefix):].lower() for n, _v in order[:-1])


def __getattr__(name: str) -> int:
    # abi.EV_DIRECT_RECLAIM etc.: every constant of events.h, by its C name.
    try:
        return value(name)
    except KeyError:
        raise AttributeError(name) from None
