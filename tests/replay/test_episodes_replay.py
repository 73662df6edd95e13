"""Replay the real recordings in tests/fixtures and check their findings (no root).

Each ``NAME.trc`` was recorded here with tests/record_fixture.py around
examples/pressure.py; ``NAME.expected.json`` holds what its report must say.
"""

from __future__ import annotations

import glob
import io
import json
import os

from tests import FIXTURES
import pytest

from trace_reclaim import cli
from trace_reclaim.env import Environment
from trace_reclaim import tracers
from trace_reclaim.correlate import Correlator
from trace_reclaim.recording import Reader

FIX = FIXTURES
RECORDINGS = sorted(glob.glob(os.path.join(FIX, "*.trc")))
# The pressure recordings; the others' checks are in test_golden.py (MEANING).
WITH_EXPECTED = [p for p in RECORDINGS if os.path.exists(p[:-4] + ".expected.json")]


def replay(path, on_row=None):
    with open(path, "rb") as f:
        r = Reader(f)
        reg = tracers.registry()
        corr = Correlator(r.header, [reg[n] for n in r.header["plan"]["tracers"]])
        for t, p in r.records():
            row = corr.feed_record(t, p)
            if row is not None and on_row is not None:
                on_row(row, corr)
    return corr


@pytest.mark.parametrize("path", WITH_EXPECTED, ids=os.path.basename)
def test_fixture_findings(path):
    with open(path[:-4] + ".expected.json") as f:
        want = json.load(f)
    doc = replay(path).report()
    assert [{"kind": f["kind"], "severity": f["severity"]} for f in doc["findings"]] \
        == want["findings"]
    assert len(doc["episodes"]) == want["episodes"]
    assert doc["totals"]["direct_reclaim_stalls"] == want["direct_reclaim_stalls"]
    assert doc["totals"]["kswapd_wakes"] == want["kswapd_wakes"]
    assert doc["delayacct"]["on"] == want["delayacct"]
    # Every stall is in exactly one episode; the episodes' totals are the tracer's.
    assert sum(e["direct_reclaim_stalls"] for e in doc["episodes"]) == \
        doc["totals"]["direct_reclaim_stalls"]
    assert sum(e["pages_reclaimed"] for e in doc["episodes"]) == \
        doc["totals"]["direct_reclaim_pages"]
    assert sum(e["kswapd_wakes"] for e in doc["episodes"]) == doc["totals"]["kswapd_wakes"]
    # The kernel's own counters agree with the trace.
    vm = doc["totals"]["vmstat_delta"]
    assert doc["totals"]["kswapd_wakes"] == vm["pageoutrun"]
    for f in doc["findings"]:
        assert f["title"] and f["evidence"] and f["meaning"]


@pytest.mark.parametrize("path", RECORDINGS, ids=os.path.basename)
def test_fixture_text_report_fits_and_has_sections(path):
    out = io.StringIO()
    assert cli.main(["report", path], Environment(stdout=out, stderr=io.StringIO())) == 0
    text = out.getvalue()
    for head in ("Findings:", "Episodes:", "== reclaim ==", "== oom ==", "Lost events:"):
        assert head in text
    start = text.index("Findings:")
    end = text.index("== reclaim ==")
    assert all(len(ln) <= 80 for ln in text[start:end].splitlines())


def test_delayacct_fixture_has_stalled_task_delays():
    doc = replay(os.path.join(FIX, "pressure_delayacct.trc")).report()
    rows = [s for e in doc["episodes"] for s in e["stalls"]]
    assert rows and all(s.get("delays") for s in rows)
    # freepages delay is the kernel's own measure of direct reclaim time
    d = max(rows, key=lambda s: s["total_ns"])
    assert d["delays"]["freepages_delay_total"] > 0
