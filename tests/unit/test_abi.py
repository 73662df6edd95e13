"""bpf/events.h is the one ABI: abi.py and every decoder must agree with the compiler.

The header is compiled with the system C compiler into a program that prints
sizeof/offsetof/signedness of every field of every struct and the value of
every enum member and #define; each figure is checked against abi's parsed
layouts and against the format, size and field order of each registered
decoder.  Without a compiler the compiled checks skip, unless
TRACE_RECLAIM_REQUIRE_LIVE=1 (CI), where they fail.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import struct
import subprocess
from typing import Dict, Iterator, List, Tuple

import pytest

from trace_reclaim import abi, events, tracers

BPF_DIR = os.path.dirname(abi.EVENTS_H)  # the header abi.py parses
PKG_DIR = os.path.dirname(BPF_DIR)
REQUIRE = os.environ.get("TRACE_RECLAIM_REQUIRE_LIVE") == "1"


def paths(lay: abi.Layout, prefix: str = "") -> Iterator[Tuple[str, abi.Field]]:
    """(C member path, field) of every member, nested structs and their members too."""
    for f in lay.fields:
        yield prefix + f.name, f
        if f.layout is not None:
            yield from paths(f.layout, prefix + f.name + ".")


def compiled(tmp_path, header_dir: str, header: str, layouts: Dict[str, abi.Layout],
             names: List[str]) -> Dict[Tuple[str, ...], int]:
    """Compile a program printing the C compiler's figures for ``layouts`` and ``names``."""
    cc = shutil.which("cc")
    if cc is None:
        if REQUIRE:
            pytest.fail("no C compiler (cc) but TRACE_RECLAIM_REQUIRE_LIVE=1")
        pytest.skip("needs a C compiler (cc) to check events.h against abi.py")
    out: List[str] = []
    for s, lay in layouts.items():
        out.append(f'printf("size {s} %zu\\n", sizeof(struct {s}));')
        out.append(f'printf("align {s} %zu\\n", _Alignof(struct {s}));')
        for path, f in paths(lay):
            m = f"((struct {s} *)0)->{path}"
            out.append(f'printf("offset {s} {path} %zu\\n", offsetof(struct {s}, {path}));')
            out.append(f'printf("fsize {s} {path} %zu\\n", sizeof({m}));')
            if f.length is not None:
                out.append(f'printf("length {s} {path} %zu\\n", sizeof({m}) / sizeof({m}[0]));')
            elif f.layout is None:
                out.append(f'printf("signed {s} {path} %d\\n", (__typeof__({m}))-1 < 0);')
    for n in names:
        out.append(f'printf("value {n} %lld\\n", (long long){n});')
    src = tmp_path / "abi_facts.c"
    src.write_text("#include <stddef.h>\n#include <stdio.h>\n#include <linux/types.h>\n"
                   f'#include "{header}"\n\nint main(void)\n{{\n\t'
                   + "\n\t".join(out) + "\n\treturn 0;\n}\n")
    exe = tmp_path / "abi_facts"
    r = subprocess.run([cc, "-std=gnu11", "-Wall", "-Werror", "-I", header_dir, "-o",
                        str(exe), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    facts: Dict[Tuple[str, ...], int] = {}
    for line in subprocess.run([str(exe)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        *key, num = line.split()
        facts[tuple(key)] = int(num)
    return facts


def check_layouts(facts: Dict[Tuple[str, ...], int], layouts: Dict[str, abi.Layout]) -> int:
    """Assert every parsed figure equals the compiler's; return how many were checked."""
    n = 0
    for s, lay in layouts.items():
        assert lay.size == facts["size", s], f"sizeof(struct {s})"
        assert lay.align == facts["align", s], f"_Alignof(struct {s})"
        assert struct.calcsize(lay.fmt) == lay.size, s
        n += 3
        base = 0
        for path, f in paths(lay):
            # offsets in abi are from the enclosing struct; C's from the outer one
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            base = facts["offset", s, parent] if parent else 0
            assert base + f.offset == facts["offset", s, path], f"offsetof(struct {s}, {path})"
            assert f.size == facts["fsize", s, path], f"sizeof {s}.{path}"
            n += 2
            if f.length is not None:
                assert f.length == facts["length", s, path], f"array length {s}.{path}"
                n += 1
            elif f.layout is None:
                assert f.code.islower() == bool(facts["signed", s, path]), f"sign {s}.{path}"
                n += 1
        # the flat view (what decoders use) has absolute offsets
        for f in lay.flat:
            path = next(p for p, g in paths(lay) if g.name == f.name and g.layout is None)
            assert f.offset == facts["offset", s, path], f"flat offset {s}.{f.name}"
            n += 1
    return n


@pytest.fixture(scope="module")
def events_h(tmp_path_factory) -> Dict[Tuple[str, ...], int]:
    tmp = tmp_path_factory.mktemp("abi")
    names = list(abi.DEFINES) + [m for e in abi.ENUMS.values() for m in e]
    return compiled(tmp, BPF_DIR, "events.h", abi.LAYOUTS, names)


def test_every_struct_and_constant_of_events_h_is_parsed():
    """Counted from the raw text, independently of the parser."""
    text = re.sub(r"/\*.*?\*/", " ", abi.source(), flags=re.S)
    assert sorted(re.findall(r"\bstruct\s+(\w+)\s*\{", text)) == sorted(abi.LAYOUTS)
    assert sorted(re.findall(r"\benum\s+(\w+)\s*\{", text)) == sorted(abi.ENUMS)
    defines = re.findall(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+\S", text, flags=re.M)
    assert sorted(defines) == sorted(abi.DEFINES)
    assert len(abi.LAYOUTS) >= 15 and "event_header" in abi.LAYOUTS


def test_layouts_match_the_compiler(events_h):
    assert check_layouts(events_h, abi.LAYOUTS) > 200


def test_constants_match_the_compiler(events_h):
    for name, v in abi.DEFINES.items():
        assert events_h["value", name] == v == abi.value(name), name
    for members in abi.ENUMS.values():
        for name, v in members.items():
            assert events_h["value", name] == v == getattr(abi, name), name


def test_the_layout_rules_on_holes_and_nesting(tmp_path):
    """C's padding, which events.h itself avoids with explicit pad fields."""
    text = ("#define N 3\n"
            "struct inner { __u8 a; __u64 b; __u16 c; };\n"
            "struct outer { __u16 x; struct inner in; char s[N]; __s32 y; __u8 z; };\n"
            "struct small { __u8 a; __u16 b; __s8 c[5]; };\n")
    (tmp_path / "holes.h").write_text(text)
    _e, defines, layouts = abi.parse(text)
    facts = compiled(tmp_path, str(tmp_path), "holes.h", layouts, list(defines))
    assert check_layouts(facts, layouts) > 20
    assert layouts["inner"].fmt == "<B7xQH6x"
    assert layouts["outer"].size == 48 and layouts["small"].size == 10
    vals = struct.unpack(layouts["outer"].fmt, bytes(range(48)))
    assert len(vals) == len(layouts["outer"].flat)


# -- the decoders -------------------------------------------------------------

def registered() -> Dict[int, events.Decoder]:
    tracers.registry()  # every tracer module registers its decoders on import
    return {t: events._DECODERS[t] for t in abi.EVENT_TYPES.values()
            if t in events._DECODERS}


def format_offsets(fmt: str) -> List[Tuple[int, str]]:
    """(offset, code) of each value a little-endian struct format unpacks."""
    assert fmt.startswith("<")
    out = []
    at = 0
    for count, code in re.findall(r"(\d*)([xcbB?hHiIlLqQnNefdsp])", fmt[1:]):
        k = int(count or 1)
        if code == "x":
            at += k
        elif code in "sp":
            out.append((at, f"{k}s"))
            at += k
        else:
            for _ in range(k):
                out.append((at, code))
                at += struct.calcsize("<" + code)
    return out


def test_every_event_type_has_a_decoder_built_from_events_h():
    decs = registered()
    assert set(decs) == set(abi.EVENT_TYPES.values())
    for t, dec in decs.items():
        assert getattr(dec, "layout", None) is not None, f"type {t}: not from abi.layout"
        assert dec.layout is abi.layout(dec.layout.name)  # type: ignore[attr-defined]


def test_decoders_match_the_compiler(events_h):
    """Size, and each dataclass field's offset/width/sign, as the decoder unpacks it."""
    for t, dec in registered().items():
        s = dec.layout.name  # type: ignore[attr-defined]
        assert dec.size == events_h["size", s], f"type {t} struct {s} size"  # type: ignore[attr-defined]
        assert struct.calcsize(dec.format) == events_h["size", s]  # type: ignore[attr-defined]
        c_path = {f.name: p for p, f in paths(dec.layout) if f.layout is None}  # type: ignore[attr-defined]
        names = [f.name for f in dataclasses.fields(dec.cls)]  # type: ignore[attr-defined]
        unpacked = format_offsets(dec.format)  # type: ignore[attr-defined]
        assert len(unpacked) == len(names), f"type {t}: {names} vs {dec.format}"  # type: ignore[attr-defined]
        c_fields = [p for p in c_path if not abi.is_pad(p)]
        assert names == c_fields, f"type {t}: field order of struct {s}"
        for name, (off, code) in zip(names, unpacked):
            path = c_path[name]
            assert off == events_h["offset", s, path], f"type {t}: {s}.{path} offset"
            assert struct.calcsize("<" + code) == events_h["fsize", s, path], f"{s}.{path}"
            if ("signed", s, path) in events_h:
                assert code.islower() == bool(events_h["signed", s, path]), f"{s}.{path} sign"


def test_decoders_read_each_field_where_the_compiler_put_it(events_h):
    """Write a distinct value at each C offset, decode, read it back by name."""
    for t, dec in registered().items():
        s = dec.layout.name  # type: ignore[attr-defined]
        limits = getattr(dec.cls, "LIMITS", {})  # type: ignore[attr-defined]
        buf = bytearray(events_h["size", s])
        want = {}
        for i, (path, f) in enumerate(p for p in paths(dec.layout) if p[1].layout is None):  # type: ignore[attr-defined]
            off, size = events_h["offset", s, path], events_h["fsize", s, path]
            if f.is_string:
                text = f"s{i}"[:size - 1]
                buf[off:off + len(text)] = text.encode()
                want[f.name] = text
            else:
                signed = bool(events_h["signed", s, path])
                v = -(i + 1) if signed else (i + 1) << (8 * size - 8)
                if f.name == "type":     # the decoder takes only its own type
                    v = t
                elif f.name in limits:   # and only values inside the declared limits
                    lo, hi = limits[f.name]
                    v = lo + (i + 1) % (hi - lo + 1)
                buf[off:off + size] = v.to_bytes(size, "little", signed=signed)
                want[f.name] = v
        ev = events.decode(t, bytes(buf))
        for name, v in want.items():
            if not abi.is_pad(name):
                assert getattr(ev, name) == v, f"type {t}: {s}.{name}"
        with pytest.raises(events.DecodeError):
            events.decode(t, bytes(buf[:-1]))
        with pytest.raises(events.DecodeError):
            events.decode(t, bytes(buf) + b"\0")
        other = bytearray(buf)
        struct.pack_into("<I", other, events_h["offset", s, "hdr.type"], t + 1)
        with pytest.raises(events.DecodeError, match="is not its type"):
            events.decode(t, bytes(other))
        for name, (lo, hi) in limits.items():
            off = events_h["offset", s, name]
            f = dec.layout.field(name)  # type: ignore[attr-defined]
            signed = f.code.islower()
            fits = range(-(1 << (8 * f.size - 1)), 1 << (8 * f.size - 1)) if signed \
                else range(0, 1 << (8 * f.size))
            for bad in [b for b in (lo - 1, hi + 1) if b in fits]:
                out = bytearray(buf)
                out[off:off + f.size] = bad.to_bytes(f.size, "little", signed=signed)
                with pytest.raises(events.DecodeError, match="declared limits"):
                    events.decode(t, bytes(out))


def test_a_decoder_whose_fields_disagree_fails_at_import():
    @events.record
    class Swapped(events.Event):
        zid: int
        nid: int
        order: int

    with pytest.raises(TypeError, match="kswapd_wake_event"):
        events.struct_decoder(Swapped, "kswapd_wake_event")

    @events.record
    class WrongType(events.Event):
        cache: int
        refcount: int
        err: int
        name: bytes
        requested: str

    with pytest.raises(TypeError, match="decodes to str"):
        events.struct_decoder(WrongType, "kmem_cache_event")
    with pytest.raises(KeyError):
        events.struct_decoder(WrongType, "no_such_event")


# -- type numbers and map slots -----------------------------------------------

def test_type_numbers_are_unique_counted_and_grouped():
    values = list(abi.EVENT_TYPES.values())
    assert len(values) == len(set(values))
    # lost_events has MAX_EVENT_TYPES slots: a larger type would lose its losses
    assert 0 < min(values) and max(values) < abi.MAX_EVENT_TYPES < events.USER_BASE
    groups = [abi.EV_RECLAIM_FIRST, abi.EV_VMALLOC_FIRST, abi.EV_SLAB_FIRST,
              abi.EV_OOM_FIRST, abi.EV_MEMCG_FIRST, abi.MAX_EVENT_TYPES]
    for name, t in tracers.registry().items():
        where = {next(i for i in range(len(groups) - 1) if groups[i] <= ev < groups[i + 1])
                 for ev in t.event_types}
        assert len(where) == 1, f"tracer {name}: types {t.event_types} span groups"


def test_slot_enums_name_the_maps_slots():
    assert abi.slots("reclaimer", "RECLAIMER_") == ("kswapd", "direct", "khugepaged", "memcg")
    assert abi.slots("vmalloc_stat", "VS_")[:2] == ("armed", "arm_full")
    assert len(abi.slots("vmalloc_stat", "VS_")) == abi.VS_NR
    with pytest.raises(abi.ABIError):
        abi.slots("event_type", "EV_")


def test_the_bpf_programs_size_their_slot_maps_by_the_enums():
    text = "".join(open(os.path.join(BPF_DIR, f)).read() for f in sorted(os.listdir(BPF_DIR))
                   if f.endswith((".bpf.c", ".bpf.h")))
    for m, size in (("lru_reclaim", "RECLAIMER_NR"), ("vmalloc_stats", "VS_NR"),
                    ("slab_cache_overflow", "SLAB_OVERFLOW_NR"),
                    ("lost_events", "MAX_EVENT_TYPES")):
        assert re.search(rf"BPF_\w*ARRAY\({m},\s*[^,]+,\s*{size}\)", text) or re.search(
            rf'SHARED_MAP\("\w*array",\s*\w+,\s*[^,]+,\s*{m},\s*{size}\)', text), m
    # every per-CPU/array map is sized by a name, not a bare number, unless one slot
    maps = re.findall(r"BPF_\w*ARRAY\((\w+),\s*[^,]+,\s*(\w+)\)", text) + re.findall(
        r'SHARED_MAP\("\w*array",\s*\w+,\s*[^,]+,\s*(\w+),\s*(\w+)\)', text)
    for m, size in maps:
        assert not size.isdigit() or size == "1", f"{m} sized by a bare {size}"


def test_no_python_copy_of_the_abi():
    """No EV_ number, header format or record format written down again in Python."""
    header = abi.layout("event_header").fmt[1:]
    formats = {lay.fmt[1:] for lay in abi.LAYOUTS.values()}
    # each record's payload after the header, as a hand-written struct format would be
    formats |= {f[len(header):] for f in formats if f.startswith(header) and f != header}
    quoted = re.compile(r"""["']<?(%s)["']""" % "|".join(
        re.escape(f) for f in sorted(formats, key=len, reverse=True)))
    assigned = re.compile(r"^[ \t]*(?:EV|VMAP_EV|SLAB_CTX|VS|RECLAIMER|SLAB_OVERFLOW)_\w+"
                          r"(?:\s*,\s*\w+)*\s*=\s*\(?-?\d", re.M)
    roots = [PKG_DIR, os.path.join(os.path.dirname(PKG_DIR), "tests"),
             os.path.join(os.path.dirname(PKG_DIR), "bench")]
    bad = []
    for root in roots:
        for d, _dirs, files in os.walk(root):
            for fn in files:
                if not fn.endswith(".py") or fn == "test_abi.py":
                    continue
                text = open(os.path.join(d, fn)).read()
                bad += [f"{fn}: {m.group(0)}" for m in assigned.finditer(text)]
                bad += [f"{fn}: {m.group(0)}" for m in quoted.finditer(text)]
    assert not bad, "\n".join(bad)
