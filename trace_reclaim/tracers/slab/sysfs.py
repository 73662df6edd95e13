"""Read SLUB's per-cache directories: /sys/kernel/slab.

Runs only inside ``SlabTracer.sample()`` in a live session; what it returns
is recorded, so replay needs none of it.

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

__all__ = ["SYS_SLAB", "read_sys_slab", "sample_sys_slab", "parse_slabs_cpu_partial"]

SYS_SLAB = "/sys/kernel/slab"
# Per-cache files read in a full snapshot (start, end, and for caches asked for).
_FULL_FILES = ("objects", "objects_partial", "total_objects", "objs_per_slab",
               "cpu_partial", "reclaim_account", "destroy_by_rcu", "object_size")


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
                  only: Optional[List[str]] = None,
                  prev: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Snapshot /sys/kernel/slab: {"caches": {dir: {...}}, "links": {name: [target, ino]}}.

    Each cache has its kernfs ``ino`` and ``aliases``; ``full`` (or a name in
    ``only``, a directory or a link to one) adds objects, objects_partial,
    reclaim_account, destroy_by_rcu and the per-CPU slab sizes.

    The structure comes from the directory listing alone: kernfs gives each
    entry's type and inode number there, so no entry is looked up (a lookup
    makes a dentry and an inode, again after every cache drop: the tracer's
    own footprint in the dentry and inode caches it reports on).  With
    ``prev`` (the last snapshot), a link seen there with the same inode keeps
    its target, and ``aliases`` is read again only where it can have changed
    without the listing changing: a directory whose count was above 0 (an
    alias destroyed leaves its link; every merge re-creates its link, which
    gives it a new inode number).  Any change in the listing reads it all.
    """
    caches: Dict[str, Dict[str, Any]] = {}
    links: Dict[str, List[Any]] = {}
    try:
        with os.scandir(root) as it:
            entries = [(e.name, e.is_symlink(), e.inode()) for e in it]
    except OSError:
        return {"caches": caches, "links": links, "readable": False}
    old_caches = prev["caches"] if prev else {}
    old_links = prev["links"] if prev else {}
    listing = {(name, link, ino) for name, link, ino in entries}
    same = prev is not None and not full and listing == {
        *((d, False, c["ino"]) for d, c in old_caches.items()),
        *((n, True, i) for n, (_t, i) in old_links.items())}
    want = set(only or ())
    for name, link, ino in entries:
        path = os.path.join(root, name)
        if link:
            old = old_links.get(name)
            if old is not None and old[1] == ino:
                links[name] = [old[0], ino]
                continue
            try:
                target = os.path.basename(os.readlink(path))
            except OSError:
                continue
            links[name] = [target, ino]
        else:
            old_aliases = old_caches.get(name, {}).get("aliases")
            if same and old_aliases == 0:
                caches[name] = {"ino": ino, "aliases": 0}
            else:
                caches[name] = {"ino": ino, "aliases": _read_int(os.path.join(path, "aliases"))}
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


def sample_sys_slab(procfs: Any, when: str, state: Dict[str, Any],
                    data: Dict[str, Any]) -> None:
    """Put /sys/kernel/slab into ``data`` when it is worth recording.

    Full at start and end; at ticks the structure (directories, links,
    ``aliases``) plus the attributes of the reclaimable caches, and only when
    the structure changed since ``state["sys_key"]``.
    """
    root = procfs.path(SYS_SLAB)
    sysfs = read_sys_slab(root, full=(when != "tick"), only=state["reclaimable"],
                          prev=state.get("sys_prev"))
    state["sys_prev"] = sysfs
    if when == "start":
        state["reclaimable"] = [d for d, a in sysfs["caches"].items()
                                if a.get("reclaim_account") == 1]
    key = (tuple(sorted((d, a["ino"], a["aliases"]) for d, a in sysfs["caches"].items())),
           tuple(sorted((n, t, i) for n, (t, i) in sysfs["links"].items())))
    if when != "tick" or key != state["sys_key"]:
        data["sys_slab"] = sysfs
    state["sys_key"] = key
