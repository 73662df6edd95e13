"""/proc/vmallocinfo: what the kernel lists of its vmalloc'd areas.

Read at the start and end of a live session (``read_vmallocinfo()``) and
recorded; the report sets the count change beside the traced allocs - frees.
/proc/vmallocinfo (mm/vmalloc.c s_show()) cannot show huge mappings: its
``pages=`` counts 4 KiB pages for a 2 MiB-mapped area too, and its addresses
are hashed, so areas are not matched one by one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Optional

__all__ = ["VMALLOCINFO_NOTE", "parse_vmallocinfo", "read_vmallocinfo"]

VMALLOCINFO_NOTE = ("/proc/vmallocinfo cannot show huge mappings: its pages= counts "
                    "4 KiB pages for a 2 MiB-mapped area too (and addresses are hashed)")


def parse_vmallocinfo(text: str) -> Dict[str, Any]:
    """Count /proc/vmallocinfo's busy vmalloc'd areas and pages, by caller symbol."""
    areas = 0
    pages = 0
    by_caller: Counter[str] = Counter()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or "-" not in parts[0] or "vmalloc" not in parts[3:]:
            continue
        areas += 1
        caller = parts[2].split("+", 1)[0]
        by_caller[caller] += 1
        for p in parts[3:]:
            if p.startswith("pages="):
                pages += int(p[6:])
    return {"areas": areas, "pages": pages, "by_caller": dict(by_caller.most_common(50))}


def read_vmallocinfo(procfs: Any) -> Optional[Dict[str, Any]]:
    """Return /proc/vmallocinfo parsed, or None when it cannot be read."""
    text = procfs.try_read("/proc/vmallocinfo")
    return parse_vmallocinfo(text) if text else None
