"""Unit tests of ``trace-reclaim run``: parameters, sysctls, numbering, errors (no root)."""

from __future__ import annotations

import io
import os

from tests import ROOT
import pytest

from trace_reclaim import cli
from trace_reclaim.env import Environment, ExitStatus, UserError
from trace_reclaim.commands import run as runner


def main(argv, root=False):
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(),
                          is_root=lambda: root)
    rc = cli.main(argv, env)
    return rc, env.stdout.getvalue(), env.stderr.getvalue()


def test_every_workload_imports_and_has_parameters():
    assert set(runner.WORKLOADS) == {"pressure", "anon", "slab-churn", "vmalloc-huge", "cgroup"}
    for w in runner.WORKLOADS.values():
        assert callable(w.entry())
        assert "log" not in w.params()
    assert runner.WORKLOADS["pressure"].params()["ballast_mib"] is None
    assert runner.WORKLOADS["vmalloc-huge"].params()["insns"] == 300000
    cg = runner.WORKLOADS["cgroup"].params()
    assert cg["limit_mib"] == 64 and "hold_s" not in cg   # fixed: the runner holds it


def test_params_are_typed_from_the_defaults():
    w = runner.WORKLOADS["pressure"]
    got = runner.parse_params(w, ["mib=6000", "seconds=2.5", "ballast-mib=19500",
                                  "until_direct_reclaim=yes", "directory=/var/tmp"])
    assert got == {"mib": 6000, "seconds": 2.5, "ballast_mib": 19500,
                   "until_direct_reclaim": True, "directory": "/var/tmp"}


@pytest.mark.parametrize("item,words", [
    ("nosuch=1", "has no parameter 'nosuch'"),
    ("mib", "is not KEY=VALUE"),
    ("repeat=lots", "--param 'repeat=lots'"),
    ("until_direct_reclaim=maybe", "true or false"),
])
def test_bad_params(item, words):
    with pytest.raises(UserError) as e:
        runner.parse_params(runner.WORKLOADS["pressure"], [item])
    assert words in str(e.value) and e.value.hint


def test_sysctls_must_exist():
    assert runner.parse_sysctls(["vm.swappiness=60"]) == {"vm.swappiness": "60"}
    assert runner.parse_sysctls(["vm/min_free_kbytes=1"]) == {"vm.min_free_kbytes": "1"}
    for bad in ("vm.no_such_knob=1", "vm.swappiness", "vm..x=1", "=3"):
        with pytest.raises(UserError):
            runner.parse_sysctls([bad])


def test_numbering_continues_after_existing_runs(tmp_path):
    assert runner.next_index(str(tmp_path), "pressure") == 1
    for name in ("pressure-1.trc", "pressure-3.trc.incomplete", "anon-9.trc",
                 "pressure-x.trc", "pressure-2.trc.bak"):
        (tmp_path / name).write_bytes(b"")
    assert runner.next_index(str(tmp_path), "pressure") == 4
    assert runner.next_index(str(tmp_path), "anon") == 10


def test_reported_sysctls_and_machine():
    vm = runner.read_sysctls()
    assert set(vm) == set(runner.REPORTED_SYSCTLS)
    assert vm["vm.swappiness"] is not None
    m = runner.machine_description()
    assert m["kernel_release"] == os.uname().release and m["cpus"] >= 1


def test_cli_needs_root(tmp_path):
    rc, out, err = main(["run", "slab-churn", "-n", "1", "-o", str(tmp_path / "x")])
    assert rc == ExitStatus.ERROR
    assert err.startswith("error: run changes kernel settings") and "hint:" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv,words", [
    (["run", "slab-churn", "-n", "2"], "needs -o DIR"),
    (["run", "slab-churn", "-n", "0", "-o", "x"], "at least 1"),
    (["run", "nosuch", "-o", "x"], "invalid choice"),
    (["run", "slab-churn", "-o", "x", "--param", "bogus=1"], "no parameter 'bogus'"),
    (["run", "slab-churn", "-o", "x", "--sysctl", "vm.nope=1"], "no sysctl vm.nope"),
])
def test_cli_usage_errors(argv, words):
    rc, out, err = main(argv, root=True)
    assert rc == ExitStatus.USAGE, err
    assert words in err and "hint:" in err and "Traceback" not in err


def test_list_params():
    rc, out, err = main(["run", "vmalloc-huge", "--list-params"])
    assert rc == 0
    assert "insns" in out and "300000" in out


def test_help_lists_the_workloads():
    parser = cli.build_parser()
    text = [a for a in parser._actions if a.dest == "command"][0].choices["run"].format_help()
    for name in runner.WORKLOADS:
        assert name in text


def test_errors_when_cli_py_runs_as_a_script():
    import subprocess
    import sys

    root = ROOT
    r = subprocess.run([sys.executable, os.path.join(root, "cli.py"), "run", "pressure",
                        "-o", "/nonexistent", "--param", "nosuch=1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: workload pressure has no parameter 'nosuch'")
    assert "Traceback" not in r.stderr
