"""What the start of a trace relies on: the kallsyms lookup, the headers a
plan asks for, the compile thread and its capture of fd 2 (no root, no BPF)."""

from __future__ import annotations

import os
import struct

import pytest

from trace_reclaim.btf import BTF
from trace_reclaim.probe import Plan, Probe
from trace_reclaim.procfs import ProcFS
from trace_reclaim.session import Compile, SessionError, bpf_cflags

KALLSYMS = """\
ffffffff81000000 T _text
ffffffff816bf630 t super_cache_scan
ffffffff816bf700 t super_cache_scan_helper
ffffffff81700000 T prefix_super_cache_scan
ffffffffc0a01000 t ext4_es_scan\t[ext4]
0000000000000000 t hidden_scan
"""


def _probe(tmp_path, text: str = KALLSYMS) -> Probe:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "kallsyms").write_text(text)
    return Probe(ProcFS(str(tmp_path)))


def test_kernel_symbol_matches_whole_names_in_vmlinux_and_modules(tmp_path):
    p = _probe(tmp_path)
    p.prefetch()
    assert p.kernel_symbol("super_cache_scan") == 0xffffffff816bf630
    assert p.kernel_symbol("ext4_es_scan") == 0xffffffffc0a01000
    assert p.kernel_symbol("cache_scan") is None
    assert p.kernel_symbol("no_such_function") is None
    # kptr_restrict shows 0 to readers without CAP_SYSLOG: unknown, not address 0
    assert p.kernel_symbol("hidden_scan") is None


def test_kallsyms_text_is_dropped_after_planning(tmp_path):
    p = _probe(tmp_path)
    assert p.kernel_symbol("super_cache_scan")
    p.plan({})
    assert p._kallsyms is None
    assert p.kernel_symbol("super_cache_scan") == 0xffffffff816bf630  # read again


def test_pt_regs_header_only_for_kprobe_plans():
    tp = Plan(["slab"], [], ["-DWITH_SLAB", "-DSLAB_DESTROY_FENTRY"])
    kp = Plan(["slab"], [], ["-DWITH_SLAB", "-DSLAB_DESTROY_KPROBE"])
    assert "-DNEED_PT_REGS" not in bpf_cflags(tp, names=["reclaim"])
    assert "-DNEED_PT_REGS" in bpf_cflags(kp, names=["reclaim"])


def _fake_tracer():
    class T:
        bpf_source = "oom.bpf.c"
        later_part = ""
    return {"oom": T()}


def test_compile_runs_in_a_thread_and_captures_the_compiler(capfd):
    seen = {}

    def factory(text, cflags):
        import threading

        seen["thread"] = threading.current_thread().name
        os.write(2, b"warning: from clang\n")
        return "bpf"

    c = Compile(factory, _fake_tracer(), Plan(["oom"], [], ["-DWITH_OOM"])).start()
    assert c.result() == "bpf"
    assert seen["thread"] == "bpf-compile"
    assert "warning: from clang" in c.output
    os.write(2, b"after\n")  # fd 2 is the terminal's again
    assert capfd.readouterr().err == "after\n"


def test_compile_failure_names_the_first_compiler_error():
    def factory(text, cflags):
        os.write(2, b"/virtual/main.c:3:1: error: unknown type name 'x'\n")
        raise Exception("Failed to compile BPF module <text>")

    c = Compile(factory, _fake_tracer(), Plan(["oom"], [], [])).start()
    with pytest.raises(SessionError, match="unknown type name"):
        c.result()
    c.wait()  # a second wait after the result is harmless


def _btf(types: bytes, strings: bytes) -> bytes:
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_btf_walk_indexes_every_kind_of_record():
    strings = b"\0int\0s\0a\0b\0e\0X\0f\0"
    off = {n: strings.index(b"\0" + n.encode() + b"\0") + 1 for n in ("int", "s", "a", "b",
                                                                      "e", "X", "f")}
    t = b""
    t += struct.pack("<III", off["int"], 1 << 24, 4) + struct.pack("<I", 32)      # 1 INT
    t += struct.pack("<III", 0, 3 << 24, 0) + struct.pack("<III", 1, 1, 4)       # 2 ARRAY
    t += struct.pack("<III", off["e"], (6 << 24) | 1, 4) + struct.pack("<Ii", off["X"], 7)
    t += struct.pack("<III", off["s"], (4 << 24) | 2, 8)                         # 4 STRUCT
    t += struct.pack("<III", off["a"], 1, 0) + struct.pack("<III", off["b"], 1, 32)
    t += struct.pack("<III", 0, (13 << 24) | 1, 1) + struct.pack("<II", off["a"], 4)
    t += struct.pack("<III", off["f"], 12 << 24, 5)                              # 6 FUNC
    b = BTF(_btf(t, strings))
    assert b.member("s", "b") == (4, "int")
    assert b.func_params("f") == ["struct s"]
    assert b.func_id("f") == 6
    assert b.name_of(3) == "e"
    assert b.find(6, "e") == 3 and b.find(4, "e") is None


@pytest.mark.skipif(not os.path.isdir("/sys/kernel/tracing/events/vmscan") or os.geteuid() != 0,
                    reason="needs tracefs with the vmscan events (root)")
def test_relative_output_is_not_moved_by_the_compilers_chdir(tmp_path, monkeypatch):
    """bcc chdir()s into the kernel headers while it compiles, for the whole
    process: a relative -o must still mean the user's directory."""
    from trace_reclaim import cli
    from trace_reclaim.env import Environment

    elsewhere = tmp_path / "headers"
    elsewhere.mkdir()
    seen = {}

    def compiling(text, cflags):
        import time

        user = os.getcwd()
        os.chdir(elsewhere)  # what bcc's loader does for the compile's duration
        try:
            time.sleep(0.3)
            seen["files"] = sorted(os.listdir(tmp_path / "user"))
        finally:
            os.chdir(user)
        raise Exception("Failed to compile BPF module <text>")

    (tmp_path / "user").mkdir()
    monkeypatch.chdir(tmp_path / "user")
    rc = cli.main(["record", "-o", "run.trc", "-d", "1"],
                  Environment(bpf_factory=compiling, is_root=lambda: True))
    assert rc != 0
    assert seen["files"] in ([], ["run.trc"])  # opened before or during, never elsewhere
    assert os.listdir(elsewhere) == []
    assert os.listdir(tmp_path / "user") == []  # the failed load removes it


class _Detaching:
    """bcc's fd tables and detach methods; each detach waits for all the others."""

    def __init__(self, n_tp: int, n_kfunc: int, barrier) -> None:
        self.tracepoint_fds = {f"vmscan:tp{i}".encode(): 100 + i for i in range(n_tp)}
        self.kfunc_entry_fds = {f"fn{i}".encode(): 200 + i for i in range(n_kfunc)}
        self.kprobe_fds: dict = {}
        self.barrier = barrier
        self.cleaned = False

    def _wait(self) -> None:
        # in turn, the first detach would wait here for the rest forever:
        # the barrier breaks (timeout) and the detach fails
        self.barrier.wait(timeout=10)

    def detach_tracepoint(self, tp):
        self._wait()
        del self.tracepoint_fds[tp]

    def detach_kfunc(self, fn):
        if fn == b"fn0":
            raise OSError("EBUSY")   # one failure: left to cleanup()
        self._wait()
        del self.kfunc_entry_fds[fn]

    def cleanup(self):
        self.cleaned = True


def test_probes_are_detached_side_by_side_and_failures_left_to_cleanup():
    import threading

    from trace_reclaim.session import detach_in_parallel

    barrier = threading.Barrier(3 + 2 + 2)
    objs = [_Detaching(3, 3, barrier), _Detaching(2, 0, barrier)]
    assert detach_in_parallel(objs) == 3 + 3 + 2
    assert not barrier.broken
    assert objs[0].tracepoint_fds == {} and objs[1].tracepoint_fds == {}
    assert list(objs[0].kfunc_entry_fds) == [b"fn0"]
    assert detach_in_parallel([_Detaching(1, 0, barrier)]) == 0   # one: bcc's own loop
