"""Replay a recording through the correlator, exactly as the live run fed it."""

from __future__ import annotations

import gc
from typing import Any, Callable, Dict, List, Optional, Tuple

from trace_reclaim import events
from trace_reclaim.correlate import Correlator
from trace_reclaim.env import Environment, UserError
from trace_reclaim.recording import Reader, RecordingError
from trace_reclaim.tracer import Tracer, Window

__all__ = ["replay", "Tap", "follow_window"]

#: Called with each block of records after the correlator has consumed it.
Tap = Callable[[List[Tuple[int, bytes]]], None]


def follow_window(window: Window, ev: Any) -> None:
    """Move ``window`` as the correlator does when it meets ``ev``.

    The vmstat "start" snapshot opens the window, the vmstat "end" snapshot
    (the End record, where it is missing) closes it: the ring buffer drained
    after the end counters holds records of after the window.
    A consumer that reads the records in their recorded order and tests each
    BPF event with ``window.contains_event(type_id, ts_ns)`` keeps exactly the
    events the correlator counted.
    """
    if isinstance(ev, events.Snapshot):
        if ev.what == "vmstat" and ev.when == "start":
            window.start_ns = ev.ts_ns
        elif ev.what == "vmstat" and ev.when == "end":
            window.end_ns = ev.ts_ns
        elif ev.what == "attach":  # a later tracer's records count from its attach
            window.note_attach(ev.when, ev.data, ev.ts_ns)
    elif isinstance(ev, events.End):
        window.end_ns = ev.ts_ns


def replay(path: str, env: Environment, registry: Dict[str, Tracer],
           tap: Optional[Tap] = None) -> Correlator:
    """Feed a recording through the correlator, exactly as the live run did.

    ``tap``, if given, sees every block of records too, in order (the
    timeline collects per-event times there without a second read).
    """
    try:
        f = open(path, "rb")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}",
                        "pass a recording made with 'trace-reclaim record -o FILE'") from None
    with f:
        try:
            reader = Reader(f)
        except RecordingError as e:
            raise UserError(f"{path}: {e}", e.hint) from None
        header = reader.header
        try:
            events.check_header(header)
        except events.DecodeError as e:
            raise UserError(f"{path}: recording header is damaged: {e}",
                            "it was written by another program or edited; nothing in it "
                            "can be trusted, record again") from None
        names = header.get("plan", {}).get("tracers", [])
        unknown = [n for n in names if n not in registry]
        if unknown:
            env.warn(f"{path} has events of tracers this version lacks: "
                     f"{', '.join(map(str, unknown))}; they are skipped")
        corr = Correlator(header, [registry[n] for n in names if n in registry])
        # Millions of short-lived event objects and no cycles among them:
        # the cyclic collector would only rescan the correlator's state.
        gc_was = gc.isenabled()
        gc.disable()
        try:
            if tap is None:
                for payload in reader.payloads():
                    corr.feed_block(payload)
            else:
                for block in reader.blocks_of_records():
                    corr.feed_records(block)
                    tap(block)
        finally:
            if gc_was:
                gc.enable()
    for w in reader.warnings:
        env.warn(f"{path}: {w}")
    if corr.unknown_types:
        env.warn(f"{path}: skipped {sum(corr.unknown_types.values())} records of types "
                 f"this version does not know ({', '.join(map(str, sorted(corr.unknown_types)))})"
                 "; a newer trace-reclaim wrote them")
    if corr.decode_errors:
        env.warn(f"{path}: {corr.decode_errors} records were damaged and skipped "
                 "(they do not fit their type's declared layout)")
    return corr
