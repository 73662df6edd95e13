"""Attaching in parts: which tracers attach first, how waiters read the
lines that say so, and what a recording made that way reports (no root)."""

from __future__ import annotations

import os
import random
import re

import pytest

from tests import synth
from trace_reclaim import abi, events, tracers
from trace_reclaim.correlate import Correlator
from trace_reclaim.probe import Plan
from trace_reclaim.report import render_text
from trace_reclaim.tracer import Aggregator
from trace_reclaim.session import (ALL_ATTACHED, READY, STILL_ATTACHING, all_attached,
                                   attach_parts, bpf_cflags, bpf_source, part_tracer,
                                   whole_object)

ALL = ["reclaim", "vmalloc", "slab", "oom", "memcg"]


REG = tracers.registry()


def test_reclaim_attaches_first_and_alone_its_lru_counts_with_the_rest():
    plan = Plan(ALL, [], [])
    assert attach_parts(plan, REG) == [["reclaim"],
                                       ["reclaim.lru", "vmalloc", "slab", "oom", "memcg"]]


def test_a_cgroup_filter_brings_memcg_into_the_first_object():
    # its start sample fills the filter maps every program reads
    plan = Plan(ALL, [], [])
    assert attach_parts(plan, REG, cgroup_filter=True) == [
        ["reclaim", "memcg"], ["reclaim.lru", "vmalloc", "slab", "oom"]]


def test_nothing_to_split_is_one_object_each_later_part_after_its_tracer():
    assert attach_parts(Plan(["reclaim"], [], []), REG) == [["reclaim", "reclaim.lru"]]
    assert attach_parts(Plan(["slab", "oom"], [], []), REG) == [["slab", "oom"]]
    assert whole_object(Plan(["reclaim", "oom"], [], []), REG) == [
        "reclaim", "reclaim.lru", "oom"]


def test_a_later_part_is_compiled_from_its_own_file_after_its_tracers():
    text = bpf_source(REG, ["reclaim.lru", "oom"])
    files = re.findall(r"/\* ---- bpf/(\S+) ---- \*/", text)
    assert files == ["common.bpf.h", "reclaim_lru.bpf.c", "oom.bpf.c"]
    whole = re.findall(r"/\* ---- bpf/(\S+) ---- \*/",
                       bpf_source({n: REG[n] for n in ("reclaim", "oom")}))
    assert whole == ["common.bpf.h", "reclaim.bpf.c", "reclaim_lru.bpf.c", "oom.bpf.c"]
    assert "-DOBJECT_RECLAIM_LRU" in bpf_cflags(Plan(ALL, [], []), maps="extern",
                                               names=["reclaim.lru", "oom"])
    assert part_tracer("reclaim.lru") == "reclaim" and part_tracer("oom") == "oom"


def test_the_first_object_exports_the_shared_maps_a_later_one_uses_them():
    plan = Plan(ALL, [], ["-DWITH_RECLAIM"])
    assert "-DMAPS_EXPORT" in bpf_cflags(plan, maps="export", names=["reclaim"])
    assert "-DMAPS_EXTERN" in bpf_cflags(plan, maps="extern", names=["slab"])
    assert not any(c.startswith("-DMAPS_") for c in bpf_cflags(plan, names=["reclaim"]))


def test_waiters_wait_for_the_attached_line_only_when_more_was_coming():
    ready = f"{READY} (reclaim), {STILL_ATTACHING} slab, recording to x.trc\n"
    assert not all_attached("")
    assert not all_attached("warning: not tracing oom: ...\n")
    assert not all_attached(ready)
    assert all_attached(ready + f"{ALL_ATTACHED} slab (0.40 s after reclaim)\n")
    assert all_attached(f"{READY} (reclaim, slab, oom), recording to x.trc\n")


_LATER_TYPES = sorted(int(t) for n in ("slab", "oom")
                      for t in tracers.registry()[n].event_types)


def _attach_story(later_ts: int, attached: bool = True, failed: str = ""):
    base = 1_000_000_000
    recs = [synth.vmstat_snapshot(base, "start", slabs_scanned=100, oom_kill=1,
                                  drop_slab=0, pageoutrun=7),
            synth.user(events.Snapshot(base, "attach", "start", {
                "tracers": ["reclaim"], "pending": ["slab", "oom"],
                "pending_types": _LATER_TYPES})),
            synth.kswapd_wake(base + 10)]
    if attached:
        recs.append(synth.user(events.Snapshot(base + later_ts, "attach", "attached", {
            "tracers": ["slab", "oom"], "types": _LATER_TYPES,
            "vmstat": {"slabs_scanned": 160, "oom_kill": 2, "drop_slab": 0,
                       "pageoutrun": 8}})))
    if failed:
        recs.append(synth.user(events.Snapshot(base + later_ts, "attach", "failed", {
            "tracers": ["slab", "oom"], "error": failed})))
    recs += [synth.vmstat_snapshot(base + 2_000_000_000, "end", slabs_scanned=200,
                                   oom_kill=2, drop_slab=0, pageoutrun=9),
             synth.user(events.End(base + 2_000_000_000, "duration"))]
    return recs


def _report(recs):
    reg = tracers.registry()
    header = {"tool": "trace-reclaim", "kernel_release": "test",
              "plan": {"tracers": ["reclaim", "slab", "oom"]}}
    corr = Correlator(header, [reg[n] for n in ("reclaim", "slab", "oom")])
    for type_id, payload in recs:
        corr.feed_record(type_id, payload)
    doc = corr.report()
    return doc, render_text(doc, corr.aggs)


def test_a_later_tracer_is_checked_against_the_kernel_from_its_own_start():
    doc, text = _report(_attach_story(400_000_000))
    a = doc["attach"]
    assert a["at_start"] == ["reclaim"] and a["not_attached"] == [] and a["error"] is None
    (later,) = a["later"]
    assert later["tracers"] == ["slab", "oom"] and later["after_start_ns"] == 400_000_000
    assert later["vmstat_delta"]["slabs_scanned"] == 40   # 200 - 160, not 200 - 100
    assert doc["totals"]["vmstat_delta"]["slabs_scanned"] == 100   # the window's own
    assert "Attached: reclaim at the start; slab, oom 400.0ms later" in text
    rows = {ln.split()[-1]: ln.split() for ln in text.splitlines()
            if ln.strip().endswith(("slabs_scanned", "oom_kill", "pageoutrun"))}
    assert rows["slabs_scanned"][-2] == "40"
    assert rows["oom_kill"][-2] == "0"       # the kill before its attach is not its
    assert rows["pageoutrun"][-2] == "2"     # reclaim: from the window's start
    # slab's own /proc/vmstat baseline moved to its attach too
    assert doc["slab"]["drop_slab_vmstat"] == 0


def _victim(ts: int):
    return abi.EV_MARK_VICTIM, synth.record("mark_victim_event", abi.EV_MARK_VICTIM, ts,
                                            victim_pid=4242)


def test_a_later_tracers_records_before_its_attach_are_outside_its_window():
    # Its programs attach one by one while the object loads: records can
    # come before the "attached" snapshot, or after it with earlier stamps.
    base, at = 1_000_000_000, 400_000_000
    recs = _attach_story(at)
    i = next(i for i, r in enumerate(recs) if b'"attached"' in r[1])
    recs[i:i] = [_victim(base + 100)]                       # arrived before the snapshot
    recs[i + 2:i + 2] = [_victim(base + at - 5), _victim(base + at + 5)]  # after it
    doc, _text = _report(recs)
    assert doc["totals"]["oom_kills"] == 1
    assert doc["lost"]["events_outside_window"] == 2
    # the same records replayed one by one (the general path) count the same
    reg = tracers.registry()
    corr = Correlator({"plan": {"tracers": ["reclaim", "slab", "oom"]}},
                      [reg[n] for n in ("reclaim", "slab", "oom")])
    for type_id, payload in recs:
        ev = events.decode(type_id, payload)
        corr.feed(ev)
    assert corr.report()["totals"]["oom_kills"] == 1
    # and a reader that follows the window (export, timeline) keeps the same one
    from trace_reclaim.replay import follow_window
    from trace_reclaim.tracer import Window

    w, kept = Window(), []
    for type_id, payload in recs:
        ev = events.decode(type_id, payload)
        if type_id >= events.USER_BASE:
            follow_window(w, ev)
        elif type_id == abi.EV_MARK_VICTIM and w.contains_event(type_id, ev.ts_ns):
            kept.append(ev.ts_ns)
    assert kept == [base + at + 5]


def test_a_recording_that_attached_in_parts_replays_the_same_on_both_paths(tmp_path):
    # report FILE decodes blocks in place (feed_block); with a tap it takes
    # the record-list path (feed_records): both leave out the early records
    import io

    from trace_reclaim.env import Environment
    from trace_reclaim.replay import replay

    base, at = 1_000_000_000, 400_000_000
    recs = _attach_story(at)
    i = next(i for i, r in enumerate(recs) if b'"attached"' in r[1])
    recs[i:i] = [_victim(base + 100)]
    recs[i + 2:i + 2] = [_victim(base + at - 5), _victim(base + at + 5)]
    path = tmp_path / "parts.trc"
    path.write_bytes(synth.recording(recs, {"tool": "trace-reclaim", "kernel_release": "t",
                                            "plan": {"tracers": ["reclaim", "slab", "oom"]}},
                                     flush_every=2))
    for tap in (None, lambda block: None):
        env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
        doc = replay(str(path), env, tracers.registry(), tap=tap).report()
        assert doc["totals"]["oom_kills"] == 1, tap
        assert doc["lost"]["events_outside_window"] == 2
        assert doc["attach"]["later"][0]["tracers"] == ["slab", "oom"]


def test_a_trace_ended_before_the_later_attach_says_so():
    doc, text = _report(_attach_story(0, attached=False))
    assert doc["attach"]["not_attached"] == ["slab", "oom"]
    assert "Not attached: slab, oom (the trace ended first)" in " ".join(text.split())


def test_a_failed_later_attach_names_the_error():
    doc, text = _report(_attach_story(300, attached=False, failed="verifier said no"))
    assert doc["attach"]["error"] == "verifier said no"
    assert "their program did not load: verifier said no" in " ".join(text.split())


def test_one_object_recordings_report_no_attach_section():
    doc, text = _report([r for r in _attach_story(5, attached=False)
                         if b'"attach"' not in r[1]])
    assert "attach" not in doc and "Attached:" not in text


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"),
                    reason="this kernel has no BTF")
def test_libbpf_indexes_the_running_kernels_btf_as_the_python_walk_does():
    from trace_reclaim.btf import BTF, LibbpfBTF, load_btf

    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        data = f.read()
    fast, walk = load_btf(), BTF(data)
    if not isinstance(fast, LibbpfBTF):
        pytest.skip("libbpf.so.1 is not loadable here")
    assert len(fast._off) == len(walk._off)
    rng = random.Random(7)
    for tid in rng.sample(range(1, len(walk._off)), 2000):
        assert (fast._off[tid], fast.name_of(tid), fast.type_name(tid)) == \
            (walk._off[tid], walk.name_of(tid), walk.type_name(tid))
    for name in ("task_struct", "css_set", "kernfs_node", "kmem_cache", "super_block"):
        tid = walk.find(4, name)
        assert fast.find(4, name) == tid
        for member, _t, _o in walk._members(tid):
            assert fast.member(name, member) == walk.member(name, member)
    for tp in ("mm_shrink_slab_start", "kmem_cache_alloc", "alloc_vmap_area"):
        assert fast.raw_tp_params(tp) == walk.raw_tp_params(tp)
    assert fast.enum_value("cgroup_subsys_id", "memory_cgrp_id") == \
        walk.enum_value("cgroup_subsys_id", "memory_cgrp_id")
    assert fast.find(4, "no_such_struct_xyz") is None


# -- the live session, with fake BPF objects --------------------------------------
class _Agg(Aggregator):
    section = "x"

    def feed(self, ev): pass
    def report(self): return {}


def _fake_tracers(names):
    from trace_reclaim.tracer import Tracer

    out = {}
    for n in names:
        class T(Tracer):
            name = n
            bpf_source = "oom.bpf.c"
            event_types = ()

            def aggregator(self, window):
                return _Agg(window)

            def sample(self, bpf, procfs, ts, when):
                bpf.sampled.append((self.name, when))
                return []
        out[n] = T()
    return out


class _FakeBPF:
    def __init__(self, text, cflags):
        self.text, self.cflags, self.sampled, self.cleaned = text, cflags, [], False

    def __getitem__(self, name):
        class RB:
            def open_ring_buffer(self, cb): pass

            def items(self): return []
        return RB()

    def ring_buffer_poll(self, ms): pass
    def ring_buffer_consume(self): pass
    def cleanup(self): self.cleaned = True


class _FakeProc:
    def vmstat(self): return {"pageoutrun": 1, "slabs_scanned": 5}
    def zoneinfo(self): return []
    def meminfo(self): return {}
    def psi_memory(self): return None


def _session(factory, on_attached=None, duration=0.5):
    from trace_reclaim.session import LiveSession

    names = ["reclaim", "slab", "oom"]
    made = []

    def make(text, cflags):
        b = factory(text, cflags)
        made.append(b)
        return b
    s = LiveSession(bpf_factory=make, procfs=_FakeProc(), tracers=_fake_tracers(names),
                    plan=Plan(names, [], []), header={"plan": {"tracers": names}},
                    interval_s=0.1, duration_s=duration, parts=[["reclaim"], ["slab", "oom"]],
                    on_attached=on_attached)
    return s, made


def test_the_later_object_attaches_during_the_trace_and_is_sampled_then():
    seen = []
    s, made = _session(_FakeBPF, on_attached=lambda names, ns: seen.append((names, ns)))
    corr = s.run()
    s.close()
    first, later = made
    assert "-DMAPS_EXPORT" in first.cflags and "-DMAPS_EXTERN" in later.cflags
    assert first.sampled[0] == ("reclaim", "start")
    assert later.sampled[:2] == [("slab", "start"), ("oom", "start")]
    assert ("slab", "end") in later.sampled and ("reclaim", "end") in first.sampled
    assert seen and seen[0][0] == ["slab", "oom"] and seen[0][1] >= 0
    assert first.cleaned and later.cleaned
    doc = corr.report()
    assert doc["attach"]["at_start"] == ["reclaim"]
    assert doc["attach"]["later"][0]["tracers"] == ["slab", "oom"]
    assert s.attach_error is None


def test_a_later_object_that_does_not_load_ends_the_trace_with_its_error():
    def factory(text, cflags):
        if "-DMAPS_EXTERN" in cflags:
            raise Exception("Failed to compile BPF module <text>")
        return _FakeBPF(text, cflags)

    s, made = _session(factory, duration=30)
    corr = s.run()
    s.close()
    assert s.attach_error is not None and "of slab, oom did not load" in str(s.attach_error)
    assert corr.ended == "attach failed"
    assert corr.report()["attach"]["not_attached"] == ["slab", "oom"]
    assert made[0].cleaned


def test_a_trace_that_ends_first_waits_for_the_compile_and_detaches_it():
    import threading

    go = threading.Event()

    def factory(text, cflags):
        if "-DMAPS_EXTERN" in cflags:
            go.wait(5)
        return _FakeBPF(text, cflags)

    s, made = _session(factory, duration=0.2)
    corr = s.run()
    go.set()
    s.close()
    assert corr.report()["attach"]["not_attached"] == ["slab", "oom"]
    assert len(made) == 2 and all(b.cleaned for b in made)
    assert made[1].sampled == []   # never sampled: never part of the trace


# -- a tracer's later part (reclaim.lru) ------------------------------------------
class _MapsBPF(_FakeBPF):
    """A fake object holding the maps named in its cflags' -DOBJECT_* parts."""

    def __getitem__(self, name):
        own = {"-DOBJECT_RECLAIM": "own_map", "-DOBJECT_RECLAIM_LRU": "lru_map"}
        if name in ("events", "lost_events") or any(own.get(c) == name for c in self.cflags):
            return super().__getitem__(name)
        raise KeyError(name)


def _split_session(duration=0.5):
    """reclaim first; its later part "lru" attaches with slab."""
    from trace_reclaim.session import LiveSession

    fakes = _fake_tracers(["reclaim", "slab"])
    rec = fakes["reclaim"]
    found = []

    def sample(bpf, procfs, ts, when):
        has = {}
        for m in ("own_map", "lru_map"):
            try:
                bpf[m]
                has[m] = True
            except KeyError:
                has[m] = False
        found.append((when, has["own_map"], has["lru_map"]))
        return []
    type(rec).later_part = "lru"
    type(rec).later_source = "oom.bpf.c"
    rec.sample = sample
    made = []

    def make(text, cflags):
        made.append(_MapsBPF(text, cflags))
        return made[-1]
    s = LiveSession(bpf_factory=make, procfs=_FakeProc(), tracers=fakes,
                    plan=Plan(["reclaim", "slab"], [], []),
                    header={"plan": {"tracers": ["reclaim", "slab"]}}, interval_s=0.1,
                    duration_s=duration, parts=[["reclaim"], ["reclaim.lru", "slab"]])
    return s, made, found


def test_a_tracer_reads_its_later_parts_maps_once_attached_its_own_throughout():
    s, made, found = _split_session()
    corr = s.run()
    s.close()
    assert found[0] == ("start", True, False)          # the later part not yet attached
    assert ("start", True, True) in found[1:]         # sampled again as it attaches
    assert found[-1] == ("end", True, True)
    doc = corr.report()
    assert doc["attach"]["later"][0]["tracers"] == ["reclaim.lru", "slab"]
    # a later part has no record types: none of reclaim's waits for it
    assert "-DOBJECT_RECLAIM_LRU" in made[1].cflags


def _lru_sample(ts, pages):
    lru = {who: {"calls": 1, "nr_scanned": pages, "nr_reclaimed": pages, "nr_taken": 0}
           for who in ("kswapd", "direct", "khugepaged")}
    return synth.user(events.Sample(ts, "reclaim", {"lru": lru, "lru_gen": None}))


def test_the_lru_rows_are_checked_against_the_kernel_from_the_lru_counts_attach():
    base = 1_000_000_000
    recs = [synth.vmstat_snapshot(base, "start", pgsteal_direct=100, pgsteal_kswapd=10,
                                  pgscan_direct=100, pgscan_kswapd=10, pageoutrun=7),
            synth.user(events.Sample(base, "reclaim", {"khugepaged_counted": True})),
            synth.user(events.Snapshot(base, "attach", "start", {
                "tracers": ["reclaim"], "pending": ["reclaim.lru"], "pending_types": []})),
            synth.user(events.Snapshot(base + 300, "attach", "attached", {
                "tracers": ["reclaim.lru"], "types": [],
                "vmstat": {"pgsteal_direct": 150, "pgsteal_kswapd": 10, "pgscan_direct": 150,
                           "pgscan_kswapd": 10, "pageoutrun": 8}})),
            _lru_sample(base + 300, 1000),
            _lru_sample(base + 2_000_000_000, 1040),
            synth.vmstat_snapshot(base + 2_000_000_000, "end", pgsteal_direct=190,
                                  pgsteal_kswapd=50, pgscan_direct=190, pgscan_kswapd=50,
                                  pageoutrun=9),
            synth.user(events.End(base + 2_000_000_000, "duration"))]
    doc, text = _report(recs)
    t = doc["totals"]
    assert t["lru_reclaimed_direct"] == 40 and t["lru_reclaimed_kswapd"] == 40
    rows = {ln.split()[-1]: ln.split() for ln in text.splitlines()
            if ln.strip().endswith(("pgsteal_direct", "pgsteal_kswapd", "pageoutrun"))}
    assert rows["pgsteal_direct"][-3:-1] == ["40", "40"]     # 190 - 150, not 190 - 100
    assert rows["pgsteal_kswapd"][-3:-1] == ["40", "40"]
    assert rows["pageoutrun"][-2] == "2"                     # reclaim's own: from the start
    assert "Attached: reclaim at the start; reclaim.lru 300ns later" in " ".join(text.split())


def test_lru_counts_that_never_attached_are_missing_not_zero():
    base = 1_000_000_000
    recs = [synth.vmstat_snapshot(base, "start", pgsteal_direct=100),
            synth.user(events.Sample(base, "reclaim", {"khugepaged_counted": True})),
            synth.user(events.Snapshot(base, "attach", "start", {
                "tracers": ["reclaim"], "pending": ["reclaim.lru", "slab"],
                "pending_types": _LATER_TYPES})),
            synth.vmstat_snapshot(base + 10, "end", pgsteal_direct=190),
            synth.user(events.End(base + 10, "duration"))]
    doc, text = _report(recs)
    assert "lru_reclaimed_direct" not in doc["totals"] and doc["reclaim"]["lru"] == {}
    row = next(ln for ln in text.splitlines() if ln.strip().endswith("pgsteal_direct"))
    assert row.split()[-3:] == ["-", "90", "pgsteal_direct"]
    assert ("Not attached: reclaim.lru, slab (the trace ended first); their sections are "
            "empty, and the counts of reclaim.lru are missing") in " ".join(text.split())


# -- the beginning: tracing begins before the session exists ---------------------------
def test_a_begun_trace_emits_the_start_it_read_and_loads_nothing_again():
    from trace_reclaim.session import Beginning, Compile, LiveSession

    names = ["reclaim", "slab"]
    fakes = _fake_tracers(names)
    made = []

    def make(text, cflags):
        made.append(_FakeBPF(text, cflags))
        return made[-1]
    plan = Plan(names, [], [])
    c = Compile(make, fakes, plan, names=["reclaim"], maps="export").start()
    clock = iter(range(1_000, 10**9, 1_000))
    begun = Beginning(c, fakes, _FakeProc(), clock=lambda: next(clock))
    assert [type(r).__name__ for r in begun.records] == ["Snapshot"] * 3   # no psi here
    assert made[0].sampled == [("reclaim", "start")]
    s = LiveSession(bpf_factory=make, procfs=_FakeProc(), tracers=fakes, plan=plan,
                    header={"plan": {"tracers": names}}, interval_s=0.1, duration_s=0.3,
                    parts=[["reclaim"], ["slab"]], begun=begun)
    corr = s.run()
    s.close()
    assert len(made) == 2 and "-DMAPS_EXTERN" in made[1].cflags   # the first: not again
    assert made[0].sampled.count(("reclaim", "start")) == 1
    assert corr.window.start_ns == begun.start_ns
    assert corr.report()["attach"]["later"][0]["tracers"] == ["slab"]


def test_a_signal_after_tracing_began_ends_the_trace_once_the_session_runs():
    import signal

    from trace_reclaim.commands.trace import _EarlyStop

    class S:
        stopped = []

        def stop(self, reason):
            self.stopped.append(reason)
    before = signal.getsignal(signal.SIGINT)
    with _EarlyStop() as early:
        os.kill(os.getpid(), signal.SIGINT)   # no KeyboardInterrupt: noted
        session = S()
        early.hand_to(session)
        assert session.stopped == ["SIGINT"]
        os.kill(os.getpid(), signal.SIGTERM)  # from now on, straight to the session
        assert session.stopped == ["SIGINT", "SIGTERM"]
    assert signal.getsignal(signal.SIGINT) is before
