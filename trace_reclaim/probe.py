"""Find out what this kernel offers and choose an attach plan once.

Feature detection, never version checks: a tracepoint is used when its
format file exists, a kprobe when the kernel has kprobes, fentry when a
program of that type actually loads.  The answers are cached for the
process, and ``check`` prints them with the reason each better option was
rejected.
"""

from __future__ import annotations

import functools
import gzip
import os
import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from trace_reclaim.procfs import ProcFS

if TYPE_CHECKING:
    from trace_reclaim.tracer import Tracer

__all__ = ["Probe", "Plan", "TRACEFS_CANDIDATES"]

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


@dataclass
class Plan:
    """The chosen attach points, the cflags they need and what is missing."""

    tracers: List[str]
    attaches: List[Any]
    cflags: List[str]
    missing: List[str] = field(default_factory=list)

    def as_json(self) -> Dict[str, Any]:
        return {
            "tracers": self.tracers,
            "cflags": self.cflags,
            "attaches": [{"family": a.family, "chosen": a.chosen, "ok": a.ok,
                          "rejected": [list(r) for r in a.rejected]}
                         for a in self.attaches],
            "missing": self.missing,
        }


class Probe:
    """Answers about the running kernel, each computed once."""

    def __init__(self, procfs: Optional[ProcFS] = None, bpf_factory: Any = None) -> None:
        self.procfs = procfs or ProcFS()
        self._bpf_factory = bpf_factory

    @staticmethod
    def is_root() -> bool:
        return os.geteuid() == 0

    @functools.cached_property
    def release(self) -> str:
        return platform.release()

    # -- tracefs -----------------------------------------------------------
    def tracefs(self) -> Optional[str]:
        """The mounted tracefs directory, or None."""
        for d in TRACEFS_CANDIDATES:
            if os.path.isdir(os.path.join(self.procfs.path(d), "events")):
                return d
        return None

    def mount_tracefs(self) -> Tuple[Optional[str], str]:
        """Mount tracefs (and debugfs, where bcc also looks) if needed.

        Returns (path or None, what happened).
        """
        found = self.tracefs()
        if found:
            return found, "mounted"
        if not self.is_root():
            return None, "not mounted, and mounting needs root"
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        done = []
        for src, target, fstype in (("nodev", "/sys/kernel/tracing", "tracefs"),
                                    ("nodev", "/sys/kernel/debug", "debugfs")):
            if os.path.ismount(target):
                continue
            rc = libc.mount(src.encode(), target.encode(), fstype.encode(), 0, None)
            if rc != 0:
                err = ctypes.get_errno()
                if fstype == "tracefs":
                    return None, f"mount -t tracefs failed: {os.strerror(err)}"
            else:
                done.append(target)
        found = self.tracefs()
        return found, ("mounted by trace-reclaim: " + ", ".join(done)) if found else \
            "tracefs mounted but has no events directory"

    def tracepoint_exists(self, category: str, event: str) -> bool:
        tfs = self.tracefs()
        if tfs is None:
            return False
        return os.path.exists(self.procfs.path(f"{tfs}/events/{category}/{event}/format"))

    def tracepoint_format(self, category: str, event: str) -> Optional[str]:
        tfs = self.tracefs()
        if tfs is None:
            return None
        return self.procfs.try_read(f"{tfs}/events/{category}/{event}/format")

    # -- kernel configuration ---------------------------------------------
    @functools.cached_property
    def kconfig(self) -> Dict[str, str]:
        """/proc/config.gz as a dict (empty when the kernel does not expose it)."""
        path = self.procfs.path("/proc/config.gz")
        try:
            with gzip.open(path, "rt") as f:
                text = f.read()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line.startswith("CONFIG_"):
                k, _, v = line.partition("=")
                out[k] = v
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                out[line[2:-11]] = "n"
        return out

    def config(self, name: str) -> Optional[str]:
        """'y', 'm', a value, 'n' (not set), or None when config is unknown."""
        if not self.kconfig:
            return None
        return self.kconfig.get(name, "n")

    @functools.cached_property
    def cmdline(self) -> str:
        return (self.procfs.try_read("/proc/cmdline") or "").strip()

    # -- attach mechanisms -------------------------------------------------
    @functools.cached_property
    def kprobes(self) -> Tuple[bool, str]:
        cfg = self.config("CONFIG_KPROBES")
        if cfg == "n":
            return False, "kprobes not compiled in (# CONFIG_KPROBES is not set)"
        tfs = self.tracefs()
        if tfs and not os.path.exists(self.procfs.path(f"{tfs}/kprobe_events")):
            return False, "no kprobe_events in tracefs"
        return True, "available"

    @functools.cached_property
    def fentry(self) -> Tuple[bool, str]:
        """Whether an fentry (BPF_PROG_TYPE_TRACING) program loads here.

        bcc's BPF.support_kfunc() only looks for BTF and a kernel symbol; a
        policy can still refuse the load, so try one.
        """
        if not os.path.exists(self.procfs.path("/sys/kernel/btf/vmlinux")):
            return False, "no kernel BTF (/sys/kernel/btf/vmlinux)"
        if self._bpf_factory is None:
            return False, "not tried (no BPF)"
        from trace_reclaim.quiet import captured_stderr, trim_heap

        try:
            with captured_stderr() as err:
                b = self._bpf_factory(text="KFUNC_PROBE(kmem_cache_destroy) { return 0; }",
                                      cflags=["-Wno-ignored-attributes"])
        except Exception as e:  # bcc raises plain Exception on load failure
            trim_heap()
            text = f"{e} {err.text}"
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            # bcc turns EPERM into "Need super-user privileges to run".
            if any(s in text for s in ("Operation not permitted", "EPERM",
                                        "super-user")):
                return False, "fentry refused: EPERM"
            return False, f"fentry load failed: {msg[:100]}"
        try:
            b.cleanup()
        except Exception:
            pass
        trim_heap()
        return True, "loads"

    # -- kernel BTF: function and raw-tracepoint prototypes ----------------
    @functools.cached_property
    def btf_types(self) -> Any:
        """The running kernel's BTF (trace_reclaim.btf.BTF), or None."""
        from trace_reclaim.btf import load_btf

        return load_btf(self.procfs.path("/sys/kernel/btf/vmlinux"))

    def btf_func_params(self, name: str) -> Optional[List[str]]:
        """Parameter types of kernel function ``name`` from BTF, or None.

        A function is in BTF only when it exists out of line, which is what
        fentry and kprobes need.
        """
        return self.btf_types.func_params(name) if self.btf_types else None

    def raw_tracepoint_params(self, event: str) -> Optional[List[str]]:
        """TP_PROTO of ``event`` from the ``btf_trace_<event>`` typedef, without __data.

        Raw tracepoint arguments follow TP_PROTO, which changes between kernel
        versions; this is the running kernel's, not the headers'.
        """
        return self.btf_types.raw_tp_params(event) if self.btf_types else None

    def kernel_symbol(self, name: str) -> Optional[int]:
        """Address of kernel function ``name`` (bcc's BPF.ksymname), or None.

        None when bcc is missing, the symbol is unknown, or kallsyms hides
        addresses (kptr_restrict for a reader without CAP_SYSLOG shows 0).
        """
        try:
            from bcc import BPF
        except ImportError:
            return None
        addr = BPF.ksymname(name.encode())
        return addr if isinstance(addr, int) and addr > 0 else None

    # -- headers, BTF, PSI, delay accounting --------------------------------
    @functools.cached_property
    def headers(self) -> Dict[str, Any]:
        """Where bcc will find kernel headers, and for which release they are."""
        build = self.procfs.path(f"/lib/modules/{self.release}/build")
        info: Dict[str, Any] = {"path": None, "release": None, "matches": False}
        if not os.path.isdir(build):
            return info
        info["path"] = os.path.realpath(build)
        text = self.procfs.try_read(
            f"/lib/modules/{self.release}/build/include/generated/utsrelease.h") or ""
        for line in text.splitlines():
            if "UTS_RELEASE" in line:
                info["release"] = line.split('"')[1]
        info["matches"] = info["release"] == self.release
        source = self.procfs.path(f"/lib/modules/{self.release}/source")
        info["source"] = os.path.realpath(source) if os.path.isdir(source) else None
        return info

    @property
    def btf(self) -> bool:
        return os.path.exists(self.procfs.path("/sys/kernel/btf/vmlinux"))

    @property
    def psi(self) -> Tuple[bool, str]:
        if self.procfs.try_read("/proc/pressure/memory") is not None:
            return True, "/proc/pressure/memory readable"
        if self.config("CONFIG_PSI") == "n":
            return False, "not compiled in (CONFIG_PSI)"
        return False, "off (boot with psi=1)"

    @property
    def delayacct(self) -> Tuple[Optional[bool], str]:
        v = self.procfs.try_read("/proc/sys/kernel/task_delayacct")
        if v is None:
            if self.config("CONFIG_TASK_DELAY_ACCT") == "n":
                return None, "not compiled in (CONFIG_TASK_DELAY_ACCT)"
            return None, "unknown (/proc/sys/kernel/task_delayacct missing)"
        on = v.strip() == "1"
        return on, "on" if on else "compiled in, off (kernel.task_delayacct=0; --delayacct)"

    @property
    def huge_vmalloc(self) -> Tuple[Optional[bool], str]:
        """Can vmalloc map with PMD (2 MiB) pages on this kernel at all?"""
        cfg = self.config("CONFIG_HAVE_ARCH_HUGE_VMALLOC")
        if "nohugevmalloc" in self.cmdline.split():
            return False, "disabled by nohugevmalloc on the kernel command line"
        if cfg == "n":
            return False, "CONFIG_HAVE_ARCH_HUGE_VMALLOC is not set"
        if cfg is None:
            return None, "kernel config unknown (/proc/config.gz missing)"
        # Since Linux 5.18 (commit 559089e0a93d, "vmalloc: replace
        # VM_NO_HUGE_VMAP with VM_ALLOW_HUGE_VMAP") huge mappings are opt-in.
        return True, ("CONFIG_HAVE_ARCH_HUGE_VMALLOC=y; opt-in per caller "
                      "(kvmalloc, vmalloc_huge)")

    # -- the plan ----------------------------------------------------------
    def plan(self, tracers: Mapping[str, Tracer]) -> Plan:
        attaches: List[Any] = []
        cflags: List[str] = []
        enabled: List[str] = []
        missing: List[str] = []
        for name, t in tracers.items():
            a, extra = t.plan(self)
            attaches += a
            bad = [x.family for x in a if not x.ok]
            if bad:
                missing += [f"{name}: {b}" for b in bad]
                continue
            enabled.append(name)
            cflags += [f"-D{t.cflag}"] + extra
        return Plan(enabled, attaches, cflags, missing)
