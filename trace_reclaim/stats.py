"""Bounded-memory latency statistics.

Exact while small, then a log-linear histogram (32 buckets per power of
two: percentiles within 3%), so a ten-minute incident cannot grow memory.
"""

from __future__ import annotations

from typing import Dict, Final, List, Optional, Tuple

__all__ = ["LatencyStats", "EXACT_CAP"]

EXACT_CAP: Final = 4096
_SUB: Final = 32


def _bucket(v: int) -> int:
    if v < _SUB:
        return v
    shift = v.bit_length() - 6  # keep 5 bits below the top bit
    return (shift << 5) + (v >> shift)


def _count_buckets(hist: Dict[int, int], values: List[int]) -> None:
    """Count each of ``values`` (non-negative) in its bucket: ``_bucket`` inlined."""
    for v in values:
        if v < _SUB:
            b = v
        else:
            shift = v.bit_length() - 6
            b = (shift << 5) + (v >> shift)
        hist[b] = hist.get(b, 0) + 1


def _bucket_low(b: int) -> int:
    if b < _SUB * 2:
        return b
    shift, top = divmod(b, _SUB)
    shift -= 1
    return (top + _SUB) << shift


class LatencyStats:
    """Count, total, min, max and percentiles of non-negative integers."""

    __slots__ = ("count", "total", "max", "min", "_exact", "_hist")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.max = 0
        self.min = 0
        self._exact: Optional[List[int]] = []
        self._hist: Dict[int, int] = {}

    def add(self, v: int) -> None:
        if v < 0:
            v = 0
        if v < self.min or not self.count:
            self.min = v
        if v > self.max:
            self.max = v
        self.count += 1
        self.total += v
        ex = self._exact
        if ex is not None:
            if len(ex) < EXACT_CAP:
                ex.append(v)
                return
            # Leaving exact mode: the histogram starts from every value so far
            # (while exact it is not needed, so it is not kept).
            self._exact = None
            _count_buckets(self._hist, ex)
        if v < _SUB:
            b = v
        else:
            shift = v.bit_length() - 6
            b = (shift << 5) + (v >> shift)
        hist = self._hist
        hist[b] = hist.get(b, 0) + 1

    def add_many(self, values: List[int]) -> None:
        """Add every one of ``values``: what as many ``add`` calls leave, in one go.

        For callers that batch a hot path's values (the order of values is
        not kept: nothing here depends on it).
        """
        if not values:
            return
        lo = min(values)
        if lo < 0:
            values = [v if v > 0 else 0 for v in values]
            lo = 0
        hi = max(values)
        if lo < self.min or not self.count:
            self.min = lo
        if hi > self.max:
            self.max = hi
        self.count += len(values)
        self.total += sum(values)
        ex = self._exact
        if ex is not None:
            if len(ex) + len(values) <= EXACT_CAP:
                ex.extend(values)
                return
            # Past the cap: the histogram starts from every value so far.
            self._exact = None
            values = ex + values
        _count_buckets(self._hist, values)

    @classmethod
    def merged(cls, parts: List[LatencyStats]) -> LatencyStats:
        """One LatencyStats of all values in ``parts`` (exact while they fit)."""
        out = cls()
        for s in parts:
            if not s.count:
                continue
            out.min = s.min if not out.count else min(out.min, s.min)
            out.max = max(out.max, s.max)
            out.count += s.count
            out.total += s.total
        exact: Optional[List[int]] = []
        for s in parts:
            if s._exact is None or exact is None:
                exact = None
            else:
                exact.extend(s._exact)
        if exact is not None and len(exact) <= EXACT_CAP:
            out._exact = exact
            return out
        out._exact = None
        hist = out._hist
        for s in parts:
            if s._exact is not None:
                _count_buckets(hist, s._exact)
            else:
                for b, n in s._hist.items():
                    hist[b] = hist.get(b, 0) + n
        return out

    @property
    def exact(self) -> bool:
        return self._exact is not None

    def percentile(self, p: float) -> int:
        """The smallest value with at least p% of values at or below it."""
        return self.percentiles((p,))[0]

    def percentiles(self, ps: Tuple[float, ...]) -> List[int]:
        """``percentile(p)`` of each of ``ps``, sorting the values once."""
        if not self.count:
            return [0 for _ in ps]
        ranks = [max(1, -(-self.count * p // 100)) for p in ps]  # ceil
        if self._exact is not None:
            ordered = sorted(self._exact)
            return [ordered[int(rank) - 1] for rank in ranks]
        buckets = sorted(self._hist.items())
        out = []
        for rank in ranks:
            value = self.max
            seen = 0
            for b, n in buckets:
                seen += n
                if seen >= rank:
                    value = min(max(_bucket_low(b), self.min), self.max)
                    break
            out.append(value)
        return out

    def summary(self) -> Dict[str, int]:
        p50, p99 = self.percentiles((50, 99))
        return {
            "count": self.count, "total": self.total, "max": self.max,
            "p50": p50, "p99": p99,
        }
