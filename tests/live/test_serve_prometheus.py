"""Live, as root: a real Prometheus scrapes ``trace-reclaim serve`` during
real memory pressure, and its counters equal the kernel's own.

Prometheus (Debian's package; ./bootstrap.sh test installs it) runs on
loopback with a temporary storage directory and a 1 s scrape interval;
serve runs with 1 s intervals.  The pressure workload is
examples/pressure.py, run in-process under the machine lock the ``live``
fixture holds.

Why not ``increase()``: it looks only at the samples inside its range and
extrapolates the first and last of them towards the range's ends (by up to
half an average scrape interval each side), so it gives a scaled, usually
fractional number.  A counter's value at two instants, taken with the ``@``
modifier, is exact: each is the last sample scraped at or before that
instant.  The instants are chosen when the machine is quiet: the kernel's
counters have not moved for SETTLE_S seconds, long enough for serve to tick
and Prometheus to scrape after the last change.  So the value at t1 holds
everything before the workload, and the value at t2 everything up to its
end: their difference is the workload's, like the /proc/vmstat delta read
at the same instants.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.conftest import REQUIRE_LIVE
from tests.livetools import ROOT, report_json, vmstat
from tests.replay.test_exporter_replay import check_counters_against_report
from trace_reclaim.examples import pressure

pytestmark = pytest.mark.live

ALLOCSTALL = ("allocstall_dma", "allocstall_dma32", "allocstall_normal",
              "allocstall_movable", "allocstall_device")
# The kernel counters the traced counters are checked against; quiet means none moves.
WATCHED = ALLOCSTALL + ("pgsteal_direct", "pgscan_direct", "pgsteal_kswapd", "pgscan_kswapd",
                        "pageoutrun", "slabs_scanned")
SETTLE_S = 3.5  # > serve's interval + the scrape interval, with room for a late tick
STALLS = "trace_reclaim_direct_reclaim_stall_seconds"


def quiet(*a, **k):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, accept: Optional[str] = None, timeout: float = 5) -> Tuple[str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.headers.get("Content-Type", ""), r.read().decode()


def stop(proc: Optional[subprocess.Popen], timeout: float = 30) -> Optional[int]:
    """SIGTERM, then SIGKILL if it does not go; return its exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for(what: str, cond: Any, timeout: float, procs: List[subprocess.Popen]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        for p in procs:
            assert p.poll() is None, f"{p.args[0]} exited with {p.returncode} waiting for {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def serving(tmp: str) -> Iterator[Tuple[subprocess.Popen, str, str]]:
    """``trace-reclaim serve`` on a free loopback port, recording too; stopped on exit."""
    err_path = os.path.join(tmp, "serve.err")
    rec = os.path.join(tmp, "serve.trc")
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trace_reclaim", "serve", "--listen", "127.0.0.1:0",
             "-i", "1", "-o", rec], stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    try:
        def address() -> Optional[str]:
            with open(err_path) as f:
                for line in f:
                    if "metrics on http://" in line:
                        return line.split("http://", 1)[1].split("/", 1)[0]
            return None
        addr = wait_for("serve to attach", address, 120, [proc])
        yield proc, addr, rec
    finally:
        stop(proc)


@contextlib.contextmanager
def prometheus(tmp: str, target: str) -> Iterator[str]:
    """Prometheus on 127.0.0.1 scraping ``target`` every second; stopped on exit."""
    conf = os.path.join(tmp, "prometheus.yml")
    with open(conf, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: trace-reclaim\n    scrape_interval: 1s\n"
                f"    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n")
    log = open(os.path.join(tmp, "prometheus.log"), "w")
    proc = None
    try:
        for _attempt in range(3):  # the free port may be taken before prometheus binds it
            port = free_port()
            proc = subprocess.Popen(
                [shutil.which("prometheus") or "prometheus", f"--config.file={conf}",
                 f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=log, stderr=log, cwd=tmp)
            url = f"http://127.0.0.1:{port}"

            def ready(url: str = url) -> bool:
                try:
                    return http_get(url + "/-/ready")[1].strip() != ""
                except OSError:
                    return False
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline and not ready():
                time.sleep(0.2)
            if proc.poll() is None and ready():
                yield url
                return
            stop(proc)
        with open(log.name) as f:
            raise AssertionError(f"prometheus did not start:\n{f.read()[-2000:]}")
    finally:
        stop(proc)
        log.close()


def query(url: str, expr: str) -> List[Dict[str, Any]]:
    _ctype, body = http_get(url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def scalar(url: str, expr: str) -> float:
    res = query(url, expr)
    assert len(res) == 1, (expr, res)
    return float(res[0]["value"][1])


def settle(timeout: float = 90) -> Tuple[float, Dict[str, int]]:
    """Wait until no WATCHED counter has moved for SETTLE_S; return (now, vmstat)."""
    last = vmstat()
    since = time.time()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now_t, now = time.time(), vmstat()
        if any(now[k] != last.get(k) for k in WATCHED if k in now):
            last, since = now, now_t
        elif now_t - since >= SETTLE_S:
            return now_t, now
    raise AssertionError("the kernel's reclaim counters kept moving: the machine is not quiet")


def refreshes(addr: str) -> float:
    """serve's own count of refreshes from the reports, read from /metrics."""
    _ctype, text = http_get(f"http://{addr}/metrics")
    for line in text.splitlines():
        if line.startswith("trace_reclaim_refreshes_total "):
            return float(line.split()[1])
    return 0.0


def settle_refreshed(addr: str, procs: List[subprocess.Popen]) -> Tuple[float, Dict[str, int]]:
    """settle(), then a refresh of serve's counters after it, then a scrape
    after that: so the counters at the instant returned hold everything the
    kernel counted up to it.  (settle() alone is not enough: after a costly
    refresh serve waits before the next (MAX_REFRESH_SHARE), and a counter
    read at the quiet instant could miss the last interval's stalls: seen,
    84 stalls against 85 allocstall.)"""
    while True:
        t, v = settle()
        before = refreshes(addr)
        wait_for("serve to refresh after the machine went quiet",
                 lambda before=before: refreshes(addr) > before, 60, procs)
        time.sleep(2.0)  # Prometheus scrapes every 1 s
        now = vmstat()
        if all(now.get(k) == v.get(k) for k in WATCHED):
            return time.time(), now


def test_prometheus_counts_equal_the_kernels_own(live):
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        why = "Debian's prometheus package is not installed (./bootstrap.sh test installs it)"
        if REQUIRE_LIVE:
            pytest.fail(why)
        pytest.skip(why)
    with tempfile.TemporaryDirectory(prefix="trace-reclaim-serve-") as tmp, \
            serving(tmp) as (serve, addr, rec), prometheus(tmp, addr) as prom:
        procs = [serve]
        wait_for("the first scrape of serve",
                 lambda: query(prom, 'up{job="trace-reclaim"} == 1')
                 and query(prom, "trace_reclaim_intervals_total"), 60, procs)
        # A scrape, as text and as OpenMetrics: promtool's lint passes.
        ctype, text = http_get(f"http://{addr}/metrics")
        assert ctype.startswith("text/plain"), ctype
        lint = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"],
                              input=text, capture_output=True, text=True, timeout=60)
        assert lint.returncode == 0 and not lint.stdout.strip() and \
            not lint.stderr.strip(), lint.stdout + lint.stderr
        ctype, om = http_get(f"http://{addr}/metrics",
                             accept="application/openmetrics-text; version=1.0.0")
        assert ctype.startswith("application/openmetrics-text"), ctype
        assert om.rstrip().endswith("# EOF") and "# UNIT " + STALLS + " seconds" in om

        t1, v1 = settle_refreshed(addr, procs)
        time.sleep(0.5)  # no scrape taken at or before t1 can see the workload
        for _ in range(3):  # the workload's precondition, not the exporter's
            if pressure.run(seconds=6, log=quiet)["direct_reclaims"]:
                break
        else:
            raise AssertionError("the workload made no direct reclaim in 3 tries")
        t2, v2 = settle_refreshed(addr, procs)
        assert serve.poll() is None

        def delta(expr: str) -> float:
            # A family with no series yet at t1 (no shrinker ran) counts from 0.
            return scalar(prom, f"(sum({expr} @ {t2:.3f}) or vector(0)) - "
                                f"(sum({expr} @ {t1:.3f}) or vector(0))")

        vm = {k: v2.get(k, 0) - v1.get(k, 0) for k in WATCHED}
        allocstall = sum(vm[k] for k in ALLOCSTALL)
        got = {
            "stalls": delta("trace_reclaim_direct_reclaim_stalls_total"),
            "retries": delta("trace_reclaim_direct_reclaim_retries_total"),
            "histogram_count": delta(STALLS + "_count"),
            "lost": delta("trace_reclaim_lost_events_total"),
            "pgsteal_direct": delta('trace_reclaim_lru_reclaimed_pages_total'
                                    '{reclaimer="direct"}'),
            "pgscan_direct": delta('trace_reclaim_lru_scanned_pages_total{reclaimer="direct"}'),
            "pgsteal_kswapd": delta('trace_reclaim_lru_reclaimed_pages_total'
                                    '{reclaimer="kswapd"}'),
            "pgscan_kswapd": delta('trace_reclaim_lru_scanned_pages_total{reclaimer="kswapd"}'),
            "pageoutrun": delta("trace_reclaim_kswapd_wakes_total"),
            "slabs_scanned": delta("trace_reclaim_shrinker_scanned_objects_total"),
        }
        window = f"{int((t2 - t1) * 1000)}ms"
        extrapolated = scalar(prom, f"sum(increase(trace_reclaim_direct_reclaim_stalls_total"
                                    f"[{window}] @ {t2:.3f}))")
        print(f"\nPrometheus over {t2 - t1:.1f} s: stalls {got['stalls']:.0f} + retries "
              f"{got['retries']:.0f}, histogram _count {got['histogram_count']:.0f}; "
              f"/proc/vmstat allocstall_* delta {allocstall}; increase() says "
              f"{extrapolated:.2f}")
        print("  " + ", ".join(f"{k} {got[k]:.0f} (vmstat {vm[k]})" for k in vm
                               if k in got))
        assert got["lost"] == 0, "events were lost: the counts cannot be exact"
        assert allocstall > 0
        assert got["stalls"] + got["retries"] == allocstall
        assert got["histogram_count"] == got["stalls"]
        for k in ("pgsteal_direct", "pgscan_direct", "pgsteal_kswapd", "pgscan_kswapd",
                  "pageoutrun", "slabs_scanned"):
            assert got[k] == vm[k], (k, got[k], vm[k])
        # SIGTERM: serve stops cleanly, exit 0, its recording complete.
        assert stop(serve) == 0
    # Out of the with: serve and prometheus are stopped, the temporary
    # directory (tsdb, recording) is gone.
    assert not os.path.exists(tmp)


def test_serve_recording_replays_to_the_same_counters(live, tmp_path):
    """serve's own recording (every tracer, real events) through the exporter
    equals its report: shrinkers, vmalloc, compaction included."""
    with serving(str(tmp_path)) as (serve, addr, rec):
        for _ in range(3):  # the workload's precondition, not the exporter's
            if pressure.run(seconds=6, log=quiet)["direct_reclaims"]:
                break
        else:
            pytest.fail("the workload made no direct reclaim in three tries")
        with open("/proc/sys/vm/drop_caches", "w") as f:  # every shrinker, once
            f.write("2")
        time.sleep(1.5)
        _ctype, text = http_get(f"http://{addr}/metrics")
        assert "trace_reclaim_shrinker_calls_total{" in text
        assert stop(serve) == 0
    doc, snap = check_counters_against_report(rec)
    assert doc["totals"] == report_json(rec)["totals"]
    assert doc["totals"]["shrink_slab_calls"] > 0
    assert sum(snap["trace_reclaim_shrinker_calls"].values()) == \
        doc["totals"]["shrink_slab_calls"]


def test_serve_counts_a_cgroups_memcg_reclaim_under_its_path(live, tmp_path):
    """A container host's question, as Prometheus sees it: which cgroup is
    reclaiming.  A cgroup of our own at its limit: its series, labelled by its
    path, count its memcg reclaims, which the kernel bounds (every reclaim
    follows a failed charge: v1 failcnt, v2 memory.events max) and which
    serve's own recording reports the same."""
    from prometheus_client.parser import text_string_to_metric_families

    from trace_reclaim import cgroupfs
    from trace_reclaim.examples import cgroup_pressure

    with serving(str(tmp_path)) as (serve, addr, rec):
        # serve listens before its BPF load: the trace runs once it has ticked.
        wait_for("serve's first interval", lambda: "\ntrace_reclaim_intervals_total " in
                 http_get(f"http://{addr}/metrics")[1], 120, [serve])
        res = cgroup_pressure.run(mib=400, limit_mib=48, hold_s=1.5, log=quiet)
        assert res["child_status"] == 0, res["child_stderr"]
        # A refresh that began after the workload (a costly one delays the next).
        before = refreshes(addr)
        wait_for("serve to refresh after the workload", lambda: refreshes(addr) > before,
                 60, [serve])
        _ctype, text = http_get(f"http://{addr}/metrics")
        assert stop(serve) == 0
    rel = res["cgroup"]["rel"]
    got: Dict[Tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "trace_reclaim_cgroup_reclaims_total" and s.labels["cgroup"] == rel:
                got[(s.labels["hierarchy"], s.labels["reclaim"])] = s.value
    assert got, (f"no series for {rel}",
                 [ln for ln in text.splitlines() if "cgroup_reclaims_total{" in ln])
    row = [r for r in report_json(rec)["cgroups"] if r["path"] == rel]
    assert len(row) == 1, row
    hier = row[0]["hierarchy"]
    assert got[(hier, "memcg")] == row[0]["memcg_reclaims"] > 0
    assert got[(hier, "direct")] == row[0]["direct_stalls"] == 0
    d = res["delta"]
    bound = d["failcnt"] if res["cgroup"]["version"] == cgroupfs.V1 else d["events"]["max"]
    assert got[(hier, "memcg")] <= bound, (got, d)
    # serve compiles every tracer into one object: memcg reclaim is marked by
    # the memcg programs there, and its LRU pages stay out of "direct".
    tot = report_json(rec)["totals"]
    assert tot["lru_reclaimed_direct"] == tot["vmstat_delta"].get("pgsteal_direct", 0), tot
    assert tot["lru_reclaimed_memcg"] == tot["memcg_reclaim_pages"] > 0, tot
