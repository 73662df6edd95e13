"""Replay's in-place path (``Reader.payloads`` + ``Correlator.feed_block``)
gives what its record-list path (``blocks_of_records`` + ``feed_records``,
taken when a tap is given) gives: the same report and the same warnings, for
the fixtures and for damaged recordings alike.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import Any, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzz_recordings as fz
from tests.unit.test_fuzz_recordings import HypothesisChooser
from trace_reclaim import abi, events, recording, tracers
from trace_reclaim.env import Environment, UserError
from trace_reclaim.replay import replay
from trace_reclaim.report import render_json, render_text


def _replayed(path: str, tap: Any) -> Tuple[str, ...]:
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    try:
        corr = replay(path, env, tracers.registry(), tap=tap)
    except UserError as e:
        return ("error", str(e), e.hint)
    doc = corr.report()
    return render_json(doc), render_text(doc, corr.aggs), env.stderr.getvalue()


def _both(path: str) -> List[Tuple[str, ...]]:
    blocks: List[Any] = []
    return [_replayed(path, None), _replayed(path, blocks.append)]


@pytest.mark.parametrize("fx", fz.fixtures(), ids=lambda fx: fx.name)
def test_fixtures_replay_the_same_in_place(tmp_path, fx):
    path = str(tmp_path / "f.trc")
    with open(path, "wb") as f:
        f.write(fz.serialize(fx.header, fx.blocks))
    in_place, listed = _both(path)
    assert in_place == listed
    assert in_place[0] != "error"


@pytest.fixture(scope="module")
def case_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("inplace") / "case.trc")


@settings(derandomize=True, max_examples=100, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_damaged_recordings_replay_the_same_in_place(data, case_path):
    c = HypothesisChooser(data)
    raw, done, _must = fz.mutate(c, c.choice(fz.fixtures()))
    with open(case_path, "wb") as f:
        f.write(raw)
    in_place, listed = _both(case_path)
    assert in_place == listed, done


def test_long_records_replay_the_same_in_place(tmp_path):
    """Records of 0xffff bytes or more carry a u32 length (recording.py's framing)."""
    fx = fz.fixtures()[0]
    blocks = [list(b) for b in fx.blocks]
    big = b"\0" * 0x10000
    blocks[len(blocks) // 2] += [(abi.EV_DIRECT_RECLAIM, big), (events.USER_SAMPLE, big),
                                 (0x7ffe, big)]
    path = str(tmp_path / "long.trc")
    with open(path, "wb") as f:
        f.write(fz.serialize(fx.header, blocks))
    in_place, listed = _both(path)
    assert in_place == listed
    assert '"undecodable_records": 2' in in_place[0]


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_a_block_whose_records_do_not_add_up_stops_both_paths(tmp_path, cut):
    """A block with a valid checksum whose last record overruns it: neither path
    feeds any of its records, and both say where the recording ends."""
    fx = fz.fixtures()[0]
    data = fz.serialize(fx.header, fx.blocks)
    # The second block, rewritten with its last record's length too long by ``cut``.
    r = recording.Reader(io.BytesIO(data))
    first = next(r.payloads())
    at = data.index(first) + len(first)  # the second block's head
    magic, plen, nrec, _crc = struct.unpack_from("<4sIII", data, at)
    payload = bytearray(data[at + 16:at + 16 + plen])
    off = last = 0
    while off < len(payload):
        last = off
        t, n = struct.unpack_from("<HH", payload, off)
        off += 4 + n
    t, n = struct.unpack_from("<HH", payload, last)
    struct.pack_into("<HH", payload, last, t, n + cut)
    head = struct.pack("<4sIII", magic, plen, nrec, zlib.crc32(payload))
    path = str(tmp_path / "bad.trc")
    with open(path, "wb") as f:
        f.write(data[:at] + head + bytes(payload) + data[at + 16 + plen:])
    in_place, listed = _both(path)
    assert in_place == listed
    assert "a block's records do not add up" in in_place[2]


def _struct_decoders() -> List[Any]:
    tracers.registry()
    return [d for d in set(events._DECODERS.values()) if hasattr(d, "in_place")]


@pytest.mark.parametrize("dec", _struct_decoders(), ids=lambda d: d.cls.__name__)
def test_in_place_decoders_decode_what_decode_struct_decodes(dec):
    """Every size a decoder takes in place (its struct's, and older structs'
    for classes on the generated path) gives the object or the DecodeError
    that padding the record and decoding it whole gives.  Those the replay
    uses: compiled, the generated ones (trace_reclaim/_decoders.py)."""
    rnd = random.Random(dec.size)
    ty = min(dec.types)
    by_size = events.in_place_decoders(dec)
    assert set(by_size) <= {dec.size} | set(dec.legacy_sizes)
    for n in sorted(by_size):
        for i in range(50):
            raw = bytearray(rnd.randbytes(n))
            if i % 5:  # mostly its own type, so that the whole record decodes
                struct.pack_into("<I", raw, 8, ty)
            padded = bytes(raw) + bytes(dec.size - n)
            try:
                want: Any = dec(padded)
            except events.DecodeError as e:
                want = ("error", str(e))
            buf = b"\xaa" * 7 + bytes(raw) + b"\xbb" * 9
            try:
                got: Any = by_size[n](buf, 7)
            except events.DecodeError as e:
                got = ("error", str(e))
            assert got == want


def test_older_structs_decode_in_place():
    """direct_reclaim_event before its cgroup ids, and the other grown structs."""
    grown = [d for d in _struct_decoders() if len(events.in_place_decoders(d)) > 1]
    assert any(d.cls.__name__ == "DirectReclaim" for d in grown)
