"""Names of the kernel's mm enums, as their tracepoints print them.

``enum compact_result`` and ``enum compact_priority`` (include/linux/compaction.h)
reach us as numbers in ``mm_compaction_end`` and ``compact_retry``; their
``format`` files print these names (``__print_symbolic`` tables in
include/trace/events/compaction.h and oom.h).
"""

from __future__ import annotations

from typing import Dict

__all__ = ["COMPACT_STATUS", "COMPACT_PRIORITY", "COMPACT_RETRY_RESULT"]

# enum compact_result, as mm_compaction_end's format file prints it.
COMPACT_STATUS: Dict[int, str] = {
    0: "not_suitable_zone", 1: "skipped", 2: "deferred", 3: "no_suitable_page",
    4: "continue", 5: "complete", 6: "partial_skipped", 7: "contended", 8: "success"}
# compact_retry's priority and result (enum compact_priority; its own mapping).
COMPACT_PRIORITY: Dict[int, str] = {0: "sync_full", 1: "sync_light", 2: "async"}
COMPACT_RETRY_RESULT: Dict[int, str] = {1: "failed", 2: "withdrawn", 3: "progress"}
