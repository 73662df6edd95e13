"""Make a recording or a report safe to share: no kernel addresses, no host.

Kernel addresses defeat KASLR, which is why /proc/vmallocinfo and
/proc/kallsyms hash or zero them for unprivileged readers
(``kernel.kptr_restrict``).  A recording holds them in the vmalloc records
(``va_start``, the vmalloc window, ``vm_struct.caller``), the slab records
(``struct shrinker *``, its ``scan_objects`` callback, ``struct kmem_cache *``),
the memcg records (the return addresses that say which limit reclaimed)
and in the samples that name them.  ``Redactor`` replaces each with a keyed
hash (HMAC-SHA256 under a key drawn per recording or report and never
written): the same address always becomes the same value, so an area still
meets its free and a shrinker its symbol, and nobody without the key can go
back.  A redacted address has its top 16 bits clear, so it never reads as a
kernel address (those start ``0xff``).

The host name, the kernel command line and trace-reclaim's own command line
(and a workload's parameters) become placeholders.  Process names (``comm``)
stay: a report without them would not say who stalled.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import re
import struct
from typing import IO, Any, Dict, List, Optional, Tuple

from trace_reclaim import abi, events
from trace_reclaim.recording import Writer

__all__ = ["Redactor", "RedactingWriter", "ADDRESS_FIELDS", "HOST", "REDACTED"]

HOST = "redacted-host"
REDACTED = "[redacted]"

#: The fields of bpf/events.h structs that hold kernel addresses.
ADDRESS_FIELDS: Dict[str, Tuple[str, ...]] = {
    "alloc_vmap_area_event": ("addr", "vstart", "vend", "caller"),
    "free_vmap_area_event": ("addr",),
    "purge_vmap_area_event": ("start", "end"),
    "vmalloc_page_alloc_event": ("area_addr",),
    "shrink_slab_event": ("shr", "shrink"),
    "kmem_cache_event": ("cache",),
    "memcg_reclaim_event": ("caller0_ip", "caller1_ip", "caller2_ip"),
}
for _s, _names in ADDRESS_FIELDS.items():  # a typo or an ABI change fails at import
    for _n in _names:
        if abi.layout(_s).field(_n).code != "Q":
            raise TypeError(f"struct {_s}.{_n} is not a __u64 address")

# A kernel address as text: 16 hex digits from 0xff00..., with or without 0x
# (reports print "0xffffc900...", samples key symbols by "ffffffff81...", a
# cflag ends one in "ULL").
_KADDR = re.compile(r"(?<![0-9A-Za-z_])(0x)?(ff[0-9a-f]{14})(?![0-9a-f])", re.I)
_U64 = struct.Struct("<Q")
_MAX_CACHE = 1 << 16


class Redactor:
    """Hash kernel addresses and replace host facts, consistently, under one key."""

    def __init__(self, key: Optional[bytes] = None) -> None:
        self._key = key if key is not None else os.urandom(32)
        self._cache: Dict[int, int] = {}
        self._offsets: Dict[int, List[int]] = {}

    # -- values --------------------------------------------------------------
    def addr(self, a: int) -> int:
        """The keyed hash of address ``a`` (0, NULL, stays 0)."""
        if a == 0:
            return 0
        h = self._cache.get(a)
        if h is None:
            d = hmac.new(self._key, _U64.pack(a & 0xFFFF_FFFF_FFFF_FFFF), hashlib.sha256)
            h = int.from_bytes(d.digest()[:8], "little") & 0x0000_FFFF_FFFF_FFFF or 1
            if len(self._cache) < _MAX_CACHE:
                self._cache[a] = h
        return h

    def _sub(self, m: re.Match[str]) -> str:
        return f"{m.group(1) or ''}{self.addr(int(m.group(2), 16)):x}"

    def text(self, s: str) -> str:
        """``s`` with every kernel address in it hashed."""
        return _KADDR.sub(self._sub, s) if "f" in s or "F" in s else s

    def value(self, v: Any) -> Any:
        """A copy of JSON value ``v`` with every address hashed (keys included)."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {self.value(k): self.value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if type(v) is int and v >= 0xFF00_0000_0000_0000:
            return self.addr(v)
        return v

    # -- a recording ---------------------------------------------------------
    def header(self, header: Dict[str, Any]) -> Dict[str, Any]:
        """The recording header without host name and command lines, marked redacted."""
        h = self.value(copy.deepcopy(header))
        if "hostname" in h:
            h["hostname"] = HOST
        if "cmdline" in h:
            h["cmdline"] = REDACTED
        if "argv" in h:
            h["argv"] = [REDACTED]
        if isinstance(h.get("workload"), dict) and "params" in h["workload"]:
            h["workload"]["params"] = REDACTED
        h["redacted"] = {"addresses": "keyed hash (HMAC-SHA256), key not kept",
                         "replaced": ["hostname", "cmdline", "argv", "workload.params"]}
        return h

    def record(self, type_id: int, payload: bytes) -> bytes:
        """One record as ``record --redact`` writes it."""
        if type_id >= events.USER_BASE:
            if b"f" not in payload and b"F" not in payload:
                return payload
            try:
                obj = json.loads(payload)
            except ValueError:
                return payload
            return json.dumps(self.value(obj), sort_keys=True,
                              separators=(",", ":")).encode()
        offsets = self._offsets.get(type_id)
        if offsets is None:
            offsets = self._offsets[type_id] = _address_offsets(type_id)
        if not offsets:
            return payload
        out = bytearray(payload)
        for off in offsets:
            if off + 8 <= len(out):
                _U64.pack_into(out, off, self.addr(_U64.unpack_from(out, off)[0]))
        return bytes(out)

    # -- a report ------------------------------------------------------------
    def report(self, doc: Dict[str, Any]) -> Dict[str, Any]:
        """The report document with addresses hashed and the host replaced."""
        out = self.value(doc)
        sysinfo = out.get("system")
        if isinstance(sysinfo, dict):
            if sysinfo.get("hostname") is not None:
                sysinfo["hostname"] = HOST
            if isinstance(sysinfo.get("workload"), dict) and "params" in sysinfo["workload"]:
                sysinfo["workload"]["params"] = REDACTED
        return out


class RedactingWriter(Writer):
    """A recording Writer that writes every record and the header redacted.

    The records reach the correlator unredacted (the live report is the
    user's own); the file gets what ``Redactor.record`` makes of them, with
    checksums over the redacted bytes, so it is a recording like any other.
    """

    def __init__(self, f: IO[bytes], header: Dict[str, Any],
                 redactor: Optional[Redactor] = None) -> None:
        self.redactor = redactor or Redactor()
        super().__init__(f, self.redactor.header(header))

    def write(self, type_id: int, payload: bytes) -> None:
        super().write(type_id, self.redactor.record(type_id, payload))


def _address_offsets(type_id: int) -> List[int]:
    """Byte offsets of the address fields of ``type_id``'s struct (none if not known).

    Every tracer's decoders are registered first: the struct of a record type
    is known only from its tracer's decoder, and a redactor that ran before
    anything imported the tracers used to find no addresses to hash, and
    wrote every one of them as it was.
    """
    from trace_reclaim import tracers

    tracers.registry()
    lay = getattr(events._DECODERS.get(type_id), "layout", None)
    if lay is None:
        return []
    return [lay.field(n).offset for n in ADDRESS_FIELDS.get(lay.name, ())]
