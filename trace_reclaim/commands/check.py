"""``trace-reclaim check``: what this kernel offers and the attach plan, with reasons."""

from __future__ import annotations

import argparse
from typing import List, Optional, TextIO

from trace_reclaim import tracers
from trace_reclaim.env import Environment, ExitStatus, UserError
from trace_reclaim.probe import Probe

__all__ = ["run"]


def _wrapped(out: TextIO, text: str, indent: str, later: Optional[str] = None) -> None:
    import textwrap

    for line in textwrap.wrap(text, 79, initial_indent=indent,
                              subsequent_indent=later or indent, break_on_hyphens=False):
        print(line, file=out)



def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    probe = Probe(env.procfs, env.bpf_factory, getattr(args, "attach", None))
    out = env.stdout
    ok = True
    problems: List[str] = []
    root = env.is_root()
    _wrapped(out, f"kernel        {probe.release}", "", " " * 14)
    _wrapped(out, f"root          {'yes' if root else 'no: BPF needs root'}", "", " " * 14)
    ok &= root
    tfs, how = probe.mount_tracefs() if root else (probe.tracefs(), "")
    print(f"tracefs       {tfs or 'missing'}" + (f" ({how})" if how and how != "mounted"
                                                 else ""), file=out)
    if not tfs:
        ok = False
        problems.append("tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing")
    h = probe.headers
    if h["path"] is None:
        print(f"headers       missing: /lib/modules/{probe.release}/build", file=out)
        problems.append("no kernel headers: run ./bootstrap.sh to install the nearest")
        ok = False
    else:
        match = "match the running kernel" if h["matches"] else \
            f"from {h['release']}, NOT the running {probe.release}: the nearest " \
            "available; tracepoint programs are still correct (their fields come " \
            "from the live tracefs formats)"
        print(f"headers       {h['path']}", file=out)
        if h.get("kheaders"):
            _wrapped(out, "the kernel's own (CONFIG_IKHEADERS): bcc extracts them at the "
                     "first compile", "              ")
        _wrapped(out, match, "              ")
    bcc_ok = True
    if root:
        try:
            factory = env.bpf()
            probe._bpf_factory = factory
        except UserError as e:
            bcc_ok = False
            problems.append(str(e))
    _wrapped(out, f"bcc           {'importable' if bcc_ok else 'missing'}", "", " " * 14)
    ok &= bcc_ok
    _wrapped(out, f"BTF           {'yes' if probe.btf else 'no'}", "", " " * 14)
    kp = probe.kprobes
    _wrapped(out, f"kprobes       {'yes' if kp[0] else 'no'}: {kp[1]}", "", " " * 14)
    fe = probe.fentry if root and bcc_ok else (False, "not tried (needs root and bcc)")
    _wrapped(out, f"fentry        {'yes' if fe[0] else 'no'}: {fe[1]}", "", " " * 14)
    psi = probe.psi
    _wrapped(out, f"PSI           {'yes' if psi[0] else 'no'}: {psi[1]}", "", " " * 14)
    da = probe.delayacct
    _wrapped(out, f"delayacct     {da[1]}", "", " " * 14)
    hv = probe.huge_vmalloc
    _wrapped(out, f"huge vmalloc  {'possible' if hv[0] else 'no'}: {hv[1]}", "", " " * 14)
    _wrapped(out, f"config        {probe.kconfig_source or 'unknown'}", "", " " * 14)
    if tfs:
        plan = probe.plan(tracers.registry())
        if probe.attach:
            print(f"\nattach plan (forced: --attach {probe.attach}):", file=out)
        else:
            print("\nattach plan:", file=out)
        for a in plan.attaches:
            print(f"  {a.family}", file=out)
            _wrapped(out, f"-> {a.chosen}", "      ")
            for opt, why in a.rejected:
                _wrapped(out, f"not {opt}: {why}", "      ", "        ")
        _wrapped(out, f"tracers       {', '.join(plan.tracers) or 'none'}", "", " " * 14)
        if "reclaim" not in plan.tracers:
            ok = False
            problems.append("the vmscan tracepoints are missing")
    print(file=out)
    _wrapped(out, f"ready         {'yes' if ok else 'no'}", "", " " * 14)
    if not ok:
        raise UserError("tracing cannot run here: " + "; ".join(problems) if problems
                        else "tracing cannot run here",
                        "run as root after ./bootstrap.sh" if not root else
                        "run ./bootstrap.sh, which installs bcc and headers and mounts tracefs")
    return ExitStatus.OK
