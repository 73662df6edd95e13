"""The host-side VM tier: ``trace-reclaim run --kernel`` booting real VMs.

These tests run on the host and boot each kernel in a VM (trace_reclaim/vm.py;
QEMU TCG where KVM cannot run a stock kernel: ~15 minutes in all).  They are
too slow for the ordinary tiers and for CI, so they run on demand only:

    sudo .venv/bin/python -m pytest -m vmhost tests/vmhost

They are collected only when the ``vmhost`` marker is selected (``-m vmhost``),
never by ``-m vm`` (the guest tier, tests/vm) nor by ``-m live`` or
``-m "not live"``.  The kernels are Debian's 6.12 and 6.1 builds, prepared on
first use under /var/cache/trace-reclaim/kernels; TRACE_RECLAIM_VMHOST_KERNELS
(``BASE,NEW``) names others, a build tree among them.
"""

from __future__ import annotations

import os
import re

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "vmhost: boots VMs from the host (tests/vmhost; "
                                       "selected only with -m vmhost)")


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    mine = [i for i in items if str(i.fspath).startswith(here)]
    for item in mine:
        item.add_marker(pytest.mark.vmhost)
        item.add_marker(pytest.mark.live)
        item.add_marker(pytest.mark.slow)
    expr = config.option.markexpr or ""
    if not (re.search(r"\bvmhost\b", expr) and not re.search(r"\bnot\s+vmhost\b", expr)):
        keep = [i for i in items if not str(i.fspath).startswith(here)]
        if len(keep) != len(items):
            config.hook.pytest_deselected(items=mine)
            items[:] = keep
