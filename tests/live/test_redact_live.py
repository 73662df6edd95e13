"""``record --redact`` on the running kernel: a valid recording, no kernel address in it.

The vmalloc trigger (examples/vmalloc_huge.py) makes the BPF verifier
kvmalloc and vzalloc areas and free them again, so the recording holds
vmalloc addresses that must come out hashed, and the report must still pair
each area with its free.  Needs root (the ``live`` fixture).
"""

from __future__ import annotations

import os
import re
import stat

from tests.livetools import Trace
from trace_reclaim import events, tracers
from trace_reclaim.examples import vmalloc_huge
from trace_reclaim.recording import Reader
from trace_reclaim.redact import HOST, REDACTED

KADDR = re.compile(rb"(?<![0-9a-zA-Z])(0x)?ff[0-9a-f]{14}(?![0-9a-f])")


def test_record_redact_writes_a_valid_recording_without_addresses(live, tmp_path):
    with Trace(str(tmp_path), args=["--redact"]) as t:
        res = vmalloc_huge.trigger(count=1)
    assert res["loaded"] == 1, res["loads"][0]["error"]
    assert stat.S_IMODE(os.stat(t.path).st_mode) == 0o600

    tracers.registry()
    with open(t.path, "rb") as f:
        r = Reader(f)
        recs = list(r.records())
        assert not r.warnings and not r.truncated
    assert r.header["hostname"] == HOST and r.header["cmdline"] == REDACTED
    kinds = {ty for ty, _p in recs}
    assert events.USER_SAMPLE in kinds and 16 in kinds and 17 in kinds  # alloc/free vmap
    for ty, p in recs:
        ev = events.decode(ty, p)   # every record decodes: nothing damaged
        for name in ("addr", "area_addr", "caller", "shr", "shrink", "cache"):
            v = getattr(ev, name, 0)
            assert v >> 48 == 0, (ty, name, hex(v))
    data = open(t.path, "rb").read()
    assert not KADDR.search(data), KADDR.search(data)

    rep = t.report
    assert rep["lost"]["undecodable_records"] == 0
    mine = [a for a in rep["vmalloc"]["areas"] if a["tid"] == res["tid"]]
    kv = [a for a in mine if a["caller"].startswith("__kvmalloc_node_noprof")]
    assert kv and all(not a["live"] for a in kv), mine   # each area met its free
    assert all(int(a["addr"], 16) >> 48 == 0 for a in rep["vmalloc"]["areas"])
