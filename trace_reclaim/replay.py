"""Replay a recording through the correlator, exactly as the live run fed it."""

from __future__ import annotations

import gc
from typing import Dict

from trace_reclaim.correlate import Correlator
from trace_reclaim.env import Environment, UserError
from trace_reclaim.recording import Reader, RecordingError
from trace_reclaim.tracer import Tracer

__all__ = ["replay"]


def replay(path: str, env: Environment, registry: Dict[str, Tracer]) -> Correlator:
    """Feed a recording through the correlator, exactly as the live run did."""
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
        names = header.get("plan", {}).get("tracers", [])
        if not isinstance(names, list):
            raise UserError(f"{path}: recording header has no valid tracer list",
                            "the file is damaged")
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
            for block in reader.blocks_of_records():
                corr.feed_records(block)
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
        env.warn(f"{path}: {corr.decode_errors} records could not be decoded")
    return corr
