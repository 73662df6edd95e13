"""Capture what bcc, clang and libbpf print on file descriptor 2.

They write compiler warnings and verifier logs straight to fd 2, bypassing
sys.stderr; users should see ``error:``/``hint:`` lines, with the raw output
kept for ``--traceback``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

__all__ = ["Captured", "captured_stderr", "trim_heap"]


class Captured:
    text = ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[Captured]:
    cap = Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield cap
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            cap.text = tmp.read().decode("utf-8", "replace")


def trim_heap() -> None:
    """Give freed heap back to the kernel (glibc malloc_trim).

    A bcc compile leaves ~100 MiB of freed LLVM memory in the allocator; the
    tracer runs during memory incidents, so it returns it at once.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
