"""Name gfp_t flag values the way the kernel's tracepoints print them.

The bit of each ``__GFP_*`` flag moves between kernel versions, so the live
session reads the running kernel's bits from a tracepoint format file
(``parse_format_bits``) and stores them in the recording header; ``names``
then needs no kernel.  ``DEFAULT_BITS`` is Linux 6.12-6.18's layout, used
only when a recording has none.
"""

from __future__ import annotations

import re
from typing import Dict, List

__all__ = ["DEFAULT_BITS", "parse_format_bits", "names"]

DEFAULT_BITS: Dict[str, int] = {
    "__GFP_DMA": 0, "__GFP_HIGHMEM": 1, "__GFP_DMA32": 2, "__GFP_MOVABLE": 3,
    "__GFP_RECLAIMABLE": 4, "__GFP_HIGH": 5, "__GFP_IO": 6, "__GFP_FS": 7,
    "__GFP_ZERO": 8, "__GFP_DIRECT_RECLAIM": 10, "__GFP_KSWAPD_RECLAIM": 11,
    "__GFP_WRITE": 12, "__GFP_NOWARN": 13, "__GFP_RETRY_MAYFAIL": 14,
    "__GFP_NOFAIL": 15, "__GFP_NORETRY": 16, "__GFP_MEMALLOC": 17,
    "__GFP_COMP": 18, "__GFP_NOMEMALLOC": 19, "__GFP_HARDWALL": 20,
    "__GFP_THISNODE": 21, "__GFP_ACCOUNT": 22, "__GFP_ZEROTAGS": 23,
}

_BIT_RE = re.compile(r"<< \((\d+)\)\)\), \"(__GFP_\w+)\"")

# Composite names in the order include/trace/events/mmflags.h tries them,
# each as the set of single flags it is made of.
_COMPOSITES = [
    ("GFP_TRANSHUGE", ("__GFP_IO", "__GFP_FS", "__GFP_HARDWALL", "__GFP_HIGHMEM",
                       "__GFP_MOVABLE", "__GFP_COMP", "__GFP_NOMEMALLOC", "__GFP_NOWARN",
                       "__GFP_DIRECT_RECLAIM")),
    ("GFP_TRANSHUGE_LIGHT", ("__GFP_IO", "__GFP_FS", "__GFP_HARDWALL", "__GFP_HIGHMEM",
                             "__GFP_MOVABLE", "__GFP_COMP", "__GFP_NOMEMALLOC",
                             "__GFP_NOWARN")),
    ("GFP_HIGHUSER_MOVABLE", ("__GFP_DIRECT_RECLAIM", "__GFP_KSWAPD_RECLAIM", "__GFP_IO",
                              "__GFP_FS", "__GFP_HARDWALL", "__GFP_HIGHMEM",
                              "__GFP_MOVABLE")),
    ("GFP_HIGHUSER", ("__GFP_DIRECT_RECLAIM", "__GFP_KSWAPD_RECLAIM", "__GFP_IO",
                      "__GFP_FS", "__GFP_HARDWALL", "__GFP_HIGHMEM")),
    ("GFP_USER", ("__GFP_DIRECT_RECLAIM", "__GFP_KSWAPD_RECLAIM", "__GFP_IO", "__GFP_FS",
                  "__GFP_HARDWALL")),
    ("GFP_KERNEL_ACCOUNT", ("__GFP_DIRECT_RECLAIM", "__GFP_KSWAPD_RECLAIM", "__GFP_IO",
                            "__GFP_FS", "__GFP_ACCOUNT")),
    ("GFP_KERNEL", ("__GFP_DIRECT_RECLAIM", "__GFP_KSWAPD_RECLAIM", "__GFP_IO", "__GFP_FS")),
    ("GFP_NOFS", ("__GFP_DIRECT_RECLAIM", "__GFP_KSWAPD_RECLAIM", "__GFP_IO")),
    ("GFP_ATOMIC", ("__GFP_HIGH", "__GFP_KSWAPD_RECLAIM")),
    ("GFP_NOIO", ("__GFP_DIRECT_RECLAIM", "__GFP_KSWAPD_RECLAIM")),
    ("GFP_NOWAIT", ("__GFP_KSWAPD_RECLAIM", "__GFP_NOWARN")),
]


def parse_format_bits(format_text: str) -> Dict[str, int]:
    """Single-bit ``__GFP_*`` flags from a tracepoint ``format`` file's print fmt."""
    return {name: int(bit) for bit, name in _BIT_RE.findall(format_text)}


def names(value: int, bits: Dict[str, int] | None = None) -> str:
    """``value`` as ``GFP_KERNEL|__GFP_NOWARN``; unknown bits as hex; ``none`` for 0."""
    if not value:
        return "none"
    bits = bits or DEFAULT_BITS
    out: List[str] = []
    rest = value
    for name, parts in _COMPOSITES:
        if not all(p in bits for p in parts):
            continue
        mask = 0
        for p in parts:
            mask |= 1 << bits[p]
        if rest & mask == mask:
            out.append(name)
            rest &= ~mask
    for name, bit in sorted(bits.items(), key=lambda kv: kv[1]):
        if rest & (1 << bit):
            out.append(name)
            rest &= ~(1 << bit)
    if rest:
        out.append(hex(rest))
    return "|".join(out)
