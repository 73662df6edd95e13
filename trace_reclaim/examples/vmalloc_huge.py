#!/usr/bin/python3
"""Trigger a huge-page-eligible vmalloc from user space: one big BPF program load.

Load one BPF_PROG_TYPE_SOCKET_FILTER program of N ``mov r0, 0`` instructions
plus ``exit`` through the raw bpf(BPF_PROG_LOAD) syscall, then close it.

Kernel side (6.x, see shared/KERNEL-FACTS.md "Huge-page vmalloc"): for
N = 300,000 the verifier's ``kvcalloc`` (4,800,000 bytes requested; kmalloc is
tried first and fails) becomes ``alloc_vmap_area size=6295552 align=2097152``
and order-9 page allocations in this task; the same load also does a 25 MiB
``vzalloc`` (align=1, not huge-eligible).  Since Linux 5.18 (commit 559089e0a93d,
"vmalloc: replace VM_NO_HUGE_VMAP with VM_ALLOW_HUGE_VMAP") only kvmalloc()
and vmalloc_huge() ask for huge mappings.  Needs CAP_BPF (+ CAP_PERFMON for
more than 4096 instructions), i.e. root here.
"""

import argparse
import contextlib
import ctypes
import errno
import json
import os
import resource
import signal
import sys
import threading
import time

from trace_reclaim.examples import _restore

__all__ = ["load_program", "trigger", "held_fd_table", "DEFAULT_INSNS", "FDTABLE_FD", "main"]

DEFAULT_INSNS = 300_000
#: Linux 5.2+ (commit c04c0d2b968a, "bpf: increase complexity limit and maximum
#: program size"): privileged programs may have up to 1,000,000 instructions.
BPF_COMPLEXITY_LIMIT_INSNS = 1_000_000

#: A descriptor this high makes fs/file.c's alloc_fdtable() kvmalloc an fd array
#: of 1,048,576 pointers (8 MiB: above KMALLOC_MAX_SIZE, so vmalloc'd with
#: VM_ALLOW_HUGE_VMAP), within the default fs.nr_open (1,048,576).
FDTABLE_FD = 600_000

_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "s390x": 351, "ppc64le": 361}
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_LOG_LEVEL1 = 1
BPF_LOG_STATS = 4

# struct bpf_insn: u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm
_MOV64_IMM_R0_0 = bytes([0xB7, 0x00, 0x00, 0x00, 0, 0, 0, 0])  # BPF_ALU64|BPF_MOV|BPF_K
_EXIT = bytes([0x95, 0x00, 0x00, 0x00, 0, 0, 0, 0])             # BPF_JMP|BPF_EXIT


class _ProgLoadAttr(ctypes.Structure):
    """The BPF_PROG_LOAD part of union bpf_attr (include/uapi/linux/bpf.h)."""
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _nr_bpf():
    machine = os.uname().machine
    if machine not in _NR_BPF:
        raise _restore.WorkloadError("no bpf(2) syscall number known for %s" % machine,
                                     "add it to _NR_BPF in examples/vmalloc_huge.py")
    return _NR_BPF[machine]


def load_program(insns=DEFAULT_INSNS, log_level=BPF_LOG_STATS, log_size=1 << 16,
                 keep_fd=False, program=None):
    """Load one socket filter of ``insns`` ``mov r0, 0`` + ``exit``; return a result dict.

    Returns {"fd", "loaded", "errno", "error", "insns", "pid", "tid",
    "elapsed_ns", "verifier_log"}.  ``fd`` is closed unless ``keep_fd``.
    ``log_level`` 4 (BPF_LOG_STATS) asks only for the verifier's summary line;
    on failure the load is retried with level 1 to report why.  ``pid``/``tid``
    are the task that ran the syscall: match tracepoint events on them.
    ``program`` (raw struct bpf_insn bytes) replaces the generated program.
    """
    if program is None:
        if not 1 <= insns < BPF_COMPLEXITY_LIMIT_INSNS:
            raise ValueError("insns must be in 1..%d" % (BPF_COMPLEXITY_LIMIT_INSNS - 1))
        prog = _MOV64_IMM_R0_0 * insns + _EXIT
    else:
        prog = bytes(program)
        insns = len(prog) // 8 - 1
    prog_buf = ctypes.create_string_buffer(prog, len(prog))
    license = ctypes.create_string_buffer(b"GPL")
    log_buf = ctypes.create_string_buffer(log_size) if log_level else None

    attr = _ProgLoadAttr()
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER
    attr.insn_cnt = insns + 1
    attr.insns = ctypes.addressof(prog_buf)
    attr.license = ctypes.addressof(license)
    attr.log_level = log_level
    attr.log_size = log_size if log_level else 0
    attr.log_buf = ctypes.addressof(log_buf) if log_buf is not None else 0
    attr.prog_name = b"tr_vmalloc_huge"

    tid = threading.get_native_id()
    t0 = time.monotonic_ns()
    fd = _libc.syscall(_nr_bpf(), BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    err = ctypes.get_errno() if fd < 0 else 0
    elapsed = time.monotonic_ns() - t0
    log = log_buf.value.decode(errors="replace").strip() if log_buf is not None else ""
    result = {
        "fd": int(fd), "loaded": fd >= 0, "errno": err,
        "error": os.strerror(err) if err else None,
        "insns": insns + 1, "pid": os.getpid(), "tid": tid,
        "elapsed_ns": elapsed, "verifier_log": log,
    }
    if fd >= 0 and not keep_fd:
        os.close(fd)
    if fd < 0 and log_level != BPF_LOG_LEVEL1 and err not in (errno.EPERM,):
        # Ask again with a full log to say why; the tail is where the verifier
        # states its verdict.
        retry = load_program(insns, BPF_LOG_LEVEL1, 1 << 24, program=prog)
        result["verifier_log"] = retry["verifier_log"][-4000:]
    return result


def trigger(insns=DEFAULT_INSNS, count=1, pause=0.0, log_level=BPF_LOG_STATS):
    """Load the program ``count`` times; return {"loads": [...], "loaded", "pid", "tid"}.

    Each load is a separate verifier run, so each gives one huge-eligible
    kvcalloc and one 25 MiB vzalloc (for the default size).
    """
    loads = []
    for i in range(count):
        if i and pause:
            time.sleep(pause)
        loads.append(load_program(insns, log_level=log_level))
    return {
        "loads": loads,
        "loaded": sum(1 for r in loads if r["loaded"]),
        "failed": sum(1 for r in loads if not r["loaded"]),
        "pid": os.getpid(),
        "tid": threading.get_native_id(),
        "insns": insns + 1,
    }


@contextlib.contextmanager
def held_fd_table(fd=FDTABLE_FD):
    """Hold a live huge-eligible vmalloc area for the block.

    A child process raises its RLIMIT_NOFILE past ``fd`` and dup2()s a pipe
    to ``fd``: expand_fdtable() -> alloc_fdtable() kvmallocs the fd array
    (roundup_pow_of_two of the table size, 8 bytes a slot), which lives until
    the child exits at the end of the block.  Unlike the verifier's tables
    (freed when the load returns) it can be looked at while it exists.
    Needs CAP_SYS_RESOURCE past the hard limit.  Yields {"pid", "fd"}.
    """
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
            _libc.prctl(1, signal.SIGKILL, 0, 0, 0)        # PR_SET_PDEATHSIG
            os.close(ready_r)
            os.close(release_w)
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd + 1, fd + 1))
            os.dup2(release_r, fd)
            os.write(ready_w, b"ok")
            os.read(release_r, 1)   # EOF when the parent closes its end (or dies)
            status = 0
        except BaseException:  # noqa: B036 -- never return into the parent's code
            pass
        finally:
            os._exit(status)
    os.close(ready_w)
    os.close(release_r)
    try:
        got = os.read(ready_r, 2)
        if got != b"ok":
            raise _restore.WorkloadError(f"the fd-table holder could not dup2 to fd {fd}",
                                         "run as root (CAP_SYS_RESOURCE); check fs.nr_open")
        yield {"pid": pid, "fd": fd}
    finally:
        os.close(ready_r)
        os.close(release_w)
        os.waitpid(pid, 0)


def _stats_line(log):
    for line in log.splitlines():
        if line.startswith("processed"):
            return line
    return log.splitlines()[-1] if log else ""


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Load one big BPF socket filter to make the verifier do a "
                    "huge-page-eligible kvmalloc.",
        epilog="examples:\n"
               "  vmalloc_huge.py                  # one load of 300,000 insns\n"
               "  vmalloc_huge.py --count 3 -n 500000\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--insns", type=int, default=DEFAULT_INSNS,
                   help="number of mov instructions (default %(default)d)")
    p.add_argument("--count", type=int, default=1, help="number of loads (default 1)")
    p.add_argument("--pause", type=float, default=0.0, help="seconds between loads")
    _restore.common_args(p)
    args = p.parse_args(argv)
    if not 1 <= args.insns < BPF_COMPLEXITY_LIMIT_INSNS:
        p.error("--insns must be in 1..%d" % (BPF_COMPLEXITY_LIMIT_INSNS - 1))

    def body():
        with _restore.signals_to_exceptions():
            res = trigger(args.insns, args.count, args.pause)
        if args.json:
            print(json.dumps(res))
        else:
            print("pid %d tid %d: %d/%d loads of %d insns ok"
                  % (res["pid"], res["tid"], res["loaded"], args.count, res["insns"]))
            for r in res["loads"]:
                print("  fd=%d %s %.1f ms  %s" % (
                    r["fd"], "loaded" if r["loaded"] else "FAILED: %s" % r["error"],
                    r["elapsed_ns"] / 1e6, _stats_line(r["verifier_log"])))
        if res["failed"]:
            first = next(r for r in res["loads"] if not r["loaded"])
            raise _restore.WorkloadError(
                "BPF_PROG_LOAD failed: %s" % first["error"],
                "needs root (CAP_BPF+CAP_PERFMON); verifier said: %s"
                % (_stats_line(first["verifier_log"]) or "nothing"))
    return _restore.run_cli(body, args.traceback)


if __name__ == "__main__":
    sys.exit(main())
