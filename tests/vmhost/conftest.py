"""The host-side VM tier: ``trace-reclaim run --kernel`` booting real VMs.

These tests run on the host and boot each kernel in a VM (trace_reclaim/vm.py;
QEMU TCG where KVM cannot run a stock kernel: ~15 minutes in all).  They are
too slow for the ordinary tiers and for CI, so they run on demand only:

    sudo .venv/bin/python -m pytest -m vmhost tests/vmhost

They are collected only when the ``vmhost`` marker is selected (``-m vmhost``),
never by ``-m vm`` (the guest tier, tests/vm) nor by ``-m live`` or
``-m "not live"``.  The kernels are Debian's 6.12 and 6.1 builds, prepared on
first use under /var/cache/trace-reclaim/kernels; TRACE_RECLAIM_VMHOST_KERNELS
(``BASE,NEW``) names others, a build tree or a bzImage among them, and
TRACE_RECLAIM_VMHOST_RUNS the runs per side (default 2).  With ``-s`` the
diff of the two sides is shown.
"""

from __future__ import annotations

import os


from tests.livetools import opt_in_tier


def pytest_configure(config):
    config.addinivalue_line("markers", "vmhost: boots VMs from the host (tests/vmhost; "
                                       "selected only with -m vmhost)")


def pytest_collection_modifyitems(config, items):
    opt_in_tier(config, items, os.path.dirname(os.path.abspath(__file__)), "vmhost",
                also=("live", "slow"))
