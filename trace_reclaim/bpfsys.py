"""Talk to bpf(2) directly where bcc would need a compiler: attach tests.

Whether fentry/fexit attaches to a given kernel function is decided by the
verifier (BTF of the function) and by the architecture's trampoline (how many
arguments it can save): the only sure answer is to try.  bcc would compile C
for that, which takes seconds natively and most of a minute under emulation;
two hand-written instructions do the same in milliseconds.

Kernel side: BPF_PROG_LOAD of a BPF_PROG_TYPE_TRACING program with
expected_attach_type BPF_TRACE_FENTRY/FEXIT and attach_btf_id, then
BPF_RAW_TRACEPOINT_OPEN, which builds the trampoline (include/uapi/linux/bpf.h).
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Tuple

__all__ = ["try_tracing_attach"]

BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_PROG_TYPE_TRACING = 26
ATTACH_TYPES = {"fentry": 24, "fexit": 25}   # BPF_TRACE_FENTRY, BPF_TRACE_FEXIT
_NR_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}
# r0 = 0; exit
_PROG = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
_LOG_SIZE = 1 << 16


class _ProgLoadAttr(ctypes.Structure):
    # union bpf_attr, BPF_PROG_LOAD member, up to attach_btf_id / attach_prog_fd
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32),
                ("prog_btf_fd", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("func_info", ctypes.c_uint64), ("func_info_cnt", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("line_info_cnt", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
                ("attach_prog_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class _RawTpOpenAttr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("cookie", ctypes.c_uint64)]


def _last_line(log: bytes) -> str:
    lines = [ln for ln in log.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].strip()[:120] if lines else ""


def try_tracing_attach(btf_id: int, kind: str = "fentry") -> Tuple[bool, str]:
    """Load and attach an empty fentry/fexit program to vmlinux BTF id ``btf_id``.

    Returns (True, "attaches") or (False, why); nothing stays attached.
    """
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        return False, f"no bpf(2) syscall number known for {os.uname().machine}"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    prog = ctypes.create_string_buffer(_PROG, len(_PROG))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr = _ProgLoadAttr()
    attr.prog_type = BPF_PROG_TYPE_TRACING
    attr.insn_cnt = len(_PROG) // 8
    attr.insns = ctypes.addressof(prog)
    attr.license = ctypes.addressof(lic)
    attr.log_level = 1
    attr.log_size = _LOG_SIZE
    attr.log_buf = ctypes.addressof(log)
    attr.prog_name = b"tr_attach_test"
    attr.expected_attach_type = ATTACH_TYPES[kind]
    attr.attach_btf_id = btf_id
    fd = libc.syscall(nr, BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.EPERM:
            return False, f"{kind} refused: EPERM"
        why = _last_line(log.raw.split(b"\0", 1)[0])
        return False, f"{kind} load failed: {os.strerror(err)}" + (f" ({why})" if why else "")
    try:
        ra = _RawTpOpenAttr()
        ra.prog_fd = fd
        link = libc.syscall(nr, BPF_RAW_TRACEPOINT_OPEN, ctypes.byref(ra), ctypes.sizeof(ra))
        if link < 0:
            err = ctypes.get_errno()
            name = errno.errorcode.get(err, str(err))
            if err == 524:  # ENOTSUPP (kernel-internal): the trampoline cannot
                name = "ENOTSUPP"
            return False, f"{kind} attach failed: {name} (the trampoline refused)"
        os.close(link)
        return True, "attaches"
    finally:
        os.close(fd)
