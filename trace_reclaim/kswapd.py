"""Track each node's kswapd: awake or asleep, awake spans, re-wakes.

The one state machine for kswapd: the reclaim aggregator (wakes, awake time
per node) and the episode builder (kswapd wake-to-sleep episodes) both run
it, so their counts cannot disagree.

Kernel side, mm/vmscan.c (as of 6.x):

* ``kswapd()`` loops: ``kswapd_try_to_sleep()``, then
  ``trace_mm_vmscan_kswapd_wake(nid, highest_zoneidx, alloc_order)`` right
  before ``balance_pgdat()``, which counts one ``pageoutrun``.  When
  ``balance_pgdat()`` returns a lower order than was asked for, kswapd goes
  back to ``kswapd_try_to_sleep()`` straight away.
* ``kswapd_try_to_sleep()`` emits ``mm_vmscan_kswapd_sleep(nid)`` only when
  kswapd really sleeps: the node is balanced (``prepare_kswapd_sleep()``),
  stayed balanced through a HZ/10 nap that nobody cut short, and kswapd is
  about to ``schedule()`` until ``wakeup_kswapd()`` wakes it.  Otherwise it
  returns without the tracepoint (counting ``kswapd_low_wmark_hit_quickly``
  or ``kswapd_high_wmark_hit_quickly``) and the loop emits another
  ``kswapd_wake``.
* ``wakeup_kswapd()`` emits ``mm_vmscan_wakeup_kswapd`` when an allocation
  asks the node's kswapd to run; it tells us the node exists, not whether
  kswapd was asleep.

So, per node:

* a ``kswapd_wake`` while asleep (or before anything was seen) opens an
  awake span;
* a ``kswapd_wake`` while awake is a re-wake: ``balance_pgdat()`` ran again
  without kswapd sleeping in between;
* a ``kswapd_sleep`` while awake closes the span;
* a ``kswapd_sleep`` as the node's first event means kswapd was awake when
  the trace began: the span starts at the window start;
* a ``kswapd_sleep`` while asleep closes nothing: kswapd woke and went back
  to sleep without ``balance_pgdat()`` (the freezer's ``was_frozen`` path)
  or the wake record was lost; how long it was awake is unknown;
* spans still open when the window closes end there (open at the end).

Pure: events in, spans and counts out.
"""

from __future__ import annotations

from typing import Any, Dict, Final, List, Optional, Tuple

__all__ = ["Kswapd", "KswapdNode", "AwakeSpan", "MAX_NODES", "UNKNOWN", "AWAKE", "ASLEEP"]

# MAX_NUMNODES is at most 1 << 10 (NODES_SHIFT <= 10); more distinct node
# ids than that are damaged records, folded into one node -1 to bound memory.
MAX_NODES = 1024

UNKNOWN: Final = "unknown"  # nothing of this node's kswapd seen yet
AWAKE: Final = "awake"
ASLEEP: Final = "asleep"


class AwakeSpan:
    """One stretch of kswapd awake on a node: first ``kswapd_wake`` to ``kswapd_sleep``.

    ``wakes`` counts the ``kswapd_wake`` records (balance_pgdat() runs) in it.
    A span that began before the trace has none: it is only found at its
    ``kswapd_sleep``, and a wake seen before that would have opened a span.
    ``end_ns`` is None while open.
    """

    __slots__ = ("nid", "start_ns", "end_ns", "wakes", "max_order",
                 "began_before_trace", "open_at_end")

    def __init__(self, nid: int, start_ns: int, began_before_trace: bool = False) -> None:
        self.nid = nid
        self.start_ns = start_ns
        self.end_ns: Optional[int] = None
        self.wakes = 0
        self.max_order = 0
        self.began_before_trace = began_before_trace
        self.open_at_end = False

    @property
    def re_wakes(self) -> int:
        return max(0, self.wakes - 1)

    @property
    def duration_ns(self) -> int:
        """Awake time; 0 while open (the window end closes it)."""
        if self.end_ns is None:
            return 0
        return max(0, self.end_ns - self.start_ns)


class KswapdNode:
    """One node's kswapd: its state, its open span and its totals."""

    __slots__ = ("nid", "state", "span", "wakes", "re_wakes", "sleeps", "spans",
                 "awake_ns", "max_order")

    def __init__(self, nid: int) -> None:
        self.nid = nid
        self.state = UNKNOWN
        self.span: Optional[AwakeSpan] = None  # open span while AWAKE
        self.wakes = 0       # kswapd_wake records
        self.re_wakes = 0    # of which while already awake
        self.sleeps = 0      # kswapd_sleep records, including those closing nothing
        self.spans = 0       # awake spans opened (or found open at the first sleep)
        self.awake_ns = 0    # closed spans only
        self.max_order = 0


class Kswapd:
    """Every node's kswapd state machine; feed wakes and sleeps in time order."""

    def __init__(self, window: Any) -> None:
        self.window = window
        self.nodes: Dict[int, KswapdNode] = {}

    def key(self, nid: int) -> int:
        """Return the node id ``nid`` is counted under (without registering it)."""
        if nid in self.nodes or len(self.nodes) < MAX_NODES:
            return nid
        return -1

    def node(self, nid: int) -> KswapdNode:
        """Return (registering it if new) the node ``nid`` is counted under."""
        n = self.nodes.get(nid)
        if n is None:
            if len(self.nodes) >= MAX_NODES:
                nid = -1
                n = self.nodes.get(nid)
            if n is None:
                n = self.nodes[nid] = KswapdNode(nid)
        return n

    def wake(self, nid: int, ts_ns: int, order: int) -> Tuple[KswapdNode, bool]:
        """Account a ``mm_vmscan_kswapd_wake``; return the node and whether a span opened."""
        n = self.nodes.get(nid) or self.node(nid)
        n.wakes += 1
        if order > n.max_order:
            n.max_order = order
        span = n.span
        opened = span is None
        if span is None:
            span = n.span = AwakeSpan(n.nid, ts_ns)
            n.spans += 1
            n.state = AWAKE
        else:
            n.re_wakes += 1
        span.wakes += 1
        if order > span.max_order:
            span.max_order = order
        return n, opened

    def sleep(self, nid: int, ts_ns: int) -> Optional[AwakeSpan]:
        """Account a ``mm_vmscan_kswapd_sleep``; return the span it closed, if any."""
        n = self.node(nid)
        n.sleeps += 1
        span = n.span
        if span is None:
            if n.state == ASLEEP:
                return None
            # Awake when the trace began.
            span = AwakeSpan(n.nid, self.window.start_ns, began_before_trace=True)
            n.spans += 1
        span.end_ns = ts_ns
        n.awake_ns += span.duration_ns
        n.span = None
        n.state = ASLEEP
        return span

    def close(self, end_ns: int) -> List[AwakeSpan]:
        """End every open span at the window end; return them."""
        out = []
        for n in self.nodes.values():
            span = n.span
            if span is None:
                continue
            span.end_ns = end_ns
            span.open_at_end = True
            n.awake_ns += span.duration_ns
            n.span = None
            n.state = ASLEEP
            out.append(span)
        return out

    def awake(self) -> List[int]:
        """The nodes whose kswapd is awake now."""
        return sorted(nid for nid, n in self.nodes.items() if n.span is not None)
