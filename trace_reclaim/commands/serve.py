"""``trace-reclaim serve``: trace continuously and serve /metrics to Prometheus.

The same live session as ``live`` (same tracers, same correlator), without
the view or the final report: at each interval the exporter
(``trace_reclaim.exporter``) reads the aggregators and publishes counters
that a scrape then reads.  prometheus_client serves them, in the OpenMetrics
format when the scraper asks for it (``Accept: application/openmetrics-text``),
with its process collector for the tool's own CPU time and memory.  No
recording unless ``-o``.  SIGTERM or Ctrl-C stops it cleanly (exit 0).

BPF run time: when kernel.bpf_stats_enabled is 1 the kernel times every BPF
program; each of ours reports its run_time_ns and run_cnt in
/proc/self/fdinfo/<its fd>, read once per interval.  serve never turns the
stats on itself (they cost every BPF program a clock read per run).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any, Dict, Optional, Tuple

from trace_reclaim import tracers
from trace_reclaim.commands import HELP
from trace_reclaim.commands.args import INTERVAL_S, positive
from trace_reclaim.commands.trace import open_recording, preflight, sigterm_interrupts
from trace_reclaim.env import Environment, ExitStatus, UserError
from trace_reclaim.tracer import Options, Tracer

__all__ = ["add_parser", "run", "parse_listen", "serve_registry", "DEFAULT_LISTEN"]

DEFAULT_LISTEN = "127.0.0.1:9853"
EPILOG = """\
examples:
  trace-reclaim serve                          # /metrics on 127.0.0.1:9853
  trace-reclaim serve --listen :9853 -i 1      # all interfaces, 1 s intervals
  curl -s 127.0.0.1:9853/metrics | grep stall  # what Prometheus scrapes
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help=HELP["serve"],
        description="Trace reclaim continuously and serve the counts on /metrics for "
                    "Prometheus (text or OpenMetrics format).  The counters are the "
                    "report's, updated once per interval.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve /metrics on (default {DEFAULT_LISTEN}; "
                        "':PORT' for every interface, port 0 for any free port)")
    p.add_argument("-i", "--interval", type=positive(float, *INTERVAL_S), default=5.0,
                   metavar="SECONDS",
                   help="how often the counters are updated (default 5: each interval "
                        "reads /proc and the BPF maps, ~4%% of a core at 1 s)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="also record to FILE (must not exist; it grows for as long as "
                        "serve runs)")
    p.add_argument("--top-shrinkers", type=positive(int), default=10, metavar="N",
                   help="shrinkers with their own label, named by callback and what "
                        "they shrink, e.g. 'super_cache_scan (ext4 vda)' (by time; the "
                        "rest are 'other'; default 10)")
    p.add_argument("--top-cgroups", type=positive(int), default=20, metavar="N",
                   help="cgroups with their own label, by their path (by reclaim "
                        "time, direct and memcg; the rest are 'other'; default 20)")
    p.add_argument("--no-slab-accounting", action="store_true",
                   help="don't count kmem_cache allocations per cache in the kernel")


def parse_listen(s: str) -> Tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every IPv4 interface)."""
    hint = "give HOST:PORT, e.g. --listen 127.0.0.1:9853 or --listen [::1]:9853"
    host, sep, port_s = s.rpartition(":")
    if not sep or not port_s.isdigit():
        raise UserError(f"--listen {s!r}: no port", hint, ExitStatus.USAGE)
    port = int(port_s)
    if port > 65535:
        raise UserError(f"--listen {s!r}: port {port} is out of range (0-65535)", hint,
                        ExitStatus.USAGE)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UserError(f"--listen {s!r}: {host!r} is not an IPv6 address", hint,
                            ExitStatus.USAGE) from None
    elif ":" in host:
        raise UserError(f"--listen {s!r}: an IPv6 address needs brackets", hint,
                        ExitStatus.USAGE)
    return host or "0.0.0.0", port


def _require_prometheus_client() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UserError(f"serve needs the prometheus-client package, which "
                        f"{sys.executable} cannot import",
                        "pip install 'trace-reclaim[serve]' (./bootstrap.sh installs it)"
                        ) from None


def _listen(host: str, port: int, exporter: Any) -> Any:
    """Bind and serve /metrics in a thread; UserError when the address is unusable."""
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, memory, fds
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        httpd, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:  # in use, not local, or no such host
        why = e.strerror or str(e)
        hint = ("another process listens there: stop it or choose another port"
                if getattr(e, "errno", None) == 98 else
                "give an address of this machine, e.g. --listen 127.0.0.1:9853")
        raise UserError(f"cannot listen on {where}: {why}", hint) from None
    return httpd


def _bpf_prog_stats(bpf: Any) -> Dict[str, Tuple[int, int]]:
    """run_time_ns and run_cnt of each loaded BPF program, from its fdinfo."""
    out: Dict[str, Tuple[int, int]] = {}
    funcs = getattr(bpf, "funcs", None) or {}
    for name, fn in list(funcs.items()):
        fd = getattr(fn, "fd", None)
        if fd is None or fd < 0:
            continue
        run_ns = cnt = None
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k == "run_time_ns":
                        run_ns = int(v)
                    elif k == "run_cnt":
                        cnt = int(v)
        except (OSError, ValueError):
            continue
        if run_ns is not None and cnt is not None:
            key = name.decode() if isinstance(name, bytes) else str(name)
            out[key] = (run_ns, cnt)
    return out


def _bpf_stats_enabled(env: Environment) -> bool:
    text = env.procfs.try_read("/proc/sys/kernel/bpf_stats_enabled")
    return bool(text and text.strip() == "1")


def serve_registry(exporter: Any, slab_accounting: bool = True) -> Dict[str, Tracer]:
    """Every tracer, the reclaim one observed by ``exporter``; the command
    line's choices applied to copies (the registry's instances are shared)."""
    from trace_reclaim.exporter import ObservedReclaimTracer

    options = Options(slab_cache_accounting=slab_accounting)
    registry = {name: t.configured(options) for name, t in tracers.registry().items()}
    registry["reclaim"] = ObservedReclaimTracer(exporter).configured(options)
    return registry


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    from trace_reclaim.exporter import Exporter
    from trace_reclaim.session import build_header

    host, port = parse_listen(args.listen)
    if not env.is_root():
        raise UserError("trace-reclaim needs root to load BPF programs",
                        "run it as root, e.g. sudo trace-reclaim serve")
    _require_prometheus_client()
    if args.output and os.path.lexists(args.output):
        raise UserError(f"{args.output} exists; trace-reclaim does not overwrite "
                        "recordings", "choose another file name")
    exporter = Exporter(top_shrinkers=args.top_shrinkers, top_cgroups=args.top_cgroups)
    registry = serve_registry(exporter, slab_accounting=not args.no_slab_accounting)
    httpd = _listen(host, port, exporter)  # before the slow BPF load: fail fast
    try:
        with sigterm_interrupts():
            probe = preflight(env)
            plan = probe.plan(registry)
            if "reclaim" not in plan.tracers:
                raise UserError("the vmscan tracepoints are missing: "
                                + "; ".join(plan.missing),
                                "run 'trace-reclaim check'; this kernel lacks "
                                "CONFIG_TRACEPOINTS or the vmscan events")
            for m in plan.missing:
                env.warn(f"not tracing {m}")
            header = build_header(probe, plan, sys.argv[1:], args.interval, registry)
            header["delayacct"] = {"before": None, "turned_on_for_run": False,
                                   "during": False}
            return _serve(args, env, plan, header, registry, exporter, httpd)
    except KeyboardInterrupt:
        print("trace-reclaim serve: stopped before tracing began", file=env.stderr)
        return ExitStatus.OK
    finally:
        httpd.shutdown()
        httpd.server_close()


def _serve(args: argparse.Namespace, env: Environment, plan: Any, header: Dict[str, Any],
           registry: Dict[str, Any], exporter: Any, httpd: Any) -> ExitStatus:
    from trace_reclaim.session import LiveSession, SessionError

    f = writer = None
    if args.output:
        f, writer = open_recording(args.output, args.output, header)
    session: Optional[LiveSession] = None
    warned = False   # that the recording stopped (Writer.error), once

    def on_row(row: Dict[str, Any]) -> None:
        assert session is not None
        corr = session.correlator
        stats = None
        if session.bpf is not None:
            stats = (_bpf_stats_enabled(env), _bpf_prog_stats(session.bpf))
        exporter.update(corr.aggs, row, bpf_stats=stats,
                        damaged_records=corr.decode_errors + sum(corr.unknown_types.values()),
                        unwritten_records=writer.unwritten if writer is not None else 0)
        nonlocal warned
        if writer is not None and writer.error is not None and not warned:
            # The metrics are serve's job: they go on, the recording stops.
            warned = True
            env.warn(f"cannot write {args.output}: {writer.error.strerror or writer.error}; "
                     f"recording stopped after {writer.records} records, the metrics go on")

    # No episodes or interval rows kept: serve never reports, and runs for weeks.
    session = LiveSession(bpf_factory=env.bpf(), procfs=env.procfs, tracers=registry,
                          plan=plan, header=header, interval_s=args.interval,
                          writer=writer, on_row=on_row, history=False,
                          stop_on_write_error=False)
    try:
        try:
            session.load()
        except SessionError as e:
            if f is not None:
                f.close()
                f = writer = None
                os.unlink(args.output)
            if args.traceback:
                print(session.compiler_output, file=env.stderr)
            raise UserError(str(e), e.hint) from e
        host, port = httpd.server_address[:2]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        print(f"trace-reclaim serve: tracing ({', '.join(plan.tracers)}), metrics on "
              f"http://{where}/metrics"
              + (f", recording to {args.output}" if args.output else ""),
              file=env.stderr, flush=True)
        corr = session.run()
    finally:
        session.close()
        if writer is not None and f is not None:
            writer.close()
            f.close()
    env.tell(f"trace-reclaim serve: stopped ({corr.ended}) after "
             f"{corr.rows_dropped + len(corr.rows)} intervals")
    if writer is not None and writer.error is not None:
        err = writer.error
        raise UserError(f"cannot write {args.output}: {err.strerror or err}",
                        f"it holds the first {writer.records} records, every block complete "
                        f"({writer.unwritten} not written); free space on its filesystem, "
                        "or record to another one")
    return ExitStatus.OK
