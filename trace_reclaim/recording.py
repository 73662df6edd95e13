"""Write and read trace-reclaim recordings.

Layout (all integers little endian)::

    file    := MAGIC u16:version u16:0 u32:header_len header u32:crc32(header) block*
    header  := JSON object (system context, probe plan, tool version)
    block   := BLOCK_MAGIC u32:payload_len u32:nr_records u32:crc32(payload) payload
    payload := record*
    record  := u16:type u16:len bytes[len]          (len < 0xffff)
             | u16:type 0xffff u32:len bytes[len]   (long records)

Records are appended in the order the correlator consumed them, in blocks
that are flushed at least once per interval.  Each block is checksummed, so a
recorder killed at any byte (``kill -9`` included) leaves a file that reads
back up to its last complete block; the reader says where it stopped.
Record types are those of :mod:`trace_reclaim.events`; a type the reader does
not know is skipped (and counted) by the caller, so newer recordings degrade
rather than fail.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

from mypy_extensions import mypyc_attr

from trace_reclaim import native, schema

__all__ = [
    "MAGIC",
    "VERSION",
    "RecordingError",
    "create",
    "Writer",
    "Reader",
]

#: The header as session.build_header() writes it.  Every key is optional (old
#: and synthetic recordings lack some) but typed when present; each tracer's
#: own entry under "tracers" is declared by that tracer (events.register_header).
HEADER_SCHEMA = schema.Obj(optional={
    "tool": schema.STR, "tool_version": schema.STR,
    "kernel_release": schema.STR, "kernel_version": schema.STR, "machine": schema.STR,
    "hostname": schema.STR, "cmdline": schema.Opt(schema.STR),
    "config": schema.Map(schema.Opt(schema.STR)),
    "argv": schema.List(schema.STR),
    "interval_s": schema.Num(1e-6, 1e6), "wall_start": schema.Opt(schema.NUM),
    "plan": schema.Obj(optional={"tracers": schema.List(schema.STR),
                                 "cflags": schema.List(schema.STR)}),
    "headers": schema.Opt(schema.Map(schema.ANY)),
    "gfp_bits": schema.Map(schema.Int(0, 63)),
    "page_size": schema.Int(512, 1 << 30),
    "zone_names": schema.List(schema.STR),
    "workload": schema.Opt(schema.Obj(optional={"name": schema.STR})),
    "delayacct": schema.Obj(optional={"before": schema.Opt(schema.BOOL),
                                      "during": schema.Opt(schema.BOOL),
                                      "turned_on_for_run": schema.Opt(schema.BOOL)}),
    "tracers": schema.Map(schema.Map(schema.ANY)),
    "redacted": schema.Map(schema.ANY),
})

MAGIC = b"TRECLAIM"
BLOCK_MAGIC = b"TRB1"
VERSION = 1
_FILE_HEAD = struct.Struct("<8sHHI")
_BLOCK_HEAD = struct.Struct("<4sIII")
_REC = struct.Struct("<HH")
#: A record's head (type, length), and the u32 length of a long record.
RECORD_HEAD = _REC
_U32 = struct.Struct("<I")
LONG_LENGTH = _U32
# A block larger than this is damage, not data: the writer never makes one.
MAX_BLOCK = 64 << 20
FLUSH_BYTES = 256 << 10


class RecordingError(Exception):
    """The file cannot be read as a recording at all."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def create(path: str) -> IO[bytes]:
    """Open a new recording for writing, mode 0600, never over an existing file.

    A recording holds process names, command lines and kernel addresses:
    only its owner may read it.  FileExistsError if ``path`` exists.
    Unbuffered: the Writer writes whole blocks, and after a failed write
    (a full disk) it cuts the file back to its last complete block, which
    a buffer still holding part of the failed one would write out again.
    """
    return open(path, "xb", buffering=0, opener=lambda p, flags: os.open(p, flags, 0o600))


@mypyc_attr(allow_interpreted_subclasses=True)
class Writer:
    """Append records to a recording, a checksummed block at a time.

    A block that cannot be written (a full disk, a quota, an I/O error) is
    not fatal: ``error`` holds why, the file is cut back to its last
    complete block (a recording that reads to the end, without its End
    record), and later records are only counted (``unwritten``).  The
    caller decides whether the trace goes on (LiveSession.stop_on_write_error).
    The header is written at construction; an OSError there is raised.
    """

    def __init__(self, f: IO[bytes], header: Dict[str, Any]) -> None:
        self._f = f
        self._buf = bytearray()
        self._nrec = 0
        self.records = 0
        self.bytes = 0
        self.error: Optional[OSError] = None
        self.unwritten = 0
        head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        data = (_FILE_HEAD.pack(MAGIC, VERSION, 0, len(head)) + head
                + _U32.pack(zlib.crc32(head)))
        self._write_all(data)
        self.bytes += len(data)

    def _write_all(self, data: bytes) -> None:
        # An unbuffered file may take part of it (the disk fills up midway).
        view = memoryview(data)
        while view:
            n = self._f.write(view)
            if not n:
                raise OSError(errno.EIO, "the recording took no bytes")
            view = view[n:]
        self._f.flush()

    def write(self, type_id: int, payload: bytes) -> None:
        if self.error is not None:
            self.unwritten += 1
            return
        n = len(payload)
        if n < 0xFFFF:
            self._buf += _REC.pack(type_id, n)
        else:
            self._buf += _REC.pack(type_id, 0xFFFF)
            self._buf += _U32.pack(n)
        self._buf += payload
        self._nrec += 1
        if len(self._buf) >= FLUSH_BYTES:
            self.flush()

    def write_many(self, type_id: int, payloads: List[bytes]) -> None:
        for p in payloads:
            self.write(type_id, p)

    def flush(self) -> None:
        """Write the pending records as one block and hand it to the kernel."""
        if not self._nrec:
            return
        payload = bytes(self._buf)
        nrec = self._nrec
        self._buf.clear()
        self._nrec = 0
        head = _BLOCK_HEAD.pack(BLOCK_MAGIC, len(payload), nrec, zlib.crc32(payload))
        try:
            self._write_all(head + payload)
        except OSError as e:
            self.error = e
            self.unwritten += nrec
            try:  # the part of this block that made it out goes again
                self._f.truncate(self.bytes)
                self._f.seek(self.bytes)
            except OSError:
                pass  # the reader stops at the cut block and says so
            return
        self.records += nrec
        self.bytes += len(head) + len(payload)

    def close(self) -> None:
        self.flush()


class Reader:
    """Read a recording's header, then its records block by block.

    Construction raises RecordingError when there is nothing usable (empty,
    not a recording, newer format, damaged header).  Damage after the header
    ends iteration at the last good block and is described in ``warnings``.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.warnings: List[str] = []
        self.blocks = 0
        self.truncated = False
        head = self.f.read(_FILE_HEAD.size)
        if not head:
            raise RecordingError("recording is empty",
                                 "the recorder was stopped before it wrote anything")
        if len(head) < _FILE_HEAD.size or head[:8] != MAGIC:
            if not MAGIC.startswith(head[:8]):
                raise RecordingError("not a trace-reclaim recording (bad magic)",
                                     "pass a file written by 'trace-reclaim record -o FILE'")
            raise RecordingError("recording is truncated inside its header",
                                 "nothing in it can be used; record again")
        magic, version, _, hlen = _FILE_HEAD.unpack(head)
        if version > VERSION:
            raise RecordingError(
                f"recording format version {version} is newer than this "
                f"trace-reclaim reads (up to {VERSION})",
                "replay it with the trace-reclaim version that recorded it, or upgrade")
        if version < 1:
            raise RecordingError(f"recording format version {version} is not valid",
                                 "the file is damaged")
        raw = self.f.read(hlen)
        crc = self.f.read(4)
        if len(raw) < hlen or len(crc) < 4:
            raise RecordingError("recording is truncated inside its header",
                                 "nothing in it can be used; record again")
        if zlib.crc32(raw) != _U32.unpack(crc)[0]:
            raise RecordingError("recording header is damaged (checksum mismatch)",
                                 "the file was modified or corrupted")
        try:
            header = json.loads(raw)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, a 5000-digit number
            raise RecordingError("recording header is not valid JSON",
                                 "the file is damaged") from None
        if not isinstance(header, dict):
            raise RecordingError("recording header is not a JSON object",
                                 "the file is damaged")
        try:
            schema.check(HEADER_SCHEMA, header, "header")
        except schema.SchemaError as e:
            raise RecordingError(f"recording header is damaged: {e}",
                                 "it was written by another program or edited; nothing in "
                                 "it can be trusted, record again") from None
        self.header: Dict[str, Any] = header
        self.version: int = version

    def _stop(self, why: str) -> None:
        self.truncated = True
        self.warnings.append(
            f"recording ends early after {self.blocks} complete block(s): {why}; "
            "the report covers what was recorded up to there")

    def records(self) -> Iterator[Tuple[int, bytes]]:
        """Yield ``(type, payload)`` for every record in every good block."""
        for block in self.blocks_of_records():
            yield from block

    def blocks_of_records(self) -> Iterator[List[Tuple[int, bytes]]]:
        """Yield each good block's records as a list."""
        for payload, nrec in self._blocks():
            parsed = _parse_block(payload, nrec)
            if parsed is None:
                self._stop("a block's records do not add up")
                return
            self.blocks += 1
            yield parsed

    def payloads(self) -> Iterator[bytes]:
        """Yield each good block's payload: its records, framed as above.

        The same blocks as ``blocks_of_records``, whose records are checked
        to add up before the block is yielded, but not cut into a list: for
        a reader that decodes them in place (replay's fast path).
        """
        for payload, nrec in self._blocks():
            if _count_records(payload) != nrec:
                self._stop("a block's records do not add up")
                return
            self.blocks += 1
            yield payload

    def _blocks(self) -> Iterator[Tuple[bytes, int]]:
        """Yield each block's payload and record count while blocks check out."""
        read = self.f.read
        while True:
            head = read(_BLOCK_HEAD.size)
            if not head:
                return
            if len(head) < _BLOCK_HEAD.size:
                self._stop("a block header is cut short")
                return
            magic, plen, nrec, crc = _BLOCK_HEAD.unpack(head)
            if magic != BLOCK_MAGIC or plen > MAX_BLOCK:
                self._stop("bytes that are not a block follow")
                return
            payload = read(plen)
            if len(payload) < plen:
                self._stop("the last block is cut short")
                return
            if zlib.crc32(payload) != crc:
                self._stop("a block fails its checksum")
                return
            yield payload, nrec


def _count_records(payload: bytes) -> int:
    """How many records ``payload`` frames exactly; -1 if the last one overruns it."""
    count = 0
    off = 0
    end = len(payload)
    unpack = _REC.unpack_from
    by_bytes = native.compiled()
    while off < end:
        if off + 4 > end:
            return -1
        n: int
        if by_bytes:  # compiled, reading the two bytes is native: no call, no tuple, no box
            n = payload[off + 2] | (payload[off + 3] << 8)
        else:
            n = unpack(payload, off)[1]
        off += 4
        if n == 0xFFFF:
            if off + 4 > end:
                return -1
            n = _U32.unpack_from(payload, off)[0]
            off += 4
        off += n
        count += 1
    return count if off == end else -1


def _parse_block(payload: bytes, nrec: int) -> List[Tuple[int, bytes]] | None:
    out: List[Tuple[int, bytes]] = []
    off = 0
    end = len(payload)
    unpack = _REC.unpack_from
    while off < end:
        if off + 4 > end:
            return None
        t, n = unpack(payload, off)
        off += 4
        if n == 0xFFFF:
            if off + 4 > end:
                return None
            n = _U32.unpack_from(payload, off)[0]
            off += 4
        if off + n > end:
            return None
        out.append((t, payload[off:off + n]))
        off += n
    if len(out) != nrec:
        return None
    return out
