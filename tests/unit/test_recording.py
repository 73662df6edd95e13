"""The recording format: round trip, damage at any byte, newer versions, fuzz."""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trace_reclaim.recording import (
    BLOCK_MAGIC, MAGIC, VERSION, Reader, RecordingError, Writer, create,
)
from tests import synth


def read_all(data: bytes):
    r = Reader(io.BytesIO(data))
    return r, list(r.records())


def test_round_trip_keeps_order_types_and_bytes():
    recs = [(1, b"a" * 10), (2, b""), (0x8001, b"{}"), (3, b"x" * 70000), (4, b"z")]
    data = synth.recording(recs, {"k": [1, 2]}, flush_every=2)
    r, got = read_all(data)
    assert r.header == {"k": [1, 2]}
    assert got == recs
    assert not r.warnings and not r.truncated
    assert r.blocks == 3


def test_writer_counts_records_and_bytes():
    buf = io.BytesIO()
    w = Writer(buf, {})
    for _ in range(1000):
        w.write(1, bytes(60))
    w.close()
    assert w.records == 1000
    assert w.bytes == len(buf.getvalue())
    # 4 bytes of framing per record, one 16-byte block header per block.
    assert w.bytes < 1000 * 64 + 16 * 4 + 64


@pytest.mark.parametrize("data,msg", [
    (b"", "empty"),
    (b"GARBAGE!" * 4, "not a trace-reclaim recording"),
    (b"\x00\x01\x02", "not a trace-reclaim recording"),
    (MAGIC[:5], "truncated inside its header"),
])
def test_unusable_files_raise_with_a_hint(data, msg):
    with pytest.raises(RecordingError) as e:
        Reader(io.BytesIO(data))
    assert msg in str(e.value)
    assert e.value.hint


def test_newer_format_version_is_refused_with_a_hint():
    data = bytearray(synth.recording([(1, b"x")]))
    struct.pack_into("<H", data, 8, VERSION + 1)
    with pytest.raises(RecordingError) as e:
        Reader(io.BytesIO(bytes(data)))
    assert "newer" in str(e.value)
    assert "upgrade" in e.value.hint


def test_damaged_header_checksum_is_refused():
    data = bytearray(synth.recording([(1, b"x")]))
    data[20] ^= 0xFF  # inside the JSON header
    with pytest.raises(RecordingError):
        Reader(io.BytesIO(bytes(data)))


def test_truncation_at_every_byte_keeps_every_complete_block():
    recs = [(1, bytes([i]) * 40) for i in range(30)]
    data = synth.recording(recs, flush_every=5)  # 6 blocks of 5 records
    header_len = len(synth.recording([], None))
    ends = []  # byte offsets where each block ends
    off = header_len
    while off < len(data):
        plen = struct.unpack_from("<I", data, off + 4)[0]
        off += 16 + plen
        ends.append(off)
    for cut in range(len(data) + 1):
        if cut < header_len:
            with pytest.raises(RecordingError):
                Reader(io.BytesIO(data[:cut]))
            continue
        r, got = read_all(data[:cut])
        complete = sum(1 for e in ends if e <= cut)
        assert got == recs[: complete * 5], cut
        assert r.truncated == (cut not in ends and cut != header_len), cut
        assert bool(r.warnings) == r.truncated


def test_corrupt_block_stops_at_the_last_good_one():
    recs = [(1, b"a" * 10)] * 4
    data = bytearray(synth.recording(recs, flush_every=2))
    data[-3] ^= 0x55  # in the second block's payload
    r, got = read_all(bytes(data))
    assert got == recs[:2]
    assert r.truncated and "checksum" in r.warnings[0]


def test_block_whose_records_do_not_add_up_is_rejected():
    payload = struct.pack("<HH", 1, 50) + b"short"
    head = struct.pack("<4sIII", BLOCK_MAGIC, len(payload), 1, zlib.crc32(payload))
    data = synth.recording([]) + head + payload
    r, got = read_all(data)
    assert got == [] and r.truncated


records = st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=300)), max_size=40)


@given(records, st.integers(0, 7))
def test_any_records_round_trip(recs, flush_every):
    _, got = read_all(synth.recording(recs, flush_every=flush_every))
    assert got == recs


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_recordings_never_crash_the_reader(data):
    base = synth.recording(synth.pressure_story(), flush_every=3)
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if not buf:
            break
        i = data.draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[i] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del buf[i:]
        elif kind == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=20))
        else:
            del buf[i:i + data.draw(st.integers(1, 20))]
    try:
        r = Reader(io.BytesIO(bytes(buf)))
    except RecordingError:
        return
    for t, p in r.records():
        assert 0 <= t <= 0xFFFF and isinstance(p, bytes)


@settings(max_examples=200)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_reader(blob):
    try:
        r = Reader(io.BytesIO(blob))
    except RecordingError:
        return
    list(r.records())


def test_recordings_are_created_0600_and_never_over_a_file(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "r.trc"
        with create(str(path)) as f:
            Writer(f, {"tool": "trace-reclaim"}).close()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(FileExistsError):
            create(str(path))
    finally:
        os.umask(old)


class FillingUp(io.BytesIO):
    """A file on a filesystem with ``room`` bytes left: a write takes what fits
    (as write(2) does), the next one fails with ENOSPC."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data) -> int:  # type: ignore[override]
        left = self.room - self.tell()
        if left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(bytes(data)[:left])


@pytest.mark.parametrize("room", [300, 5000, 70_000, 300_000])
def test_a_full_disk_leaves_every_complete_block_and_nothing_else(room):
    f = FillingUp(room)
    w = Writer(f, {"k": 1})
    written = []
    for i in range(8000):
        rec = (1 + i % 3, bytes([i % 251]) * (40 + i % 50))
        w.write(*rec)
        written.append(rec)
        if i % 700 == 699:
            w.flush()
    w.close()
    assert isinstance(w.error, OSError) and w.error.errno == errno.ENOSPC
    assert w.records + w.unwritten == len(written)
    # Cut back to the last complete block: a recording that reads to its
    # end without a warning, holding exactly the records the writer counted.
    data = f.getvalue()
    assert len(data) == w.bytes
    r, got = read_all(data)
    assert not r.warnings and not r.truncated
    assert got == written[:w.records]


def test_a_header_that_does_not_fit_raises():
    with pytest.raises(OSError):
        Writer(FillingUp(20), {"k": "x" * 100})


def test_recordings_are_created_unbuffered(tmp_path):
    with create(str(tmp_path / "r.trc")) as f:
        assert isinstance(f, io.FileIO)
