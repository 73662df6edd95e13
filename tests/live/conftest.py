"""Every test in tests/live is a live test: it carries the ``live`` marker."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/tests/live/" in str(item.fspath):
            item.add_marker(pytest.mark.live)
