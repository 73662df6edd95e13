"""The timeline picture of a run, split by what the code does.

``collect``: ``TimelineCollector``, fed the same records as the correlator
(a ``replay`` tap), keeps the per-event times the report does not, within
fixed bounds.  ``panels``: one drawing function per panel.  ``draw``:
``render()`` lays the panels out on one time axis and writes a PNG or SVG.
Only ``panels`` and ``draw`` use matplotlib, and import it when called.
"""

from __future__ import annotations

from trace_reclaim.timeline.collect import TimelineCollector

__all__ = ["TimelineCollector"]
