"""Read the kernel log for slab caches destroyed with live objects: /dev/kmsg.

kmem_cache_destroy() of a cache that still has objects warns (mm/slab_common.c:
"kmem_cache_destroy %s: Slab cache still has objects when called from %pS")
and keeps the cache.  ``KmsgReader`` runs only inside ``SlabTracer.sample()``
in a live session (it needs read access to /dev/kmsg, CONFIG_PRINTK); the
lines it keeps are recorded, and ``destroyed_with_objects()`` reads them back
on replay.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

__all__ = ["KmsgReader", "SLAB_WARNINGS", "MAX_KMSG_LINES", "destroyed_with_objects"]

# The kernel's warning when a cache is destroyed with live objects (mm/slab_common.c:
# "kmem_cache_destroy %s: Slab cache still has objects when called from %pS").
SLAB_WARNINGS = ("Slab cache still has objects",)
MAX_KMSG_LINES = 64


class KmsgReader:
    """Read new /dev/kmsg records since trace start, without blocking.

    Keeps only lines about slab caches (``SLAB_WARNINGS``), bounded.
    """

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self.fd: Optional[int] = None
        self.error = ""
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError as e:
            self.error = f"{path}: {e.strerror}"
            self.close()

    def read(self) -> List[str]:
        out: List[str] = []
        if self.fd is None:
            return out
        for _ in range(10000):
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == 32:  # EPIPE: records overwritten; go on
                    continue
                break
            if not rec:
                break
            text = rec.decode("utf-8", "replace")
            msg = text.split(";", 1)[1].split("\n", 1)[0] if ";" in text else text
            if any(w in msg for w in SLAB_WARNINGS) and len(out) < MAX_KMSG_LINES:
                out.append(msg.strip())
        return out

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def destroyed_with_objects(lines: List[str]) -> Dict[str, Dict[str, Any]]:
    """Caches the kernel warned about, by name: {name: {"why": the line}}."""
    destroyed: Dict[str, Dict[str, Any]] = {}
    for line in lines:
        # "kmem_cache_destroy NAME: Slab cache still has objects when called from ..."
        head = line.split(":", 1)[0].split()
        if len(head) >= 2:
            destroyed[head[-1]] = {"why": line[:160]}
    return destroyed
