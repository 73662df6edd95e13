"""Live, as root: every attach plan's BPF text compiles with bcc here.

This machine refuses fentry and has no kprobes, so only the tracepoint plan
loads; the fentry and kprobe plans run on stock kernels (the VM tier).  What
this tier can hold them to: the program bcc would build for each plan
compiles, with the headers this machine has.  Nothing is loaded or attached
(libbcc's module creation: clang, then the maps).
"""

from __future__ import annotations

import ctypes
from typing import List, Optional, Tuple

import pytest

from trace_reclaim import tracers
from trace_reclaim.probe import Probe
from trace_reclaim.quiet import captured_stderr
from trace_reclaim.session import bpf_cflags, bpf_source
from trace_reclaim.tracer import Options
from trace_reclaim.tracers.vmalloc import VmallocTracer

pytestmark = pytest.mark.live


class AssumedProbe(Probe):
    """This kernel's BTF and tracefs, with fentry and kprobes assumed to work."""

    def __init__(self, fentry: bool, kprobes: bool) -> None:
        super().__init__()
        self._fe, self._kp = fentry, kprobes

    @property  # type: ignore[override]
    def fentry(self) -> Tuple[bool, str]:
        return self._fe, "assumed by the test"

    @property  # type: ignore[override]
    def kprobes(self) -> Tuple[bool, str]:
        return self._kp, "assumed by the test"

    def tracing_attach(self, func: str, kind: str = "fentry") -> Tuple[bool, str]:
        return self._fe, "assumed by the test"


class Before62Probe(AssumedProbe):
    """As above, on a kernel without the vmalloc tracepoints (before 6.2):
    the area events from the functions, with 6.1's prototypes."""

    def tracepoint_exists(self, category: str, event: str) -> bool:
        return category != "vmalloc" and super().tracepoint_exists(category, event)

    def btf_func_params(self, name: str) -> Optional[List[str]]:
        for fn, _kind, params in VmallocTracer.AREA_FUNCS:
            if fn == name:
                return list(params)
        return super().btf_func_params(name)


@pytest.mark.parametrize("fentry,kprobes,want", [
    (True, True, ("-DVMALLOC_FENTRY", "-DSLAB_DESTROY_FENTRY", "-DRECLAIM_PASS_FENTRY")),
    (False, True, ("-DVMALLOC_KPROBE", "-DSLAB_DESTROY_KPROBE", "-DNEED_PT_REGS",
                   "-DRECLAIM_PASS_KPROBE")),
    (False, False, ("-DRECLAIM_SHRINK_PRIORITY_ARG",))])
def test_each_plan_compiles(live, fentry, kprobes, want):
    _compiles(AssumedProbe(fentry, kprobes), want)


@pytest.mark.parametrize("fentry,kprobes,want", [
    (True, True, ("-DVMALLOC_AREA_FEXIT", "-DVMALLOC_FENTRY")),
    (False, True, ("-DVMALLOC_AREA_KPROBE", "-DVMALLOC_KPROBE"))])
def test_each_plan_before_6_2_compiles(live, fentry, kprobes, want):
    _compiles(Before62Probe(fentry, kprobes), want)


def _compiles(probe: Probe, want: Tuple[str, ...]) -> None:
    from bcc import libbcc

    registry = {n: t.configured(Options()) for n, t in tracers.registry().items()}
    plan = probe.plan(registry)
    cflags = bpf_cflags(plan, names=plan.tracers)
    for w in want:  # the plan under test is the one compiled
        assert any(c.startswith(w) for c in cflags), (w, cflags)
    if not any("FENTRY" in w or "KPROBE" in w for w in want):
        assert not any("FENTRY" in c or "KPROBE" in c for c in cflags), cflags
    text = bpf_source({n: registry[n] for n in plan.tracers})
    argv = (ctypes.c_char_p * len(cflags))(*[c.encode() for c in cflags])
    with captured_stderr() as err:
        mod = libbcc.lib.bpf_module_create_c_from_string(
            text.encode(), 0, argv, len(cflags), True, None)
    errors = [ln for ln in err.text.splitlines() if "error" in ln]
    assert mod, "\n".join(errors[:20])
    libbcc.lib.bpf_module_destroy(mod)
