"""Run a named, parameterised workload N times, recording each run.

``trace-reclaim run WORKLOAD [--param k=v ...] -n N -o DIR [--sysctl vm.x=y ...]``

Each repetition is one recording, ``DIR/WORKLOAD-<i>.trc``, made by a
``trace-reclaim record`` subprocess while the workload from ``examples/``
runs in this process.  The recorder is a separate process, as when a user
runs it by hand, so that:

- the workload's Python loops never starve the ring-buffer poll (one GIL);
- the recorder owns its signal handling and its BPF program, and a workload
  that fails cannot leave a half-written recording open in this process;
- it runs in its own session, so a Ctrl-C on the terminal reaches only this
  runner, which first puts the machine back and then stops the recorder in
  order, instead of racing two processes through their cleanup.

Fair comparison: every run starts from the same state.  Before each run the
runner syncs and drops the page cache and slab caches (``drop_caches=3``),
compacts memory (``compact_memory``, so the hugetlb ballast gets the same
contiguous blocks each time) and waits for kswapd to go back to sleep.
Without this, run 1 starts with a warm page cache that the later runs
inherit from the one before, and the first run of every set differs.

Sysctls given with ``--sysctl`` are set once before the first run and put
back after the last (also on Ctrl-C, SIGTERM and errors), through
``examples/_restore.Restorer``; the workloads restore their own state
(hugetlb ballast, zram device, swap) the same way.  The recording header's
``workload`` object carries the workload name, parameters, the repetition,
the sysctls set and the values of the reclaim sysctls in force, and the
kernel and machine, so ``trace-reclaim diff`` can say when two sides differ.

``--kernel KERNEL`` runs the same command inside a VM booted with KERNEL
(trace_reclaim/vm.py: a Debian series such as 6.12, a bzImage or a build
tree), sharing this machine's root read-only and DIR read-write: the
recordings land in DIR on this machine, their headers carrying the guest
kernel's release and configuration.  A kernel developer compares a patched
kernel with its baseline without rebooting (docs/validating-a-patch.md).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import inspect
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from trace_reclaim.commands import HELP
from trace_reclaim.env import ExitStatus, UserError

__all__ = ["WORKLOADS", "Workload", "add_parser", "run", "parse_params",
           "parse_sysctls", "REPORTED_SYSCTLS"]

#: How long to wait for another workload to finish before giving up.
LOCK_TIMEOUT = 1800.0

#: Reclaim tunables whose values every run records, set or not.
REPORTED_SYSCTLS = ("vm.watermark_scale_factor", "vm.min_free_kbytes",
                    "vm.watermark_boost_factor", "vm.swappiness",
                    "vm.vfs_cache_pressure", "vm.overcommit_memory")


@dataclass(frozen=True)
class Workload:
    """A workload from ``examples/``: its entry point and what it exercises."""

    name: str
    module: str
    function: str
    description: str
    fixed: Tuple[Tuple[str, Any], ...] = ()   # arguments the runner always passes

    def entry(self) -> Callable[..., Any]:
        import importlib

        mod = importlib.import_module(f"trace_reclaim.examples.{self.module}")
        return getattr(mod, self.function)

    def params(self) -> Dict[str, Any]:
        """Parameter name -> default, from the entry point's signature."""
        sig = inspect.signature(self.entry())
        fixed = dict(self.fixed)
        return {n: p.default for n, p in sig.parameters.items()
                if n not in ("log", *fixed) and p.default is not inspect.Parameter.empty}


WORKLOADS: Dict[str, Workload] = {w.name: w for w in (
    Workload("pressure", "pressure", "run",
             "global pressure: hugetlb ballast, then page-cache streaming"),
    Workload("anon", "anon_pressure", "run",
             "anonymous-memory pressure swapping to a zram device"),
    Workload("slab-churn", "slab_churn", "churn",
             "dentry and inode churn: create/unlink files, stat missing names"),
    Workload("vmalloc-huge", "vmalloc_huge", "trigger",
             "huge-page vmalloc: one large BPF program load (verifier kvcalloc)"),
    # Held 1.5 s after its child: a sample reads the cgroup's own counters
    # (failcnt, memory.events) before the cgroup goes, for the report's row.
    Workload("cgroup", "cgroup_pressure", "run",
             "memcg reclaim: a cgroup of our own streams a file past its limit",
             fixed=(("hold_s", 1.5),)),
)}

EPILOG = """\
workloads (parameters and defaults: trace-reclaim run WORKLOAD --list-params):
""" + "".join(f"  {w.name:<14}{w.description}\n" for w in WORKLOADS.values()) + """
examples:
  trace-reclaim run pressure -n 6 -o base --param seconds=5
  trace-reclaim run pressure -n 6 -o wsf --param seconds=5 \\
      --sysctl vm.watermark_scale_factor=1000
  trace-reclaim diff base/*.trc -- wsf/*.trc
  trace-reclaim run vmalloc-huge --list-params
  trace-reclaim run cgroup -n 6 -o small --param limit_mib=32
  trace-reclaim run pressure -n 3 -o base --kernel 6.1     # in a VM, Debian's 6.1
  trace-reclaim run pressure -n 3 -o new --kernel ~/linux  # ... a kernel build tree
"""


def _convert(name: str, text: str, default: Any) -> Any:
    """Parse ``text`` as the type of ``default`` (None: int, float or string)."""
    if isinstance(default, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} takes true or false, not {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if default is None:
        if text.lower() == "none":
            return None
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def parse_params(workload: Workload, items: List[str]) -> Dict[str, Any]:
    """Turn ``k=v`` strings into typed keyword arguments for the workload."""
    known = workload.params()
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--param {item!r} is not KEY=VALUE",
                                "e.g. --param seconds=5", ExitStatus.USAGE)
        if key not in known:
            raise UserError(
                f"workload {workload.name} has no parameter {key!r}",
                f"its parameters: {', '.join(known) or 'none'}", ExitStatus.USAGE)
        try:
            out[key] = _convert(key, value.strip(), known[key])
        except ValueError as e:
            raise UserError(f"--param {item!r}: {e}",
                                f"the default of {key} is {known[key]!r}",
                                ExitStatus.USAGE) from None
    return out


def parse_sysctls(items: List[str]) -> Dict[str, str]:
    """Turn ``vm.x=y`` strings into {dotted name: value}; the sysctl must exist."""
    out: Dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("/", ".").strip(".")
        if not sep or not key or not value.strip():
            raise UserError(f"--sysctl {item!r} is not NAME=VALUE",
                                "e.g. --sysctl vm.watermark_scale_factor=1000",
                                ExitStatus.USAGE)
        if ".." in key or not os.path.exists(_sysctl_path(key)):
            raise UserError(f"no sysctl {key} on this kernel ({_sysctl_path(key)})",
                                "see 'sysctl -a' for the names this kernel has",
                                ExitStatus.USAGE)
        out[key] = value.strip()
    return out


def _sysctl_path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def read_sysctls(names: Tuple[str, ...] = REPORTED_SYSCTLS) -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {}
    for n in names:
        try:
            with open(_sysctl_path(n)) as f:
                out[n] = " ".join(f.read().split())
        except OSError:
            out[n] = None
    return out


def machine_description() -> Dict[str, Any]:
    """What the two sides of a diff must share to be comparable."""
    u = os.uname()
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return {"kernel_release": u.release, "kernel_version": u.version,
            "machine": u.machine, "hostname": socket.gethostname(),
            "cpus": os.cpu_count(), "mem_total_bytes": mem}


# -- settling ------------------------------------------------------------------
def _kswapd_asleep(pids: List[int]) -> bool:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("S", "I"):
            return False
    return True


def settle(log: Callable[[str], None], timeout: float = 10.0) -> Dict[str, Any]:
    """Start a run from a known state: caches dropped, memory compacted, kswapd asleep.

    ``drop_caches`` and ``compact_memory`` change nothing that needs
    restoring; they only discard clean caches and move pages.
    """
    t0 = time.monotonic()
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")
    with contextlib.suppress(OSError):  # CONFIG_COMPACTION=n: no such file
        with open("/proc/sys/vm/compact_memory", "w") as f:
            f.write("1")
    from trace_reclaim.procfs import ProcFS

    pids = ProcFS().kswapd_pids()
    deadline = time.monotonic() + timeout
    while not _kswapd_asleep(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    asleep = _kswapd_asleep(pids)
    took = time.monotonic() - t0
    log(f"settled in {took:.1f} s (caches dropped, memory compacted, kswapd "
        f"{'asleep' if asleep else 'still awake'})")
    return {"drop_caches": 3, "compact_memory": True, "kswapd_asleep": asleep,
            "seconds": round(took, 3)}


# -- the recorder subprocess --------------------------------------------------
class Recorder:
    """``trace-reclaim record -o PATH --workload JSON`` in its own session."""

    # A recorder that fails exits and is seen at once; the timeout is for one
    # that hangs.  It is long because compiling the BPF programs takes a few
    # seconds on a machine but minutes in an emulated VM (run --kernel, TCG).
    def __init__(self, path: str, workload: Dict[str, Any], interval: float = 1.0,
                 ready_timeout: float = 900.0) -> None:
        self.path = path
        self.workload = workload
        self.interval = interval
        self.ready_timeout = ready_timeout
        self.proc: Optional[subprocess.Popen] = None
        self._err = tempfile.TemporaryFile(mode="w+")
        self.stderr = ""

    def start(self) -> None:
        cmd = [sys.executable, "-m", "trace_reclaim", "record", "-o", self.path,
               "-i", str(self.interval), "--workload", json.dumps(self.workload)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._err,
                                     start_new_session=True, preexec_fn=_end_with_parent)
        from trace_reclaim.session import all_attached

        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            # The workload runs once every tracer is attached: the report
            # then covers all of it in every section.
            if all_attached(self._read()):
                # The start snapshots follow the attach message.
                time.sleep(0.3)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        text = self._read().strip()
        raise UserError(f"the recorder did not start: {_last(text) or 'no output'}",
                            "run 'trace-reclaim check'; try 'trace-reclaim record -o x.trc "
                            "-d 1' by hand")

    def _read(self) -> str:
        self._err.seek(0)
        return self._err.read()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGINT the recorder (it writes its end snapshots) and wait for it."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = -9
        self.stderr = self._read()
        self._err.close()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _end_with_parent() -> None:
    """In the recorder child: get SIGINT (a clean stop) if the runner dies."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)


def _last(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("error:")]
    return (errs or lines or [""])[-1]


@contextlib.contextmanager
def _machine_lock(log: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock every workload and live test takes (examples/_restore.py).

    Taken before the recorder starts and the sysctls change, so a run never
    records another workload, nor waits for the lock while recording.
    Re-entrant within a thread: a live test holding it can run this in-process.
    """
    from trace_reclaim.examples import _restore

    path = _restore._LOCK_PATH
    with contextlib.suppress(OSError):
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
            except BlockingIOError:
                if not getattr(_restore._lock_state, "depth", 0):
                    log(f"waiting for {path}: another workload is running here")
    with _restore.machine_lock(timeout=LOCK_TIMEOUT):
        yield


# -- the subcommand ----------------------------------------------------------
def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run", help=HELP["run"],
        description="Run a named, parameterised workload N times, each under its own "
                    "recording DIR/WORKLOAD-<i>.trc; put the machine back afterwards.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=sorted(WORKLOADS), metavar="WORKLOAD",
                   help="one of: " + ", ".join(WORKLOADS))
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a workload parameter (repeatable)")
    p.add_argument("-n", "--runs", type=int, default=5, metavar="N",
                   help="repetitions (default 5)")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="directory for the recordings (created if needed; runs already "
                        "there are kept and numbering continues after them)")
    p.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE",
                   help="set for all runs, restored afterwards (repeatable)")
    p.add_argument("--no-settle", action="store_true",
                   help="do not drop caches and compact memory before each run")
    p.add_argument("--list-params", action="store_true",
                   help="print the workload's parameters and defaults, then exit")
    p.add_argument("--kernel", metavar="KERNEL",
                   help="run inside a VM booted with KERNEL: a Debian series (6.1, 6.12), "
                        "a Debian release, a bzImage or a kernel build tree")
    p.add_argument("--vm-memory", default="3G", metavar="SIZE",
                   help="the VM's memory with --kernel (default 3G)")
    p.add_argument("--no-machine-lock", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, env: Any) -> int:
    w = WORKLOADS[args.workload]
    if args.list_params:
        for k, v in w.params().items():
            print(f"{k:<22}{v!r}", file=env.stdout)
        return int(ExitStatus.OK)
    if args.runs < 1:
        raise UserError(f"-n must be at least 1, not {args.runs}",
                            "a diff needs >= 2 runs per side to test; 5 or more is better",
                            ExitStatus.USAGE)
    if not args.output:
        raise UserError("run needs -o DIR", "e.g. -o base", ExitStatus.USAGE)
    params = parse_params(w, args.param)
    sysctls = parse_sysctls(args.sysctl)
    if args.kernel:
        return _run_in_vm(args, env)
    if not env.is_root():
        raise UserError("run changes kernel settings and loads BPF: it needs root",
                            "run it as root, e.g. sudo trace-reclaim run ...")
    try:
        os.makedirs(args.output, exist_ok=True)
        first = next_index(args.output, w.name)
    except OSError as e:
        raise UserError(f"cannot use {args.output}: {e.strerror or e}",
                            "choose a writable directory") from None
    # Numbering continues after the runs already there, so sides can be
    # interleaved (run -n 1 -o base; run -n 1 -o new; ...) and nothing is
    # ever overwritten.
    paths = [os.path.join(args.output, f"{w.name}-{i}.trc")
             for i in range(first, first + args.runs)]

    def log(msg: str) -> None:
        print(f"run: {msg}", file=env.stderr, flush=True)

    lock = contextlib.nullcontext() if args.no_machine_lock else _machine_lock(log)
    from trace_reclaim.examples import _restore

    try:
        with lock:
            return _run_all(args, env, w, params, sysctls, paths, first, log)
    except _restore.WorkloadError as e:  # the lock timed out
        raise UserError(str(e), e.hint or "") from None


def _run_in_vm(args: argparse.Namespace, env: Any) -> int:
    """Boot ``args.kernel`` and run this command (without --kernel) inside it.

    The VM is torn down on every exit (vm.run); a recording the guest had
    not finished when the VM ended (Ctrl-C, SIGTERM, a crash, a timeout) is
    set aside as ``.incomplete`` here, since the guest's runner never got
    to do it.
    """
    from trace_reclaim import vm
    from trace_reclaim.examples import _restore

    out = os.path.abspath(args.output)
    try:
        os.makedirs(out, exist_ok=True)
        before = set(os.listdir(out))
    except OSError as e:
        raise UserError(f"cannot use {args.output}: {e.strerror or e}",
                        "choose a writable directory") from None
    argv = [sys.executable, "-m", "trace_reclaim", "run", args.workload, "-n", str(args.runs),
            "-o", out]
    for kv in args.param:
        argv += ["--param", kv]
    for kv in args.sysctl:
        argv += ["--sysctl", kv]
    if args.no_settle:
        argv.append("--no-settle")
    command = _guest_setup(args.workload, args.param, argv)

    booted: List[str] = []

    def log(msg: str) -> None:
        if msg.startswith("vm: booting"):
            booted.append(msg)
        print(msg, file=env.stderr, flush=True)

    done = _GuestProgress()

    def stream(name: str, text: str) -> None:
        if name == "stderr":
            done.feed(text)
        f = env.stdout if name == "stdout" else env.stderr
        f.write(text)
        f.flush()

    kernel = vm.resolve(args.kernel, log=log)
    try:
        # SIGTERM's default action would leave QEMU running in its own session.
        with _restore.signals_to_exceptions():
            res = vm.run(kernel, command, cwd=os.getcwd(), memory=args.vm_memory,
                         rwdirs=[out], log=log, stream=stream)
    except (KeyboardInterrupt, _restore.Terminated) as e:
        _set_aside_new(out, before, done.paths, log)
        print(f"error: interrupted after {len(done.paths)} of {args.runs} runs; "
              + (f"the VM ({kernel.release}) was stopped" if booted else
                 "no VM had started"), file=env.stderr)
        return int(ExitStatus.INTERRUPTED if isinstance(e, KeyboardInterrupt)
                   else 128 + e.signum)
    except BaseException:
        _set_aside_new(out, before, done.paths, log)
        raise
    if res.returncode != 0:
        _set_aside_new(out, before, done.paths, log)
    if res.returncode is None:
        raise UserError(f"the VM ({kernel.release}) ended before the runs finished "
                        f"({len(done.paths)} of {args.runs} done): {vm.why_failed(res)}",
                        "try again; a longer run may need more --vm-memory")
    return res.returncode


#: Where ``pressure`` streams its sparse file in a VM (see _guest_setup).
GUEST_PAGE_CACHE_DIR = "/tmp/trace-reclaim-ext4/mnt"


def _guest_setup(workload: str, params: List[str], argv: List[str]) -> str:
    """The guest's shell command: what the workload needs, then ``argv``.

    The guest is thrown away afterwards, so nothing here is undone.  anon
    swaps to zram, a module in Debian's kernels (CONFIG_ZRAM=m).  pressure
    streams a sparse file through the page cache, but the guest's /var/tmp
    is tmpfs under an overlay, whose holes are read without page cache:
    nothing to reclaim.  It gets an ext4 image on tmpfs instead (ext4 reads
    a hole into zeroed page-cache pages without touching the device, so a
    small image holds the whole sparse file), unless ``directory`` is given.
    """
    lines = ["modprobe -q zram 2>/dev/null"]
    if workload == "pressure" and not any(
            kv.partition("=")[0].strip().replace("-", "_") == "directory" for kv in params):
        d = shlex.quote(os.path.dirname(GUEST_PAGE_CACHE_DIR))
        lines += ["modprobe -q loop 2>/dev/null",
                  f"mkdir -p {d}/mnt && truncate -s 256M {d}/img && "
                  f"mkfs.ext4 -q -F {d}/img && mount -o loop {d}/img {d}/mnt || "
                  "{ echo 'error: cannot make an ext4 file system for pressure in the VM' >&2; "
                  "echo 'hint: install e2fsprogs; or give --param directory=DIR' >&2; exit 1; }"]
        argv = argv + ["--param", f"directory={GUEST_PAGE_CACHE_DIR}"]
    return "\n".join(lines + ["exec " + " ".join(shlex.quote(a) for a in argv)])


class _GuestProgress:
    """Which recordings the guest's runner finished, from its stderr lines."""

    def __init__(self) -> None:
        self.buf = ""
        self.started: Dict[str, str] = {}
        self.paths: List[str] = []

    def feed(self, text: str) -> None:
        import re

        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            m = re.match(r"run: \S+ run (\d+) of \d+: (recording to (.+)|done in )", line)
            if not m:
                continue
            if m.group(3):
                self.started[m.group(1)] = m.group(3)
            elif m.group(1) in self.started:
                self.paths.append(self.started[m.group(1)])


def _set_aside_new(out: str, before: set, done: List[str],
                   log: Callable[[str], None]) -> None:
    """Set aside recordings that appeared in OUT during this VM and were not finished."""
    try:
        now = os.listdir(out)
    except OSError:
        return
    for name in sorted(set(now) - before):
        path = os.path.join(out, name)
        if name.endswith(".trc") and path not in done:
            _set_aside(path, log)


def _run_all(args: argparse.Namespace, env: Any, w: Workload, params: Dict[str, Any],
             sysctls: Dict[str, str], paths: List[str], first: int,
             log: Callable[[str], None]) -> int:
    from trace_reclaim.examples import _restore

    entry = w.entry()
    kwargs = {**params, **dict(w.fixed)}
    if "log" in inspect.signature(entry).parameters:
        kwargs["log"] = lambda m: log(f"  {m}")
    done: List[str] = []
    try:
        with _restore.Restorer(log=lambda m: log(m)) as r:
            was = {}
            for name, value in sysctls.items():
                was[name] = r.sysctl(name, value)
                log(f"sysctl {name} = {value} (was {was[name]}; restored at the end)")
            for i, path in enumerate(paths, 1):
                settled = None if args.no_settle else settle(log)
                desc = {
                    "name": w.name, "params": params, "repetition": first + i - 1,
                    "sysctls": sysctls, "sysctls_before": was,
                    "vm": read_sysctls(), "machine": machine_description(),
                    "settle": settled, "runner": "trace-reclaim run",
                }
                rec = Recorder(path, desc)
                log(f"{w.name} run {i} of {len(paths)}: recording to {path}")
                rec.start()
                try:
                    t0 = time.monotonic()
                    result = entry(**kwargs)
                    took = time.monotonic() - t0
                finally:
                    rc = rec.stop()
                    if rc != 0:
                        _set_aside(path, log)
                if rc != 0:
                    raise UserError(
                        f"the recorder of run {i} exited with {rc}: {_last(rec.stderr)}",
                        "run 'trace-reclaim check'; the workload's settings were restored")
                done.append(path)
                log(f"{w.name} run {i} of {len(paths)}: done in {took:.1f} s"
                    + _result_summary(result))
    except _restore.WorkloadError as e:
        raise UserError(f"workload {w.name}: {e}", e.hint or "") from None
    except (KeyboardInterrupt, _restore.Terminated) as e:
        _set_aside_unfinished(paths, done, log)
        print(f"error: interrupted after {len(done)} of {len(paths)} runs; kernel settings "
              "were restored", file=env.stderr)
        return int(ExitStatus.INTERRUPTED if isinstance(e, KeyboardInterrupt)
                   else 128 + e.signum)
    except OSError as e:
        _set_aside_unfinished(paths, done, log)
        raise UserError(f"workload {w.name}: {e}",
                            "check the kernel supports this workload "
                            "(shared/KERNEL-FACTS.md); settings were restored") from None
    print(f"recorded {len(done)} runs of {w.name} in {args.output}", file=env.stderr)
    for p in done:
        print(p, file=env.stdout)
    return int(ExitStatus.OK)


def next_index(directory: str, name: str) -> int:
    """The repetition number after the highest WORKLOAD-<i>.trc[.incomplete] in DIR."""
    import re

    pat = re.compile(re.escape(name) + r"-(\d+)\.trc(\.incomplete)?$")
    seen = [int(m.group(1)) for f in os.listdir(directory) if (m := pat.match(f))]
    return max(seen, default=0) + 1


def _set_aside(path: str, log: Callable[[str], None]) -> None:
    """Rename an incomplete recording so a glob of complete runs skips it."""
    if os.path.exists(path):
        os.replace(path, path + ".incomplete")
        log(f"{path} is incomplete: kept as {path}.incomplete")


def _set_aside_unfinished(paths: List[str], done: List[str],
                          log: Callable[[str], None]) -> None:
    for p in paths:
        if p not in done and os.path.exists(p):
            _set_aside(p, log)


def _result_summary(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    v = result.get("vmstat")
    if isinstance(v, dict):
        stalls = sum(n for k, n in v.items() if k.startswith("allocstall_"))
        return (f"; allocstall {stalls}, pgsteal direct {v.get('pgsteal_direct', 0)} "
                f"kswapd {v.get('pgsteal_kswapd', 0)}")
    if "loaded" in result:
        return f"; {result['loaded']} programs loaded, {result.get('failed', 0)} failed"
    if "created" in result:
        return f"; {result['created']} files created and unlinked"
    return ""
