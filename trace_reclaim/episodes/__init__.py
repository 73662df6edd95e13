"""Group reclaim events into episodes: one node's stretch of memory pressure.

An episode is either

* ``kswapd``: from ``mm_vmscan_kswapd_wake`` on a node until that node's
  kswapd goes back to sleep (``mm_vmscan_kswapd_sleep``).  kswapd may run
  balance_pgdat() several times in between (each is a ``kswapd_wake`` and a
  ``pageoutrun``): those are re-wakes inside one episode, because
  kswapd_try_to_sleep() only emits ``kswapd_sleep`` when kswapd really
  sleeps.  These are the awake spans of ``trace_reclaim.kswapd``, the
  state machine the reclaim tracer's per-node counts come from too; or
* ``direct``: a burst of direct-reclaim stalls while the node's kswapd
  sleeps.  Stalls belong to one burst while each starts within
  ``BURST_GAP_NS`` (100 ms) of the previous one's end.  100 ms is HZ/10,
  the longest reclaim_throttle() sleep (VMSCAN_THROTTLE_WRITEBACK) and the
  scale of the allocator's own retry loop: stalls closer together than that
  are one allocation spike retrying, a longer quiet gap means the allocator
  got its pages and the pressure went away.

Every direct-reclaim stall lands in exactly one episode: the kswapd
episode open on its node when it ended, or the kswapd episode it overlapped
(it began before kswapd slept), or else a direct burst.  The stall's node
is the node of the ``mm_vmscan_wakeup_kswapd`` the same thread issued last
(the allocator's slow path wakes kswapd before it reclaims directly); with
one node that is node 0.

Other events (compaction, the allocator's retry decisions, OOM kills, and
the slab and vmalloc tracers' events) attach to the episode open on their
node at their time.  This module knows the reclaim and OOM events itself;
what any other tracer's event adds (an :class:`EpisodeFact`) comes from that
tracer's declared hook, ``Aggregator.episode_fact`` in trace_reclaim.tracer,
passed in as ``facts`` by record type, so tracers plug in without this
module knowing their classes.

Pure: events and snapshots in, JSON-able episodes out.
"""

from trace_reclaim.episodes.builder import EpisodeBuilder
from trace_reclaim.episodes.model import BURST_GAP_NS, MAX_EPISODES, EpisodeFact, zone_state

__all__ = [
    "BURST_GAP_NS", "MAX_EPISODES", "EpisodeFact", "EpisodeBuilder", "zone_state",
]
