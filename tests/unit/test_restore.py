"""The workloads' Restorer: what it puts back, and in what order (no root)."""

from __future__ import annotations

from trace_reclaim.examples import _restore


class _Kernel:
    """nr_hugepages as the kernel keeps it: growing is limited by free blocks."""

    def __init__(self, pages: int, free_blocks: int) -> None:
        self.pages, self.free = pages, free_blocks
        self.writes: list = []

    def write(self, path: str, value: object) -> None:
        assert path == "/proc/sys/vm/nr_hugepages"
        want = int(str(value))
        self.writes.append(want)
        grow = min(max(0, want - self.pages), self.free)
        self.free -= grow
        shrink = max(0, self.pages - want)
        self.free += shrink
        self.pages += grow - shrink


def test_a_ballast_resized_is_restored_once_straight_to_its_first_value(monkeypatch):
    k = _Kernel(pages=3, free_blocks=100)
    monkeypatch.setattr(_restore._proc, "write_value", k.write)
    monkeypatch.setattr(_restore.PROC, "nr_hugepages", lambda: k.pages)
    monkeypatch.setattr(_restore.time, "sleep", lambda s: None)
    with _restore.Restorer() as r:
        assert r.hugetlb_ballast(1000) == 103 and k.free == 0
        assert r.hugetlb_ballast(60) == 60  # shrunk for safety
        k.free -= 33                        # someone else takes memory meanwhile
        assert r.hugetlb_ballast(200) == 70
    # one restore, to the value before the first call; never back to 103
    # first, which the kernel could no longer give (a false "could not restore")
    assert k.writes[-1] == 3 and k.pages == 3 and r.errors == []
    assert k.writes.count(3) == 1
