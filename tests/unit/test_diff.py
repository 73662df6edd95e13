"""Unit tests of ``trace-reclaim diff``: metric extraction, statistics, output, errors.

No root, no kernel: synthetic report documents, and synthetic recordings
written with the real ``Writer`` and replayed through the real correlator.
"""

from __future__ import annotations

import copy
import io
import json
import os
from typing import Any, Dict, List, Optional

from tests import ROOT
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import synth
from trace_reclaim import abi, cli
from trace_reclaim.env import Environment, ExitStatus
from trace_reclaim import compare as diff
from trace_reclaim.compare.render import _short as render_short
from trace_reclaim import events
from trace_reclaim.recording import Writer
from trace_reclaim.tracers import registry


# -- synthetic documents -------------------------------------------------------
def make_doc(stalls: int = 10, p50: int = 100_000, p99: int = 300_000, mx: int = 400_000,
             total: int = 2_000_000, wakes: int = 100, awake: int = 500_000_000,
             direct: int = 1000, kswapd: int = 50_000, slab: Optional[Dict] = None,
             vmalloc: Optional[Dict] = None, lost: int = 0) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "totals": {
            "direct_reclaim_stalls": stalls, "direct_reclaim_ns": total,
            "direct_reclaim_pages": direct, "kswapd_wakes": wakes,
            "kswapd_awake_ns": awake, "lru_reclaimed_direct": direct,
            "lru_reclaimed_kswapd": kswapd, "lost_events": lost, "vmstat_delta": {},
        },
        "reclaim": {"direct_reclaim": {"stalls": stalls, "p50_ns": p50, "p99_ns": p99,
                                       "max_ns": mx, "total_ns": total}},
    }
    if slab is not None:
        doc["slab"] = slab
    if vmalloc is not None:
        doc["vmalloc"] = vmalloc
    return doc


def make_header(**over: Any) -> Dict[str, Any]:
    h = {"kernel_release": "6.18.0", "kernel_version": "#1 SMP", "hostname": "vm1",
         "cmdline": "root=/dev/vda1", "tool_version": "0.1",
         "workload": {"name": "pressure", "params": {"mib": 6000},
                      "machine": {"cpus": 2, "mem_total_bytes": 24 << 30},
                      "vm": {"vm.watermark_scale_factor": "10"}}}
    for k, v in over.items():
        if k.startswith("w_"):
            h["workload"][k[2:]] = v
        else:
            h[k] = v
    return h


def runs(values: List[Dict[str, Any]], header: Optional[Dict[str, Any]] = None,
         latencies: Optional[List[List[int]]] = None) -> List[diff.Run]:
    out = []
    for i, kw in enumerate(values):
        lat = latencies[i] if latencies else []
        out.append(diff.Run(f"run{i}.trc", copy.deepcopy(header or make_header()),
                            make_doc(**kw), lat))
    return out


def item(c: diff.Comparison, name: str) -> diff.Item:
    return next(it for it in c.items if it.name == name)


# -- metric extraction -----------------------------------------------------------
def test_metrics_from_the_reclaim_section():
    m = diff.run_metrics(make_doc(stalls=7, p50=11, p99=22, mx=33, wakes=5, awake=9,
                                  direct=100, kswapd=200))
    assert m["direct_reclaim.stalls"] == 7
    assert (m["direct_reclaim.p50_ns"], m["direct_reclaim.p99_ns"],
            m["direct_reclaim.max_ns"]) == (11, 22, 33)
    assert m["kswapd.wakes"] == 5 and m["kswapd.awake_ns"] == 9
    assert m["reclaimed.direct_pages"] == 100 and m["reclaimed.kswapd_pages"] == 200
    assert not any(k.startswith(("shrinker.", "slab.", "vmalloc.")) for k in m)


def test_latency_of_a_run_without_stalls_is_missing_not_zero():
    m = diff.run_metrics(make_doc(stalls=0, p50=0, p99=0, mx=0))
    assert m["direct_reclaim.stalls"] == 0
    assert m["direct_reclaim.p50_ns"] is None and m["direct_reclaim.max_ns"] is None


def test_reclaimed_pages_fall_back_to_vmstat():
    d = make_doc()
    del d["totals"]["lru_reclaimed_kswapd"]
    d["totals"]["vmstat_delta"] = {"pgsteal_kswapd": 42}
    assert diff.run_metrics(d)["reclaimed.kswapd_pages"] == 42


SLAB = {"shrinkers": [
    {"name": "super_cache_scan", "calls": 10, "scanned": 100, "freed": 80, "time_ns": 5000},
    {"name": "ext4_es_scan", "calls": 2, "scanned": 10, "freed": 3, "time_ns": 700},
    {"name": "super_cache_scan", "calls": 1, "scanned": 1, "freed": 1, "time_ns": 1},
], "caches": [
    {"name": "dentry", "never_drains": True},
    {"name": "kmalloc-64", "never_drains": False},
    {"name": "zs_handle", "never_drains": True},
]}
VMALLOC = {"areas": [
    {"verdict": "huge", "huge_pages": 3}, {"verdict": "huge", "huge_pages": 2},
    {"verdict": "fallback", "huge_pages": 0}, {"verdict": "not_eligible"},
    {"verdict": "unknown", "huge_pages": None},
]}


def test_slab_and_vmalloc_sections_when_present():
    d = make_doc(slab=SLAB, vmalloc=VMALLOC)
    m = diff.run_metrics(d)
    # Two entries of one shrinker (e.g. per superblock) add up.
    assert m["shrinker.super_cache_scan.time_ns"] == 5001
    assert m["shrinker.super_cache_scan.freed"] == 81
    assert m["shrinker.ext4_es_scan.freed"] == 3
    assert m["slab.never_drain_caches"] == 2
    assert diff.never_drain_caches(d) == ["dentry", "zs_handle"]
    assert (m["vmalloc.huge"], m["vmalloc.fallback"], m["vmalloc.huge_pages"]) == (2, 1, 5)


def test_vmalloc_counts_prefer_by_verdict_over_the_capped_area_list():
    vm = dict(VMALLOC, by_verdict={
        "huge": {"areas": 40, "huge_pages": 120}, "fallback": {"areas": 7, "huge_pages": 0},
        "not_eligible": {"areas": 900, "huge_pages": 0}})
    m = diff.run_metrics(make_doc(vmalloc=vm))
    assert (m["vmalloc.huge"], m["vmalloc.fallback"], m["vmalloc.huge_pages"]) == (40, 7, 120)


@pytest.mark.parametrize("bad", [
    {"slab": "nonsense"}, {"slab": {"shrinkers": [None, {"name": ""}, 3]}},
    {"vmalloc": {"areas": "x"}}, {"vmalloc": {"areas": [None, {"verdict": 1}]}},
    {"vmalloc": {"by_verdict": {"huge": None}, "areas": []}},
    {"vmalloc": {"by_verdict": {"huge": {"areas": "x"}, "fallback": {}}}},
    {"slab": {"shrinkers": [{"name": "s", "freed": "many", "time_ns": True}]}},
])
def test_malformed_optional_sections_are_skipped(bad):
    d = make_doc()
    d.update(bad)
    m = diff.run_metrics(d)
    assert m["direct_reclaim.stalls"] == 10
    assert all(v is None or isinstance(v, (int, float)) for v in m.values())


def test_shrinker_absent_in_a_run_with_slab_counts_as_zero():
    base = runs([{"slab": SLAB}] * 3)
    other = {"shrinkers": [{"name": "ext4_es_scan", "freed": 3, "time_ns": 700}],
             "caches": []}
    new = runs([{"slab": other}] * 3)
    c = diff.compare(base, new)
    it = item(c, "shrinker.super_cache_scan.freed")
    assert it.new_values == [0.0, 0.0, 0.0] and it.base == 81
    assert c.base_never_drain == ["dentry", "zs_handle"] and c.new_never_drain == []


# -- significance ----------------------------------------------------------------
def test_identical_distributions_are_not_significant():
    vals = [{"stalls": s, "wakes": w} for s, w in
            [(10, 100), (12, 90), (9, 110), (11, 95), (13, 105), (8, 99)]]
    c = diff.compare(runs(vals), runs(list(reversed(vals))))
    assert not any(it.significant for it in c.items)
    assert item(c, "direct_reclaim.stalls").p_value == pytest.approx(1.0)
    assert item(c, "direct_reclaim.p50_ns").verdict == "same"


def test_clear_shift_with_enough_runs_is_significant():
    base = runs([{"stalls": 20 + i, "kswapd": 50_000 + i} for i in range(6)])
    new = runs([{"stalls": i, "kswapd": 90_000 + i} for i in range(6)])
    c = diff.compare(base, new)
    st_ = item(c, "direct_reclaim.stalls")
    assert st_.significant and st_.verdict == "yes"
    assert st_.p_value == pytest.approx(2 / 924)      # exact: every split of 6+6
    assert st_.p_adjusted < 0.05 and st_.p_adjusted >= st_.p_value
    assert st_.change < 0 and st_.as_json()["direction"] == "down"
    assert "Mann-Whitney U" in st_.test
    ks = item(c, "reclaimed.kswapd_pages")
    assert ks.significant and ks.change > 0
    # What did not change stays not significant.
    assert not item(c, "kswapd.wakes").significant


def test_one_run_per_side_is_never_significant():
    c = diff.compare(runs([{"stalls": 1000}]), runs([{"stalls": 0}]))
    for it in c.items:
        assert not it.significant
        assert it.p_value is None
    st_ = item(c, "direct_reclaim.stalls")
    assert st_.verdict == "n/a: n<2" and "2 runs" in st_.note
    assert st_.change == -1000


def test_three_runs_per_side_say_they_cannot_reach_alpha():
    c = diff.compare(runs([{"stalls": 100}, {"stalls": 101}, {"stalls": 102}]),
                     runs([{"stalls": 1}, {"stalls": 2}, {"stalls": 3}]))
    st_ = item(c, "direct_reclaim.stalls")
    assert not st_.significant and st_.p_value == pytest.approx(0.1)
    assert st_.verdict == "no: few runs" and st_.min_p == pytest.approx(0.1)


def test_ties_use_an_exact_permutation_test():
    p, how, min_p = diff.mwu([0, 0, 0, 0, 0, 0], [3, 5, 5, 7, 9, 9])
    assert "permutation" in how
    assert p == pytest.approx(2 / 924)


def test_holm_matches_the_textbook_example():
    # Holm (1979) step-down: sorted p * (m, m-1, ...), made monotone.
    assert diff.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert diff.holm([]) == []


def test_holm_corrects_the_family():
    # Raw p 2/924 each, ten metrics shifted: Holm keeps them all significant,
    # but a lone raw p of 0.03 among many does not survive.
    assert diff.holm([0.03] + [0.5] * 9)[0] == pytest.approx(0.3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_holm_is_at_least_raw_and_at_most_one(ps):
    adj = diff.holm(ps)
    assert all(p <= a + 1e-12 and a <= 1.0 for p, a in zip(ps, adj))
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    assert all(adj[order[i]] <= adj[order[i + 1]] + 1e-12 for i in range(len(ps) - 1))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000),
       st.lists(st.integers(0, 10_000), min_size=1, max_size=8))
def test_never_significant_with_one_run_on_either_side(a, b, others):
    c = diff.compare(runs([{"stalls": a}]), runs([{"stalls": x} for x in [b] + others]))
    assert not any(it.significant for it in c.items)


def test_pooled_latency_uses_a_cluster_bootstrap():
    lat_b = [[100_000 + 1000 * j for j in range(50)] for _ in range(4)]
    lat_n = [[300_000 + 1000 * j for j in range(50)] for _ in range(4)]
    c = diff.compare(runs([{}] * 4, latencies=lat_b), runs([{}] * 4, latencies=lat_n))
    it = item(c, "direct_reclaim.pooled_p50_ns")
    assert it.pooled and it.test == diff.BOOTSTRAP
    assert it.ci is not None and it.ci[0] > 0
    assert it.significant and it.change == pytest.approx(200_000)
    # Its p-value joins the Holm family.
    assert it.in_family and it.p_adjusted is not None
    assert c.family == sum(1 for x in c.items if x.in_family and x.p_value is not None)


def test_pooled_latency_of_identical_runs_is_not_significant():
    lat = [[100_000 + 997 * j % 50_000 for j in range(60)] for _ in range(3)]
    c = diff.compare(runs([{}] * 3, latencies=lat), runs([{}] * 3, latencies=lat))
    assert not item(c, "direct_reclaim.pooled_p50_ns").significant


# -- headers --------------------------------------------------------------------
def test_same_headers_give_no_warnings():
    c = diff.compare(runs([{}] * 2), runs([{}] * 2))
    assert c.warnings == [] and c.notes == []


@pytest.mark.parametrize("over,word", [
    ({"w_name": "anon"}, "workload"),
    ({"w_params": {"mib": 3000}}, "workload parameters"),
    ({"kernel_release": "6.19.0"}, "kernel"),
    ({"hostname": "vm2"}, "machine"),
])
def test_different_workloads_kernels_machines_warn(over, word):
    c = diff.compare(runs([{}] * 2), runs([{}] * 2, header=make_header(**over)))
    assert any(w.startswith(f"the sides ran different {word}s") for w in c.warnings), \
        c.warnings
    text = " ".join(c.warnings)
    for v in over.values():
        assert str(v if not isinstance(v, dict) else json.dumps(v)) in text


def test_runs_within_a_side_that_differ_warn():
    mixed = runs([{}], header=make_header(kernel_release="6.1")) + runs([{}])
    c = diff.compare(mixed, runs([{}] * 2))
    assert any("base runs differ among themselves in kernel" in w for w in c.warnings)


def test_virtme_boot_parameters_are_not_a_different_command_line():
    """Two boots of one kernel by run --kernel: only virtme's per-boot
    parameters (temporary directories, the command) differ; other
    parameters still do."""
    def boot(tmp: str, extra: str = "") -> Dict[str, Any]:
        return make_header(cmdline=f"virtme_initmount0=tmp/trace-reclaim-vm-{tmp} "
                           f"virtme.exec=`c2gg{tmp}` console=ttyS0 panic=-1 {extra}"
                           "init=/x/.venv/lib/python3.11/site-packages/virtme/guest/bin/"
                           "virtme-ng-init")
    c = diff.compare(runs([{}], header=boot("q2nx")) + runs([{}], header=boot("vyjk")),
                     runs([{}] * 2, header=boot("iorg")))
    assert c.warnings == []
    c = diff.compare(runs([{}] * 2, header=boot("q2nx")),
                     runs([{}] * 2, header=boot("iorg", "transparent_hugepage=never ")))
    assert c.warnings == ["the sides ran different kernel command lines: base console=ttyS0 "
                          "panic=-1; new console=ttyS0 panic=-1 transparent_hugepage=never"]


@pytest.mark.parametrize("over,word", [
    ({"w_machine": {"cpus": 4, "mem_total_bytes": 24 << 30}}, "CPU counts"),
    ({"w_machine": {"cpus": 2, "mem_total_bytes": 3 << 30}}, "memory sizes"),
])
def test_cpu_and_memory_warnings_read_as_english(over, word):
    c = diff.compare(runs([{}] * 2), runs([{}] * 2, header=make_header(**over)))
    assert [w.split(":")[0] for w in c.warnings] == [f"the sides ran different {word}"]


def test_sysctl_differences_are_notes_not_warnings():
    new = runs([{}] * 2, header=make_header(w_vm={"vm.watermark_scale_factor": "300"}))
    c = diff.compare(runs([{}] * 2), new)
    assert c.warnings == []
    assert c.notes == ["vm.watermark_scale_factor: base 10; new 300"]


def test_recordings_without_a_workload_say_so():
    h = make_header()
    del h["workload"]
    c = diff.compare(runs([{}] * 2, header=h), runs([{}] * 2))
    assert any("(not recorded)" in w for w in c.warnings)


def test_lost_events_warn():
    c = diff.compare(runs([{"lost": 5}] * 2), runs([{}] * 2))
    assert any("5 events were lost" in w for w in c.warnings)


# -- output ----------------------------------------------------------------------
def test_table_fits_80_columns_and_names_the_test():
    base = runs([{"stalls": 20 + i, "slab": SLAB, "vmalloc": VMALLOC} for i in range(6)],
                latencies=[[100_000, 200_000]] * 6)
    new = runs([{"stalls": i, "slab": SLAB, "vmalloc": VMALLOC} for i in range(6)],
               latencies=[[90_000, 210_000]] * 6)
    text = diff.render_table(diff.compare(base, new))
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "Mann-Whitney U" in text and "Holm" in text
    assert "shrinker.super_cache...freed" in text
    assert "vmalloc.fallback" in text
    assert "caches that never drain: base 2, new 2" in text


def test_json_has_the_required_fields():
    c = diff.compare(runs([{"stalls": 5}] * 3), runs([{"stalls": 4}] * 3))
    doc = json.loads(diff.render_json(c))
    assert doc["correction"] == "holm"
    for m in doc["metrics"]:
        for k in ("name", "base", "new", "change", "significant", "test", "p_value"):
            assert k in m


# -- the CLI, on synthetic recordings ---------------------------------------------
def _direct_reclaim(ts: int, delta: int, pages: int = 32) -> bytes:
    return synth.record("direct_reclaim_event", abi.EV_DIRECT_RECLAIM, ts, pid=77, comm="dd",
                        delta_ns=delta, gfp_flags=0x400, nr_reclaimed_pages=pages)


def write_recording(path: str, latencies: List[int], header: Optional[Dict] = None) -> None:
    h = {"plan": {"tracers": ["reclaim"]}, **(header or make_header())}
    with open(path, "xb") as f:
        w = Writer(f, h)
        start = 1_000_000_000
        w.write(events.USER_SNAPSHOT, events.encode_user(
            events.Snapshot(start, "vmstat", "start", {"allocstall_normal": 0})))
        ts = start
        for lat in latencies:
            ts += 10_000_000
            w.write(abi.EV_DIRECT_RECLAIM, _direct_reclaim(ts, lat))
        # Before the window: not counted, by the correlator nor by diff.
        w.write(abi.EV_DIRECT_RECLAIM, _direct_reclaim(start + 5, 1_000_000))
        end = ts + 1_000_000
        w.write(events.USER_SNAPSHOT, events.encode_user(
            events.Snapshot(end, "vmstat", "end",
                            {"allocstall_normal": len(latencies)})))
        w.write(events.USER_END, events.encode_user(events.End(end, "SIGINT")))
        w.close()


def main(argv: List[str]) -> tuple:
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(),
                          is_root=lambda: False)
    rc = cli.main(argv, env)
    return rc, env.stdout.getvalue(), env.stderr.getvalue()


@pytest.fixture
def recordings(tmp_path):
    base, new = [], []
    for i in range(3):
        p = str(tmp_path / f"base-{i}.trc")
        write_recording(p, [100_000 + 1000 * i, 150_000, 200_000 + i])
        base.append(p)
        p = str(tmp_path / f"new-{i}.trc")
        write_recording(p, [300_000 + i, 350_000, 400_000, 450_000])
        new.append(p)
    return base, new


def test_load_run_replays_latencies_inside_the_window(recordings):
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    r = diff.load_run(recordings[0][1], env, registry())
    assert sorted(r.latencies_ns) == [101_000, 150_000, 200_001]
    assert r.doc["totals"]["direct_reclaim_stalls"] == 3
    assert r.header["workload"]["name"] == "pressure"


def test_cli_json(recordings):
    base, new = recordings
    rc, out, err = main(["diff", "-j", *base, "--", *new])
    assert rc == 0, err
    doc = json.loads(out)
    st_ = next(m for m in doc["metrics"] if m["name"] == "direct_reclaim.stalls")
    assert (st_["base"], st_["new"], st_["change"]) == (3, 4, 1)
    assert st_["significant"] is False and st_["verdict"] == "no: few runs"
    p50 = next(m for m in doc["metrics"] if m["name"] == "direct_reclaim.p50_ns")
    assert p50["direction"] == "up"


def test_cli_options_after_the_recordings(recordings, tmp_path):
    base, new = recordings
    plot = str(tmp_path / "lat.svg")
    rc, out, err = main(["diff", *base, "--", *new, "-j", "--plot", plot])
    assert rc == 0, err
    json.loads(out)
    assert os.path.getsize(plot) > 1000
    assert open(plot).read().lstrip().startswith("<?xml")


def test_cli_table_and_png_plot(recordings, tmp_path):
    base, new = recordings
    plot = str(tmp_path / "lat.png")
    rc, out, err = main(["diff", "--plot", plot, *base, "--", *new])
    assert rc == 0, err
    assert "direct_reclaim.stalls" in out and "METRIC" in out
    with open(plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_one_run_per_side_warns(recordings):
    base, new = recordings
    rc, out, err = main(["diff", base[0], "--", new[0]])
    assert rc == 0
    assert "fewer than 2 runs on a side" in err
    assert "n/a: n<2" in out and " yes" not in out


def test_cli_warns_about_different_kernels(tmp_path, recordings):
    base, _ = recordings
    other = []
    for i in range(2):
        p = str(tmp_path / f"k-{i}.trc")
        write_recording(p, [1000], make_header(kernel_release="6.19.0-rc1", hostname="vm9"))
        other.append(p)
    rc, out, err = main(["diff", *base, "--", *other])
    assert rc == 0
    assert "warning: the sides ran different kernels: base 6.18.0; new 6.19.0-rc1" in err
    assert "different machines: base vm1; new vm9" in err


@pytest.mark.parametrize("argv,words", [
    (["diff", "a.trc", "b.trc"], "needs '--'"),
    (["diff", "--", "b.trc"], "no base"),
    (["diff", "a.trc", "--"], "no new"),
    (["diff"], "needs '--'"),
])
def test_cli_usage_errors(argv, words):
    rc, out, err = main(argv)
    assert rc == ExitStatus.USAGE
    assert out == ""
    assert err.startswith("error:") and words in err and "\nhint: " in err
    assert "Traceback" not in err


def test_cli_broken_recording(tmp_path, recordings):
    base, new = recordings
    bad = tmp_path / "broken.trc"
    bad.write_bytes(b"not a recording at all")
    rc, out, err = main(["diff", *base, "--", str(bad), *new])
    assert rc == ExitStatus.ERROR
    assert "error: " in err and "broken.trc" in err and "hint: " in err
    assert "Traceback" not in err and out == ""


def test_cli_missing_recording(recordings):
    base, _ = recordings
    rc, out, err = main(["diff", *base, "--", "/nonexistent/x.trc"])
    assert rc == ExitStatus.ERROR
    assert "cannot read /nonexistent/x.trc" in err and "hint:" in err


def test_cli_bad_plot_name_and_alpha(recordings):
    base, new = recordings
    rc, _, err = main(["diff", "--plot", "x.pdf", *base, "--", *new])
    assert rc == ExitStatus.USAGE and ".png or .svg" in err
    rc, _, err = main(["diff", "--alpha", "2", *base, "--", *new])
    assert rc == ExitStatus.USAGE and "--alpha" in err


def test_cli_unwritable_plot(recordings):
    base, new = recordings
    rc, _, err = main(["diff", "--plot", "/nonexistent/dir/x.png", *base, "--", *new])
    assert rc == ExitStatus.ERROR and "cannot write" in err


def test_truncated_recording_still_diffs_with_a_warning(tmp_path, recordings):
    base, new = recordings
    data = open(new[0], "rb").read()
    cut = tmp_path / "cut.trc"
    cut.write_bytes(data[:-7])
    rc, out, err = main(["diff", *base, "--", str(cut), *new[1:]])
    assert rc == 0
    assert "ends early" in err


def test_missing_scipy_is_an_error_with_a_hint(recordings, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy now fails
    base, new = recordings
    rc, out, err = main(["diff", *base, "--", *new])
    assert rc == ExitStatus.ERROR
    assert "need scipy" in err and "trace-reclaim[diff]" in err and "Traceback" not in err


def test_errors_when_cli_py_runs_as_a_script(recordings):
    # ./trace-reclaim runs cli.py as __main__: errors must still be error:/hint:.
    import subprocess
    import sys

    root = ROOT
    base, _ = recordings
    r = subprocess.run([sys.executable, os.path.join(root, "cli.py"), "diff", *base, "--",
                        "/nonexistent/x.trc"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("error: cannot read /nonexistent/x.trc") and "hint:" in r.stderr
    assert "Traceback" not in r.stderr


def test_metrics_that_cannot_reach_alpha_do_not_dilute_the_family():
    # Twenty shrinkers that freed nothing in any run: "same", outside the
    # family (Tarone), so they cannot hide the one real change.
    quiet = {"shrinkers": [{"name": f"s{i}", "freed": 0, "time_ns": 0} for i in range(20)],
             "caches": []}
    base = runs([{"stalls": 20 + i, "slab": quiet} for i in range(6)])
    new = runs([{"stalls": i, "slab": quiet} for i in range(6)])
    c = diff.compare(base, new)
    assert item(c, "shrinker.s7.freed").verdict == "same"
    assert not item(c, "shrinker.s7.freed").in_family
    st_ = item(c, "direct_reclaim.stalls")
    assert st_.significant
    assert c.family == sum(1 for it in c.items if it.in_family and it.p_value is not None)
    assert c.family < 10


def test_shrinker_instances_are_compared_as_one_function():
    slab = {"shrinkers": [{"name": "super_cache_scan#1", "freed": 5, "time_ns": 10},
                          {"name": "super_cache_scan#2", "freed": 7, "time_ns": 30},
                          {"name": "ext4_es_scan", "freed": 1, "time_ns": 1}],
            "caches": []}
    m = diff.run_metrics(make_doc(slab=slab))
    assert m["shrinker.super_cache_scan.freed"] == 12
    assert m["shrinker.super_cache_scan.time_ns"] == 40
    assert not any("#" in k for k in m)


def test_long_names_keep_what_they_count():
    assert render_short("shrinker.kfree_rcu_shrink_scan.time_ns", 28) == \
        "shrinker.kfree_rcu...time_ns"
