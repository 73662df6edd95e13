"""Every line of the text report fits 80 columns, for every fixture and at extreme values.

The report is what a user reads at the end of a run in an 80x24 terminal
(``trace-reclaim report FILE`` and the end of ``trace-reclaim run``, both
``report.render_text``); a line over 80 columns folds mid-table there.
The live view's screens and rows are checked over every fixture too.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any, Dict, List

import pytest

from tests import FIXTURES
from tests.regen_golden import fixture_names, report_outputs
from tests.replay.test_episodes_replay import replay
from trace_reclaim.report import WIDTH, interval_line, render_text
from trace_reclaim.view import LiveView, render_screen

NAMES = fixture_names()


def too_wide(text: str) -> List[str]:
    """'line N (C columns): ...' for each line wider than WIDTH."""
    return [f"line {i} ({len(ln)} columns): {ln}"
            for i, ln in enumerate(text.splitlines(), 1) if len(ln) > WIDTH]


@pytest.mark.parametrize("name", NAMES)
def test_text_report_fits_80_columns(name):
    _, text, _ = report_outputs(os.path.join(FIXTURES, name + ".trc"))
    wide = too_wide(text)
    assert not wide, f"{name}: {len(wide)} lines over {WIDTH} columns:\n" + "\n".join(wide)


@pytest.mark.parametrize("name", NAMES)
def test_live_screens_and_rows_fit_80_columns(name):
    """The screen redrawn each interval and the rows printed off a terminal."""
    frames: List[Any] = []
    replay(os.path.join(FIXTURES, name + ".trc"),
           on_row=lambda row, corr: frames.append((row, corr.live_state())))
    assert frames, f"{name}: no intervals"
    view = LiveView(open(os.devnull, "w"), tty=False)
    for i, (row, st) in enumerate(frames):
        view.history.append(interval_line(row, "12:00:00"))
        screen = "\n".join(render_screen({**st, "row": row}, view.history, "12:00:00"))
        wide = too_wide(screen)
        assert not wide, f"{name}: interval {i}: screen lines over {WIDTH}:\n" + "\n".join(wide)
    view.out.close()


# -- extreme values ------------------------------------------------------------------
LONG = "super_cache_scan (ext4 /dev/mapper/vg0-root)"   # 44 characters
GFP = "|".join(["GFP_KERNEL", "__GFP_HIGHMEM", "__GFP_MOVABLE", "__GFP_RECLAIMABLE",
                "__GFP_NOWARN", "__GFP_RETRY_MAYFAIL", "__GFP_NOFAIL", "__GFP_NORETRY",
                "__GFP_COMP", "__GFP_ZERO", "__GFP_NOMEMALLOC", "__GFP_HARDWALL",
                "__GFP_THISNODE", "__GFP_ACCOUNT", "__GFP_ZEROTAGS"])
BIG = 10 ** 15


def _aggs_and_doc(name: str):
    corr = replay(os.path.join(FIXTURES, name + ".trc"))
    return corr.aggs, corr.report()


def _extreme(doc: Dict[str, Any]) -> Dict[str, Any]:
    """The fixture's report with every count huge and every name long."""
    d = copy.deepcopy(doc)
    d["system"]["kernel"] = "6.18.44-" + "x" * 70
    d["system"]["workload"] = {"name": "w" * 90, "params": {"args": ["--count", "9" * 30]}}
    red = d["reclaim"]["direct_reclaim"]
    red.update(stalls=BIG, total_ns=BIG, max_ns=BIG, p50_ns=BIG, p99_ns=BIG,
               pages_reclaimed=BIG)
    red["processes"] = [{"pid": 4194304, "comm": "c" * 15, "stalls": BIG, "total_ns": BIG,
                         "p50_ns": BIG, "p99_ns": BIG, "max_ns": BIG, "pages_reclaimed": BIG,
                         "orders": [str(o) for o in range(11)],
                         "gfp_flags": {GFP: BIG, GFP.replace("GFP_KERNEL", "GFP_NOFS"): 1}}]
    for n in d["reclaim"]["kswapd"]:
        n.update(wakeup_requests=BIG, kswapd_wakes=BIG, re_wakes=BIG, awake_ns=BIG)
        n["requests"] = [{"zone": z, "order": o, "count": BIG}
                         for z in ("Movable", "Normal", "DMA32") for o in (0, 9, 10)]
    slab = d["slab"]
    base = slab["shrinkers"][0]
    slab["shrinkers"] = []
    for i in range(20):
        s = dict(base, name=f"{LONG}#{i}" if i % 2 else f"s{i}", calls=BIG, objects=BIG,
                 scanned=BIG, freed=0, asked=BIG, time_ns=BIG, p99_ns=BIG, min_priority=12,
                 frees_nothing=True,
                 contexts={"kswapd": 1, "direct": 1, "memcg": 1, "node_reclaim": 1,
                           "drop_caches": 1, "other": 1},
                 direct_reclaim_by={f"{4194304 - j} ({'p' * 15})": BIG
                                    for j in range(16 if i < 10 else 3)})
        slab["shrinkers"].append(s)
    for c in slab["caches"]:
        c.update(name="kmalloc-cg-" + "n" * 60, allocs=BIG, frees=BIG, net=-BIG,
                 active_start=BIG, active_end=BIG, slabinfo_delta=-BIG, frees_untraced=True)
    if slab["caches"]:
        slab["caches"][0].update(never_drains=True, reason="pinned", reason_detail="r " * 60,
                                 evidence={"before": BIG, "after": BIG, "fell": -BIG})
    slab["lifecycle"] = [{"event": "destroy", "name": "zspage-" + "z" * 70, "alias_of": "a" * 40,
                          "merged_dir": ":" + "0" * 30, "shared_by": BIG,
                          "objects_last_seen": BIG, "objects_at_destroy": BIG,
                          "note": "n" * 100, "stale_link": True}]
    slab["merged"] = [{"dir": ":" + "0" * 30, "name": "m" * 50, "exists": True,
                       "aliases": BIG, "links_total": BIG}]
    slab["kmsg"] = ["kmem_cache_destroy " + "k" * 100 + ": Slab cache still has objects"]
    vm = d["vmalloc"]
    caller = "__kvmalloc_node_noprof_with_a_very_long_name <- " + "f" * 60
    for x in vm["by_caller"]:
        x.update(caller="page array: " + caller, areas=BIG)
    for a in vm["areas"]:
        a.update(caller=caller, size=BIG, requested=BIG, waste=BIG, comm="c" * 15,
                 pid=4194304, why="w " * 50, live=True)
    d["oom"]["victims"] = [{"pid": 4194304, "comm": "v" * 15, "anon_rss_kb": BIG,
                            "file_rss_kb": BIG, "oom_score_adj": -1000, "by_pid": 4194304,
                            "by_comm": "b" * 15}]
    d["oom"]["compaction"]["status"] = {f"status_{i}": BIG for i in range(8)}
    for z in d["zones"][0]["zones"]:
        z.update(free=BIG, min=BIG, low=BIG, high=BIG, boost=BIG, managed=BIG)
    for e in d["episodes"]:
        e.update(id=10 ** 6, node=1023, kswapd_wakes=BIG, direct_reclaim_stalls=BIG,
                 direct_reclaim_ns=BIG, direct_reclaim_max_ns=BIG, pages_reclaimed=BIG,
                 duration_ns=BIG, psi={"some_us": 10 ** 10, "full_us": 10 ** 10})   # hours
        for z in (e.get("watermarks") or {}).get("zones", []):
            z.update(free=BIG, min=BIG, low=BIG, high=BIG, state="below_min")
        e["stalls"] = [{"tid": 4194304, "comm": "t" * 15, "stalls": BIG, "total_ns": BIG,
                        "max_ns": BIG, "pages_reclaimed": BIG,
                        "delays": {"freepages_delay_total": BIG, "thrashing_delay_total": BIG,
                                   "compact_delay_total": BIG}}]
        e["oom_kills"] = [{"pid": 4194304, "comm": "o" * 15, "anon_rss_kb": BIG,
                           "by_pid": 4194304, "by_comm": "b" * 15}]
    for f in d["findings"]:
        f["title"] += " " + "t" * 120
        f["evidence"]["caller"] = caller
    return d


def _with_every_section() -> List[str]:
    out = []
    for name in NAMES:
        with open(os.path.join(FIXTURES, name + ".report.json")) as f:
            doc = json.load(f)
        if all(k in doc for k in ("slab", "vmalloc", "oom")) and doc["slab"]["shrinkers"] \
                and doc["vmalloc"]["areas"] and doc["reclaim"]["kswapd"] and doc["findings"]:
            out.append(name)
    return out


EVERY_SECTION = _with_every_section()


def test_some_fixture_has_every_section():
    assert EVERY_SECTION, "no fixture with slab, vmalloc, oom, kswapd and findings"


@pytest.mark.parametrize("name", EVERY_SECTION)
def test_extreme_values_fit_80_columns(name):
    aggs, doc = _aggs_and_doc(name)
    text = render_text(_extreme(doc), aggs)
    wide = too_wide(text)
    assert not wide, f"{name} at extreme values:\n" + "\n".join(wide)
    # nothing only the long lines carried is lost: every shrinker and every
    # (pid, shrinker) direct-reclaim pair is still in the text
    flat = " ".join(text.split())
    for s in _extreme(doc)["slab"]["shrinkers"][:15]:
        assert s["name"] in text, s["name"]
    direct = re.findall(r"^  direct reclaim by pid .*(?:\n    .*)*", text, re.M)
    assert len(direct) == 2, direct          # two sets of tasks, not twenty lines
    assert all(f"{LONG}#{i}" in " ".join(direct[i >= 10].split()) for i in range(1, 20, 2))
    assert "freed nothing" in flat
    for flag in GFP.split("|"):
        assert re.search(rf"(^|[ |]){re.escape(flag)}(\||$| )", text, re.M), flag
