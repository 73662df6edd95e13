"""trace-reclaim: a live eBPF tracer for Linux memory reclaim.

Data flows one way: kernel -> BPF program -> ring buffer -> decoder ->
typed events -> (recording) -> correlator -> findings -> report.  A replayed
recording enters at the decoder and goes through exactly the same code.
"""

__version__ = "0.1.0"

# Compiled (mypyc) or interpreted: decided before any compiled module loads.
from trace_reclaim import native as _native  # noqa: E402

_native.select()
