"""The live view tells the same truth as the report, on every real recording.

Each recording in tests/fixtures is replayed through the code the live run
uses: records into the Correlator, each interval row to ``LiveView.interval``
(which reads ``Correlator.live_state``), the report to ``LiveView.end``.
Then what the view printed is compared with the report printed after it:
the last frame's totals and lost count, its episode count and interval rows
(terminal), the plain rows (pipe), and every ``-j`` interval line.
"""

from __future__ import annotations

import glob
import io
import json
import os
from typing import Any, Dict, List, Tuple

import pytest

from tests import FIXTURES
from trace_reclaim import tracers
from trace_reclaim.correlate import Correlator
from trace_reclaim.recording import Reader
from trace_reclaim.report import interval_header, interval_line, render_text
from trace_reclaim.view import CLEAR_EOL, HISTORY, HOME_CLEAR, SHOWN_TOTALS, LiveView, totals_line

RECORDINGS = sorted(glob.glob(os.path.join(FIXTURES, "*.trc")))
CLOCK = "12:00:00"


class _StatesSeen:
    """The correlator as the view sees it, keeping each live state it hands out
    (a wrapper: compiled, the correlator's methods cannot be replaced)."""

    def __init__(self, corr: Correlator, states: List[Dict[str, Any]]) -> None:
        self._corr = corr
        self._states = states

    def live_state(self) -> Dict[str, Any]:
        st = self._corr.live_state()
        self._states.append(st)
        return st

    def __getattr__(self, name: str) -> Any:
        return getattr(self._corr, name)

def drive(path: str, tty: bool = True, json_lines: bool = False,
          ) -> Tuple[str, Dict[str, Any], List[Dict[str, Any]], Correlator]:
    """Replay ``path`` into a LiveView as ``trace-reclaim live`` drives it.

    Return what the view printed, the report, the live state the view was
    given at each interval, and the correlator.
    """
    out = io.StringIO()
    view = LiveView(out, tty=tty, json_lines=json_lines, clock=lambda: CLOCK)
    states: List[Dict[str, Any]] = []
    with open(path, "rb") as f:
        reader = Reader(f)
        reg = tracers.registry()
        corr = Correlator(reader.header, [reg[n] for n in reader.header["plan"]["tracers"]])
        seen = _StatesSeen(corr, states)
        view.start()
        for type_id, payload in reader.records():
            row = corr.feed_record(type_id, payload)
            if row is not None:
                view.interval(row, seen)  # type: ignore[arg-type]
    doc = corr.report()
    view.end(doc, corr.aggs)
    return out.getvalue(), doc, states, corr


def last_frame(text: str) -> List[str]:
    """The lines of the last screen the view drew (before the report)."""
    assert HOME_CLEAR in text, "the view never drew a frame"
    frame = text.rsplit(HOME_CLEAR, 1)[1]
    lines = []
    for line in frame.split("\n"):
        if not line.endswith(CLEAR_EOL):
            break  # the blank line and the report below the frame
        lines.append(line[: -len(CLEAR_EOL)])
    return lines


def json_rows(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The report's intervals as a JSON reader sees them (int keys become strings)."""
    return json.loads(json.dumps(doc))["intervals"]


def test_there_are_recordings():
    assert RECORDINGS, f"no *.trc in {FIXTURES}"


@pytest.mark.parametrize("path", RECORDINGS, ids=os.path.basename)
def test_final_frame_totals_are_the_reports(path):
    text, doc, states, corr = drive(path)
    t = doc["totals"]
    assert doc["intervals"], "a recording without intervals tests nothing here"
    assert text.count(HOME_CLEAR) == len(doc["intervals"]) == len(states)
    # What the last frame printed is what the report counts ...
    frame = last_frame(text)
    total = [ln for ln in frame if ln.startswith("total ")]
    assert total == [totals_line(t)]
    assert f"  lost {t['lost_events']}  " in frame[0]
    # ... and so is the state it was drawn from, number for number.
    final = states[-1]["totals"]
    for key in SHOWN_TOTALS:
        assert key in t, f"the report has no total {key!r} that the view shows"
        assert final[key] == t[key], (key, final[key], t[key])
    assert f"EPISODES ({doc['episode_summary']['count']} so far)" in frame
    # The interval rows under the screen are the report's last intervals.
    rows = doc["intervals"][-HISTORY:]
    assert frame[-len(rows):] == [interval_line(r, CLOCK) for r in rows]
    assert frame[-len(rows) - 1] == interval_header()
    # Below the frame: a blank line, then the report itself.
    below = text.rsplit(HOME_CLEAR, 1)[1].split("\n", len(frame))[-1]
    assert below == "\n\n" + render_text(doc, corr.aggs)


@pytest.mark.parametrize("path", RECORDINGS, ids=os.path.basename)
def test_interval_rows_add_up_to_the_totals(path):
    """The per-interval columns the view prints sum to the totals it prints."""
    _, doc, _, _ = drive(path)
    t, rows = doc["totals"], doc["intervals"]
    assert doc["window"]["intervals"] == len(rows)  # none dropped: all are summed
    assert sum(r["reclaim"]["stalls"] for r in rows) == t["direct_reclaim_stalls"]
    assert sum(r["reclaim"]["stall_ns"] for r in rows) == t["direct_reclaim_ns"]
    assert sum(r["reclaim"]["kswapd_wakes"] for r in rows) == t["kswapd_wakes"]
    assert sum(r["lost_events"] for r in rows) == t["lost_events"]


@pytest.mark.parametrize("path", RECORDINGS, ids=os.path.basename)
def test_json_lines_are_the_reports_intervals(path):
    text, doc, states, _ = drive(path, tty=False, json_lines=True)
    lines = [json.loads(ln) for ln in text.splitlines()]
    assert [ln["type"] for ln in lines] == ["interval"] * (len(lines) - 1) + ["report"]
    intervals = [{k: v for k, v in ln.items() if k != "type"} for ln in lines[:-1]]
    assert intervals == json_rows(doc)
    assert intervals == lines[-1]["report"]["intervals"]
    assert lines[-1]["report"]["totals"] == json.loads(json.dumps(doc["totals"]))
    assert not states  # -j prints rows only; it never asks for the live state


@pytest.mark.parametrize("path", RECORDINGS, ids=os.path.basename)
def test_plain_rows_off_a_terminal_are_the_reports_intervals(path):
    text, doc, _, corr = drive(path, tty=False)
    lines = text.split("\n")
    n = len(doc["intervals"])
    assert lines[0] == interval_header()
    assert lines[1:1 + n] == [interval_line(r, CLOCK) for r in doc["intervals"]]
    assert "\x1b" not in text
    assert "\n".join(lines[1 + n:]) == "\n" + render_text(doc, corr.aggs)
