"""Put back every kernel setting a workload changes, on every exit path.

``Restorer`` is an ExitStack that remembers old values before it writes new
ones, and undoes them in reverse order with SIGINT/SIGTERM blocked, so a second
Ctrl-C cannot cut a restore short.  ``signals_to_exceptions`` turns SIGTERM
(and SIGHUP) into ``Terminated`` so ``finally`` blocks run when a test or a
shell kills the workload.  ``machine_lock`` serialises workloads that change
machine-wide state (nr_hugepages, swap), so two of them never restore each
other's values out of order.
"""

import contextlib
import errno
import fcntl
import os
import signal
import sys
import threading
import time

from trace_reclaim.examples import _proc
from trace_reclaim.procfs import ProcFS

__all__ = [
    "Terminated", "WorkloadError", "Restorer", "signals_to_exceptions",
    "sysctl", "hugetlb_ballast", "machine_lock", "run_cli", "ExitStatus",
]

PROC = ProcFS()  # the live system


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM or SIGHUP arrives.

    A BaseException, like KeyboardInterrupt, so ``except Exception`` in a
    workload does not swallow it.
    """

    def __init__(self, signum):
        super().__init__("terminated by signal %d" % signum)
        self.signum = signum


class WorkloadError(Exception):
    """A workload cannot run here; ``hint`` says what to do about it."""

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.hint = hint


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_terminated(signum, _frame):
    raise Terminated(signum)


@contextlib.contextmanager
def signals_to_exceptions():
    """Turn SIGTERM and SIGHUP into ``Terminated`` while the block runs.

    SIGINT already raises KeyboardInterrupt (unless someone set SIG_IGN; then
    it is set to the default handler for the duration).  Outside the main
    thread signal handlers cannot be set; the block then runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, _raise_terminated)
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
            old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_blocked():
    """Hold SIGINT/SIGTERM/SIGHUP pending while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Restorer(contextlib.ExitStack):
    """An ExitStack for kernel state: remember, change, and always put back.

    Use as ``with Restorer() as r: r.write(path, value)``.  The undo callback
    is registered *before* the new value is written, so a signal that arrives
    during the write still restores.  Undo runs in LIFO order with stop
    signals blocked; a failing undo is reported on stderr and the others still run.
    """

    def __init__(self, log=None):
        super().__init__()
        self.log = log if log is not None else (lambda msg: None)
        self.errors = []
        self._hugetlb_undo = False

    def __enter__(self):
        super().__enter__()
        self.enter_context(signals_to_exceptions())
        return self

    def __exit__(self, *exc):
        with _signals_blocked():
            return super().__exit__(*exc)

    def undo(self, description, func, *args, **kwargs):
        """Register ``func(*args, **kwargs)`` to run at exit; errors are kept, not raised."""
        def _run():
            try:
                func(*args, **kwargs)
                self.log("restored: %s" % description)
            except Exception as e:  # keep restoring the rest
                self.errors.append("%s: %s" % (description, e))
                print("error: could not restore %s: %s" % (description, e), file=sys.stderr)
        self.callback(_run)

    def write(self, path, value, restore_value=None):
        """Write ``value`` to ``path``; at exit write back the old (or ``restore_value``)."""
        old = PROC.value(path) if restore_value is None else str(restore_value)
        self.undo("%s = %s" % (path, old), _proc.write_value, path, old)
        _proc.write_value(path, value)
        return old

    def sysctl(self, name, value):
        """Set a sysctl by dotted or slash name (``vm.nr_hugepages``); restore at exit."""
        return self.write(_sysctl_path(name), value)

    def hugetlb_ballast(self, pages):
        """Ask for ``pages`` persistent hugetlb pages; return how many the kernel gave.

        The kernel allocates what it can (possibly fewer, possibly after
        compaction) and nr_hugepages reads back the real count.  The old value
        is restored at exit, which frees the pages back to the buddy allocator.
        Called again (to shrink or grow the ballast), it keeps the value from
        before the first call: one restore, straight back to it (restoring an
        intermediate size first could need memory that is no longer there).
        """
        path = "/proc/sys/vm/nr_hugepages"
        if not self._hugetlb_undo:
            old = PROC.nr_hugepages()
            self.undo("nr_hugepages = %d" % old, _write_nr_hugepages, old)
            self._hugetlb_undo = True
        try:
            _proc.write_value(path, int(pages))
        except OSError as e:
            # Partial allocation interrupted by a signal shows up as EINTR or ENOMEM
            # after some pages were taken; the undo above still frees them.
            if e.errno not in (errno.ENOMEM, errno.EINTR):
                raise
        return PROC.nr_hugepages()


def _write_nr_hugepages(value):
    path = "/proc/sys/vm/nr_hugepages"
    # Freeing can be cut short by a pending signal (set_max_huge_pages checks
    # signal_pending); signals are blocked during undo, but retry regardless.
    for _ in range(5):
        _proc.write_value(path, value)
        if PROC.nr_hugepages() == int(value):
            return
        time.sleep(0.05)
    raise OSError("nr_hugepages is %s, wanted %s" % (PROC.nr_hugepages(), value))


def _sysctl_path(name):
    if name.startswith("/"):
        return name
    return "/proc/sys/" + name.replace(".", "/")


@contextlib.contextmanager
def sysctl(name, value):
    """Set a sysctl for the duration of the block, then write back the old value."""
    with Restorer() as r:
        yield r.sysctl(name, value)


@contextlib.contextmanager
def hugetlb_ballast(pages):
    """Hold ``pages`` hugetlb pages for the block; yield the count actually obtained."""
    with Restorer() as r:
        yield r.hugetlb_ballast(pages)


_LOCK_PATH = "/run/lock/trace-reclaim-examples.lock"
_lock_state = threading.local()
#: A process started by a lock holder on its behalf finds the holder's lock fd here.
LOCK_FD_ENV = "TRACE_RECLAIM_LOCK_FD"


def _inherited_lock(path):
    """Whether this process inherited the lock: LOCK_FD_ENV names an open fd of ``path``.

    flock() locks belong to the open file description, which a child shares
    with the parent that holds it: the child runs inside the parent's lock.
    """
    try:
        fd = int(os.environ.get(LOCK_FD_ENV, ""))
        st, want = os.fstat(fd), os.stat(path)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino)


def lock_for_child():
    """(env, pass_fds) for a child process that should run inside this process's lock."""
    fd = getattr(_lock_state, "fd", None)
    if fd is None:
        raise RuntimeError("lock_for_child() outside machine_lock()")
    return dict(os.environ, **{LOCK_FD_ENV: str(fd)}), (fd,)


@contextlib.contextmanager
def machine_lock(timeout=120.0, path=_LOCK_PATH):
    """Hold an flock so only one workload changes machine-wide state at a time.

    Re-entrant within a process (fallback calls the vmalloc trigger, anon
    pressure uses a ballast), and inherited by a child started with
    ``lock_for_child()``.  Waits up to ``timeout`` seconds for another
    workload to finish.
    """
    depth = getattr(_lock_state, "depth", 0)
    if depth or _inherited_lock(path):
        _lock_state.depth = depth + 1
        try:
            yield
        finally:
            _lock_state.depth -= 1
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WorkloadError(
                        "another workload holds %s" % path,
                        "wait for it to finish, or check for a stuck process with fuser %s" % path
                    ) from None
                time.sleep(0.1)
        _lock_state.depth = 1
        _lock_state.fd = fd
        try:
            yield
        finally:
            _lock_state.depth = 0
            _lock_state.fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class ExitStatus:
    """Exit statuses of the workload CLIs."""
    OK = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130


def require_root():
    """Raise WorkloadError unless running as root."""
    if os.geteuid() != 0:
        raise WorkloadError("this workload changes kernel settings and needs root",
                            "run it with sudo, as root")


def run_cli(main_body, argv_traceback=False):
    """Run ``main_body()`` as a CLI: errors as error:/hint: on stderr, an exit status.

    ``main_body`` returns an exit status or None.  KeyboardInterrupt and
    Terminated exit with 130 / 128+signum after restores have run.
    """
    try:
        status = main_body()
        return ExitStatus.OK if status is None else status
    except KeyboardInterrupt:
        if argv_traceback:
            raise
        print("error: interrupted; kernel settings were restored", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except Terminated as e:
        if argv_traceback:
            raise
        print("error: %s; kernel settings were restored" % e, file=sys.stderr)
        return 128 + e.signum
    except WorkloadError as e:
        if argv_traceback:
            raise
        print("error: %s" % e, file=sys.stderr)
        if e.hint:
            print("hint: %s" % e.hint, file=sys.stderr)
        return ExitStatus.ERROR
    except OSError as e:
        if argv_traceback:
            raise
        print("error: %s" % e, file=sys.stderr)
        hint = "run as root" if e.errno in (errno.EPERM, errno.EACCES) else \
            "check the kernel supports this workload (see shared/KERNEL-FACTS.md)"
        print("hint: %s" % hint, file=sys.stderr)
        return ExitStatus.ERROR


def common_args(p):
    """Add every workload's shared options: -j/--json and the hidden --traceback."""
    import argparse

    p.add_argument("-j", "--json", action="store_true", help="print the result as JSON")
    p.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)


def progress_log(args):
    """Where progress lines go: stderr when stdout carries the JSON result."""
    return (lambda m: print(m, file=sys.stderr)) if args.json else print
