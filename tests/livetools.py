"""Run trace-reclaim for real around a workload, for live tests.

``Trace`` starts ``trace-reclaim record`` as a subprocess (the way a user
does), waits until the BPF program is attached, lets the test run a
workload, then stops it with SIGINT and replays the recording.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from trace_reclaim.session import all_attached
from trace_reclaim.view import HOME_CLEAR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def live_unavailable_reason() -> Optional[str]:
    if os.geteuid() != 0:
        return "not root: live tests load BPF programs"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not importable (Debian python3-bpfcc, venv with --system-site-packages)"
    return None


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """One workload at a time on this machine, across processes.

    The same lock the examples/ workloads take, re-entrant within a thread,
    so a test holding it can run a workload in-process.
    """
    from trace_reclaim.examples._restore import machine_lock as workload_lock

    with workload_lock(timeout=1800):
        yield


def run_cli(args: List[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trace_reclaim", *args],
                          capture_output=True, text=True, timeout=timeout)


def report_json(path: str) -> Dict[str, Any]:
    r = run_cli(["report", "-j", path])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class Trace:
    """``with Trace(tmp_path) as t: workload()`` then ``t.report`` (the -j document)."""

    def __init__(self, directory: str, args: Optional[List[str]] = None,
                 live: bool = False, ready_timeout: Optional[float] = None,
                 report: bool = True) -> None:
        self.path = os.path.join(directory, f"trace-{time.monotonic_ns()}.trc")
        self.args = args or []
        self.live = live
        # A BPF compile under emulation (the VM tier) takes minutes:
        # tests/vm/guest.sh raises the default there.
        self.ready_timeout = ready_timeout or float(
            os.environ.get("TRACE_RECLAIM_READY_TIMEOUT", "60"))
        self.proc: Optional[subprocess.Popen] = None
        self.stdout = ""
        self.stderr = ""
        self.report: Dict[str, Any] = {}
        self.want_report = report   # False: the caller replays the recording itself
        self._interrupted = False

    def __enter__(self) -> Trace:
        cmd = [sys.executable, "-m", "trace_reclaim",
               "live" if self.live else "record", "-o", self.path, *self.args]
        self._err = tempfile.TemporaryFile(mode="w+")
        self._out = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, text=True)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            text = read_shared(self._err)
            # Every tracer attached, not just the reclaim programs that attach
            # first: tests count slab, vmalloc, oom and memcg events too.
            if all_attached(text):
                time.sleep(0.3)  # the start snapshots follow the attach
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError(f"trace-reclaim did not start: {read_shared(self._err)}")

    def interrupt(self) -> None:
        """Ctrl-C, once: the trace ends (its end counters are read at once)."""
        assert self.proc is not None
        if not self._interrupted and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self._interrupted = True

    def __exit__(self, *exc: Any) -> None:
        assert self.proc is not None
        self.interrupt()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._err.seek(0)
        self._out.seek(0)
        self.stderr = self._err.read()
        self.stdout = self._out.read()
        self.returncode = self.proc.returncode
        if exc[0] is None:
            assert self.returncode == 0, self.stderr
            if self.want_report:
                self.report = report_json(self.path)


def read_shared(f: IO[str]) -> str:
    """What a running child has written so far to ``f``, a file it shares with us.

    Not ``f.seek(0); f.read()``: the child's fd and ours are one open file
    description with one offset, and a write of the child's between our
    seek and our read lands at offset 0, over what it wrote first (a VM run
    lost trace-reclaim's "Tracing reclaim" line that way, and with it the
    list of tracers still attaching).  pread leaves the offset alone.
    """
    fd = f.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")


def direct_reclaim_passes(totals: Dict[str, Any]) -> int:
    """The report's direct-reclaim passes, each one ALLOCSTALL in the kernel:
    stalls and their retries, and those still in reclaim at the end."""
    return (totals["direct_reclaim_stalls"] + totals["direct_reclaim_retries"]
            + totals["direct_reclaim_in_flight"] + totals["direct_reclaim_in_flight_retries"])


def passes_match_allocstall(totals: Dict[str, Any], allocstall: int) -> bool:
    """The kernel's count is the report's passes, plus those of the stalls the
    report says began while the end counters were read (it cannot know)."""
    passes = direct_reclaim_passes(totals)
    return passes <= allocstall <= passes + totals["direct_reclaim_begun_during_end_read"]


DELAYACCT = "/proc/sys/kernel/task_delayacct"


def delayacct() -> str:
    """kernel.task_delayacct as it reads now ("0" or "1")."""
    with open(DELAYACCT) as f:
        return f.read().strip()


def vmstat() -> Dict[str, int]:
    from trace_reclaim.procfs import ProcFS
    return ProcFS().vmstat()


def text_of(stream: io.StringIO) -> str:
    return stream.getvalue()


def opt_in_tier(config: Any, items: List[Any], directory: str, marker: str,
                also: Sequence[str] = ()) -> None:
    """Mark the tests under ``directory`` with ``marker`` (and ``also``, e.g. live)
    and leave them out unless ``-m`` selects ``marker`` (not ``not marker``).

    For tiers that boot VMs or need a stock kernel: a plain ``pytest`` or
    ``-m live`` run never collects them by accident.
    """
    here = os.path.join(os.path.abspath(directory), "")
    mine = [i for i in items if str(i.fspath).startswith(here)]
    for item in mine:
        for name in (marker, *also):
            item.add_marker(getattr(pytest.mark, name))
    expr = config.option.markexpr or ""
    if not (re.search(rf"\b{marker}\b", expr) and not re.search(rf"\bnot\s+{marker}\b", expr)):
        keep = [i for i in items if not str(i.fspath).startswith(here)]
        if len(keep) != len(items):
            config.hook.pytest_deselected(items=mine)
            items[:] = keep


class PerfStat:
    """``perf stat -a`` counting ``tracepoints`` for the block: ``counts`` after it.

    Started before the block (every event open on every CPU, read from the
    perf process's fds), ended with SIGINT after it, when perf writes its
    counts; a tracepoint perf did not count is absent from ``counts``.
    """

    def __init__(self, tracepoints: Sequence[str], timeout: float = 120.0) -> None:
        self.tracepoints = list(tracepoints)
        self.timeout = timeout
        self.counts: Dict[str, int] = {}
        self.stderr = ""

    def __enter__(self) -> PerfStat:
        self._out = tempfile.NamedTemporaryFile(mode="w+", suffix=".csv")
        self._err = tempfile.TemporaryFile(mode="w+")
        argv = ["perf", "stat", "-a", "-x,", "-o", self._out.name]
        for tp in self.tracepoints:
            argv += ["-e", tp]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._err)
        want = len(self.tracepoints) * (os.cpu_count() or 1)
        deadline = time.monotonic() + self.timeout
        while len(perf_event_fds(self.proc.pid)) < want:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"perf stat did not start: {read_shared(self._err)}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr = read_shared(self._err)
        self._out.seek(0)
        for line in self._out.read().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2] in self.tracepoints and fields[0].isdigit():
                self.counts[fields[2]] = int(fields[0])
        self._out.close()


def perf_event_fds(pid: int) -> List[int]:
    """The fds of ``pid`` that are perf events (none if it is gone)."""
    out = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == "anon_inode:[perf_event]":
                out.append(int(name))
        except OSError:
            pass
    return out


class Terminal:
    """A command on a pseudo-terminal of its own (its controlling tty), output collected."""

    def __init__(self, argv: List[str], stderr_on_tty: bool = False) -> None:
        master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO  # no "^C" echoed into the output we parse
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        self.master = master
        self.out = bytearray()
        self._lock = threading.Lock()

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        # stderr on the terminal too, as for a user; or a pipe, to read it whatever
        # becomes of the terminal.
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave,
                                     stderr=slave if stderr_on_tty else subprocess.PIPE,
                                     preexec_fn=controlling_tty, cwd=ROOT)
        os.close(slave)
        self._closed = False
        self._stop = threading.Event()
        self.err = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        # Never blocked in read(): hang_up() must be the terminal's last user.
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.1)[0]:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            with self._lock:
                self.out.extend(data)

    def _read_err(self) -> None:
        if self.proc.stderr is None:
            return
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):  # type: ignore
            with self._lock:
                self.err.extend(chunk)

    def frames(self) -> int:
        with self._lock:
            return self.out.count(HOME_CLEAR.encode())

    def text(self) -> str:
        """The terminal's output so far (the terminal turns each \\n into \\r\\n)."""
        with self._lock:
            return self.out.decode("utf-8", "replace").replace("\r\n", "\n")

    def err_text(self) -> str:
        """What the command wrote to stderr so far, when it is not the terminal."""
        with self._lock:
            return self.err.decode("utf-8", "replace")

    def hang_up(self) -> None:
        """What a dropped ssh connection does: sshd closes the terminal's master
        side, and the kernel hangs it up (SIGHUP to the session, EIO on writes)."""
        self._stop.set()
        self._reader.join(10)
        self._closed = True
        os.close(self.master)

    def wait_frames(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.frames() < n:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self._err_reader.join(10)
                raise AssertionError(f"{self.frames()} frames, wanted {n}: "
                                     f"{self.err_text()!r}")
            time.sleep(0.1)

    def ctrl_c(self) -> None:
        """What the Ctrl-C key does: the terminal sends SIGINT to its foreground group."""
        os.write(self.master, b"\x03")

    def finish(self, timeout: float = 120) -> Tuple[int, str, str]:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(10)
        self._err_reader.join(10)
        if not self._closed:
            self._stop.set()
            os.close(self.master)
            self._closed = True
        return rc, self.text(), self.err_text()


class Background:
    """A command run beside the test: its stderr in a file read as it grows
    (``err_text``), killed at exit if it still runs, its stderr then in
    ``stderr``.  ``ignore`` lists signals it starts with ignored, as under
    ``nohup`` (SIGHUP) or as a background job of a shell without job control
    (SIGINT)."""

    def __init__(self, argv: List[str], ignore: Sequence[int] = (), **popen: Any) -> None:
        self.argv = argv
        self.ignore = tuple(ignore)
        self.popen = dict(popen)
        self.stderr = ""

    def __enter__(self) -> Background:
        self._err = tempfile.TemporaryFile(mode="w+")
        ignore = self.ignore

        def ignored() -> None:
            for sig in ignore:
                signal.signal(sig, signal.SIG_IGN)

        self.popen.setdefault("stdout", subprocess.DEVNULL)
        self.proc = subprocess.Popen(self.argv, stderr=self._err, text=True,
                                     preexec_fn=ignored if ignore else None, **self.popen)
        return self

    def err_text(self) -> str:
        return read_shared(self._err)

    def wait_attached(self, timeout: float = 60.0) -> None:
        """Until every tracer is attached (all_attached) and the start snapshots follow."""
        deadline = time.monotonic() + timeout
        while not all_attached(self.err_text()):
            assert self.proc.poll() is None, f"exited: {self.err_text()}"
            assert time.monotonic() < deadline, f"not attached: {self.err_text()}"
            time.sleep(0.05)
        time.sleep(0.3)

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr = read_shared(self._err)
        self._err.close()
