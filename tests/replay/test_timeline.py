"""The timeline picture of every fixture: valid PNG and SVG, and what it draws
agrees with the report (stall marks, episodes, kswapd spans, compaction runs).

The SVG keeps each artist's gid as an element id, so these tests count the
marks the picture really holds, not what the renderer says it drew.
"""

from __future__ import annotations

import glob
import io
import os
import struct
import sys
import xml.etree.ElementTree as ET

import pytest

from tests import FIXTURES
from trace_reclaim import cli, tracers
from trace_reclaim.env import Environment, ExitStatus
from trace_reclaim.replay import replay
from trace_reclaim.timeline import TimelineCollector

pytest.importorskip("matplotlib")

from trace_reclaim.timeline.draw import MAX_FINDINGS_DRAWN, render  # noqa: E402

RECORDINGS = sorted(glob.glob(os.path.join(FIXTURES, "*.trc")))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(argv, Environment(stdout=out, stderr=err))
    return rc, out.getvalue(), err.getvalue()


def drawn_from(path, out):
    col = TimelineCollector()
    corr = replay(path, Environment(stderr=io.StringIO()), tracers.registry(), tap=col)
    col.finish()
    doc = corr.report()
    drawn = render(doc, col, out, tracers=list(corr.aggs),
                   interval_s=float(corr.header.get("interval_s") or 1))
    return doc, col, drawn


def svg_groups(path):
    """id -> number of marks inside: <use> elements, else <path>s outside <defs>."""
    root = ET.parse(path).getroot()
    out = {}

    def marks(el):
        uses = paths = 0
        for c in el:
            tag = c.tag.rsplit("}", 1)[-1]
            if tag == "defs":
                continue
            if tag == "use":
                uses += 1
            elif tag == "path":
                paths += 1
            u, p = marks(c)
            uses += u
            paths += p
        return uses, paths

    for el in root.iter():
        i = el.get("id")
        if i:
            u, p = marks(el)
            out[i] = u or p
    return out


def check_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])
    assert data[12:16] == b"IHDR" and width >= 1000 and height >= 600
    import matplotlib.image as mpimg

    px = mpimg.imread(path)
    assert px.shape[:2] == (height, width)
    # not blank: dark ink (text, marks) on a white page
    assert px[..., :3].min() < 0.3 and px[..., :3].max() > 0.9


@pytest.mark.parametrize("path", RECORDINGS, ids=os.path.basename)
def test_timeline_png_and_svg_agree_with_the_report(path, tmp_path):
    png, svg = str(tmp_path / "t.png"), str(tmp_path / "t.svg")
    doc, col, drawn = drawn_from(path, svg)
    rc, out, err = run_cli(["report", path, "--plot", png])
    assert rc == ExitStatus.OK, err
    assert f"timeline written to {png}" in err
    check_png(png)
    assert os.path.getsize(png) < 600_000
    groups = svg_groups(svg)

    t = doc["totals"]
    # one mark per direct-reclaim stall the report counts
    stalls = t["direct_reclaim_stalls"]
    assert col.stalls.count == stalls
    assert drawn["stall_marks"] == stalls
    assert groups.get("stall-marks", 0) == stalls
    assert sum(col.bins.series.get("stalls", [])) == stalls

    # the episodes the report lists, each drawn once where the report puts it
    eps = doc["episodes"]
    assert sorted(int(i.split("-")[1]) for i in groups if i.startswith("episode-")) == \
        sorted(e["id"] for e in eps)
    t0 = doc["window"]["start_ns"]
    for (eid, x0, x1), e in zip(drawn["episodes"], eps):
        assert eid == e["id"]
        assert x0 == pytest.approx((e["start_ns"] - t0) / 1e9)
        assert x1 == pytest.approx((e["end_ns"] - t0) / 1e9)

    # kswapd's awake spans add up to its wake-to-sleep episodes, node by node
    if not doc["episode_summary"]["dropped"]:
        for nid, awake in drawn["kswapd_awake_ns"].items():
            assert awake == sum(e["duration_ns"] for e in eps
                                if e["kind"] == "kswapd" and e["node"] == nid)
            assert groups.get(f"kswapd-node{nid}", 0) == drawn["kswapd_spans"][nid]
    for n in doc["reclaim"]["kswapd"]:
        assert drawn["kswapd_awake_ns"].get(n["nid"], 0) == n["awake_ns"]

    # findings marked, in the report's order
    nf = min(len(doc["findings"]), MAX_FINDINGS_DRAWN)
    assert sorted(i for i in groups if i.startswith("finding-")) == \
        sorted(f"finding-{k + 1}" for k in range(nf))

    if "oom" in doc:
        runs = t["compaction_runs_direct"] + t["compaction_runs_kcompactd"]
        assert drawn["compaction_marks"] == runs
        assert groups.get("compaction-marks", 0) == runs
    if "slab" in doc:
        called = [s for s in doc["slab"]["shrinkers"] if s["calls"]]
        assert col.shrinker_calls == sum(s["calls"] for s in doc["slab"]["shrinkers"])
        assert bool(drawn["shrinker_series"]) == bool(called)
    if "vmalloc" in doc:
        for verdict in ("huge", "fallback"):
            n = sum(1 for a in doc["vmalloc"]["areas"] if a["verdict"] == verdict)
            assert groups.get(f"vmalloc-{verdict}", 0) == n
    # every zone drawn has its free-pages readings, one mark per zoneinfo snapshot
    snaps = len(col.zoneinfo.all())
    for node, zones in drawn.get("zones", {}).items():
        for z in zones:
            assert groups[f"free-node{node}-{z}"] == snaps


def test_report_output_is_unchanged_by_plot(tmp_path):
    path = RECORDINGS[0]
    for flags in ([], ["-j"]):
        rc, plain, _ = run_cli(["report", *flags, path])
        rc2, plotted, _ = run_cli(["report", *flags, path, "--plot",
                                   str(tmp_path / f"x{len(flags)}.svg")])
        assert rc == rc2 == 0
        assert plain == plotted


def assert_user_error(rc, out, err, status=ExitStatus.ERROR):
    assert rc == status
    assert err.startswith("error: ") and "\nhint: " in err, err
    assert "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize("name", ["t.jpg", "t.pdf", "t", "t.png.txt"])
def test_plot_refuses_other_extensions(tmp_path, name):
    target = tmp_path / name
    assert_user_error(*run_cli(["report", RECORDINGS[0], "--plot", str(target)]),
                      status=ExitStatus.USAGE)
    assert not target.exists()


def test_plot_into_a_missing_directory(tmp_path):
    assert_user_error(*run_cli(["report", RECORDINGS[0], "--plot",
                                str(tmp_path / "no" / "t.png")]))


def test_plot_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    target = tmp_path / "t.png"
    rc, out, err = run_cli(["report", RECORDINGS[0], "--plot", str(target)])
    assert_user_error(rc, out, err)
    assert "matplotlib" in err and "pip install" in err
    assert not target.exists()


def test_plot_of_a_missing_recording(tmp_path):
    assert_user_error(*run_cli(["report", str(tmp_path / "none.trc"), "--plot",
                                str(tmp_path / "t.png")]))
