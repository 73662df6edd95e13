"""The command line in-process: bad input gives error:/hint:, never a traceback."""

from __future__ import annotations

import io
import json
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trace_reclaim import cli, events
from trace_reclaim.env import Environment, ExitStatus
from trace_reclaim.procfs import ProcFS
from trace_reclaim.recording import VERSION
from tests import synth


def run(argv, **env_kw):
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, **env_kw)
    rc = cli.main(argv, env)
    return rc, out.getvalue(), err.getvalue()


def assert_user_error(rc, out, err, status=1):
    assert rc == status
    lines = err.strip().splitlines()
    assert any(ln.startswith("error: ") for ln in lines), err
    assert any(ln.startswith("hint: ") for ln in lines), err
    assert "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize("argv", [
    ["--bogus"], ["live", "--bogus"], ["live", "-d", "-1"], ["live", "-i", "x"],
    ["record"], ["report"], ["nonsense-command"], ["live", "-p", "0"],
    ["live", "-i", "1e300"], ["live", "-i", "1e-9"], ["live", "-i", "inf"],
    ["live", "-d", "inf"], ["live", "-d", "1e300"], ["serve", "-i", "0.001"],
])
def test_bad_flags_are_usage_errors(argv):
    assert_user_error(*run(argv), status=ExitStatus.USAGE)


def test_a_pid_that_is_no_process_is_refused(tmp_path):
    proc = tmp_path / "proc" / "4242"
    proc.mkdir(parents=True)
    (proc / "status").write_text("Name:\tworker\nTgid:\t4200\nPid:\t4242\n")
    rc, out, err = run(["live", "-p", "4243", "-d", "1"], procfs=ProcFS(str(tmp_path)))
    assert_user_error(rc, out, err, status=ExitStatus.USAGE)
    assert "-p 4243: no such process" in err
    rc, out, err = run(["live", "-p", "4242", "-d", "1"], procfs=ProcFS(str(tmp_path)))
    assert_user_error(rc, out, err, status=ExitStatus.USAGE)
    assert "a thread of process 4200" in err and "-p 4200" in err


def test_not_root_refuses_to_trace():
    rc, out, err = run(["live", "-d", "1"], is_root=lambda: False)
    assert_user_error(rc, out, err)
    assert "root" in err


def test_not_root_check_says_why(tmp_path):
    rc, out, err = run(["check"], is_root=lambda: False, procfs=ProcFS(str(tmp_path)))
    assert rc == 1
    assert "ready         no" in out
    assert err.startswith("error: ") and "\nhint: " in err


def test_tracefs_missing_and_not_mountable(tmp_path):
    # A procfs root without tracefs: as non-root it cannot be mounted; as
    # root the real mount does not appear under this root either.
    rc, out, err = run(["live", "-d", "1"], is_root=lambda: True,
                       procfs=ProcFS(str(tmp_path)))
    assert_user_error(rc, out, err)
    assert "tracefs" in err


def test_headers_missing(tmp_path):
    (tmp_path / "sys/kernel/tracing/events").mkdir(parents=True)
    rc, out, err = run(["live", "-d", "1"], is_root=lambda: True,
                       procfs=ProcFS(str(tmp_path)))
    assert_user_error(rc, out, err)
    assert "headers" in err and "bootstrap.sh" in err


def test_ebpf_prints_the_program_and_cflags_without_loading():
    rc, out, err = run(["live", "--ebpf"])
    assert rc == 0
    assert "TRACEPOINT_PROBE(vmscan, mm_vmscan_kswapd_wake)" in out
    assert "-DWITH_RECLAIM" in out and "-DTARG_TGID=0" in out


def test_record_never_overwrites(tmp_path):
    f = tmp_path / "keep.trc"
    f.write_bytes(b"precious")
    rc, out, err = run(["record", "-o", str(f), "-d", "1"], is_root=lambda: True,
                       bpf_factory=lambda **kw: pytest.fail("must not load"))
    assert_user_error(rc, out, err)
    assert f.read_bytes() == b"precious"


@pytest.mark.parametrize("content,msg", [
    (b"", "empty"),
    (b"this is not a recording at all", "not a trace-reclaim recording"),
    (b"TRECLAIM\x01", "truncated"),
])
def test_report_of_unusable_files(tmp_path, content, msg):
    f = tmp_path / "x.trc"
    f.write_bytes(content)
    rc, out, err = run(["report", str(f)])
    assert_user_error(rc, out, err)
    assert msg in err


def test_report_of_missing_file():
    assert_user_error(*run(["report", "/nonexistent/x.trc"]))


def test_report_of_newer_version(tmp_path):
    data = bytearray(synth.recording(synth.pressure_story()))
    struct.pack_into("<H", data, 8, VERSION + 1)
    f = tmp_path / "new.trc"
    f.write_bytes(bytes(data))
    rc, out, err = run(["report", str(f)])
    assert_user_error(rc, out, err)
    assert "newer" in err


def test_truncated_recording_reports_what_it_has_and_warns(tmp_path):
    data = synth.recording(synth.pressure_story(), flush_every=4)
    f = tmp_path / "cut.trc"
    f.write_bytes(data[:-7])
    rc, out, err = run(["report", "-j", str(f)])
    assert rc == 0
    assert err.startswith("warning: ") and "ends early" in err
    doc = json.loads(out)
    assert doc["totals"]["direct_reclaim_stalls"] == 3  # the first two blocks
    assert doc["window"]["ended_by"] is None


def test_unknown_newer_record_types_are_skipped_with_a_warning(tmp_path):
    recs = synth.pressure_story()
    recs.insert(3, (4242, b"from the future"))
    f = tmp_path / "mixed.trc"
    f.write_bytes(synth.recording(recs))
    rc, out, err = run(["report", str(f)])
    assert rc == 0
    assert "skipped 1 records of types this version does not know (4242)" in err
    assert "Direct reclaim: 3 stalls" in out


def test_report_text_and_json_agree(tmp_path):
    f = tmp_path / "s.trc"
    f.write_bytes(synth.recording(synth.pressure_story()))
    _, text, _ = run(["report", str(f)])
    _, js, _ = run(["report", "-j", str(f)])
    doc = json.loads(js)
    assert f"Direct reclaim: {doc['totals']['direct_reclaim_stalls']} stalls" in text
    assert "Lost events: 2" in text


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_report_never_tracebacks_on_mutated_recordings(tmp_path, data):
    buf = bytearray(synth.recording(synth.pressure_story(), flush_every=2))
    for _ in range(data.draw(st.integers(1, 6))):
        if not buf:
            break
        i = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            buf[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del buf[i:]
        else:
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    f = tmp_path / "m.trc"
    f.write_bytes(bytes(buf))
    rc, out, err = run(["report", "-j", str(f)])
    assert "Traceback" not in err
    if rc == 0:
        json.loads(out)
    else:
        assert_user_error(rc, out, err)


def test_help_epilog_examples_parse():
    """Every example in --help must be a command line the parser accepts."""
    parser = cli.build_parser()
    for line in cli.EPILOG.splitlines():
        line = line.strip()
        if not line.startswith("trace-reclaim"):
            continue
        argv = line.split("#")[0].split()[1:]
        if not argv or argv[0] not in cli.parser_commands(parser):
            argv = ["live"] + argv
        parser.parse_args(argv)


def test_version():
    with pytest.raises(SystemExit) as e:
        run(["--version"])
    assert e.value.code == 0


def test_no_root_needed_to_report(tmp_path):
    f = tmp_path / "s.trc"
    f.write_bytes(synth.recording(synth.pressure_story()))
    rc, out, _ = run(["report", str(f)], is_root=lambda: False)
    assert rc == 0 and out
    assert os.path.exists(f)


def test_no_slab_accounting_drops_only_the_per_cache_probes():
    rc, with_acct, _ = run(["live", "--ebpf"])
    rc2, without, _ = run(["live", "--ebpf", "--no-slab-accounting"])
    assert rc == rc2 == 0
    assert "-DSLAB_CACHE_ACCOUNTING" in with_acct
    assert "-DSLAB_CACHE_ACCOUNTING" not in without
    assert "-DWITH_SLAB" in without
    rc3, again, _ = run(["live", "--ebpf"])  # the shared tracer was not changed
    assert "-DSLAB_CACHE_ACCOUNTING" in again


def test_a_command_loads_only_its_own_module():
    """`record` must not wait for diff's statistics or run's machinery to import
    (bench/attach_time.py); the other commands are still listed by --help."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from trace_reclaim import cli\n"
            "p = cli.build_parser(only='record')\n"
            "print(sorted(m for m in sys.modules if m.startswith('trace_reclaim.commands.')))\n"
            "print(cli.parser_commands(p))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "['trace_reclaim.commands.args']"
    assert out[1] == str(list(cli.COMMANDS))
    full = cli.build_parser()
    assert cli.parser_commands(full) == list(cli.COMMANDS)


def test_the_registry_loads_the_tracers_asked_for_in_report_order():
    from trace_reclaim import tracers

    assert list(tracers.registry()) == list(tracers.NAMES)
    assert list(tracers.registry(n for n in ("memcg", "reclaim"))) == ["reclaim", "memcg"]
    assert all(t.name == n for n, t in tracers.registry().items())


def test_a_recording_without_its_end_says_so(tmp_path):
    """Cut before its window closed (killed, or its disk full): the report
    says the kernel's end counters were never read; a whole one does not."""
    whole = synth.pressure_story()
    cut = [r for r in whole if r[0] not in (events.USER_END,)][:-1]   # no end counters
    texts = {}
    for name, recs in (("whole", whole), ("cut", cut)):
        f = tmp_path / f"{name}.trc"
        f.write_bytes(synth.recording(recs))
        rc, out, err = run(["report", str(f)])
        assert rc == 0, err
        texts[name] = " ".join(out.split())
    assert "No end: the recording stops before its window closed" in texts["cut"]
    assert "ended by unknown" in texts["cut"]
    assert "No end" not in texts["whole"]
