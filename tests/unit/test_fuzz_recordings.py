"""Damaged recordings with valid checksums: skipped and counted, never a traceback.

The mutations are those of ``tests/fuzz_recordings.py`` (run it for the long
run), drawn here by hypothesis, derandomized, with a fixed budget, from the
real recordings of tests/fixtures.
"""

from __future__ import annotations

import io
import random
import zlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzz_recordings as fz
from trace_reclaim import cli, events, recording
from trace_reclaim.env import Environment

BPF_TYPES = sorted(fz._decoders())
USER_TYPES = [events.USER_TICK, events.USER_SNAPSHOT, events.USER_SAMPLE, events.USER_END]


class HypothesisChooser(fz.Chooser):
    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integers(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))


@pytest.fixture(scope="module")
def case_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz") / "case.trc")


@settings(derandomize=True, max_examples=150, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_damaged_recordings_are_skipped_and_counted(data, case_path):
    why, done = fz.check(HypothesisChooser(data), case_path)
    assert why is None, f"{done}:\n{why}"


def _report(tmp_path, records, header=None):
    fx = fz.fixtures()[0]
    blocks = [list(b) for b in fx.blocks]
    blocks[len(blocks) // 2] += records
    path = tmp_path / "d.trc"
    path.write_bytes(fz.serialize(fx.header if header is None else header, blocks))
    outs = []
    for args in (["report", "-j", str(path)], ["report", str(path)]):
        out, err = io.StringIO(), io.StringIO()
        rc = cli.main(args, Environment(stdout=out, stderr=err))
        assert "Traceback" not in err.getvalue()
        outs.append((rc, out.getvalue(), err.getvalue()))
    return outs


@pytest.mark.parametrize("type_id", BPF_TYPES + USER_TYPES)
def test_every_record_type_cut_short_is_counted(tmp_path, type_id):
    """Each type's decoder refuses a payload one byte short, and the report says so."""
    if type_id < events.USER_BASE:
        dec = fz._decoders()[type_id]
        good = fz._random_record(type_id, dec.layout, fz.RandomChooser(random.Random(type_id)),
                                 ts=0)
    else:
        good = b'{"ts_ns": 1, "what": "vmstat", "when": "tick", "data": {}, "tracer": "x", ' \
               b'"interval": 1}'
    (rc, j, _), (rc2, text, err) = _report(tmp_path, [(type_id, good[:-1]),
                                                      (type_id, good[:-1])])
    assert rc == rc2 == 0
    assert json.loads(j)["lost"]["undecodable_records"] == 2
    assert "2 records were damaged and skipped" in text
    assert "2 records were damaged and skipped" in err


@pytest.mark.parametrize("type_id", BPF_TYPES)
def test_every_record_type_under_another_id_is_counted(tmp_path, type_id):
    """A payload of one struct under another type's id: its header says otherwise."""
    dec = fz._decoders()[type_id]
    rec = fz._random_record(type_id, dec.layout, fz.RandomChooser(random.Random(1)),
                            ts=0)
    others = [t for t in BPF_TYPES if t != type_id]
    (rc, j, _), (_rc, text, _err) = _report(tmp_path, [(t, rec) for t in others])
    assert rc == 0
    assert json.loads(j)["lost"]["undecodable_records"] == len(others)
    assert f"{len(others)} records were damaged and skipped" in text


@pytest.mark.parametrize("what,data", [
    ("vmstat", {"pgscan_kswapd": "12"}), ("meminfo", []), ("zoneinfo", [{"node": 0}]),
    ("psi", {"some": {"total": -1}}), ("taskstats", {"tasks": [{"tid": "1", "comm": "x"}]}),
])
def test_snapshots_of_the_wrong_shape_are_counted(tmp_path, what, data):
    rec = events.encode_user(events.Snapshot(1, what, "tick", data))
    (rc, j, _), (_rc, text, _err) = _report(tmp_path, [(events.USER_SNAPSHOT, rec)])
    assert rc == 0
    assert json.loads(j)["lost"]["undecodable_records"] == 1
    assert "1 records were damaged and skipped" in text


@pytest.mark.parametrize("tracer,data", [
    ("reclaim", "lru"), ("reclaim", {"lru": {"kswapd": {"calls": 1}}}),
    ("slab", {"when": "tick", "caches": {"dentry": [1]}}),
    ("slab", {"when": "tick", "symbols": {"not-hex": "f"}}),
    ("vmalloc", {"when": "tick", "stacks": {"1": "frame"}}),
    ("vmalloc", {"stats": {}}),
])
def test_samples_of_the_wrong_shape_are_counted(tmp_path, tracer, data):
    rec = events.encode_user(events.Sample(1, tracer, data))
    (rc, j, _), (_rc, text, _err) = _report(tmp_path, [(events.USER_SAMPLE, rec)])
    assert rc == 0
    assert json.loads(j)["lost"]["undecodable_records"] == 1


@pytest.mark.parametrize("text", [b"1" * 5000, b"[" * 100_000 + b"]" * 100_000])
def test_json_python_cannot_take_is_counted(tmp_path, text):
    rec = b'{"ts_ns": 1, "what": "vmstat", "when": "tick", "data": {"x": ' + text + b"}}"
    (rc, j, _), (_rc, text_out, _err) = _report(tmp_path, [(events.USER_SNAPSHOT, rec)])
    assert rc == 0
    assert json.loads(j)["lost"]["undecodable_records"] == 1


def test_a_header_python_cannot_take_is_a_clean_error(tmp_path):
    fx = fz.fixtures()[0]
    data = fz.serialize(fx.header, fx.blocks)
    head = json.dumps(fx.header, sort_keys=True, separators=(",", ":")).encode()
    bad = head.replace(b'"page_size":4096', b'"page_size":' + b"4" * 5000)
    assert bad != head
    blocks = data[recording._FILE_HEAD.size + len(head) + 4:]
    data = (recording._FILE_HEAD.pack(recording.MAGIC, recording.VERSION, 0, len(bad)) + bad
            + recording._U32.pack(zlib.crc32(bad)) + blocks)
    path = tmp_path / "h.trc"
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["report", str(path)], Environment(stdout=out, stderr=err))
    assert rc == 1 and "error: " in err.getvalue() and "hint: " in err.getvalue()
    assert "Traceback" not in err.getvalue()


@pytest.mark.parametrize("key,value", [
    ("plan", "reclaim"), ("plan", {"tracers": "reclaim"}), ("page_size", "4096"),
    ("gfp_bits", {"__GFP_IO": 99}), ("zone_names", 3), ("hostname", ["a"]),
    ("interval_s", 0), ("tracers", {"vmalloc": {"huge_bytes": "2M"}}),
    ("tracers", {"slab": {"ncpus": 0}}), ("delayacct", []),
])
def test_a_damaged_header_is_a_clean_error(tmp_path, key, value):
    header = dict(fz.fixtures()[0].header, **{key: value})
    for rc, out, err in _report(tmp_path, [], header=header):
        assert rc == 1 and out == ""
        assert "error: " in err and "recording header is damaged" in err
        assert "\nhint: " in err
