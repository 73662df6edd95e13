"""What an episode holds while events arrive: its tasks, stalls, shrinkers, compaction.

The state the builder (``builder.py``) fills and the document
(``document.py``) reads; see the package docstring for what an episode is.
"""

from __future__ import annotations

from typing import Any, Dict, Final, List, NamedTuple, Optional, Tuple

from trace_reclaim.kswapd import AwakeSpan

__all__ = ["BURST_GAP_NS", "MAX_EPISODES", "MAX_REPORTED", "MAX_TASKS", "TOP",
           "TASKSTATS_FIELDS", "EpisodeFact", "zone_state", "Task", "Episode"]

BURST_GAP_NS = 100_000_000
MAX_EPISODES = 2_000      # kept in memory; later ones are counted, not kept
# Episodes the report details; the rest are counted in the summary.  The
# ones kept are those with OOM kills, then the most direct-reclaim time.
MAX_REPORTED = 500
MAX_TASKS: Final = 64     # per episode; later tasks fold into one row
TOP: Final = 5


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


class Episode:
    """One episode: a kswapd awake span or a burst of direct reclaim, and what
    happened in it.  A plain class (not a dataclass): compiled, the builder
    makes one natively, and it makes one at every kswapd wake that opens a span."""

    __slots__ = ("id", "node", "kind", "start_ns", "end_ns", "last_ns", "began_before_trace",
                 "open", "span", "wakeup_requests", "stalls", "stall_ns", "stall_max_ns",
                 "pages", "stalls_kswapd_awake", "tasks", "longest", "shrinkers", "vmalloc",
                 "compaction_runs", "compaction_direct", "compaction_ns", "compaction_status",
                 "reclaim_retries", "reclaim_retry_max_loops", "compact_retries",
                 "compact_retry_gave_up", "victims", "sequence")

    def __init__(self, id: int, node: int, kind: str, start_ns: int, last_ns: int = 0) -> None:
        self.id = id
        self.node = node
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = 0
        self.last_ns = last_ns          # last stall end (bursts) / last event
        self.began_before_trace = False
        self.open = True
        self.span: Optional[AwakeSpan] = None  # kswapd's awake span (kswapd episodes)
        self.wakeup_requests = 0
        self.stalls = 0
        self.stall_ns = 0
        self.stall_max_ns = 0
        self.pages = 0
        self.stalls_kswapd_awake = 0
        self.tasks: Dict[int, Task] = {}
        self.longest: List[Tuple[int, int, int, str, int, int]] = []
        self.shrinkers: Dict[str, List[int]] = {}
        self.vmalloc: Dict[str, List[int]] = {}
        self.compaction_runs = 0
        self.compaction_direct = 0
        self.compaction_ns = 0
        self.compaction_status: Dict[int, int] = {}
        self.reclaim_retries = 0
        self.reclaim_retry_max_loops = 0
        self.compact_retries = 0
        self.compact_retry_gave_up = 0
        self.victims: List[Dict[str, Any]] = []
        self.sequence: Dict[str, int] = {}

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
