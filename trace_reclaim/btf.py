"""Read struct layouts and prototypes from the running kernel's BTF.

What the tracers need: member offsets (``kmem_cache.name`` for the slab
tracer), raw tracepoint prototypes (``btf_trace_<event>`` typedefs: raw
tracepoint args[] follow TP_PROTO, which changes between versions), and
whether a function exists out of line (what fentry and kprobes need).
Kernel headers on the machine may belong to another kernel (6.12 headers on
6.18), so they are never trusted for layouts; BTF (/sys/kernel/btf/vmlinux,
CONFIG_DEBUG_INFO_BTF) describes this kernel.

A deliberately small parser of the BTF format (Documentation/bpf/btf.rst).
It keeps the blob (a few MiB) and one offset per type, and decodes names
and members only when asked: the tracer runs during memory incidents, and
materialising vmlinux's ~130k types as Python objects would cost ~65 MiB.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
import sys
import threading
from array import array
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["BTF", "LibbpfBTF", "load_btf", "read_ahead", "VMLINUX"]

#: The running kernel's BTF.
VMLINUX = "/sys/kernel/btf/vmlinux"

_KIND_INT, _KIND_PTR, _KIND_ARRAY, _KIND_STRUCT, _KIND_UNION = 1, 2, 3, 4, 5
_KIND_ENUM, _KIND_TYPEDEF, _KIND_FUNC, _KIND_FUNC_PROTO = 6, 8, 12, 13
_KIND_VAR, _KIND_DATASEC, _KIND_DECL_TAG, _KIND_ENUM64 = 14, 15, 17, 19
_MODIFIERS = (9, 10, 11, 18)  # volatile, const, restrict, type_tag
_TYPE = struct.Struct("<III")


def _extra_words() -> Tuple[List[int], List[int]]:
    """Words after each kind's 12-byte header: (fixed, per member) by kind."""
    fixed, per_member = [0] * 32, [0] * 32
    for kind in (_KIND_INT, _KIND_VAR, _KIND_DECL_TAG):
        fixed[kind] = 1
    fixed[_KIND_ARRAY] = 3
    for kind in (_KIND_STRUCT, _KIND_UNION, _KIND_DATASEC, _KIND_ENUM64):
        per_member[kind] = 3
    for kind in (_KIND_ENUM, _KIND_FUNC_PROTO):
        per_member[kind] = 2
    return fixed, per_member


_EXTRA_WORDS = _extra_words()


class BTF:
    """One BTF blob, indexed by type id (1-based; 0 is void)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise ValueError("not BTF (too short)")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != 0xEB9F:
            raise ValueError("not BTF (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._str0 = hdr_len + str_off
        self._str_end = self._str0 + str_len
        self._off = array("I", [0])       # byte offset of each type's header
        self._name = array("I", [0])      # its name offset in the string table
        # Walk the type section as u32 words (BTF records are whole words):
        # one table lookup per type instead of a struct unpack and branches,
        # about twice as fast on the ~130k types of vmlinux.
        start = hdr_len + type_off
        words = array("I")
        words.frombytes(data[start:start + type_len - type_len % 4])
        if sys.byteorder != "little":  # the magic above was read little-endian
            words.byteswap()
        add_off, add_name = self._off.append, self._name.append
        fixed, per_member = _EXTRA_WORDS
        i, n = 0, len(words) - 2
        while i < n:
            add_off(start + 4 * i)
            add_name(words[i])
            info = words[i + 1]
            kind = (info >> 24) & 0x1F
            i += 3 + fixed[kind] + per_member[kind] * (info & 0xFFFF)

    # -- raw access -------------------------------------------------------
    def _type(self, tid: int) -> Tuple[int, int, int, int]:
        """(kind, vlen, kflag, size_or_type) of type ``tid``."""
        _n, info, st = _TYPE.unpack_from(self._data, self._off[tid])
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, st

    def _str(self, off: int) -> str:
        start = self._str0 + off
        end = self._data.find(b"\0", start, self._str_end)
        return self._data[start:end].decode("ascii", "replace")

    def name_of(self, tid: int) -> str:
        return self._str(self._name[tid]) if tid else ""

    def find(self, kind: int, name: str) -> Optional[int]:
        """The first type of ``kind`` named ``name``, or None."""
        needle = b"\0" + name.encode() + b"\0"
        strs = self._data
        pos = strs.find(needle, self._str0, self._str_end)
        while pos >= 0:
            off = pos + 1 - self._str0
            start = 1
            while True:
                try:
                    tid = self._name.index(off, start)
                except ValueError:
                    break
                if self._type(tid)[0] == kind:
                    return tid
                start = tid + 1
            pos = strs.find(needle, pos + 1, self._str_end)
        return None

    def _strip(self, tid: int) -> int:
        for _ in range(32):
            kind, _v, _k, ref = self._type(tid) if tid else (0, 0, 0, 0)
            if not tid or kind not in _MODIFIERS + (_KIND_TYPEDEF,):
                return tid
            tid = ref
        return tid

    def _members(self, tid: int) -> List[Tuple[str, int, int]]:
        """(name, type, bit offset) of a struct/union, (name, type, 0) of a prototype."""
        kind, vlen, kflag, _st = self._type(tid)
        pos = self._off[tid] + 12
        out = []
        if kind in (_KIND_STRUCT, _KIND_UNION):
            for i in range(vlen):
                m_name, m_type, m_off = _TYPE.unpack_from(self._data, pos + 12 * i)
                out.append((self._str(m_name), m_type, m_off & 0xFFFFFF if kflag else m_off))
        elif kind == _KIND_FUNC_PROTO:
            for i in range(vlen):
                p_name, p_type = struct.unpack_from("<II", self._data, pos + 8 * i)
                out.append((self._str(p_name), p_type, 0))
        return out

    # -- questions the tracers ask -----------------------------------------
    def member_offset(self, struct_name: str, member: str) -> Optional[int]:
        """Byte offset of ``member`` in ``struct struct_name`` (None: unknown)."""
        tid = self.find(_KIND_STRUCT, struct_name)
        if tid is None:
            return None
        for m_name, _t, bits in self._members(tid):
            if m_name == member and bits % 8 == 0:
                return bits // 8
        return None

    def member(self, struct_name: str, member: str) -> Optional[Tuple[int, str]]:
        """(byte offset, C type) of ``member`` in ``struct struct_name``, or None.

        The type says how the member is held: ``struct shrinker *`` (a
        pointer) or ``struct shrinker`` (embedded), which is what layout
        branches test instead of kernel versions.
        """
        tid = self.find(_KIND_STRUCT, struct_name)
        if tid is None:
            return None
        for m_name, m_type, bits in self._members(tid):
            if m_name == member and bits % 8 == 0:
                return bits // 8, self.type_name(m_type)
        return None

    def type_name(self, tid: int, depth: int = 0) -> str:
        """C spelling of a type as BTF names it: ``const void *``, ``gfp_t``."""
        if tid == 0:
            return "void"
        if depth > 16 or tid >= len(self._off):
            return "?"
        kind, _v, _k, ref = self._type(tid)
        if kind == _KIND_PTR:
            return self.type_name(ref, depth + 1) + " *"
        if kind == _KIND_ARRAY:
            elem, _index, nelems = _TYPE.unpack_from(self._data, self._off[tid] + 12)
            return f"{self.type_name(elem, depth + 1)}[{nelems}]"
        if kind in (_KIND_STRUCT, _KIND_UNION):
            return f"{'struct' if kind == _KIND_STRUCT else 'union'} {self.name_of(tid)}"
        if kind in (9, 10, 11):
            return f"{('volatile', 'const', 'restrict')[kind - 9]} " + \
                self.type_name(ref, depth + 1)
        return self.name_of(tid) or "?"

    def _proto(self, tid: int) -> Optional[List[Tuple[str, int, int]]]:
        tid = self._strip(tid)
        if not tid or self._type(tid)[0] != _KIND_FUNC_PROTO:
            return None
        return self._members(tid)

    def _raw_tp_proto(self, tracepoint: str) -> Optional[List[Tuple[str, int, int]]]:
        # btf_trace_NAME: a pointer to a prototype whose first parameter is
        # the probe's void *__data; raw tracepoint args[] start after it.
        tid = self.find(_KIND_TYPEDEF, f"btf_trace_{tracepoint}")
        if tid is None:
            return None
        ptr = self._strip(self._type(tid)[3])
        if not ptr or self._type(ptr)[0] != _KIND_PTR:
            return None
        params = self._proto(self._type(ptr)[3])
        return params[1:] if params else None

    def raw_tp_params(self, tracepoint: str) -> Optional[List[str]]:
        """TP_PROTO of a tracepoint (the raw tracepoint's args[]), or None."""
        params = self._raw_tp_proto(tracepoint)
        return None if params is None else [self.type_name(t) for _n, t, _o in params]

    def raw_tp_arg(self, tracepoint: str, struct_name: str) -> Optional[int]:
        """Index in a raw tracepoint's args[] of the first ``struct NAME *``."""
        for i, (_n, ptype, _o) in enumerate(self._raw_tp_proto(tracepoint) or []):
            t = self._strip(ptype)
            if not t or self._type(t)[0] != _KIND_PTR:
                continue
            target = self._strip(self._type(t)[3])
            if target and self._type(target)[0] == _KIND_STRUCT and \
                    self.name_of(target) == struct_name:
                return i
        return None

    def enum_value(self, enum_name: str, member: str) -> Optional[int]:
        """The value of enumerator ``member`` of ``enum enum_name`` (None: unknown).

        Values the kernel computes at build time, such as ``memory_cgrp_id``
        in ``enum cgroup_subsys_id`` (its position depends on which cgroup
        controllers are configured), are only knowable here.
        """
        tid = self.find(_KIND_ENUM, enum_name)
        if tid is None:
            return None
        _kind, vlen, _kflag, _size = self._type(tid)
        pos = self._off[tid] + 12
        for i in range(vlen):
            name_off, val = struct.unpack_from("<Ii", self._data, pos + 8 * i)
            if self._str(name_off) == member:
                return val
        return None

    def func_id(self, name: str) -> Optional[int]:
        """The BTF type id of kernel function ``name`` (what fentry attaches by), or None."""
        return self.find(_KIND_FUNC, name)

    def func_params(self, name: str) -> Optional[List[str]]:
        """Parameter types of an out-of-line kernel function, or None."""
        tid = self.find(_KIND_FUNC, name)
        if tid is None:
            return None
        params = self._proto(self._type(tid)[3])
        return None if params is None else [self.type_name(t) for _n, t, _o in params]


class _LibbpfIndex:
    """Type id -> its byte offset in the blob, or -> its name offset, from libbpf's index."""

    def __init__(self, owner: LibbpfBTF, names: bool) -> None:
        self._owner = owner
        self._names = names

    def __len__(self) -> int:
        return self._owner._count

    def __getitem__(self, tid: int) -> int:
        o = self._owner
        if not 0 <= tid < o._count:
            raise IndexError(tid)
        off = o._lib.btf__type_by_id(o._btf, tid) - o._raw
        return struct.unpack_from("<I", o._data, off)[0] if self._names else off


class LibbpfBTF(BTF):
    """The same questions answered from libbpf's parse of the blob.

    libbpf (libbpf.so.1, which bcc's libbcc links) walks and indexes the
    ~130k types of vmlinux in C, ~20 ms against ~100 ms for the Python walk;
    this walk is on the way to the first BPF compile (the memcg id offsets
    and mm_shrink_slab_start's prototype).  The blob bytes are the same, so
    every other answer is BTF's own code.
    """

    def __init__(self, path: str, lib: Any) -> None:
        """Read and parse the file at ``path``: libbpf does both in one call,
        without the GIL (btf.read_ahead)."""
        # Not super().__init__(): that is the Python walk this replaces.
        # The blob is read through libbpf's own copy.
        self._lib = lib
        self._btf = lib.btf__parse_raw(path.encode())
        if not self._btf:
            raise ValueError("libbpf could not parse this BTF")
        size = ctypes.c_uint32()
        self._raw = lib.btf__raw_data(self._btf, ctypes.byref(size))
        head = ctypes.string_at(self._raw, 24) if self._raw and size.value >= 24 else b""
        if len(head) < 24:
            lib.btf__free(self._btf)
            self._btf = None
            raise ValueError("libbpf gave no BTF blob")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", head, 0)
        _t_off, _t_len, str_off, str_len = struct.unpack_from("<IIII", head, 8)
        if magic != 0xEB9F:
            lib.btf__free(self._btf)
            self._btf = None
            raise ValueError("not BTF (bad magic)")
        self._data = (ctypes.c_char * size.value).from_address(self._raw)  # type: ignore
        self._str0 = hdr_len + str_off
        self._str_end = self._str0 + str_len
        self._count = lib.btf__type_cnt(self._btf)   # types + void
        self._off = _LibbpfIndex(self, names=False)  # type: ignore[assignment]
        self._name = _LibbpfIndex(self, names=True)  # type: ignore[assignment]

    def _str(self, off: int) -> str:
        if not 0 <= off < self._str_end - self._str0:
            return ""
        return ctypes.string_at(self._raw + self._str0 + off).decode("ascii", "replace")

    def find(self, kind: int, name: str) -> Optional[int]:
        tid = self._lib.btf__find_by_name_kind(self._btf, name.encode(), kind)
        return tid if tid > 0 else None

    def __del__(self) -> None:
        if getattr(self, "_btf", None):
            self._lib.btf__free(self._btf)
            self._btf = None


@functools.cache
def _libbpf() -> Any:
    """libbpf.so.1 with the prototypes LibbpfBTF calls, or None (loaded once)."""
    try:
        lib = ctypes.CDLL("libbpf.so.1")
        vp, u32 = ctypes.c_void_p, ctypes.c_uint32
        for name, res, args in (
                ("btf__parse_raw", vp, [ctypes.c_char_p]),
                ("btf__free", None, [vp]),
                ("btf__raw_data", vp, [vp, ctypes.POINTER(u32)]),
                ("btf__type_cnt", u32, [vp]),
                ("btf__type_by_id", vp, [vp, u32]),
                ("btf__find_by_name_kind", ctypes.c_int32, [vp, ctypes.c_char_p, u32])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        return lib
    except (OSError, AttributeError):
        return None


#: The BTF being read ahead, by path: the thread, and its result once it ends.
_AHEAD: Dict[str, Tuple[threading.Thread, List[Any]]] = {}


def read_ahead(path: str = VMLINUX) -> None:
    """Start ``load_btf(path)`` in a thread; the next ``load_btf(path)`` takes its result.

    Reading ~5 MiB of BTF and libbpf's parse release the GIL: started as a
    command that traces begins, they run while Python loads the tracers and
    bcc, not after (~12 ms here, on the way to the first compile).
    """
    if path in _AHEAD:
        return
    _libbpf()  # here: loading it in the thread would wait for the GIL
    result: List[Any] = []

    def load() -> None:
        try:
            result.append(_load(path))
        except BaseException as e:  # raised again where the BTF is asked for
            result.append(e)

    t = threading.Thread(target=load, name="btf", daemon=True)
    _AHEAD[path] = (t, result)
    t.start()


def load_btf(path: str = VMLINUX) -> Optional[BTF]:
    """The BTF at ``path``, indexed by libbpf where it loads, else by the
    Python walk (the one read ahead, if it was: ``read_ahead``)."""
    ahead = _AHEAD.pop(path, None)
    if ahead is not None:
        ahead[0].join()
        if isinstance(ahead[1][0], BaseException):
            raise ahead[1][0]
        return ahead[1][0]
    return _load(path)


def _load(path: str) -> Optional[BTF]:
    lib = _libbpf()
    if lib is not None and os.path.exists(path):
        try:
            return LibbpfBTF(path, lib)
        except (ValueError, struct.error):
            pass
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return BTF(data)
    except (ValueError, struct.error):
        return None
