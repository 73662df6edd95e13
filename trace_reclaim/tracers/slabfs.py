"""Read SLUB's own accounting: /sys/kernel/slab, dentry/inode state, /dev/kmsg.

Everything here runs only inside ``SlabTracer.sample()`` in a live session;
what it returns is recorded, so replay needs none of it.

/sys/kernel/slab (CONFIG_SYSFS, SLUB) has one directory per real cache and
one symlink per alias.  A mergeable cache's directory is named by its
properties (``:0000056``) and its creator's name is a symlink to it; every
later cache merged into it (``__kmem_cache_alias()``) adds another symlink
and raises the directory's ``aliases`` count.  kmem_cache_destroy() of an
alias only drops that count: the symlink stays (stale) and the merged
cache lives on.  kernfs gives a re-created link a new inode number, which is
how a re-created alias with the same name and target is told apart.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

__all__ = ["SYS_SLAB", "read_sys_slab", "parse_dentry_state", "parse_inode_state",
           "KmsgReader", "SLAB_WARNINGS", "parse_slabs_cpu_partial"]

SYS_SLAB = "/sys/kernel/slab"
# Per-cache files read in a full snapshot (start, end, and for caches asked for).
_FULL_FILES = ("objects", "objects_partial", "total_objects", "objs_per_slab",
               "cpu_partial", "reclaim_account", "destroy_by_rcu", "object_size")
# The kernel's warning when a cache is destroyed with live objects (mm/slab_common.c:
# "kmem_cache_destroy %s: Slab cache still has objects when called from %pS").
SLAB_WARNINGS = ("Slab cache still has objects",)
MAX_KMSG_LINES = 64


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            first = f.read(64).split()
    except OSError:
        return None
    if not first:
        return None
    try:
        return int(first[0])
    except ValueError:
        return None


def parse_slabs_cpu_partial(text: str) -> Optional[int]:
    """Objects in per-CPU partial slabs: ``slabs_cpu_partial`` is "N(M) C0=..."."""
    head = text.split()[0] if text.split() else ""
    try:
        return int(head.split("(")[0])
    except ValueError:
        return None


def read_sys_slab(root: str = SYS_SLAB, full: bool = False,
                  only: Optional[List[str]] = None) -> Dict[str, Any]:
    """Snapshot /sys/kernel/slab: {"caches": {dir: {...}}, "links": {name: [target, ino]}}.

    Each cache has its kernfs ``ino`` and ``aliases``; ``full`` (or a name in
    ``only``, a directory or a link to one) adds objects, objects_partial,
    reclaim_account, destroy_by_rcu and the per-CPU slab sizes.
    """
    caches: Dict[str, Dict[str, Any]] = {}
    links: Dict[str, List[Any]] = {}
    try:
        names = os.listdir(root)
    except OSError:
        return {"caches": caches, "links": links, "readable": False}
    want = set(only or ())
    for name in names:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if os.path.islink(path):
            try:
                target = os.path.basename(os.readlink(path))
            except OSError:
                continue
            links[name] = [target, st.st_ino]
        else:
            caches[name] = {"ino": st.st_ino, "aliases": _read_int(os.path.join(path, "aliases"))}
    for name, (target, _ino) in links.items():
        if name in want and target in caches:
            want.add(target)
    for name, c in caches.items():
        if full or name in want:
            path = os.path.join(root, name)
            for f in _FULL_FILES:
                c[f] = _read_int(os.path.join(path, f))
            try:
                with open(os.path.join(path, "slabs_cpu_partial")) as fh:
                    c["cpu_partial_objs"] = parse_slabs_cpu_partial(fh.read())
            except OSError:
                c["cpu_partial_objs"] = None
    return {"caches": caches, "links": links, "readable": True}


def parse_dentry_state(text: str) -> Dict[str, int]:
    """/proc/sys/fs/dentry-state: nr_dentry, nr_unused (on the LRU), nr_negative."""
    v = [int(x) for x in text.split()]
    out = {"nr_dentry": v[0], "nr_unused": v[1]} if len(v) >= 2 else {}
    if len(v) >= 5:
        out["nr_negative"] = v[4]
    return out


def parse_inode_state(text: str) -> Dict[str, int]:
    """/proc/sys/fs/inode-state: nr_inodes, nr_free_inodes (unused)."""
    v = [int(x) for x in text.split()]
    return {"nr_inodes": v[0], "nr_unused": v[1]} if len(v) >= 2 else {}


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
