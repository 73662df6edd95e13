"""kmem_cache lifecycle from /sys/kernel/slab snapshots, and merged-cache names.

There is no tracepoint for kmem_cache_create()/kmem_cache_destroy().  Where
fentry does not load, creations and destructions are found by comparing two
``sysfs.read_sys_slab()`` snapshots, so their time is known only to the
interval.  SLUB merges compatible caches (``__kmem_cache_alias()``, unless
``slab_nomerge`` or SLAB_NEVER_MERGE flags): the merged cache's directory is
named by its properties (``:0000056``) and every name that shares it is a
symlink, so a name here is resolved to the one /proc/slabinfo shows.
Pure: snapshots in, events out (unit-tested on synthetic snapshots).
"""

from __future__ import annotations

from typing import Any, Dict, List, Set, Tuple

__all__ = ["root_name", "diff_lifecycle"]


def root_name(sysfs: Dict[str, Any], target: str, slabinfo: Set[str]) -> str:
    """The name /proc/slabinfo shows for merged cache directory ``target``."""
    if not target.startswith(":"):
        return target
    names = sorted(n for n, (t, _i) in sysfs.get("links", {}).items() if t == target)
    for n in names:
        if n in slabinfo:
            return n
    return names[0] if names else target


def diff_lifecycle(prev: Dict[str, Any], cur: Dict[str, Any], ts_ns: int,
                   prev_ts_ns: int, slabinfo: Set[str],
                   destroyed_aliases: Set[Tuple[str, int]]) -> List[Dict[str, Any]]:
    """Cache creations and destructions between two /sys/kernel/slab snapshots.

    ``prev``/``cur`` are ``sysfs.read_sys_slab()`` documents.  A new
    directory, or a new (or re-created: new kernfs inode) symlink, is a
    creation; a vanished directory a destruction.  A merged directory whose
    ``aliases`` count fell lost an alias: the kernel leaves that alias's
    symlink in place, so the alias is inferred (newest link first) and
    ``destroyed_aliases`` (name, inode) remembers it.
    """
    out: List[Dict[str, Any]] = []
    pc, cc = prev.get("caches", {}), cur.get("caches", {})
    pl, cl = prev.get("links", {}), cur.get("links", {})

    def ev(name: str, event: str, **kw: Any) -> Dict[str, Any]:
        d = {"name": name, "event": event, "ts_ns": ts_ns, "after_ns": prev_ts_ns,
             "alias_of": None, "merged_dir": None, "shared_by": None,
             "objects_at_destroy": None, "stale_link": False, "note": ""}
        d.update(kw)
        return d

    new_dirs = [d for d in cc if d not in pc or cc[d].get("ino") != pc[d].get("ino")]
    gone_dirs = [d for d in pc if d not in cc or cc[d].get("ino") != pc[d].get("ino")]
    for d in sorted(gone_dirs):
        names = sorted(n for n, (t, _i) in pl.items() if t == d)
        name = d if not d.startswith(":") else root_name(prev, d, slabinfo)
        left = [n for n in names if n in cl]
        out.append(ev(name, "destroy", merged_dir=d if d.startswith(":") else None,
                      objects_at_destroy=pc[d].get("objects"),
                      stale_link=bool(left),
                      note=("its alias link{} {} left dangling".format(
                          "s" if len(left) > 1 else "", ", ".join(left))) if left else ""))
    created_links = {n for n, (t, ino) in cl.items() if n not in pl or pl[n][1] != ino}
    for d in sorted(new_dirs):
        if d.startswith(":"):
            links = sorted(n for n in created_links if cl[n][0] == d)
            name = links[0] if links else root_name(cur, d, slabinfo)
            out.append(ev(name, "create", merged_dir=d, shared_by=1,
                          note=f"new mergeable cache {d}"))
            created_links -= set(links)
        else:
            out.append(ev(d, "create"))
    for n in sorted(created_links):
        t = cl[n][0]
        if t in cc and t in pc and cc[t].get("ino") == pc[t].get("ino"):
            aliases = cc[t].get("aliases")
            out.append(ev(n, "create", alias_of=root_name(cur, t, slabinfo), merged_dir=t,
                          shared_by=(aliases + 1) if aliases is not None else None,
                          note=f"merged into existing cache {t}"))
    # Aliases gone from a surviving merged directory.
    for d in sorted(set(pc) & set(cc)):
        if d in new_dirs or not d.startswith(":"):
            continue
        a0, a1 = pc[d].get("aliases"), cc[d].get("aliases")
        if a0 is None or a1 is None or a1 >= a0:
            continue
        cands = sorted(((ino, n) for n, (t, ino) in cl.items()
                        if t == d and (n, ino) not in destroyed_aliases), reverse=True)
        root = root_name(cur, d, slabinfo)
        cands = [c for c in cands if c[1] != root]
        for i in range(a0 - a1):
            if i < len(cands):
                ino, n = cands[i]
                destroyed_aliases.add((n, ino))
                out.append(ev(n, "destroy", alias_of=root, merged_dir=d, shared_by=a1 + 1,
                              stale_link=True,
                              note=f"alias destroyed (inferred from {d} aliases {a0} -> {a1}); "
                                   f"merged cache {d} lives on"))
            else:
                out.append(ev("?", "destroy", alias_of=root, merged_dir=d, shared_by=a1 + 1,
                              note=f"an alias of {d} went; the kernel did not say which"))
    return out
