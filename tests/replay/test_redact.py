"""Redacted recordings and reports: no kernel address, no host, the same report otherwise.

``record --redact`` writes through ``redact.RedactingWriter``; here each real
recording of tests/fixtures is written again through it, record by record,
as the live session hands records to its writer.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys

import pytest

from tests import FIXTURES, ROOT
from tests.regen_golden import fixture_names
from trace_reclaim import cli, events, recording
from trace_reclaim.env import Environment
from trace_reclaim.recording import Reader
from trace_reclaim.redact import HOST, REDACTED, RedactingWriter, Redactor

KADDR = re.compile(r"(?<![0-9a-zA-Z])(0x)?ff[0-9a-f]{14}(?![0-9a-f])")
# What redaction may change: addresses (hex, 8+ digits) and the host.
ANY_ADDR = re.compile(r"(?<![0-9a-zA-Z])(0x)?[0-9a-f]{8,16}(?![0-9a-f])")


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(argv, Environment(stdout=out, stderr=err))
    assert rc == 0, err.getvalue()
    assert "Traceback" not in err.getvalue()
    return out.getvalue()


def redact_recording(src, dst):
    with open(src, "rb") as f:
        r = Reader(f)
        with recording.create(str(dst)) as out:
            w = RedactingWriter(out, r.header)
            for block in r.blocks_of_records():
                for t, p in block:
                    w.write(t, p)
                w.flush()
            w.close()


PARAMS = re.compile(r"""(["']params["']:\s*)(\{[^{}]*\}|["']\[redacted\]["'])""")


# The text report's workload parameters: a line of their own, and its continuations.
PARAMS_LINES = re.compile(r"^  params: .*\n(?:    .*\n)*", re.MULTILINE)


def masked(text, hostname):
    """The report without what redaction changes: addresses, host, workload parameters
    (and the column widths and line breaks they set)."""
    text = PARAMS_LINES.sub("", text)
    text = ANY_ADDR.sub("ADDR", text)
    # Shrinkers of one callback are numbered in the order of their addresses.
    text = re.sub(r"#[0-9]+\b", "#N", text)
    text = PARAMS.sub(r"\1PARAMS", " ".join(text.split()))  # shorter values wrap differently
    for h in (hostname, HOST):
        if h:
            text = re.sub(rf"\b{re.escape(h)}\b", "HOST", text)
    return text


@pytest.mark.parametrize("name", fixture_names())
def test_a_redacted_recording_replays_to_the_same_report_but_addresses(tmp_path, name):
    src = os.path.join(FIXTURES, name + ".trc")
    dst = tmp_path / "r.trc"
    redact_recording(src, dst)
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o600

    # A recording like any other: every block checksummed, every record decodes.
    with open(dst, "rb") as f:
        r = Reader(f)
        recs = list(r.records())
        assert not r.warnings and not r.truncated
        header = r.header
    for t, p in recs:
        events.decode(t, p)  # raises DecodeError on damage
    with open(src, "rb") as f:
        orig = Reader(f)
        orig_header = orig.header
        assert len(list(orig.records())) == len(recs)
    assert header["hostname"] == HOST and header["cmdline"] == REDACTED
    assert header["argv"] == [REDACTED] and "redacted" in header
    raw = dst.read_bytes()
    assert not KADDR.search(raw.decode("latin-1")), "a kernel address is left"
    assert json.dumps(orig_header["hostname"]).encode() not in raw.split(b"TRB1", 1)[0]

    for args in (["report", "-j"], ["report"]):
        a = run(args + [src])
        b = run(args + [str(dst)])
        assert not KADDR.search(b)
        assert masked(a, orig_header["hostname"]) == masked(b, orig_header["hostname"])
    a = json.loads(run(["report", "-j", src]))
    b = json.loads(run(["report", "-j", str(dst)]))
    # Areas still meet their frees: the same areas are live at the end.
    if "vmalloc" in a:
        assert len(a["vmalloc"]["live_at_end"]) == len(b["vmalloc"]["live_at_end"])
        assert len(set(b["vmalloc"]["live_at_end"])) == len(b["vmalloc"]["live_at_end"])


def test_the_fixtures_do_hold_kernel_addresses():
    """Else the tests above could not fail."""
    found = [n for n in fixture_names()
             if KADDR.search(run(["report", os.path.join(FIXTURES, n + ".trc")]))]
    assert len(found) >= 3, found


@pytest.mark.parametrize("name", ["vmalloc_fallback", "slab_pinned", "zram_lifecycle"])
def test_report_redact_hashes_addresses_and_hides_the_host(name):
    src = os.path.join(FIXTURES, name + ".trc")
    for args in (["report", "-j"], ["report"]):
        plain = run(args + [src])
        red = run(args + ["--redact", src])
        assert not KADDR.search(red)
        assert '"hostname": "vm"' not in red
        assert masked(plain, "vm") == masked(red, "vm")


def test_one_key_per_redactor_stable_within_it():
    r1, r2 = Redactor(), Redactor()
    a = 0xFFFFC9000CB34000
    assert r1.addr(a) == r1.addr(a) != a
    assert r1.addr(a) != r2.addr(a)
    assert r1.addr(0) == 0
    assert r1.addr(a) >> 48 == 0            # never reads as a kernel address
    assert r1.text(f"at 0x{a:x}, cache@{a:x} and -DX=0x{a:x}ULL") == \
        f"at 0x{r1.addr(a):x}, cache@{r1.addr(a):x} and -DX=0x{r1.addr(a):x}ULL"
    assert r1.text("func+0x1a/0x50") == "func+0x1a/0x50"


def test_redact_needs_a_recording():
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["live", "--redact", "-d", "1"], Environment(stdout=out, stderr=err))
    assert rc == 2 and "error: " in err.getvalue() and "hint: " in err.getvalue()


def test_a_fresh_process_redacts_too(tmp_path):
    """The redactor finds a record type's address fields through its tracer's
    decoder: one that ran before anything imported the tracers hashed
    nothing and wrote 54 kernel addresses of slab_pinned as they were (the
    tests above ran after other tests had imported them)."""
    dst = tmp_path / "r.trc"
    code = ("import sys\n"
            "from tests.replay.test_redact import redact_recording\n"
            "redact_recording(sys.argv[1], sys.argv[2])\n")
    r = subprocess.run([sys.executable, "-c", code, os.path.join(FIXTURES, "slab_pinned.trc"),
                        str(dst)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = run(["report", "-j", str(dst)])
    assert not KADDR.search(out), KADDR.search(out)


# 64-bit fields of events.h that are not kernel addresses, by name.  A new
# field must be put here or in ADDRESS_FIELDS: a decision, not a default.
NOT_ADDRESSES = {
    "ts_ns", "delta_ns", "reclaim_start_ns", "gfp_flags", "vm_flags", "cgroup_id", "memcg_id",
    "id", "nr_reclaimed_pages", "reclaimable_pages", "available_pages", "min_wmark_pages",
    "nr_lazy_pages", "nr_lazy_max_pages", "zone_start_pfn", "zone_end_pfn", "migrate_pfn",
    "free_pfn", "total_vm_kb", "anon_rss_kb", "file_rss_kb", "shmem_rss_kb", "pgtables_kb",
    "size_bytes", "align_bytes", "requested_bytes", "bytes_req", "bytes_alloc", "cache_items",
    "delta", "total_scan", "unscanned", "nr_deferred", "new_deferred",
}


def test_every_64_bit_field_is_an_address_or_declared_not_one():
    from trace_reclaim import abi
    from trace_reclaim.redact import ADDRESS_FIELDS

    undecided = []
    for name, lay in abi.LAYOUTS.items():
        for f in lay.flat:
            if f.code in ("Q", "q") and f.name not in ADDRESS_FIELDS.get(name, ()) \
                    and f.name not in NOT_ADDRESSES and not abi.is_pad(f.name):
                undecided.append(f"{name}.{f.name}")
    assert not undecided, f"kernel address or not? {undecided}"
