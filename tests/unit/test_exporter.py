"""The Prometheus exporter and the serve command, in-process (no root, no BPF)."""

from __future__ import annotations

import io
import socket
import sys

import pytest

from trace_reclaim import cli, events
from trace_reclaim.commands import serve
from trace_reclaim.env import Environment, ExitStatus
from trace_reclaim.exporter import (FAMILIES, STALL_BUCKETS_NS, Exporter,
                                    ObservedReclaimTracer)
from trace_reclaim.tracer import Window
from trace_reclaim.tracers.reclaim import DirectReclaim, WakeupKswapd
from trace_reclaim.tracers.slab import SlabAggregator
from trace_reclaim.tracers.slab.records import EV_SHRINK_SLAB, ShrinkSlab

prometheus_client = pytest.importorskip("prometheus_client")
STALLS = "trace_reclaim_direct_reclaim_stall_seconds"


def NO_TIME():
    """A clock that never moves: every refresh looks free, so each interval refreshes."""
    return 0.0


def run(argv, **env_kw):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(argv, Environment(stdout=out, stderr=err, **env_kw))
    return rc, out.getvalue(), err.getvalue()


def assert_user_error(rc, out, err, status=ExitStatus.ERROR):
    assert rc == status, err
    assert err.startswith("error: ") and "\nhint: " in err, err
    assert "Traceback" not in err and out == ""


# -- the command line ------------------------------------------------------------

@pytest.mark.parametrize("listen", ["9853", "localhost", "127.0.0.1:", "127.0.0.1:x",
                                    "127.0.0.1:65536", "::1:9853", "[nope]:9853"])
def test_bad_listen_is_a_usage_error(listen):
    assert_user_error(*run(["serve", "--listen", listen], is_root=lambda: True),
                      status=ExitStatus.USAGE)


@pytest.mark.parametrize("listen,want", [
    ("127.0.0.1:9853", ("127.0.0.1", 9853)), (":9100", ("0.0.0.0", 9100)),
    ("[::1]:0", ("::1", 0)), ("localhost:80", ("localhost", 80))])
def test_listen_forms(listen, want):
    assert serve.parse_listen(listen) == want


@pytest.mark.parametrize("argv", [["serve", "-i", "0"], ["serve", "--top-shrinkers", "0"],
                                  ["serve", "--bogus"]])
def test_bad_flags(argv):
    assert_user_error(*run(argv, is_root=lambda: True), status=ExitStatus.USAGE)


def test_not_root():
    rc, out, err = run(["serve"], is_root=lambda: False)
    assert_user_error(rc, out, err)
    assert "root" in err


def test_port_in_use():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        port = s.getsockname()[1]
        rc, out, err = run(["serve", "--listen", f"127.0.0.1:{port}"], is_root=lambda: True)
    finally:
        s.close()
    assert_user_error(rc, out, err)
    assert f"127.0.0.1:{port}" in err and "another process" in err


def test_address_not_on_this_machine():
    # 192.0.2.0/24 is TEST-NET-1: never a local address; bind() says so, no traffic.
    rc, out, err = run(["serve", "--listen", "192.0.2.1:9853"], is_root=lambda: True)
    assert_user_error(rc, out, err)
    assert "cannot listen on 192.0.2.1:9853" in err


def test_without_prometheus_client(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    rc, out, err = run(["serve"], is_root=lambda: True)
    assert_user_error(rc, out, err)
    assert "trace-reclaim[serve]" in err


def test_help_examples_parse():
    parser = cli.build_parser()
    n = 0
    for line in serve.EPILOG.splitlines():
        line = line.strip()
        if line.startswith("trace-reclaim"):
            parser.parse_args(line.split("#")[0].split()[1:])
            n += 1
    assert n >= 2


# -- the exporter ---------------------------------------------------------------

def stall(end, delta, pid=7):
    return DirectReclaim(end, 4, pid, pid, 0, "dd", delta, 0xcc0, 32, 0, 0)


def wakeup(ts, nid, pid=7):
    return WakeupKswapd(ts, 1, pid, pid, 0, "dd", 0xcc0, nid, 2, 0)


def reclaim_agg(exp, start=0):
    return ObservedReclaimTracer(exp).aggregator(Window(start_ns=start))


def test_nothing_before_the_first_interval():
    exp = Exporter(clock=NO_TIME)
    exp.direct_reclaim(stall(10, 5))
    assert exp.families() == [] and exp.snapshot() == {}


def test_stall_buckets_are_inclusive_and_by_node():
    exp = Exporter(clock=NO_TIME)
    agg = reclaim_agg(exp, start=1_000)
    for d in (STALL_BUCKETS_NS[0], STALL_BUCKETS_NS[0] + 1, 20_000_000_000):
        agg.feed(stall(100_000_000_000, d))
    agg.feed(wakeup(100_000_000_001, nid=1, pid=9))
    agg.feed(stall(100_000_000_002, 30_000, pid=9))
    agg.feed(stall(1_500, 1_000))  # began before the window: neither counts it
    exp.update({"reclaim": agg}, {"reclaim": agg.on_tick(100_000_000_003)})
    snap = exp.snapshot()
    assert snap[STALLS + "_count"] == {("0",): 3, ("1",): 1}
    assert snap["trace_reclaim_direct_reclaim_stalls"] == {(): 4}
    fams = {f.name: f for f in exp.families()}
    buckets = {(s.labels["node"], s.labels["le"]): s.value
               for s in fams[STALLS].samples if s.name.endswith("_bucket")}
    assert buckets[("0", "1e-05")] == 1          # 10 us exactly: le is inclusive
    assert buckets[("0", "2.5e-05")] == 2
    assert buckets[("0", "10.0")] == 2           # 20 s: only in +Inf
    assert buckets[("0", "+Inf")] == 3
    assert buckets[("1", "2.5e-05")] == 0 and buckets[("1", "5e-05")] == 1


def shrink(ts, fn, shr, ns, freed=1):
    ts += 1_000_000
    return ShrinkSlab(ts, EV_SHRINK_SLAB, 5, 5, 0, "kswapd0", ns, shr, fn, 100, 10, 64, 0,
                      0, 0, 0xcc0, freed, 0, 12, 0, 0)


def symbols(ts, **names):
    return events.Sample(ts + 1_000_000, "slab", {"when": "tick", "symbols": {
        f"{addr:x}": name for name, addr in ((n, int(a, 16)) for n, a in names.items())}})


def test_shrinkers_top_n_by_time_then_sticky():
    exp = Exporter(top_shrinkers=2, clock=NO_TIME)
    a = SlabAggregator(Window(start_ns=1))
    A, B, C, D = 0xa000, 0xb000, 0xc000, 0xd000
    a.on_sample(symbols(2, a_scan=hex(A), b_scan=hex(B), c_scan=hex(C)))
    a.feed(shrink(10, A, 0x1, 300))
    a.feed(shrink(11, A, 0x2, 300))  # a second superblock: same function
    a.feed(shrink(12, B, 0x3, 500))
    a.feed(shrink(13, C, 0x4, 100))
    a.feed(shrink(14, D, 0x5, 10_000))  # no symbol yet: 'other'
    exp.update({"slab": a}, {"slab": a.on_tick(1_000_020)})
    calls = exp.snapshot()["trace_reclaim_shrinker_calls"]
    assert calls == {("a_scan",): 2, ("b_scan",): 1, ("other",): 2}
    # d_scan gets its name and the most time, but the two labels are taken:
    # a counter that moved to a new series would read as a reset.
    a.on_sample(symbols(21, d_scan=hex(D)))
    a.feed(shrink(30, D, 0x5, 10_000))
    a.feed(shrink(31, A, 0x1, 5))
    exp.update({"slab": a}, {"slab": a.on_tick(1_000_040)})
    snap = exp.snapshot()
    assert snap["trace_reclaim_shrinker_calls"] == {
        ("a_scan",): 3, ("b_scan",): 1, ("other",): 3}
    t = a.totals(a.report())
    assert sum(snap["trace_reclaim_shrinker_calls"].values()) == t["shrink_slab_calls"]
    assert sum(snap["trace_reclaim_shrinker_seconds"].values()) == \
        pytest.approx(t["shrink_slab_ns"] / 1e9)


def test_bpf_run_time_only_once_measured():
    exp = Exporter(clock=NO_TIME)
    exp.update({}, {}, bpf_stats=(False, {"tp_kswapd_wake": (0, 0)}))
    snap = exp.snapshot()
    assert snap["trace_reclaim_bpf_stats_enabled"] == {(): 0}
    assert snap["trace_reclaim_bpf_run_seconds"] == {}
    exp.update({}, {}, bpf_stats=(True, {"tp_kswapd_wake": (1_500_000_000, 30)}))
    snap = exp.snapshot()
    assert snap["trace_reclaim_bpf_run_seconds"] == {("tp_kswapd_wake",): 1.5}
    assert snap["trace_reclaim_bpf_runs"] == {("tp_kswapd_wake",): 30}


def test_counters_never_go_down():
    exp = Exporter(clock=NO_TIME)
    exp.update({}, {"lost_events": 3})
    exp._rise("trace_reclaim_vmalloc_areas", ("unknown",), 2)
    exp._rise("trace_reclaim_vmalloc_areas", ("unknown",), 1)  # a verdict settled elsewhere
    assert exp._values["trace_reclaim_vmalloc_areas"][("unknown",)] == 2 and exp.held == 1


def exposition(exp, openmetrics):
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    reg = CollectorRegistry(auto_describe=False)
    reg.register(exp)
    return (om_latest if openmetrics else generate_latest)(reg).decode()


@pytest.mark.parametrize("openmetrics", [False, True])
def test_exposition_parses_and_follows_the_conventions(openmetrics):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as text

    exp = Exporter(clock=NO_TIME)
    agg = reclaim_agg(exp)
    agg.feed(stall(1_000_000, 50_000))
    exp.update({"reclaim": agg}, {"reclaim": agg.on_tick(2_000_000), "lost_events": 0},
               bpf_stats=(True, {"prog": (10, 1)}))
    body = exposition(exp, openmetrics)
    fams = {f.name: f for f in (om if openmetrics else text)(body)}
    if openmetrics:
        assert body.rstrip().endswith("# EOF")
        assert "# UNIT trace_reclaim_direct_reclaim_stall_seconds seconds" in body
    for f in FAMILIES:
        if f.name in fams:
            assert fams[f.name].type == f.kind
    for line in body.splitlines():
        if line.startswith("#") or not line:
            continue
        name = line.split("{")[0].split()[0]
        assert name.startswith("trace_reclaim_")
        assert "pid" not in line and "comm" not in line
    assert "trace_reclaim_direct_reclaim_stalls_total 1.0" in body
    assert 'trace_reclaim_kswapd_awake_seconds_total' not in body  # no kswapd seen
    for f in FAMILIES:
        if f.kind == "counter":
            assert not f.name.endswith("_total")  # the library adds it
        if "seconds" in f.name:
            assert f.unit == "seconds" and f.name.endswith("_seconds")


def test_a_costly_refresh_backs_off():
    """A refresh that took 1 s waits 1 / MAX_REFRESH_SHARE s before the next;
    the intervals in between are kept and published with it."""
    from trace_reclaim.exporter import MAX_REFRESH_SHARE

    now = [0.0]

    class Slow:
        def report(self):
            now[0] += 1.0
            return {}

        def totals(self, section):
            return {}

    exp = Exporter(clock=lambda: now[0])
    assert exp.update({"slow": Slow()}, {"lost_events": 1})
    backoff = 1.0 / MAX_REFRESH_SHARE
    while now[0] + 1 < backoff:
        now[0] += 1
        assert not exp.update({"slow": Slow()}, {"lost_events": 1})
        assert exp.snapshot()["trace_reclaim_intervals"] == {(): 1}
    now[0] = backoff
    assert exp.update({"slow": Slow()}, {"lost_events": 1})
    snap = exp.snapshot()
    n = snap["trace_reclaim_intervals"][()]
    assert n > 2 and snap["trace_reclaim_lost_events"] == {(): n}
    assert snap["trace_reclaim_refreshes"] == {(): 2}
    assert snap["trace_reclaim_refresh_duration_seconds"] == {(): 1.0}


class _Probe:
    """Every tracepoint exists; nothing better than tracepoints loads."""

    def tracepoint_exists(self, category, event):
        return True

    kprobes = fentry = (False, "not in this test")
    btf_types = None

    def kernel_symbol(self, name):
        return None


@pytest.mark.parametrize("accounting", [True, False])
def test_no_slab_accounting_reaches_the_plan(accounting, monkeypatch):
    """--no-slab-accounting must change what the slab tracer compiles, not
    set an option nobody reads."""
    from trace_reclaim.tracers.slab import SlabTracer

    monkeypatch.setattr(SlabTracer, "btf_facts", lambda self, probe: {
        "alloc_arg": 2, "free_arg": 2, "name_off": 96, "btf": True})
    reg = serve.serve_registry(Exporter(), slab_accounting=accounting)
    _attaches, cflags = reg["slab"].plan(_Probe())
    assert ("-DSLAB_CACHE_ACCOUNTING" in cflags) == accounting
    assert isinstance(reg["reclaim"], ObservedReclaimTracer)
    # The shared registry instance keeps its default.
    from trace_reclaim import tracers
    _a, default = tracers.registry()["slab"].plan(_Probe())
    assert "-DSLAB_CACHE_ACCOUNTING" in default
