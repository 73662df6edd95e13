"""Shared test set-up.

Live tests (marked ``live``) attach real BPF programs.  They skip with a
reason when not root or without bcc, unless TRACE_RECLAIM_REQUIRE_LIVE=1
(set by .ci/run), which turns that skip into a failure so CI cannot pass by
skipping.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tests.livetools import live_unavailable_reason, machine_lock

REQUIRE_LIVE = os.environ.get("TRACE_RECLAIM_REQUIRE_LIVE") == "1"


@pytest.fixture
def live():
    """Require root and bcc; hold the machine lock for the test's duration.

    Workloads change machine-wide state (nr_hugepages, drop_caches, zram), so
    live tests on one machine run one at a time.
    """
    why = live_unavailable_reason()
    if why:
        if REQUIRE_LIVE:
            pytest.fail(f"live test cannot run ({why}) but TRACE_RECLAIM_REQUIRE_LIVE=1")
        pytest.skip(why)
    with machine_lock():
        yield


def pytest_collection_modifyitems(config, items):
    """A test that uses the ``live`` fixture lives in tests/live (and so is marked live)."""
    for item in items:
        if "live" in getattr(item, "fixturenames", ()) and \
                item.get_closest_marker("live") is None:
            raise pytest.UsageError(f"{item.nodeid} uses the live fixture: move it to tests/live")


# Property tests check behaviour, never speed: hypothesis's default 200 ms
# per-example deadline is a timing assertion, and it fails on a loaded machine.
settings.register_profile("trace-reclaim", deadline=None)
settings.load_profile("trace-reclaim")

