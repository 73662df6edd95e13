"""Argument types the command line shares (bad values become usage errors)."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Optional

__all__ = ["positive", "power_of_two", "INTERVAL_S", "DURATION_MAX_S"]


def positive(kind: Callable[[str], Any], least: Optional[float] = None,
             most: Optional[float] = None) -> Callable[[str], Any]:
    """An argparse type: ``kind(s)``, which must be a number above 0 (not NaN),
    and within ``least`` and ``most`` where given (infinity never is)."""
    def parse(s: str) -> Any:
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be positive: {s!r}")
        if least is not None and v < least:
            raise argparse.ArgumentTypeError(f"must be at least {least:g}: {s!r}")
        if most is not None and not v <= most:
            raise argparse.ArgumentTypeError(f"must be at most {most:g}: {s!r}")
        return v
    return parse


#: Seconds between rows: a tick reads /proc and the BPF maps, so not a busy
#: loop, and not so long that a row's figures overflow what they count in.
INTERVAL_S = (0.01, 86400.0)
#: Seconds a trace may be asked to last: finite (about 31 years).
DURATION_MAX_S = 1e9


#: Ring buffer pages at most: 1 GiB of 4 KiB pages (the kernel refuses a
#: ring buffer map of 4 GiB or more with EINVAL, a message about nothing).
RINGBUF_PAGES_MAX = 1 << 18


def power_of_two(s: str) -> int:
    """An argparse type: a positive power of two (ring buffer pages), at most
    RINGBUF_PAGES_MAX."""
    v = positive(int, most=RINGBUF_PAGES_MAX)(s)
    if v & (v - 1):
        raise argparse.ArgumentTypeError(f"must be a power of two: {s!r}")
    return int(v)
