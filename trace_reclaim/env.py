"""What every command shares: exit statuses, user errors, the environment.

The core raises ``UserError`` for problems a user can fix; the CLI prints it
as ``error:``/``hint:`` on stderr and exits with its status.  ``Environment``
is everything a command touches outside itself (stdio, /proc, the BPF
factory, the root check), injectable so tests run commands in-process
(HTTPie's ``Environment``).  Nothing here imports the CLI or a tracer.
"""

from __future__ import annotations

import enum
import errno
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, TextIO, Tuple

from trace_reclaim.probe import Probe
from trace_reclaim.procfs import ProcFS

__all__ = ["ExitStatus", "UserError", "Environment", "output_gone", "silence",
           "signals_to_catch"]


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix: printed as error:/hint:, never a traceback."""

    def __init__(self, message: str, hint: str = "",
                 status: ExitStatus = ExitStatus.ERROR) -> None:
        super().__init__(message)
        self.hint = hint
        self.status = status


def signals_to_catch(signals: Tuple[int, ...]) -> Dict[int, Any]:
    """Of ``signals``, those to catch now, each with its current handler.

    A SIGHUP ignored when we started stays ignored: ``nohup trace-reclaim
    record ...`` asked to outlive its terminal.  SIGINT and SIGTERM are
    caught even when ignored (a background job of a shell without job
    control starts with SIGINT ignored; ``run`` stops its recorder with it).
    """
    return {s: h for s in signals
            if (h := signal.getsignal(s)) is not signal.SIG_IGN or s != signal.SIGHUP}


def output_gone(e: OSError) -> bool:
    """Whether ``e`` says our reader went away: a pipe's (``live | head``,
    EPIPE) or the terminal's, hung up (EIO after an ssh session dropped)."""
    return isinstance(e, BrokenPipeError) or e.errno in (errno.EPIPE, errno.EIO)


def silence(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null, so that what it still
    buffers is dropped at exit instead of failing again (Python's advice for
    a closed pipe); a stream without one (a test's) is left alone."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):
        return
    os.dup2(null, fd)
    os.close(null)


@dataclass
class Environment:
    """What a command touches outside itself, injectable for in-process tests."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    procfs: ProcFS = field(default_factory=ProcFS)
    bpf_factory: Optional[Callable[..., Any]] = None
    is_root: Callable[[], bool] = field(default_factory=lambda: Probe.is_root)

    def bpf(self) -> Callable[..., Any]:
        """bcc's ``BPF`` class (or a test's stand-in); UserError when bcc is missing."""
        if self.bpf_factory is None:
            from trace_reclaim.objects import SessionError, default_bpf_factory
            try:
                self.bpf_factory = default_bpf_factory()
            except SessionError as e:
                raise UserError(str(e), e.hint) from e
        return self.bpf_factory

    def stdout_tty(self) -> bool:
        isatty = getattr(self.stdout, "isatty", None)
        return bool(isatty and isatty())

    def warn(self, msg: str) -> None:
        self.tell(f"warning: {msg}")

    def tell(self, *lines: str) -> None:
        """Lines on stderr, if anyone is still there to read them (a hung-up
        terminal says EIO): what goes unsaid then is never the only record."""
        try:
            for line in lines:
                print(line, file=self.stderr, flush=True)
        except OSError as e:
            if not output_gone(e):
                raise
            silence(self.stderr)
