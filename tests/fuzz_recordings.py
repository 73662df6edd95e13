"""Fuzz ``report`` with damaged recordings whose checksums are all valid.

The reader's CRCs catch bit rot; this fuzzer goes past them.  It takes the
real recordings of ``tests/fixtures``, damages their records the way a buggy
writer, another version or a hand edit would (payloads cut short, extended or
with bytes flipped, a field set to an extreme value, one type's payload under
another type's id, records of every BPF type injected, JSON snapshots and
samples with values of the wrong type or keys missing, a header with wrong
types, records reordered or dropped) and writes the result with
``recording.Writer``, so every block and the header checksum.  Each case is
replayed in-process as ``report`` and ``report -j`` run it; any exception
other than a clean ``error:``/``hint:`` exit is a failure, and a case whose
mutation must be detected (a payload of the wrong size, a type id its payload
does not carry, a snapshot without its ``ts_ns``) must show up in the
damaged-records count of both reports.

    python -m tests.fuzz_recordings --cases 100000          # the long run
    python -m tests.fuzz_recordings --cases 2000 --seed 7 --jobs 2

The long run draws each case from ``random.Random(seed + case)``, so a
failure is reproduced by ``--seed S --first CASE --cases 1``.  CI runs the
same mutations through hypothesis, derandomized, with a fixed budget
(``tests/unit/test_fuzz_recordings.py``).
"""

from __future__ import annotations

import argparse
import functools
import glob
import io
import json
import os
import random
import re
import struct
import sys
import tempfile
import time
import traceback
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tests import FIXTURES
from trace_reclaim import abi, events, recording, tracers
from trace_reclaim.env import Environment, UserError
from trace_reclaim.recording import Reader, Writer
from trace_reclaim.replay import replay
from trace_reclaim.report import render_json, render_text

__all__ = ["Chooser", "RandomChooser", "Fixture", "fixtures", "mutate", "run_case",
           "Outcome", "main"]

Record = Tuple[int, bytes]


class Chooser:
    """Where the fuzzer's choices come from: ``random.Random`` or hypothesis."""

    def integers(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def binary(self, lo: int, hi: int) -> bytes:
        return bytes(self.integers(0, 255) for _ in range(self.integers(lo, hi)))

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.integers(0, len(seq) - 1)]


class RandomChooser(Chooser):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integers(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def binary(self, lo: int, hi: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(lo, hi))


@dataclass
class Fixture:
    name: str
    header: Dict[str, Any]
    blocks: List[List[Record]]


@functools.cache
def fixtures() -> Tuple[Fixture, ...]:
    """Every tests/fixtures/*.trc, read once into header and blocks of records."""
    out = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "*.trc"))):
        with open(path, "rb") as f:
            r = Reader(f)
            blocks = [list(b) for b in r.blocks_of_records()]
        out.append(Fixture(os.path.basename(path)[:-4], r.header, blocks))
    return tuple(out)


def _decoders() -> Dict[int, Any]:
    tracers.registry()  # registers every tracer's decoders
    return {t: d for t, d in events._DECODERS.items() if t < events.USER_BASE}


#: Values that break assumptions: zero, signs, widths, floats, containers.
_WRONG_JSON = [None, True, False, 0, -1, 1, 2 ** 64, -(2 ** 63), 1.5, -0.0, float("1e308"),
               "", "x", "0xffff", [], [1], {}, {"a": 1}, [[None]], {"": None}]


def _sizes(type_id: int) -> Tuple[int, ...]:
    """The payload sizes a type's decoder accepts (none: a type this version lacks)."""
    dec = _decoders().get(type_id)
    if dec is None:
        return ()
    # and the shorter records of recordings made before fields were appended
    # (struct_decoder's ``since``: alloc_vmap_area, the cgroup ids, ...)
    return (dec.size, *sorted(getattr(dec, "legacy_sizes", ())))


def _extreme(f: abi.Field, c: Chooser) -> Any:
    """An extreme value for a scalar field: its limits, 0, -1, a small number."""
    if f.is_string:
        return c.choice([b"", b"\xff" * f.size, b"A" * f.size, b"\x00x"])
    signed = f.code.lower() == f.code
    bits = f.size * 8 // (f.length or 1)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return c.choice([lo, hi, 0, -1 if signed else hi, 1, c.integers(lo, hi),
                     c.integers(0, 64), hi >> 1])


def _set_field(payload: bytes, lay: abi.Layout, c: Chooser) -> bytes:
    fields = [f for f in lay.flat if f.length is None or f.is_string]
    f = c.choice(fields)
    if f.offset + f.size > len(payload):
        return payload
    v = _extreme(f, c)
    packed = struct.pack("<" + f.code, v)
    return payload[:f.offset] + packed + payload[f.offset + f.size:]


def _random_record(type_id: int, lay: abi.Layout, c: Chooser, ts: int) -> bytes:
    """A record of ``lay`` with the right header and arbitrary (often extreme) fields."""
    out = bytearray(lay.size)
    for f in lay.flat:
        if f.length is not None and not f.is_string:
            continue
        if f.name == "ts_ns":
            v: Any = ts
        elif f.name == "type":
            v = type_id
        else:
            v = _extreme(f, c) if c.integers(0, 2) == 0 else (
                b"task" if f.is_string else c.integers(0, 4096))
        struct.pack_into("<" + f.code, out, f.offset, v)
    return bytes(out)


def _json_mutate(obj: Any, c: Chooser, depth: int = 0) -> Tuple[Any, bool]:
    """A copy of ``obj`` with one node replaced or deleted; True if it was the top level."""
    if isinstance(obj, dict) and obj and (depth == 0 or c.integers(0, 2)):
        k = c.choice(sorted(obj, key=str))
        new = dict(obj)
        op = c.integers(0, 3)
        if op == 0:
            del new[k]
        elif op == 1 or not isinstance(obj[k], (dict, list)) or not obj[k]:
            new[k] = c.choice(_WRONG_JSON)
        else:
            new[k], _ = _json_mutate(obj[k], c, depth + 1)
        return new, depth == 0
    if isinstance(obj, list) and obj and c.integers(0, 2):
        i = c.integers(0, len(obj) - 1)
        new_l = list(obj)
        op = c.integers(0, 3)
        if op == 0:
            del new_l[i]
        elif op == 1:
            new_l.append(c.choice(_WRONG_JSON))
        elif isinstance(obj[i], (dict, list)) and obj[i]:
            new_l[i], _ = _json_mutate(obj[i], c, depth + 1)
        else:
            new_l[i] = c.choice(_WRONG_JSON)
        return new_l, False
    return c.choice(_WRONG_JSON), depth == 0


MUTATIONS = ("truncate", "extend", "flip", "field", "retype", "inject", "json", "header",
             "swap", "move", "shuffle_block", "drop", "duplicate", "json_text")
# Valid JSON texts Python refuses or chokes on: past int_max_str_digits, deep nesting.
_HOSTILE_JSON = [b"1" * 5000, b"[" * 100_000 + b"]" * 100_000, b"-" + b"9" * 4400,
                 b"1e999999", b"NaN", b"-Infinity"]


def mutate(c: Chooser, fx: Fixture) -> Tuple[bytes, List[str], bool]:
    """Damage a copy of ``fx``; return the recording, what was done, and whether
    some record's damage must be detected (counted as damaged)."""
    header = fx.header
    blocks = [list(b) for b in fx.blocks]
    decs = _decoders()
    bpf_types = sorted(decs)
    all_types = bpf_types + [events.USER_TICK, events.USER_SNAPSHOT, events.USER_SAMPLE,
                             events.USER_END]
    done: List[str] = []
    # Records whose damage must be counted: by identity, since a later
    # mutation may drop one again.
    must: List[Record] = []
    # Each payload's own type: a second retype may give a payload its own back.
    origin = {id(p): t for b in blocks for t, p in b}
    for _ in range(c.integers(1, 4)):
        op = c.choice(MUTATIONS)
        bi = c.integers(0, len(blocks) - 1)
        block = blocks[bi]
        if not block:
            continue
        ri = c.integers(0, len(block) - 1)
        t, p = block[ri]
        if op == "truncate" and p:
            n = c.integers(0, len(p) - 1)
            block[ri] = (t, p[:n])
            if t in decs and n not in _sizes(t):
                must.append(block[ri])
        elif op == "extend":
            block[ri] = (t, p + c.binary(1, 64))
            if t in decs and len(block[ri][1]) not in _sizes(t):
                must.append(block[ri])
        elif op == "flip" and p:
            b = bytearray(p)
            for _ in range(c.integers(1, 4)):
                b[c.integers(0, len(b) - 1)] ^= c.integers(1, 255)
            block[ri] = (t, bytes(b))
        elif op == "field" and t in decs:
            block[ri] = (t, _set_field(p, decs[t].layout, c))
        elif op == "retype":
            nt = c.choice(all_types)
            block[ri] = (nt, p)
            own = origin.get(id(p), t)
            if nt != own and (own < events.USER_BASE or nt < events.USER_BASE) and not (
                    nt in decs and len(p) >= 12 and int.from_bytes(p[8:12], "little") == nt):
                must.append(block[ri])
        elif op == "inject":
            nt = c.choice(bpf_types)
            ts = int.from_bytes(p[:8], "little") if t < events.USER_BASE and len(p) >= 8 \
                else c.integers(0, 1 << 44)
            for _ in range(c.integers(1, 3)):
                block.insert(c.integers(0, len(block)),
                             (nt, _random_record(nt, decs[nt].layout, c, ts)))
        elif op == "json" and t >= events.USER_BASE:
            try:
                obj = json.loads(p)
            except (ValueError, RecursionError):  # damaged by an earlier mutation
                continue
            new, top = _json_mutate(obj, c)
            block[ri] = (t, json.dumps(new).encode())
            if top and (not isinstance(new, dict) or "ts_ns" not in new
                        or type(new["ts_ns"]) is not int):
                must.append(block[ri])
        elif op == "json_text" and t >= events.USER_BASE:
            # A number in the record's text becomes one Python's json refuses.
            m = re.search(rb"-?[0-9]+(\.[0-9]+)?", p)
            if m is None:
                continue
            block[ri] = (t, p[:m.start()] + c.choice(_HOSTILE_JSON) + p[m.end():])
        elif op == "header":
            header, _ = _json_mutate(header, c)
        elif op == "swap":
            bj = c.integers(0, len(blocks) - 1)
            if blocks[bj]:
                rj = c.integers(0, len(blocks[bj]) - 1)
                block[ri], blocks[bj][rj] = blocks[bj][rj], block[ri]
        elif op == "move":
            rec = block.pop(ri)
            bj = c.integers(0, len(blocks) - 1)
            blocks[bj].insert(c.integers(0, len(blocks[bj])), rec)
        elif op == "shuffle_block":
            keys = [c.integers(0, 1 << 30) for _ in block]
            blocks[bi] = [r for _, r in sorted(zip(keys, block), key=lambda kr: kr[0])]
        elif op == "drop":
            del block[ri]
        elif op == "duplicate":
            block.insert(ri, block[ri])
        else:
            continue
        if op in ("truncate", "extend", "flip", "field"):
            # a damaged payload keeps the shape of the type it was made for
            origin[id(block[ri][1])] = origin.get(id(p), t)
        done.append(f"{op}@{bi}.{ri}:{t}")
    kept = {id(r) for b in blocks for r in b}
    return serialize(header, blocks), done, any(id(r) in kept for r in must)


def serialize(header: Any, blocks: List[List[Record]]) -> bytes:
    """A recording of ``header`` (any JSON value) and ``blocks``, every checksum valid."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    buf = io.BytesIO()
    w = Writer(buf, {})
    skip = buf.tell()
    for block in blocks:
        for t, p in block:
            w.write(t, p)
        w.flush()
    return (recording._FILE_HEAD.pack(recording.MAGIC, recording.VERSION, 0, len(head))
            + head + recording._U32.pack(zlib.crc32(head)) + buf.getvalue()[skip:])


@dataclass
class Outcome:
    traceback: Optional[str]      # the formatted exception, if report raised one
    clean_error: bool             # exited with error:/hint:
    damaged_json: int             # the damaged-records count of ``report -j``
    damaged_text: bool            # the text report says records were damaged


def run_case(data: bytes, path: str) -> Outcome:
    """Replay ``data`` as ``report`` and ``report -j`` do; never raise."""
    with open(path, "wb") as f:
        f.write(data)
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    try:
        corr = replay(path, env, tracers.registry())
        doc = corr.report()
        j = render_json(doc)
        text = render_text(doc, corr.aggs)
        damaged = json.loads(j)["lost"]["undecodable_records"]
    except UserError as e:
        if not str(e) or not e.hint:
            return Outcome(f"UserError without message or hint: {e!r}", False, 0, False)
        return Outcome(None, True, 0, False)
    except Exception:  # noqa: BLE001 - the fuzzer's whole point
        return Outcome(traceback.format_exc(), False, 0, False)
    return Outcome(None, False, damaged, "records were damaged and skipped" in text)


def check(c: Chooser, path: str) -> Tuple[Optional[str], List[str]]:
    """Run one case; return a failure description (None: passed) and the mutations."""
    fx = c.choice(fixtures())
    data, done, must_detect = mutate(c, fx)
    out = run_case(data, path)
    if out.traceback:
        return out.traceback, done
    if out.clean_error:
        return None, done
    if (out.damaged_json > 0) != out.damaged_text:
        return f"damaged count {out.damaged_json} in -j but text says {out.damaged_text}", done
    if must_detect and out.damaged_json == 0:
        return "a record that must be detected as damaged was not counted", done
    return None, done


def _worker(args: Tuple[int, int, int]) -> Tuple[int, List[Tuple[int, str, List[str]]]]:
    seed, first, n = args
    fails = []
    fd, path = tempfile.mkstemp(suffix=".trc", dir="/dev/shm" if os.path.isdir("/dev/shm")
                                else None)
    os.close(fd)
    try:
        for case in range(first, first + n):
            why, done = check(RandomChooser(random.Random(seed * 1_000_003 + case)), path)
            if why:
                fails.append((case, why, done))
    finally:
        os.unlink(path)
    return n, fails


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz_recordings",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first", type=int, default=0, help="first case number")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--chunk", type=int, default=500)
    args = ap.parse_args(argv)
    fixtures()
    work = [(args.seed, s, min(args.chunk, args.first + args.cases - s))
            for s in range(args.first, args.first + args.cases, args.chunk)]
    t0 = time.monotonic()
    done = 0
    fails: List[Tuple[int, str, List[str]]] = []
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            results = pool.imap_unordered(_worker, work)
            for n, f in results:
                done += n
                fails += f
                for case, why, _m in f:
                    print(f"case {case} failed: {why.strip().splitlines()[-1]}", flush=True)
                print(f"{done} cases, {len(fails)} failures, "
                      f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    else:
        for w in work:
            n, f = _worker(w)
            done += n
            fails += f
            for case, why, _m in f:
                print(f"case {case} failed: {why.strip().splitlines()[-1]}", flush=True)
            print(f"{done} cases, {len(fails)} failures, {time.monotonic() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    seen = set()
    for case, why, muts in sorted(fails):
        last = why.strip().splitlines()[-1]
        if last in seen:
            continue
        seen.add(last)
        print(f"case {case} (--seed {args.seed} --first {case} --cases 1): {muts}\n{why}")
    print(f"failing cases: {sorted(c for c, _w, _m in fails)}")
    tracebacks = sum(1 for _c, why, _m in fails if "Traceback" in why)
    print(f"{done} cases, {tracebacks} tracebacks, {len(fails) - tracebacks} other failures, "
          f"{time.monotonic() - t0:.0f} s")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
