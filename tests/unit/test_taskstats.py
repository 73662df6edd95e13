"""Decode struct taskstats version 16 from real netlink bytes captured here (no root)."""

from __future__ import annotations

import json
import os

from tests import FIXTURES
import pytest

from trace_reclaim import taskstats

FIX = FIXTURES


def raw():
    with open(os.path.join(FIX, "taskstats_v16_reply.hex")) as f:
        return bytes.fromhex(f.read().strip())


def test_layout_matches_the_kernel():
    # include/uapi/linux/taskstats.h version 16: 560 bytes, the netlink
    # attribute the kernel sent carried exactly that.
    assert taskstats.STATS_V16.size == 560
    msg = raw()
    assert len(msg) == 596  # nlmsghdr 16 + genl 4 + AGGR_PID(4 + PID 8 + STATS 4+560)


def test_decode_captured_reply():
    d = taskstats.parse_genl_reply(raw())
    with open(os.path.join(FIX, "taskstats_v16_reply.json")) as f:
        want = json.load(f)
    assert d["pid"] == want["pid"]
    s = d["stats"]
    assert s["version"] == 16 and s["ac_pid"] == d["pid"] and s["ac_tgid"] == d["pid"]
    assert s["ac_comm"] == "python"
    for k in ("freepages_count", "freepages_delay_total", "thrashing_count",
              "thrashing_delay_total", "compact_count", "compact_delay_total",
              "compact_delay_max", "irq_delay_min"):
        assert k in s
    assert s == want["stats"]


def test_shorter_struct_decodes_what_it_has():
    payload = b"\x08\x00" + bytes(558)
    s = taskstats.decode_stats(payload[:328])  # up to freepages (version 8)
    assert "freepages_delay_total" in s and "thrashing_count" not in s
    with pytest.raises(ValueError):
        taskstats.decode_stats(b"\x0f\x00" + b"\0" * 600)


def test_pyroute2_message_declares_the_newer_fields():
    cls = taskstats.pyroute2_message_class()
    assert cls is not None, "pyroute2 is a dependency (setup.cfg install_requires)"
    m = cls(raw())
    m.decode()
    st = m.get_attr("TASKSTATS_TYPE_AGGR_PID").get_attr("TASKSTATS_TYPE_STATS")
    mine = taskstats.parse_genl_reply(raw())["stats"]
    for k in ("freepages_count", "thrashing_delay_total", "compact_delay_total", "ac_tgid",
              "cpu_delay_max", "irq_delay_min"):
        assert st[k] == mine[k]
    # pyroute2's own class stops at the version-4 fields for version 16
    from pyroute2.netlink.taskstats import taskstatsmsg
    m2 = taskstatsmsg(raw())
    m2.decode()
    st2 = m2.get_attr("TASKSTATS_TYPE_AGGR_PID").get_attr("TASKSTATS_TYPE_STATS")
    assert "freepages_count" not in st2
