"""Emulated guests see the code the kernel patches (why vm.TCG_OPTS exists).

Run on demand from the host (tests/vmhost/conftest.py):

    sudo .venv/bin/python -m pytest -m vmhost tests/vmhost/test_tcg_coherence.py

Boots Debian's 6.12 the way the VM tier does and runs
``static_key_flips.sh``: tracepoints enabled and disabled in a loop (every
flip patches kmalloc and kfree with text_poke_bp: an int3, IPIs, the new
bytes) while both vCPUs run through kmalloc and kfree.  Under QEMU 7.2's
multi-threaded TCG a vCPU ran a stale int3 after the patch was done and the
guest panicked ("Oops: int3" in kfree) within seconds; the tier's single-
threaded TCG must run the whole loop with no oops.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.vmhost.test_run_kernel import _unavailable
from trace_reclaim import vm

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static_key_flips.sh")
SECONDS = 90


def test_static_key_flips_under_emulation_do_not_oops():
    why = _unavailable()
    if why:
        pytest.fail(f"cannot boot a VM here: {why}")
    kernel = vm.resolve("6.12", log=lambda m: None)
    res = vm.run(kernel, f"DUR={SECONDS} sh {SCRIPT}", accel="tcg",
                 timeout=SECONDS + 900, log=lambda m: None)
    assert res.returncode == 0, (vm.why_failed(res), res.console[-3000:])
    flips = int(re.search(r"flips: (\d+)", res.stdout).group(1))
    oopses = int(re.search(r"oopses: (\d+)", res.stdout).group(1))
    assert flips > 100 and oopses == 0, (flips, oopses, res.console[-3000:])
