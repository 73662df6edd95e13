"""What an episode holds while events arrive: its tasks, stalls, shrinkers, compaction.

The state the builder (``builder.py``) fills and the document
(``document.py``) reads; see the package docstring for what an episode is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from trace_reclaim.kswapd import AwakeSpan

__all__ = ["BURST_GAP_NS", "MAX_EPISODES", "MAX_REPORTED", "MAX_TASKS", "TOP",
           "TASKSTATS_FIELDS", "EpisodeFact", "zone_state", "Task", "Episode"]

BURST_GAP_NS = 100_000_000
MAX_EPISODES = 2_000      # kept in memory; later ones are counted, not kept
# Episodes the report details; the rest are counted in the summary.  The
# ones kept are those with OOM kills, then the most direct-reclaim time.
MAX_REPORTED = 500
MAX_TASKS = 64            # per episode; later tasks fold into one row
TOP = 5


TASKSTATS_FIELDS = ("freepages_count", "freepages_delay_total",
                    "thrashing_count", "thrashing_delay_total",
                    "compact_count", "compact_delay_total",
                    "swapin_count", "swapin_delay_total")


class EpisodeFact(NamedTuple):
    """What an event contributes to an episode.

    ``kind`` is "shrinker" (values: calls, scanned, freed, time_ns) or
    "vmalloc" (values: count, bytes, failed, huge_attempts); ``name`` keys
    the row (shrinker function, vmalloc record kind); ``nid`` is the NUMA
    node when the event knows it.
    """

    kind: str
    name: str
    nid: Optional[int]
    values: Dict[str, int]


def zone_state(z: Dict[str, Any]) -> str:
    """Where free pages stand against the zone's watermarks."""
    free = z.get("free", 0)
    if free < z.get("min", 0):
        return "below_min"
    if free < z.get("low", 0):
        return "below_low"
    if free < z.get("high", 0):
        return "below_high"
    return "ok"


class Task:
    __slots__ = ("tid", "tgid", "comm", "stalls", "total_ns", "max_ns", "pages", "cgroup")

    def __init__(self, tid: int, tgid: int, comm: str) -> None:
        self.tid = tid
        self.tgid = tgid
        self.comm = comm
        # ("memcg" | "cgroup", id) of its first stall; None: not attributed
        self.cgroup: Optional[Tuple[str, int]] = None
        self.stalls = 0
        self.total_ns = 0
        self.max_ns = 0
        self.pages = 0


@dataclass
class Episode:
    id: int
    node: int
    kind: str
    start_ns: int
    end_ns: int = 0
    last_ns: int = 0            # last stall end (bursts) / last event
    began_before_trace: bool = False
    open: bool = True
    span: Optional[AwakeSpan] = None  # kswapd's awake span (kswapd episodes)
    wakeup_requests: int = 0
    stalls: int = 0
    stall_ns: int = 0
    stall_max_ns: int = 0
    pages: int = 0
    stalls_kswapd_awake: int = 0
    tasks: Dict[int, Task] = field(default_factory=dict)
    longest: List[Tuple[int, int, int, str, int, int]] = field(default_factory=list)
    shrinkers: Dict[str, List[int]] = field(default_factory=dict)
    vmalloc: Dict[str, List[int]] = field(default_factory=dict)
    compaction_runs: int = 0
    compaction_direct: int = 0
    compaction_ns: int = 0
    compaction_status: Dict[int, int] = field(default_factory=dict)
    reclaim_retries: int = 0
    reclaim_retry_max_loops: int = 0
    compact_retries: int = 0
    compact_retry_gave_up: int = 0
    victims: List[Dict[str, Any]] = field(default_factory=list)
    sequence: Dict[str, int] = field(default_factory=dict)

    def mark(self, phase: str, ts: int) -> None:
        if phase not in self.sequence:
            self.sequence[phase] = ts

    @property
    def kswapd_wakes(self) -> int:
        return self.span.wakes if self.span is not None else 0

    @property
    def kswapd_re_wakes(self) -> int:
        return self.span.re_wakes if self.span is not None else 0

    @property
    def max_order(self) -> int:
        return self.span.max_order if self.span is not None else 0
