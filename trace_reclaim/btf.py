"""Read struct layouts and prototypes from the running kernel's BTF.

What the tracers need: member offsets (``kmem_cache.name`` for the slab
tracer), raw tracepoint prototypes (``btf_trace_<event>`` typedefs: raw
tracepoint args[] follow TP_PROTO, which changes between versions), and
whether a function exists out of line (what fentry and kprobes need).
Kernel headers on the machine may belong to another kernel (6.12 headers on
6.18), so they are never trusted for layouts; BTF (/sys/kernel/btf/vmlinux,
CONFIG_DEBUG_INFO_BTF) describes this kernel.

A deliberately small parser of the BTF format (Documentation/bpf/btf.rst):
types only, no validation beyond bounds.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

__all__ = ["BTF", "load_btf"]

_KIND_INT, _KIND_PTR, _KIND_ARRAY, _KIND_STRUCT, _KIND_UNION = 1, 2, 3, 4, 5
_KIND_ENUM, _KIND_TYPEDEF, _KIND_FUNC, _KIND_FUNC_PROTO = 6, 8, 12, 13
_KIND_VAR, _KIND_DATASEC, _KIND_DECL_TAG, _KIND_ENUM64 = 14, 15, 17, 19
_MODIFIERS = (9, 10, 11, 18)  # volatile, const, restrict, type_tag


class BTF:
    """Types of one BTF blob: (kind, name, info, size_or_type, members)."""

    def __init__(self, data: bytes) -> None:
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != 0xEB9F:
            raise ValueError("not BTF (bad magic)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._strs = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self.types: List[Tuple[int, str, int, int, List[Tuple[str, int, int]]]] = [
            (0, "", 0, 0, [])]
        self._by_name: Dict[Tuple[int, str], int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, st = struct.unpack_from("<III", data, pos)
            pos += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            kflag = info >> 31
            members: List[Tuple[str, int, int]] = []
            if kind == _KIND_INT or kind in (_KIND_VAR, _KIND_DECL_TAG):
                pos += 4
            elif kind == _KIND_ARRAY:
                pos += 12
            elif kind in (_KIND_STRUCT, _KIND_UNION):
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos)
                    pos += 12
                    bits = m_off & 0xFFFFFF if kflag else m_off
                    members.append((self._str(m_name), m_type, bits))
            elif kind == _KIND_ENUM:
                pos += 8 * vlen
            elif kind == _KIND_FUNC_PROTO:
                for _ in range(vlen):
                    p_name, p_type = struct.unpack_from("<II", data, pos)
                    pos += 8
                    members.append((self._str(p_name), p_type, 0))
            elif kind in (_KIND_DATASEC, _KIND_ENUM64):
                pos += 12 * vlen
            name = self._str(name_off)
            tid = len(self.types)
            self.types.append((kind, name, info, st, members))
            if name:
                self._by_name.setdefault((kind, name), tid)

    def _str(self, off: int) -> str:
        end = self._strs.find(b"\0", off)
        return self._strs[off:end].decode("ascii", "replace")

    def find(self, kind: int, name: str) -> Optional[int]:
        return self._by_name.get((kind, name))

    def member_offset(self, struct_name: str, member: str) -> Optional[int]:
        """Byte offset of ``member`` in ``struct struct_name`` (None: unknown)."""
        tid = self.find(_KIND_STRUCT, struct_name)
        if tid is None:
            return None
        for m_name, _t, bits in self.types[tid][4]:
            if m_name == member and bits % 8 == 0:
                return bits // 8
        return None

    def _strip(self, tid: int) -> int:
        while tid and self.types[tid][0] in _MODIFIERS + (_KIND_TYPEDEF,):
            tid = self.types[tid][3]
        return tid

    def raw_tp_arg(self, tracepoint: str, struct_name: str) -> Optional[int]:
        """Index in a raw tracepoint's args[] of the first ``struct NAME *``.

        ``btf_trace_NAME`` is a pointer to a prototype whose first parameter
        is the probe's ``void *__data``; raw tracepoint args[] start after it.
        """
        tid = self.find(_KIND_TYPEDEF, f"btf_trace_{tracepoint}")
        if tid is None:
            return None
        ptr = self._strip(self.types[tid][3])
        if self.types[ptr][0] != _KIND_PTR:
            return None
        proto = self._strip(self.types[ptr][3])
        if self.types[proto][0] != _KIND_FUNC_PROTO:
            return None
        for i, (_n, ptype, _o) in enumerate(self.types[proto][4][1:]):
            t = self._strip(ptype)
            if self.types[t][0] != _KIND_PTR:
                continue
            target = self._strip(self.types[t][3])
            if self.types[target][0] == _KIND_STRUCT and self.types[target][1] == struct_name:
                return i
        return None


    def type_name(self, tid: int, depth: int = 0) -> str:
        """C spelling of a type as BTF names it: ``const void *``, ``gfp_t``."""
        if tid == 0:
            return "void"
        if depth > 16 or tid >= len(self.types):
            return "?"
        kind, name, _info, ref, _m = self.types[tid]
        if kind == _KIND_PTR:
            return self.type_name(ref, depth + 1) + " *"
        if kind in (_KIND_STRUCT, _KIND_UNION):
            return f"{'struct' if kind == _KIND_STRUCT else 'union'} {name}"
        if kind in (9, 10, 11):
            return f"{('volatile', 'const', 'restrict')[kind - 9]} " + \
                self.type_name(ref, depth + 1)
        return name or "?"

    def _proto_params(self, proto: int) -> Optional[List[str]]:
        proto = self._strip(proto)
        if self.types[proto][0] != _KIND_FUNC_PROTO:
            return None
        return [self.type_name(ptype) for _n, ptype, _o in self.types[proto][4]]

    def raw_tp_params(self, tracepoint: str) -> Optional[List[str]]:
        """TP_PROTO of a tracepoint (the raw tracepoint's args[]), or None."""
        tid = self.find(_KIND_TYPEDEF, f"btf_trace_{tracepoint}")
        if tid is None:
            return None
        ptr = self._strip(self.types[tid][3])
        if self.types[ptr][0] != _KIND_PTR:
            return None
        params = self._proto_params(self.types[ptr][3])
        return params[1:] if params else None  # drop the probe's void *__data

    def func_params(self, name: str) -> Optional[List[str]]:
        """Parameter types of an out-of-line kernel function, or None."""
        tid = self.find(_KIND_FUNC, name)
        if tid is None:
            return None
        return self._proto_params(self.types[tid][3])


def load_btf(path: str = "/sys/kernel/btf/vmlinux") -> Optional[BTF]:
    try:
        with open(path, "rb") as f:
            return BTF(f.read())
    except (OSError, ValueError, struct.error):
        return None
