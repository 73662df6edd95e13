"""Read cgroup filesystems: mounts, memory counters, id -> path, names people know.

Read-only: the tool never writes a cgroup (examples/_cgroup.py creates the
workloads' own).  Two hierarchies matter to memory reclaim:

- cgroup v2 ("unified"): ``bpf_get_current_cgroup_id()`` returns the id of the
  task's cgroup there (kernel/bpf/helpers.c: ``task_dfl_cgroup(current)->kn->id``)
  whether or not the memory controller is on v2.
- cgroup v1 with the memory controller (hybrid hierarchies, like this
  project's development machine): the memcg a task is charged to is its
  cgroup in the v1 ``memory`` hierarchy, a different id.

A cgroup's id is its kernfs node id, which is the inode number of its
directory on 64-bit kernels (fs/kernfs: ``kernfs_ino()`` is the low 32 bits of
the id only on 32-bit), so ``os.stat(dir).st_ino`` maps id -> path without BPF.
Formats: Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/memory.rst.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from trace_reclaim.procfs import parse_psi

__all__ = [
    "CgroupMount", "parse_mountinfo", "cgroup_mounts", "memory_mount", "unified_mount",
    "parse_flat_keyed", "parse_proc_cgroup", "read_memory_counters", "classify",
    "CgroupResolver", "V1", "V2", "memcg_id_cflags", "select_cgroups", "hierarchy_id",
]

V1 = 1
V2 = 2


class CgroupMount(NamedTuple):
    """One mounted cgroup hierarchy (v1 with its controllers, or the v2 one)."""
    path: str
    version: int
    controllers: Tuple[str, ...]   # v1: from the super options; v2: cgroup.controllers


def parse_mountinfo(text: str) -> List[Tuple[str, str, str]]:
    """Return (mount point, fs type, super options) of every cgroup/cgroup2 mount.

    /proc/self/mountinfo: fields up to " - ", then fstype, source, super options
    (Documentation/filesystems/proc.rst 3.5).  Octal escapes in the mount point
    (``\\040`` for a space) are decoded.
    """
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3 or rf[0] not in ("cgroup", "cgroup2"):
            continue
        mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), lf[4])
        out.append((mnt, rf[0], rf[2]))
    return out


def cgroup_mounts(root: str = "/") -> List[CgroupMount]:
    """Return the cgroup hierarchies mounted in this mount namespace."""
    with open(os.path.join(root, "proc/self/mountinfo")) as f:
        text = f.read()
    mounts = []
    for mnt, fstype, opts in parse_mountinfo(text):
        if fstype == "cgroup":
            ctrls = tuple(o for o in opts.split(",") if o not in ("rw", "ro")
                          and "=" not in o and not o.startswith("no"))
            mounts.append(CgroupMount(mnt, V1, ctrls))
        else:
            try:
                with open(os.path.join(root, mnt.lstrip("/"), "cgroup.controllers")) as f:
                    ctrls = tuple(f.read().split())
            except OSError:
                ctrls = ()
            mounts.append(CgroupMount(mnt, V2, ctrls))
    return mounts


def memory_mount(mounts: List[CgroupMount]) -> Optional[CgroupMount]:
    """The hierarchy the memory controller is on: v1 ``memory`` first, else v2 with memory.

    With the controller bound to v1 it is absent from v2's cgroup.controllers,
    so at most one of the two matches.
    """
    for m in mounts:
        if m.version == V1 and "memory" in m.controllers:
            return m
    for m in mounts:
        if m.version == V2 and "memory" in m.controllers:
            return m
    return None


def hierarchy_id(controller: str, root: str = "/") -> Optional[int]:
    """The v1 hierarchy id of ``controller`` (/proc/cgroups; 0: on cgroup v2)."""
    try:
        with open(os.path.join(root, "proc/cgroups")) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == controller and parts[1].isdigit():
                    return int(parts[1])
    except OSError:
        pass
    return None


def unified_mount(mounts: List[CgroupMount]) -> Optional[CgroupMount]:
    """The cgroup2 mount, whose ids ``bpf_get_current_cgroup_id()`` returns."""
    for m in mounts:
        if m.version == V2:
            return m
    return None


def parse_flat_keyed(text: str) -> Dict[str, int]:
    """Parse "key value" lines (memory.stat, memory.events, v1 memory.stat)."""
    out: Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_proc_cgroup(text: str) -> Dict[str, str]:
    """Parse /proc/PID/cgroup into {controller or "" for v2: path}.

    "4:memory:/a/b" gives "memory"; "0::/x" (the v2 line) gives "";
    "9:name=systemd:/" gives "name=systemd".
    """
    out: Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if not parts[1]:
            out[""] = parts[2]
        for c in parts[1].split(","):
            if c:
                out[c] = parts[2]
    return out


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _num(text: Optional[str]) -> Optional[int]:
    """A counter or limit; "max" (v2 no limit) is None."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def read_memory_counters(path: str, version: int) -> Dict[str, object]:
    """Snapshot the memory accounting of the cgroup at ``path``.

    v1: usage/limit/max_usage/soft_limit bytes, failcnt (times the page
    counter refused a charge: mm/page_counter.c page_counter_try_charge()),
    memory.stat.  v2: current, max, high, low, min (None for "max"),
    memory.events and memory.events.local, memory.stat, memory.pressure
    (None where PSI is off).  Missing files are left out.
    """
    out: Dict[str, object] = {"version": version}
    if version == V1:
        for key, name in (("usage_bytes", "memory.usage_in_bytes"),
                          ("limit_bytes", "memory.limit_in_bytes"),
                          ("max_usage_bytes", "memory.max_usage_in_bytes"),
                          ("soft_limit_bytes", "memory.soft_limit_in_bytes"),
                          ("failcnt", "memory.failcnt")):
            v = _num(_read(os.path.join(path, name)))
            if v is not None:
                out[key] = v
    else:
        for key, name in (("current_bytes", "memory.current"), ("max_bytes", "memory.max"),
                          ("high_bytes", "memory.high"), ("low_bytes", "memory.low"),
                          ("min_bytes", "memory.min"), ("peak_bytes", "memory.peak")):
            text = _read(os.path.join(path, name))
            if text is not None:
                out[key] = _num(text)
        for key, name in (("events", "memory.events"), ("events_local", "memory.events.local")):
            text = _read(os.path.join(path, name))
            if text is not None:
                out[key] = parse_flat_keyed(text)
        text = _read(os.path.join(path, "memory.pressure"))
        try:
            out["pressure"] = parse_psi(text) if text is not None else None
        except OSError:
            out["pressure"] = None
    text = _read(os.path.join(path, "memory.stat"))
    if text is not None:
        out["stat"] = parse_flat_keyed(text)
    return out


_HEX64 = r"[0-9a-f]{64}"
_CLASSIFIERS = (
    # Kubernetes (systemd driver): kubepods-burstable-pod<uid with _>.slice
    ("k8s-pod", re.compile(r"kubepods(?:-(besteffort|burstable))?-pod([0-9a-f_]{36})\.slice")),
    # Kubernetes (cgroupfs driver): /kubepods/burstable/pod<uid>
    ("k8s-pod", re.compile(r"/kubepods(?:/(besteffort|burstable))?/pod([0-9a-f-]{36})")),
    ("docker", re.compile(r"docker-(%s)\.scope" % _HEX64)),
    ("docker", re.compile(r"/docker/(%s)" % _HEX64)),
    ("containerd", re.compile(r"cri-containerd-(%s)\.scope" % _HEX64)),
    ("crio", re.compile(r"crio-(%s)\.scope" % _HEX64)),
    ("podman", re.compile(r"libpod-(%s)\.scope" % _HEX64)),
)


def classify(path: str) -> Tuple[str, str]:
    """Return (kind, name) a person recognises for a cgroup path.

    kind is one of k8s-pod, docker, containerd, crio, podman, systemd, root,
    cgroup; name is "pod <uid> (<qos>)", a 12-character container id, a
    systemd unit (the last ``*.service``/``*.scope``/``*.slice`` component),
    or the last path component.  The innermost container wins over its pod
    only when there is one: a pod's container cgroup is named by container.
    """
    if path in ("", "/"):
        return "root", "/"
    for kind, rx in _CLASSIFIERS[2:]:
        m = rx.search(path)
        if m:
            return kind, m.group(1)[:12]
    for kind, rx in _CLASSIFIERS[:2]:
        m = rx.search(path)
        if m:
            qos = m.group(1) or "guaranteed"
            return kind, "pod %s (%s)" % (m.group(2).replace("_", "-"), qos)
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if last.endswith((".service", ".scope", ".slice", ".socket", ".mount")):
        return "systemd", last
    return "cgroup", last


class CgroupResolver:
    """Map cgroup ids to paths (relative to their hierarchy's root), cached.

    Walks the hierarchy on a miss (at most once per ``rescan_s`` seconds of
    the caller's clock, so an unknown id costs one walk, not one per event),
    keeping at most ``max_entries`` ids.  A cgroup removed before it was
    looked up stays unknown: the resolver says so rather than guess.
    """

    def __init__(self, mount: Optional[str], max_entries: int = 65536) -> None:
        self.mount = mount
        self.max_entries = max_entries
        self.paths: Dict[int, str] = {}
        self.walks = 0

    def walk(self) -> Iterator[Tuple[int, str]]:
        if not self.mount:
            return
        root = self.mount.rstrip("/")
        for dirpath, _dirnames, _files in os.walk(root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = dirpath[len(root):] or "/"
            yield ino, rel

    def rescan(self) -> None:
        """Read the hierarchy again: cgroups removed since are forgotten."""
        self.walks += 1
        paths: Dict[int, str] = {}
        for ino, rel in self.walk():
            if len(paths) >= self.max_entries:
                break
            paths[ino] = rel
        self.paths = paths

    def lookup(self, cgid: int, rescan: bool = True) -> Optional[str]:
        """Return the path of ``cgid``, walking the hierarchy once if unknown."""
        path = self.paths.get(cgid)
        if path is None and rescan:
            self.rescan()
            path = self.paths.get(cgid)
        return path

    def id_of(self, rel: str) -> Optional[int]:
        """Return the id of the cgroup at ``rel`` in this hierarchy, or None."""
        if not self.mount:
            return None
        try:
            return os.stat(os.path.join(self.mount, rel.lstrip("/"))).st_ino
        except OSError:
            return None


# task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id: (cflag, struct, member).
_MEMCG_CHAIN = (
    ("CG_TASK_CGROUPS_OFF", "task_struct", "cgroups"),
    ("CG_CSS_SET_SUBSYS_OFF", "css_set", "subsys"),
    ("CG_CSS_CGROUP_OFF", "cgroup_subsys_state", "cgroup"),
    ("CG_CGROUP_KN_OFF", "cgroup", "kn"),
    ("CG_KERNFS_ID_OFF", "kernfs_node", "id"),
)


def memcg_id_cflags(btf: Any) -> Tuple[List[str], str]:
    """The -D cflags for common.bpf.h's current_memcg_id(), from BTF; (cflags, why not).

    ``memory_cgrp_id`` is the memory controller's index in css_set.subsys[],
    which depends on the configured controllers: read from
    ``enum cgroup_subsys_id``.  The kernfs node id is a u64 since Linux 5.5
    (the kernfs id rework, "kernfs: convert kernfs_node->id from union
    kernfs_node_id to u64"); where BTF shows another type this returns no
    cflags.
    """
    if btf is None:
        return [], "no kernel BTF (/sys/kernel/btf/vmlinux)"
    cflags = []
    for flag, struct_name, member in _MEMCG_CHAIN:
        m = btf.member(struct_name, member)
        if m is None:
            return [], f"no {struct_name}.{member} in BTF"
        off, ctype = m
        if flag == "CG_KERNFS_ID_OFF" and ctype not in ("u64", "__u64"):
            return [], f"kernfs_node.id is {ctype}, not u64"
        cflags.append(f"-D{flag}={off}")
    idx = btf.enum_value("cgroup_subsys_id", "memory_cgrp_id")
    if idx is None:
        return [], "no memory_cgrp_id in enum cgroup_subsys_id (CONFIG_MEMCG off)"
    return cflags + [f"-DCG_MEMORY_CGRP_ID={idx}"], ""


def select_cgroups(wanted: Sequence[str], mem: CgroupResolver,
                   uni: CgroupResolver) -> Dict[str, List[int]]:
    """Resolve -c/--cgroup arguments to ids, descendants included.

    An argument is a path inside a hierarchy ("/system.slice/x.service"), a
    path under its mount ("/sys/fs/cgroup/memory/x"), or a name
    ``classify()`` gives (a unit, a 12-character container id, "pod <uid>")
    or a path's last component.  Returns {"memcg": ids, "cgroup": ids};
    raises LookupError naming the argument that matched nothing.
    """
    mem.rescan()
    uni.rescan()
    out: Dict[str, List[int]] = {"memcg": [], "cgroup": []}
    for arg in wanted:
        hit = False
        for hier, res in (("memcg", mem), ("cgroup", uni)):
            if not res.mount:
                continue
            roots = _matching(arg, res)
            for cgid, rel in res.paths.items():
                if any(rel == r or rel.startswith(r.rstrip("/") + "/") for r in roots):
                    if cgid not in out[hier]:
                        out[hier].append(cgid)
                    hit = True
        if not hit:
            raise LookupError(arg)
    return out


def _matching(arg: str, res: CgroupResolver) -> List[str]:
    """The paths in ``res``'s hierarchy that ``arg`` names."""
    mount = (res.mount or "").rstrip("/")
    if arg.startswith(mount + "/") and mount:
        arg = arg[len(mount):]
    found = []
    for rel in res.paths.values():
        if rel == arg or rel == "/" + arg.strip("/"):
            found.append(rel)
            continue
        if arg.startswith("/"):
            continue
        kind, name = classify(rel)
        last = rel.rstrip("/").rsplit("/", 1)[-1]
        if arg in (name, last) or (kind in ("docker", "containerd", "crio", "podman")
                                   and len(arg) >= 12 and arg in last):
            found.append(rel)
    return found
