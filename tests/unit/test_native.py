"""The compiled report path (trace_reclaim/native.py): its generated decoders,
its guard against stale builds, and the same reports compiled or interpreted."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trace_reclaim import _decoders, codegen, events, native, tracers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "trace_reclaim")
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def test_decoders_are_what_the_generator_writes_from_events_h():
    assert codegen.main(["--check"]) == 0, "run: python -m trace_reclaim.codegen"


def _generic(cls: type, struct_name: str):
    tracers.registry()
    for type_id, dec in events._DECODERS.items():
        if getattr(dec, "cls", None) is cls and dec.layout.name == struct_name:
            return type_id, dec
    raise AssertionError(f"no decoder of {cls.__name__} registered")


def test_every_compiled_record_class_has_generated_decoders_for_each_size():
    tracers.registry()
    for dec in {id(d): d for d in events._DECODERS.values()}.values():
        cls = getattr(dec, "cls", None)
        if cls is None or cls.__module__ not in native.COMPILED:
            continue
        sizes = _decoders.DECODERS[(cls, dec.layout.name)]
        assert set(sizes) == {dec.size, *dec.legacy_sizes}, cls.__name__


ENTRIES = sorted(_decoders.DECODERS.items(), key=lambda kv: kv[0][0].__name__)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.sampled_from(ENTRIES), st.data())
def test_generated_decoders_read_what_the_generic_ones_read(entry, data):
    (cls, struct_name), by_size = entry
    type_id, dec = _generic(cls, struct_name)
    size = data.draw(st.sampled_from(sorted(by_size)))
    raw = bytearray(data.draw(st.binary(min_size=size, max_size=size)))
    at = data.draw(st.integers(0, 8))
    own_type = data.draw(st.booleans())
    kind = dec.layout.field("type")
    if own_type:
        raw[kind.offset:kind.offset + 4] = type_id.to_bytes(4, "little")
    buf = bytes(at) + bytes(raw)
    try:
        want = dec.in_place()[size](buf, at)
    except events.DecodeError:
        with pytest.raises(events.DecodeError):
            by_size[size](buf, at)
        assert not own_type
        return
    got = by_size[size](buf, at)
    assert type(got) is cls
    for f in dataclasses.fields(cls):
        assert getattr(got, f.name) == getattr(want, f.name), f.name


def _package_copy(tmp_path) -> str:
    """The compiled modules' sources, a fake extension of each, and the manifest."""
    here = str(tmp_path / "trace_reclaim")
    for m in native.COMPILED:
        rel = m.split(".")[1:]
        dst = os.path.join(here, *rel) + ".py"
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(os.path.join(PACKAGE, *rel) + ".py", dst)
        with open(dst[:-3] + SUFFIX, "w"):
            pass
    with open(os.path.join(here, os.path.basename(native.MANIFEST)), "w") as f:
        json.dump({"sources": native.source_hashes(root=here)}, f)
    return here


def test_guard_runs_compiled_only_with_every_source_as_built(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACE_RECLAIM_PURE", raising=False)
    here = _package_copy(tmp_path)
    assert native.why_not(here) is None
    monkeypatch.setenv("TRACE_RECLAIM_PURE", "1")
    assert native.why_not(here) == "TRACE_RECLAIM_PURE is set"
    monkeypatch.delenv("TRACE_RECLAIM_PURE")
    edited = os.path.join(here, "correlate.py")
    with open(edited, "a") as f:
        f.write("\n# edited after the build\n")
    assert "trace_reclaim.correlate" in (native.why_not(here) or "")
    os.unlink(os.path.join(here, os.path.basename(native.MANIFEST)))
    assert "missing" in (native.why_not(here) or "")
    os.unlink(os.path.join(here, "kswapd" + SUFFIX))
    assert "of" in (native.why_not(here) or "")  # "only N of M modules are compiled"


def test_compiled_where_required():
    """CI builds the compiled path (bootstrap.sh): it must be the one running."""
    if not os.environ.get("TRACE_RECLAIM_REQUIRE_COMPILED"):
        pytest.skip("TRACE_RECLAIM_REQUIRE_COMPILED is not set")
    assert native.STATUS == "compiled"


def test_interpreted_reports_are_the_golden_ones_too():
    """The tests run whichever build is installed; the goldens hold for the other."""
    if not native.compiled():
        pytest.skip("interpreted already: test_golden.py checks this build")
    env = dict(os.environ, TRACE_RECLAIM_PURE="1")
    r = subprocess.run([sys.executable, "-m", "tests.regen_golden", "--check"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
