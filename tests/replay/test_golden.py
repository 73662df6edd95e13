"""Replay every fixture and compare its whole report with the golden files (no root).

Each ``tests/fixtures/NAME.trc`` is a real recording made on this kernel by
``python -m tests.record_fixture NAME``; ``NAME.report.json`` and
``NAME.report.txt`` are exactly what ``trace-reclaim report -j`` and
``trace-reclaim report`` printed for it, written by
``python -m tests.regen_golden``.  Replay is deterministic, so any changed
byte is a changed report: either a regression, or an intended change that is
regenerated and reviewed in the diff.

``MEANING`` holds, per fixture, what its report must show whatever the golden
files say (a huge verdict of 3 x 2 MiB, a fallback, a pinned cache that never
drains ...), so a regeneration cannot quietly bless a report that lost it.
tests/record_fixture.py keeps a new recording only when these pass on it.
The pressure fixtures' meaning is in their ``NAME.expected.json``
(tests/replay/test_episodes_replay.py).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional

import pytest

from tests import FIXTURES, ROOT
from tests.regen_golden import fixture_names, golden_paths, report_outputs
from trace_reclaim.abi import EV_COMPACTION

MiB = 1 << 20
#: The verifier's kvcalloc of its state table: the huge-eligible area.
KV_CALLER = "__kvmalloc_node_noprof <- bpf_check"
#: Files held open / names stat'ed by the slab scenarios (tests/record_fixture.py).
N_FILES = 20_000

NAMES = fixture_names()


# -- comparing with a readable difference --------------------------------------
def _json_differences(want: Any, got: Any, path: str = "$", out: Optional[List[str]] = None,
                      limit: int = 30) -> List[str]:
    """Where two JSON documents differ, as 'path: golden X, now Y' lines."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(want, dict) and isinstance(got, dict):
        for k in want:
            if k not in got:
                out.append(f"{path}.{k}: in the golden file, missing now")
            else:
                _json_differences(want[k], got[k], f"{path}.{k}", out, limit)
        for k in got:
            if k not in want:
                out.append(f"{path}.{k}: new, not in the golden file")
        if not out and list(want) != list(got):
            out.append(f"{path}: key order changed: {list(want)} -> {list(got)}")
    elif isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            out.append(f"{path}: {len(want)} items in the golden file, {len(got)} now")
        for i, (w, g) in enumerate(zip(want, got)):
            _json_differences(w, g, f"{path}[{i}]", out, limit)
    elif want != got or type(want) is not type(got):
        out.append(f"{path}: golden {json.dumps(want)[:120]}, now {json.dumps(got)[:120]}")
    return out[:limit]


def _unified(want: str, got: str, name: str, limit: int = 120) -> str:
    lines = list(difflib.unified_diff(want.splitlines(), got.splitlines(),
                                      f"golden {name}", f"now {name}", lineterm="", n=2))
    more = f"\n... {len(lines) - limit} more diff lines" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def _regen_hint(name: str) -> str:
    return (f"\nIf the change is intended: python -m tests.regen_golden {name}, "
            "then review the diff of tests/fixtures.")


@pytest.fixture(scope="module")
def outputs() -> Dict[str, Any]:
    """Each fixture's (json, text, stderr), replayed once for all the tests here."""
    return {}


def _out(outputs: Dict[str, Any], name: str):
    if name not in outputs:
        outputs[name] = report_outputs(os.path.join(FIXTURES, name + ".trc"))
    return outputs[name]


def _golden(path: str) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


# -- the golden comparison -----------------------------------------------------
def test_every_fixture_has_golden_files_and_no_golden_is_stale():
    assert NAMES, f"no recordings in {FIXTURES}"
    for name in NAMES:
        for path in golden_paths(name):
            assert os.path.exists(path), f"{path} missing: python -m tests.regen_golden {name}"
    goldens = {f.split(".report.")[0] for f in os.listdir(FIXTURES) if ".report." in f}
    assert goldens <= set(NAMES), f"golden files without a recording: {goldens - set(NAMES)}"


@pytest.mark.parametrize("name", NAMES)
def test_report_json_is_golden(outputs, name):
    got, _, err = _out(outputs, name)
    want = _golden(golden_paths(name)[0])
    if got == want:
        assert err == "", f"{name}: report wrote to stderr: {err}"
        return
    try:
        where = _json_differences(json.loads(want), json.loads(got))
    except json.JSONDecodeError as e:
        where = [f"not JSON: {e}"]
    pytest.fail(f"{name}: report -j differs from {os.path.basename(golden_paths(name)[0])}\n"
                + ("\n".join(where) or "same document, different bytes (formatting)")
                + "\n\n" + _unified(want, got, name + ".report.json") + _regen_hint(name),
                pytrace=False)


@pytest.mark.parametrize("name", NAMES)
def test_report_text_is_golden(outputs, name):
    _, got, _ = _out(outputs, name)
    want = _golden(golden_paths(name)[1])
    if got != want:
        pytest.fail(f"{name}: report differs from {os.path.basename(golden_paths(name)[1])}\n"
                    + _unified(want, got, name + ".report.txt") + _regen_hint(name),
                    pytrace=False)


@pytest.mark.parametrize("seed", ["0", "4"])
def test_report_is_the_same_in_every_process(seed):
    """Replay gives the same bytes whatever the process: no clock, no path, no set order.

    Python salts str hashes per process, so anything ordered by iterating a
    set of names differs between runs; PYTHONHASHSEED=4 reordered the slab
    interval rows' top_net ties of zram_lifecycle before they were sorted.
    """
    env = {**os.environ, "PYTHONHASHSEED": seed}
    r = subprocess.run([sys.executable, "-m", "tests.regen_golden", "--check"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"PYTHONHASHSEED={seed}:\n{r.stdout}{r.stderr}"


# -- what every real recording shows -----------------------------------------------
def kernel_agreement(doc: Dict[str, Any]) -> None:
    """The trace agrees with /proc/vmstat over the same window; nothing was lost."""
    t, vm = doc["totals"], doc["totals"]["vmstat_delta"]
    assert t["lost_events"] == 0
    stalls = sum(v for k, v in vm.items() if k.startswith("allocstall_"))
    assert t["direct_reclaim_stalls"] + t["direct_reclaim_retries"] == stalls
    assert t["kswapd_wakes"] == vm["pageoutrun"]
    assert t["lru_reclaimed_direct"] == vm["pgsteal_direct"]
    assert t["oom_kills"] == vm["oom_kill"]
    if "shrink_slab_scanned" in t:
        assert t["shrink_slab_scanned"] == vm["slabs_scanned"]
        assert t["drop_caches_runs"] == vm["drop_slab"]
    # Every stall and kswapd wake is in exactly one episode.
    assert sum(e["direct_reclaim_stalls"] for e in doc["episodes"]) == \
        t["direct_reclaim_stalls"]
    assert sum(e["pages_reclaimed"] for e in doc["episodes"]) == t["direct_reclaim_pages"]
    assert sum(e["kswapd_wakes"] for e in doc["episodes"]) == t["kswapd_wakes"]
    for f in doc["findings"]:
        assert f["title"] and f["evidence"] and f["meaning"]


@pytest.mark.parametrize("name", NAMES)
def test_traced_counts_equal_the_kernels(outputs, name):
    kernel_agreement(json.loads(_out(outputs, name)[0]))


# -- what each fixture is for -------------------------------------------------------
def _kv(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [a for a in doc["vmalloc"]["areas"] if a["caller"] == KV_CALLER]


def _records_of_type(path: str, type_id: int) -> int:
    from trace_reclaim.recording import Reader

    with open(path, "rb") as f:
        return sum(1 for t, _ in Reader(f).records() if t == type_id)


def _cache(doc: Dict[str, Any], name: str) -> Dict[str, Any]:
    for c in doc["slab"]["caches"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"{name} not in the slab report: "
                         f"{[c['name'] for c in doc['slab']['caches']]}")


def meaning_vmalloc_huge(doc: Dict[str, Any], text: str, path: str) -> None:
    """One BPF load: the verifier's 4.8 MB kvcalloc mapped with 3 x 2 MiB pages."""
    kv = _kv(doc)
    assert len(kv) == 1, kv
    a = kv[0]
    assert a["verdict"] == "huge" and a["huge_pages"] == 3, a
    assert a["size"] == 6 * MiB + 4096 and a["align"] == 2 * MiB, a
    assert a["requested_from"] == "kmalloc" and 4 * MiB < a["requested"] <= 6 * MiB, a
    assert a["waste"] == 6 * MiB - a["requested"], a
    assert doc["vmalloc"]["by_verdict"]["fallback"]["areas"] == 0
    assert doc["totals"]["vmalloc_huge_areas"] == 1
    assert doc["totals"]["vmalloc_huge_pages"] == 3
    assert re.search(r"^  huge +1 .* 3 x 2 MiB ", text, re.M), "huge row with 3 x 2 MiB"


def meaning_vmalloc_fallback(doc: Dict[str, Any], text: str, path: str) -> None:
    """No free order-9 block: the huge attempt fails and is retried with 4 KiB pages."""
    kv = _kv(doc)
    assert len(kv) == 1, kv
    a = kv[0]
    assert a["verdict"] == "fallback" and a["huge_pages"] == 0, a
    assert a["align"] < 2 * MiB, a
    att = a["attempt"]
    assert att["align"] == 2 * MiB and att["size"] > a["size"], att
    assert att["huge_pages_got"] < att["huge_pages_needed"] and att["page_failed"], att
    assert doc["totals"]["vmalloc_fallbacks"] >= 1
    assert doc["vmalloc"]["kernel"]["disarm_failed"] >= 1
    assert not [x for x in kv if x["verdict"] == "huge"]
    assert "retried with 4 KiB pages" in text


def meaning_slab_pinned(doc: Dict[str, Any], text: str, path: str) -> None:
    """Files held open through drop_caches(2): their inode cache never drains, pinned.

    On the recording machine the sandbox's init looks up /proc/PID/fd/N of
    every held file, unseen by tracepoints, so dentry's active_objs also holds
    a freeable proc dentry per file: dentry is judged on the dentries in use
    (dentry-state), which holds wherever the recording is made.
    """
    slab = doc["slab"]
    pinned = [c for c in slab["caches"] if c["never_drains"] and c["reason"] == "pinned"
              and c["name"] not in ("dentry", "proc_inode_cache")
              and c["name"].endswith(("inode_cache", "_inode"))]
    assert pinned, [(c["name"], c["reason"]) for c in slab["caches"] if c["never_drains"]]
    ino = pinned[0]
    assert ino["evidence"]["growth_before"] >= N_FILES * 0.9, ino
    assert ino["evidence"]["fell"] < 0.1 * ino["evidence"]["before"], ino
    assert ino["allocs"] >= N_FILES, ino
    dentry = _cache(doc, "dentry")
    assert dentry["active_end"] - dentry["active_start"] >= N_FILES * 0.9, dentry
    assert dentry["never_drains"] and dentry["reason"] == "pinned", dentry
    assert dentry["evidence"]["basis"] == "dentry-state", dentry
    assert dentry["evidence"]["growth_before"] >= N_FILES * 0.9, dentry
    assert slab["drop_caches_runs"] >= 1
    assert any(s["callback"] == "super_cache_scan" and s["contexts"].get("drop_caches")
               for s in slab["shrinkers"])
    assert any(f["kind"] == "cache_never_drains" and f"cache {ino['name']} " in f["title"]
               for f in doc["findings"]), [f["title"] for f in doc["findings"]]
    assert f"  ! {ino['name']}: " in text and "pinned: objects pinned" in text


def meaning_slab_negative(doc: Dict[str, Any], text: str, path: str) -> None:
    """Negative dentries, then drop_caches(2): the shrinker frees them, nothing is flagged."""
    slab = doc["slab"]
    dentry = _cache(doc, "dentry")
    assert dentry["allocs"] >= N_FILES * 0.95, dentry
    assert not dentry["never_drains"], dentry
    assert [c["name"] for c in slab["caches"] if c["never_drains"]] == []
    assert slab["drop_caches_runs"] >= 1
    assert doc["totals"]["slab_caches_never_drain"] == 0
    assert "Caches that never drained: none" in text


def meaning_zram_lifecycle(doc: Dict[str, Any], text: str, path: str) -> None:
    """zsmalloc's two caches created and destroyed; one merged alias outlives its destroy."""
    lc = doc["slab"]["lifecycle"]
    ns = {m.group(1) for e in lc for m in [re.match(r"zs_handle-zram(\d+)$", e["name"])] if m}
    assert len(ns) == 1, lc
    n = ns.pop()
    for name in (f"zs_handle-zram{n}", f"zspage-zram{n}"):
        assert {e["event"] for e in lc if e["name"] == name} == {"create", "destroy"}, lc
    zspage = [e for e in lc if e["name"] == f"zspage-zram{n}"]
    merged = [e for e in zspage if e["alias_of"]]
    assert merged, zspage
    assert any(m["exists"] and m["links_total"] > 1 for m in doc["slab"]["merged"])
    assert f"create  zs_handle-zram{n}" in text and f"destroy zspage-zram{n}" in text
    # the sentence is wrapped to 80 columns: compare it with lines joined
    assert "the cache and the alias's" in " ".join(text.split())


def meaning_compaction(doc: Dict[str, Any], text: str, path: str) -> None:
    """compact_memory written twice: compact_zone() runs per zone, no reclaim, no OOM."""
    assert _records_of_type(path, EV_COMPACTION) >= 2
    comp = doc["oom"]["compaction"]
    assert comp["direct"]["runs"] >= 2 and comp["direct"]["total_ns"] > 0, comp
    assert sum(comp["status"].values()) == comp["direct"]["runs"] + comp["kcompactd"]["runs"]
    assert doc["totals"]["oom_kills"] == 0 and doc["oom"]["victims"] == []
    assert doc["totals"]["vmstat_delta"]["oom_kill"] == 0
    assert re.search(r"^Compaction \(direct\): [1-9]\d* runs", text, re.M)
    assert "OOM kills: none" in text


def meaning_cgroup_pressure(doc: Dict[str, Any], text: str, path: str) -> None:
    """A cgroup at its limit reclaims its own pages, then another cgroup's tasks
    stall in global direct reclaim: each counted under its own cgroup, and
    memcg reclaim's LRU pages apart from the global ones /proc/vmstat counts."""
    t = doc["totals"]
    limited = [r for r in doc["cgroups"] if r["memcg_reclaims"]]
    assert len(limited) == 1, limited
    (cg,) = limited
    assert cg["name"].startswith("trace-reclaim-test-") and cg["name"].endswith("-pressure")
    assert cg["memcg_by_limit"] == {"max": cg["memcg_reclaims"]}
    assert cg["memcg_reclaims"] == t["memcg_reclaims"] and cg["direct_stalls"] == 0
    assert cg["memcg_pages"] == t["memcg_reclaim_pages"] > 0
    # Memcg reclaim frees LRU pages only: all of them in the memcg slot, none
    # in direct (kernel_agreement: direct and kswapd are /proc/vmstat's).
    assert t["lru_reclaimed_memcg"] == t["memcg_reclaim_pages"]
    assert "LRU pages scanned" in text and "Memcg reclaim (cgroups at their limits)" in text
    # The global stalls are another cgroup's, every one of them attributed.
    stalled = [r for r in doc["cgroups"] if r["direct_stalls"]]
    assert stalled and cg not in stalled
    assert sum(r["direct_stalls"] for r in stalled) == t["direct_reclaim_stalls"] > 0
    kinds = {f["kind"] for f in doc["findings"] if f["evidence"].get("id") == cg["id"]}
    assert {"cgroup_memory_max", "cgroup_own_limit"} <= kinds, kinds


MEANING: Dict[str, Callable[[Dict[str, Any], str, str], None]] = {
    "cgroup_pressure": meaning_cgroup_pressure,
    "vmalloc_huge": meaning_vmalloc_huge,
    "vmalloc_fallback": meaning_vmalloc_fallback,
    "slab_pinned": meaning_slab_pinned,
    "slab_negative": meaning_slab_negative,
    "zram_lifecycle": meaning_zram_lifecycle,
    "compaction": meaning_compaction,
}


def check_fixture(name: str, doc: Dict[str, Any], text: str, path: str) -> None:
    """Everything a recording of ``name`` must show (tests/record_fixture.py runs it)."""
    kernel_agreement(doc)
    if name in MEANING:
        MEANING[name](doc, text, path)


def test_every_fixture_says_what_it_is_for():
    for name in NAMES:
        assert name in MEANING or os.path.exists(os.path.join(FIXTURES, name + ".expected.json")), \
            f"{name}: add its checks to MEANING"


@pytest.mark.parametrize("name", sorted(MEANING))
def test_fixture_shows_what_it_was_recorded_for(outputs, name):
    path = os.path.join(FIXTURES, name + ".trc")
    assert os.path.exists(path), f"python -m tests.record_fixture {name}"
    j, text, _ = _out(outputs, name)
    MEANING[name](json.loads(j), text, path)
