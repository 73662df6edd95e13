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
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from trace_reclaim.procfs import ProcFS

if TYPE_CHECKING:
    from trace_reclaim.tracer import Tracer

__all__ = ["Probe", "Plan", "TRACEFS_CANDIDATES", "ATTACH_CHOICES", "ATTACH_ENV"]

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# The attach mechanisms, best first.  --attach (or $TRACE_RECLAIM_ATTACH)
# caps the plan at one of them: "kprobe" leaves fentry unused, "tracepoint"
# leaves fentry and kprobes unused.  Tests use it to run every plan on a
# kernel that offers them all (bootstrap.sh test-vm).
ATTACH_CHOICES = ("fentry", "kprobe", "tracepoint")
# CONFIG_IKHEADERS: the kernel's own headers, which bcc extracts when
# /lib/modules/RELEASE/build is missing (loading the kheaders module if needed).
KHEADERS = "/sys/kernel/kheaders.tar.xz"
ATTACH_ENV = "TRACE_RECLAIM_ATTACH"


@dataclass
class Plan:
    """The chosen attach points, the cflags they need and what is missing."""

    tracers: List[str]
    attaches: List[Any]
    cflags: List[str]
    missing: List[str] = field(default_factory=list)
    forced: Optional[str] = None   # the --attach cap, when one was given

    def as_json(self) -> Dict[str, Any]:
        return {
            "tracers": self.tracers,
            "forced": self.forced,
            "cflags": self.cflags,
            "attaches": [{"family": a.family, "chosen": a.chosen, "ok": a.ok,
                          "rejected": [list(r) for r in a.rejected]}
                         for a in self.attaches],
            "missing": self.missing,
        }


class Probe:
    """Answers about the running kernel, each computed once."""

    def __init__(self, procfs: Optional[ProcFS] = None, bpf_factory: Any = None,
                 attach: Optional[str] = None) -> None:
        self.procfs = procfs or ProcFS()
        self._bpf_factory = bpf_factory
        if attach is None:
            attach = os.environ.get(ATTACH_ENV) or None
        if attach is not None and attach not in ATTACH_CHOICES:
            from trace_reclaim.env import UserError

            raise UserError(f"unknown attach mechanism {attach!r} (--attach or ${ATTACH_ENV})",
                            "use one of: " + ", ".join(ATTACH_CHOICES))
        self.attach = attach
        self._tracing_cache: Dict[Tuple[str, str], Tuple[bool, str]] = {}
        self._kallsyms: Optional[str] = None   # /proc/kallsyms while planning
        self._kallsyms_thread: Any = None

    def _forced_off(self, mechanism: str) -> Optional[str]:
        """Why ``mechanism`` is not to be used because of --attach, or None."""
        if self.attach is None or \
                ATTACH_CHOICES.index(mechanism) >= ATTACH_CHOICES.index(self.attach):
            return None
        return f"not used: --attach {self.attach} (forced)"

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
    def _kconfig_text(self) -> Tuple[Optional[str], Optional[str]]:
        """(text, where) of this kernel's build configuration, or (None, None).

        /proc/config.gz needs CONFIG_IKCONFIG_PROC, which distribution
        kernels (Debian's among them) leave out; they install the same file
        as /boot/config-RELEASE, and their headers carry it as .config.
        Only files named for the running release are read.
        """
        try:
            with gzip.open(self.procfs.path("/proc/config.gz"), "rt") as f:
                return f.read(), "/proc/config.gz"
        except OSError:
            pass
        for where in (f"/boot/config-{self.release}", f"/lib/modules/{self.release}/build/.config"):
            text = self.procfs.try_read(where)
            if text:
                return text, where
        return None, None

    @functools.cached_property
    def kconfig_source(self) -> Optional[str]:
        """Where the kernel configuration was read from (None: nowhere)."""
        return self._kconfig_text()[1]

    @functools.cached_property
    def kconfig(self) -> Dict[str, str]:
        """The kernel configuration as a dict (empty when it cannot be found)."""
        text = self._kconfig_text()[0]
        if text is None:
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
        forced = self._forced_off("kprobe")
        if forced:
            return False, forced
        cfg = self.config("CONFIG_KPROBES")
        if cfg == "n":
            return False, "kprobes not compiled in (# CONFIG_KPROBES is not set)"
        tfs = self.tracefs()
        if tfs and not os.path.exists(self.procfs.path(f"{tfs}/kprobe_events")):
            return False, "no kprobe_events in tracefs"
        return True, "available"

    @functools.cached_property
    def fentry(self) -> Tuple[bool, str]:
        """Whether fentry (BPF_PROG_TYPE_TRACING) programs attach here at all.

        bcc's BPF.support_kfunc() only looks for BTF and a kernel symbol; a
        policy can still refuse the load, so attach one (to kmem_cache_destroy,
        which every kernel since fentry has, with one argument).
        """
        forced = self._forced_off("fentry")
        if forced:
            return False, forced
        if not os.path.exists(self.procfs.path("/sys/kernel/btf/vmlinux")):
            return False, "no kernel BTF (/sys/kernel/btf/vmlinux)"
        return self.tracing_attach("kmem_cache_destroy", "fentry")

    def tracing_attach(self, func: str, kind: str = "fentry") -> Tuple[bool, str]:
        """Whether an fentry/fexit program attaches to kernel function ``func``.

        The verifier and the trampoline judge each function: x86-64 trampolines
        took at most 6 arguments before Linux 6.5 (commit 473e3150e30a, "bpf,
        x86: allow function arguments up to 12 for TRACING"), so
        __vmalloc_node_range's 9 refuse there while kmem_cache_destroy's 1
        attach.  An empty program ("r0 = 0; exit") is loaded with the bpf(2)
        syscall and attached for a moment: no compiler, milliseconds.
        Cached per (function, kind).
        """
        key = (func, kind)
        if key not in self._tracing_cache:
            forced = self._forced_off("fentry")
            if forced:
                self._tracing_cache[key] = (False, forced)
            elif self.btf_types is None:
                self._tracing_cache[key] = (False, "no kernel BTF (/sys/kernel/btf/vmlinux)")
            else:
                tid = self.btf_types.func_id(func)
                if tid is None:
                    self._tracing_cache[key] = (False, f"{func} is not in this kernel's BTF")
                else:
                    from trace_reclaim.bpfsys import try_tracing_attach

                    self._tracing_cache[key] = try_tracing_attach(tid, kind)
        return self._tracing_cache[key]

    # -- kernel BTF: function and raw-tracepoint prototypes ----------------
    @functools.cached_property
    def btf_types(self) -> Any:
        """The running kernel's BTF (trace_reclaim.btf.BTF), or None."""
        from trace_reclaim.btf import VMLINUX, load_btf

        return load_btf(self.procfs.path(VMLINUX))

    def prefetch_btf(self) -> None:
        """Start reading the kernel's BTF in a thread (btf.read_ahead), unless done."""
        from trace_reclaim.btf import VMLINUX, read_ahead

        if "btf_types" not in self.__dict__:
            read_ahead(self.procfs.path(VMLINUX))

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
        """Address of kernel function ``name`` from /proc/kallsyms, or None.

        None when the symbol is unknown or kallsyms hides addresses
        (kptr_restrict for a reader without CAP_SYSLOG shows 0).  bcc's
        BPF.ksymname reads all of /proc/kallsyms again on every call (~0.1 s
        each here, several per start), so the text is read once, kept until
        plan() is done, and searched with str.find.
        """
        text = self._kallsyms_text()
        for tail in ("\n", "\t"):  # "ADDR t NAME" or "ADDR t NAME\t[module]"
            needle = f" {name}{tail}"
            pos = text.find(needle)
            while pos >= 0:
                fields = text[text.rfind("\n", 0, pos) + 1:pos].split()
                if len(fields) == 2:
                    addr = int(fields[0], 16)
                    return addr if addr > 0 else None
                pos = text.find(needle, pos + 1)
        return None

    def prefetch(self) -> None:
        """Start reading what plan() will need (/proc/kallsyms) in a thread.

        Reading kallsyms is kernel time (~0.1 s) that overlaps with parsing
        BTF in Python, which plan() needs too.
        """
        if self._kallsyms is None and self._kallsyms_thread is None:
            self._kallsyms_thread = threading.Thread(target=self._kallsyms_text, daemon=True)
            self._kallsyms_thread.start()

    def _kallsyms_text(self) -> str:
        t = self._kallsyms_thread
        if t is not None and t is not threading.current_thread():
            t.join()
        if self._kallsyms is None:
            self._kallsyms = self.procfs.try_read("/proc/kallsyms") or ""
        return self._kallsyms

    # -- headers, BTF, PSI, delay accounting --------------------------------
    @functools.cached_property
    def headers(self) -> Dict[str, Any]:
        """Where bcc will find kernel headers, and for which release they are.

        /lib/modules/RELEASE/build first, as bcc looks; else the kernel's own
        headers (CONFIG_IKHEADERS: /sys/kernel/kheaders.tar.xz, or the kheaders
        module, which bcc loads, extracts and unloads), exact by construction.
        """
        build = self.procfs.path(f"/lib/modules/{self.release}/build")
        info: Dict[str, Any] = {"path": None, "release": None, "matches": False}
        if not os.path.isdir(build):
            if os.path.exists(self.procfs.path(KHEADERS)) or self._kheaders_module():
                info.update(path=KHEADERS, release=self.release, matches=True, source=None,
                            kheaders=True)
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

    def _kheaders_module(self) -> bool:
        """Whether CONFIG_IKHEADERS=m built a kheaders module for this release."""
        dep = self.procfs.try_read(f"/lib/modules/{self.release}/modules.dep") or ""
        return "/kheaders.ko" in dep

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
            return None, ("kernel config unknown (no /proc/config.gz, "
                          f"/boot/config-{self.release} or build/.config)")
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
        self._kallsyms = None  # ~5 MiB of text, needed only while planning
        return Plan(enabled, attaches, cflags, missing, self.attach)
