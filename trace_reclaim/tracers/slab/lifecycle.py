"""kmem_cache lifecycle: from the kernel's own calls, or /sys/kernel/slab snapshots.

There is no tracepoint for kmem_cache_create()/kmem_cache_destroy().  Where
fentry or kprobes reach them (``ExactLifecycle``), each creation, destruction
and shutdown is seen as it happens.  Elsewhere creations and destructions are
found by comparing two ``sysfs.read_sys_slab()`` snapshots, so their time is
known only to the interval.  SLUB merges compatible caches (``__kmem_cache_alias()``, unless
``slab_nomerge`` or SLAB_NEVER_MERGE flags): the merged cache's directory is
named by its properties (``:0000056``) and every name that shares it is a
symlink, so a name here is resolved to the one /proc/slabinfo shows.
Pure: snapshots in, events out (unit-tested on synthetic snapshots).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Set, Tuple

__all__ = ["root_name", "diff_lifecycle", "ExactLifecycle"]

MAX_EXACT_STATE = 512      # caches with aliases, destroys awaiting their shutdown


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


class ExactLifecycle:
    """Lifecycle events from the kernel's calls (fentry/kprobe plans).

    ``KmemCacheEvent`` records in, report events out through ``add``.  A
    creation that merged into an existing cache returns that cache: its own
    name and a refcount above 1 make it an alias.  kmem_cache_destroy() with a
    refcount above 1 only drops an alias's reference; the kernel is handed the
    merged cache, so which alias went is known only when one alias of it was
    created in the window.  __kmem_cache_shutdown()'s result, the kernel's own
    check, says whether a destroyed cache still had objects.  /sys/kernel/slab
    adds the merged directory an alias links to, and shows that a destroyed
    alias's link stays behind.  Pure: no kernel access.
    """

    def __init__(self, method: str, add: Callable[[Dict[str, Any]], None]) -> None:
        self.method = method
        self.how = method.split()[0] if method.split() else "fentry"
        self.add = add
        self.alias_names: Dict[int, List[str]] = {}   # cache -> aliases made in the window
        self.pending_shutdown: Dict[int, Dict[str, Any]] = {}  # cache -> its destroy
        self.unresolved: List[Dict[str, Any]] = []   # events awaiting sysfs facts
        self.created: Set[str] = set()

    def _event(self, name: str, event: str, ev: Any) -> Dict[str, Any]:
        return {"name": name, "event": event, "ts_ns": ev.ts_ns, "after_ns": ev.ts_ns,
                "alias_of": None, "merged_dir": None, "shared_by": None,
                "objects_at_destroy": None, "stale_link": False, "exact": True,
                "cache": f"0x{ev.cache:x}", "note": f"{self.how} (exact time)"}

    def _track(self, d: Dict[str, Any]) -> None:
        if len(self.unresolved) < MAX_EXACT_STATE:
            self.unresolved.append(d)

    def create(self, ev: Any) -> None:
        requested = ev.requested or ev.name
        alias = ev.refcount > 1 if ev.refcount >= 0 else ev.name != requested
        d = self._event(requested, "create", ev)
        if alias:
            d["alias_of"] = ev.name
            d["shared_by"] = ev.refcount if ev.refcount > 0 else None
            d["note"] = f"merged into existing cache {ev.name}; " + d["note"]
            names = self.alias_names.setdefault(ev.cache, [])
            if len(names) < 64 and len(self.alias_names) < MAX_EXACT_STATE:
                names.append(requested)
        if len(self.created) < MAX_EXACT_STATE:
            self.created.add(requested)
        self.add(d)
        self._track(d)

    def destroy(self, ev: Any, objects_last_seen: Optional[int]) -> None:
        if ev.refcount > 1:
            names = self.alias_names.get(ev.cache) or []
            if names:
                name = names.pop()
                who = "" if not names else \
                    f" (or another alias made in the window: {', '.join(names[:3])})"
            else:
                name = "?"
                who = " (an alias made before the trace: the kernel does not say which)"
            d = self._event(name, "destroy", ev)
            d.update(alias_of=ev.name, shared_by=ev.refcount - 1, shutdown_ok=None,
                     note=f"alias destroyed{who}: merged cache {ev.name} lives on; "
                          + d["note"])
            self.add(d)
            self._track(d)
            return
        d = self._event(ev.name, "destroy", ev)
        d["shutdown_ok"] = None
        if objects_last_seen is not None:
            d["objects_last_seen"] = objects_last_seen
        self.add(d)
        if len(self.pending_shutdown) < MAX_EXACT_STATE:
            self.pending_shutdown[ev.cache] = d

    def shutdown(self, ev: Any, counted: Callable[[str], Optional[int]]) -> None:
        """__kmem_cache_shutdown() returned ``ev.err``: 0 when no object was left.

        With objects left, their number is kmem_cache_alloc - kmem_cache_free
        counted for the cache (``counted``), when its whole life was in the
        window; else unknown.
        """
        d = self.pending_shutdown.pop(ev.cache, None)
        if d is None:
            return
        d["shutdown_ok"] = ev.err == 0
        if ev.err == 0:
            d["objects_at_destroy"] = 0
            d["note"] += "; empty when shut down"
            return
        if d["name"] in self.created:
            d["objects_at_destroy"] = counted(d["name"])
        d["note"] += "; objects left when shut down (__kmem_cache_shutdown failed)"

    def resolve(self, sysfs: Dict[str, Any]) -> None:
        """Add what /sys/kernel/slab shows: an alias's merged directory, a stale link."""
        links, caches = sysfs.get("links", {}), sysfs.get("caches", {})
        left = []
        for d in self.unresolved:
            link = links.get(d["name"])
            if link is not None:
                d["merged_dir"] = link[0]
                if d["event"] == "destroy":
                    d["stale_link"] = True   # the kernel leaves an alias's link behind
            elif d["event"] == "create" and d["name"] not in caches:
                left.append(d)               # not in sysfs yet
        self.unresolved = left
