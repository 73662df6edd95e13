"""Answer questions about the running kernel's memory with drgn, one JSON line each.

Run inside the VM tier's guest as ``python tests/vm/drgn_truth.py VMLINUX``:
drgn reads the live kernel through /proc/kcore with the debug-info vmlinux
that ``trace_reclaim.vm`` extracted from Debian's ``linux-image-*-dbg``
package.  Loading the debug info is the slow part (a minute or more under
emulation), so the tests start one of these per session and ask it
questions on stdin as the workloads run; each answer is one JSON line on
stdout.  The answers are the kernel's own data structures, read
independently of every /proc file and tracepoint the tool uses:

  {"op": "vmap"}                every vmap_area: start, size (va_end - va_start,
                                guard page included, as alloc_vmap_area reports it)
                                and its vm_struct's page_order (9: 2 MiB pages)
  {"op": "slab_caches"}         every kmem_cache: name, sysfs kobject name,
                                refcount (> 1: merged, slab_cache_is_merged())
  {"op": "dentries", "dir": P}  the children of directory P: positive ones and
                                those with a reference (d_lockref.count > 0),
                                which no shrinker may free
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict


def _vmap(prog: Any) -> Dict[str, Any]:
    from drgn.helpers.linux.mm import for_each_vmap_area

    areas = []
    for va in for_each_vmap_area(prog):
        start, end = int(va.va_start), int(va.va_end)
        vm = va.vm
        order = int(vm.page_order) if vm else None
        areas.append([start, end - start, order])
    return {"areas": areas}


def _slab_caches(prog: Any) -> Dict[str, Any]:
    from drgn.helpers.linux.slab import for_each_slab_cache, slab_cache_is_merged

    caches = []
    for s in for_each_slab_cache(prog):
        kobj = s.kobj.name.string_().decode() if s.kobj.name else None
        caches.append({"name": s.name.string_().decode(), "kobj": kobj,
                       "refcount": int(s.refcount), "merged": bool(slab_cache_is_merged(s))})
    return {"caches": caches}


def _dentries(prog: Any, path: str) -> Dict[str, Any]:
    from drgn.helpers.linux.fs import path_lookup
    from drgn.helpers.linux.list import hlist_for_each_entry, list_for_each_entry

    d = path_lookup(prog, path).dentry
    # Since Linux 6.8 (commit da549bdd15c2, "dentry: switch the lists of
    # children to hlist"), children hang off d_children by d_sib.
    try:
        children = hlist_for_each_entry("struct dentry", d.d_children.address_of_(), "d_sib")
    except (AttributeError, LookupError):
        children = list_for_each_entry("struct dentry", d.d_subdirs.address_of_(), "d_child")
    total = positive = referenced = 0
    for c in children:
        total += 1
        if c.d_inode:
            positive += 1
            if int(c.d_lockref.count) > 0:
                referenced += 1
    return {"children": total, "positive": positive, "referenced": referenced}


def main() -> int:
    import drgn

    t0 = time.monotonic()
    prog = drgn.Program()
    prog.set_kernel()
    prog.load_debug_info([sys.argv[1]])
    # Index now, not on the first question: the tests ask while workloads run.
    prog.type("struct vmap_area")
    prog["slab_caches"]
    out = sys.stdout
    out.write(json.dumps({"ready": True, "load_s": round(time.monotonic() - t0, 1),
                          "release": os.uname().release}) + "\n")
    out.flush()
    for line in sys.stdin:
        q = json.loads(line)
        t1 = time.monotonic()
        try:
            if q["op"] == "vmap":
                a = _vmap(prog)
            elif q["op"] == "slab_caches":
                a = _slab_caches(prog)
            elif q["op"] == "dentries":
                a = _dentries(prog, q["dir"])
            else:
                a = {"error": f"unknown op {q['op']!r}"}
        except Exception as e:  # the test shows it; the server keeps answering
            a = {"error": f"{type(e).__name__}: {e}"}
        a["seconds"] = round(time.monotonic() - t1, 2)
        out.write(json.dumps(a) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
