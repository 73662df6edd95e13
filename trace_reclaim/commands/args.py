"""Argument types the command line shares (bad values become usage errors)."""

from __future__ import annotations

import argparse
from typing import Any, Callable

__all__ = ["positive", "power_of_two"]


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``kind(s)``, which must be a number above 0 (not NaN)."""
    def parse(s: str) -> Any:
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be positive: {s!r}")
        return v
    return parse


def power_of_two(s: str) -> int:
    """An argparse type: a positive power of two (ring buffer pages)."""
    v = positive(int)(s)
    if v & (v - 1):
        raise argparse.ArgumentTypeError(f"must be a power of two: {s!r}")
    return int(v)
