"""Per-task delay accounting over genetlink TASKSTATS, with today's struct.

pyroute2's ``taskstatsmsg`` decodes ``struct taskstats`` up to the version-4
fields (and a version-15 layout that only Linux 6.14/6.15 sent): for the
version 16 the kernel sends since Linux 6.16 (commit "taskstats: fix struct
taskstats breaks backward compatibility since version 15", which moved the
*_delay_max/min fields to the end) it stops before ``freepages_*``,
``thrashing_*`` and ``compact_*``, the delays that matter for reclaim.
This module declares the whole version-16 layout
(include/uapi/linux/taskstats.h) and decodes any version from 8 up by
length: fields the kernel did not send are absent, never zero.

The delay fields are filled only while delay accounting is on
(``kernel.task_delayacct=1`` or ``delayacct`` on the command line); they are
cumulative nanoseconds since the task started, counted while it was on.
``freepages_delay_total`` is the time the task spent in direct reclaim
(delayacct_freepages_start/end around try_to_free_pages()),
``compact_delay_total`` in direct compaction, ``thrashing_delay_total``
waiting on workingset-refaulted pages.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["FIELDS_V16", "STATS_V16", "decode_stats", "parse_genl_reply",
           "TaskStatsReader", "DELAY_FIELDS", "delayacct_enabled", "set_delayacct"]

# (name, struct code) in kernel order; "x" codes are alignment padding.
FIELDS_V16: List[Tuple[str, str]] = [
    ("version", "H"), ("", "2x"), ("ac_exitcode", "I"), ("ac_flag", "B"), ("ac_nice", "B"),
    ("", "6x"),
    ("cpu_count", "Q"), ("cpu_delay_total", "Q"),
    ("blkio_count", "Q"), ("blkio_delay_total", "Q"),
    ("swapin_count", "Q"), ("swapin_delay_total", "Q"),
    ("cpu_run_real_total", "Q"), ("cpu_run_virtual_total", "Q"),
    ("ac_comm", "32s"), ("ac_sched", "B"), ("", "3x"), ("", "4x"),
    ("ac_uid", "I"), ("ac_gid", "I"), ("ac_pid", "I"), ("ac_ppid", "I"),
    ("ac_btime", "I"), ("", "4x"),
    ("ac_etime", "Q"), ("ac_utime", "Q"), ("ac_stime", "Q"), ("ac_minflt", "Q"),
    ("ac_majflt", "Q"), ("coremem", "Q"), ("virtmem", "Q"), ("hiwater_rss", "Q"),
    ("hiwater_vm", "Q"), ("read_char", "Q"), ("write_char", "Q"), ("read_syscalls", "Q"),
    ("write_syscalls", "Q"), ("read_bytes", "Q"), ("write_bytes", "Q"),
    ("cancelled_write_bytes", "Q"), ("nvcsw", "Q"), ("nivcsw", "Q"),
    ("ac_utimescaled", "Q"), ("ac_stimescaled", "Q"), ("cpu_scaled_run_real_total", "Q"),
    # version 6..8: delay waiting for memory reclaim
    ("freepages_count", "Q"), ("freepages_delay_total", "Q"),
    # version 9: thrashing (workingset refault waits)
    ("thrashing_count", "Q"), ("thrashing_delay_total", "Q"),
    # version 10
    ("ac_btime64", "Q"),
    # version 11: direct compaction
    ("compact_count", "Q"), ("compact_delay_total", "Q"),
    # version 12
    ("ac_tgid", "I"), ("", "4x"), ("ac_tgetime", "Q"), ("ac_exe_dev", "Q"),
    ("ac_exe_inode", "Q"),
    # version 13, 14
    ("wpcopy_count", "Q"), ("wpcopy_delay_total", "Q"),
    ("irq_count", "Q"), ("irq_delay_total", "Q"),
    # version 16: the max/min of each delay, moved to the end
    ("cpu_delay_max", "Q"), ("cpu_delay_min", "Q"),
    ("blkio_delay_max", "Q"), ("blkio_delay_min", "Q"),
    ("swapin_delay_max", "Q"), ("swapin_delay_min", "Q"),
    ("freepages_delay_max", "Q"), ("freepages_delay_min", "Q"),
    ("thrashing_delay_max", "Q"), ("thrashing_delay_min", "Q"),
    ("compact_delay_max", "Q"), ("compact_delay_min", "Q"),
    ("wpcopy_delay_max", "Q"), ("wpcopy_delay_min", "Q"),
    ("irq_delay_max", "Q"), ("irq_delay_min", "Q"),
]

STATS_V16 = struct.Struct("<" + "".join(code for _, code in FIELDS_V16))
assert STATS_V16.size == 560, STATS_V16.size

# Offsets of each named field, so a shorter (older) struct decodes what it has.
_OFFSETS: List[Tuple[str, int, struct.Struct]] = []
_off = 0
for _name, _code in FIELDS_V16:
    _s = struct.Struct("<" + _code)
    if _name:
        _OFFSETS.append((_name, _off, _s))
    _off += _s.size

DELAY_FIELDS = ("freepages_count", "freepages_delay_total", "freepages_delay_max",
                "thrashing_count", "thrashing_delay_total", "thrashing_delay_max",
                "compact_count", "compact_delay_total", "compact_delay_max",
                "swapin_count", "swapin_delay_total", "blkio_count", "blkio_delay_total",
                "cpu_count", "cpu_delay_total")

TASKSTATS_CMD_GET = 1
TASKSTATS_CMD_ATTR_PID = 1
TASKSTATS_TYPE_PID = 1
TASKSTATS_TYPE_TGID = 2
TASKSTATS_TYPE_STATS = 3
TASKSTATS_TYPE_AGGR_PID = 4
TASKSTATS_TYPE_AGGR_TGID = 5


def decode_stats(raw: bytes) -> Dict[str, Any]:
    """Decode a ``struct taskstats`` payload of any length (version >= 1).

    Fields past the end of ``raw`` are left out; version 15's different
    layout (max/min in the middle) is refused rather than misread.
    """
    if len(raw) < 2:
        raise ValueError("taskstats payload shorter than its version field")
    version = struct.unpack_from("<H", raw)[0]
    if version == 15:
        raise ValueError("taskstats version 15 has a layout no other version shares")
    out: Dict[str, Any] = {}
    for name, off, s in _OFFSETS:
        if off + s.size > len(raw):
            break
        v = s.unpack_from(raw, off)[0]
        if name == "ac_comm":
            v = v.split(b"\0", 1)[0].decode("utf-8", "replace")
        out[name] = v
    return out


def _nlattrs(buf: bytes, off: int, end: int) -> List[Tuple[int, bytes]]:
    out = []
    while off + 4 <= end:
        ln, ty = struct.unpack_from("<HH", buf, off)
        if ln < 4 or off + ln > end:
            break
        out.append((ty & 0x3FFF, buf[off + 4:off + ln]))
        off += (ln + 3) & ~3
    return out


def parse_genl_reply(msg: bytes) -> Dict[str, Any]:
    """Decode one whole TASKSTATS reply (nlmsghdr + genlmsghdr + attributes).

    Returns {"pid" or "tgid": id, "stats": decoded struct}.  Used on the raw
    bytes the kernel sent, and by the tests on bytes captured from it.
    """
    if len(msg) < 20:
        raise ValueError("short netlink message")
    length, mtype = struct.unpack_from("<IH", msg)
    if mtype == 2:  # NLMSG_ERROR
        err = struct.unpack_from("<i", msg, 16)[0]
        raise OSError(-err, f"taskstats: {__import__('os').strerror(-err)}")
    out: Dict[str, Any] = {}
    for ty, val in _nlattrs(msg, 20, min(length, len(msg))):
        if ty in (TASKSTATS_TYPE_AGGR_PID, TASKSTATS_TYPE_AGGR_TGID):
            for ity, ival in _nlattrs(val, 0, len(val)):
                if ity == TASKSTATS_TYPE_PID:
                    out["pid"] = struct.unpack_from("<I", ival)[0]
                elif ity == TASKSTATS_TYPE_TGID:
                    out["tgid"] = struct.unpack_from("<I", ival)[0]
                elif ity == TASKSTATS_TYPE_STATS:
                    out["stats"] = decode_stats(ival)
    if "stats" not in out:
        raise ValueError("TASKSTATS reply without a stats attribute")
    return out


def pyroute2_message_class() -> Any:
    """pyroute2's taskstatsmsg with the version-16 struct declared.

    Returns None when pyroute2 is not installed.  The session reads through
    :class:`TaskStatsReader` (raw bytes, same decoder as the tests); this
    class is for code that already speaks pyroute2.
    """
    try:
        from pyroute2.netlink import nla_struct
        from pyroute2.netlink.taskstats import TStatsDecoder, taskstatsmsg
    except ImportError:
        return None

    class tstats_v16(nla_struct, TStatsDecoder):
        fields = tuple((n or f"__pad{i}", c) for i, (n, c) in enumerate(FIELDS_V16))

    def versioned_stats(self: Any, *argv: Any, **kwarg: Any) -> Any:
        data, offset = kwarg["data"], kwarg["offset"] + 4
        version = struct.unpack_from("<H", data, offset)[0]
        if version >= 16:
            return tstats_v16
        return taskstatsmsg.versioned_stats(self, *argv, **kwarg)

    # pyroute2 caches each class's compiled attribute table in a private
    # class attribute that subclasses inherit: start these afresh.
    fresh = {"_nlmsg_base__compiled_nla": False, "_nlmsg_base__t_nla_map": None,
             "_nlmsg_base__r_nla_map": None}

    class aggr(taskstatsmsg.aggr_id):
        locals().update(fresh)

    aggr.versioned_stats = staticmethod(versioned_stats)

    class taskstatsmsg16(taskstatsmsg):
        nla_map = (
            ("TASKSTATS_TYPE_UNSPEC", "none"),
            ("TASKSTATS_TYPE_PID", "uint32"),
            ("TASKSTATS_TYPE_TGID", "uint32"),
            ("TASKSTATS_TYPE_STATS", "versioned_stats"),
            ("TASKSTATS_TYPE_AGGR_PID", "aggr_pid"),
            ("TASKSTATS_TYPE_AGGR_TGID", "aggr_tgid"),
        )

        locals().update(fresh)

        class aggr_pid(aggr):
            locals().update(fresh)

        class aggr_tgid(aggr):
            locals().update(fresh)

    taskstatsmsg16.versioned_stats = staticmethod(versioned_stats)
    return taskstatsmsg16


class TaskStatsReader:
    """Ask the kernel for one thread's taskstats through pyroute2.

    pyroute2's TaskStats socket does the genetlink work (family lookup,
    request, reply); its message object keeps the raw reply bytes, which
    :func:`parse_genl_reply` decodes with the version-16 layout.
    """

    def __init__(self) -> None:
        from pyroute2 import TaskStats

        self.ts = TaskStats()
        self.ts.bind()
        self.last_raw: Optional[bytes] = None

    def request(self, tid: int) -> bytes:
        msgs = self.ts.get_pid_stat(tid)
        raw = bytes(msgs[0].data[:msgs[0]["header"]["length"]])
        self.last_raw = raw
        return raw

    def get(self, tid: int) -> Dict[str, Any]:
        return parse_genl_reply(self.request(tid))

    def close(self) -> None:
        self.ts.close()


def delayacct_enabled(procfs: Any) -> Optional[bool]:
    v = procfs.try_read("/proc/sys/kernel/task_delayacct")
    return None if v is None else v.strip() == "1"


def set_delayacct(procfs: Any, on: bool) -> None:
    with open(procfs.path("/proc/sys/kernel/task_delayacct"), "w") as f:
        f.write("1\n" if on else "0\n")
