"""The compiled report path: which modules mypyc compiles, and whether they are used.

Replaying a recording spends its time in a few modules: reading the blocks,
decoding each record, the correlator's dispatch and the reclaim, compaction,
OOM and episode aggregators.  ``setup.py`` compiles those (``COMPILED``) with
mypyc when it can (a C compiler and Python's headers); the same sources run
interpreted where it cannot, with the same output.  Compiled, the report of
``bench/report_speed.py``'s million events takes about a third of the time
(the reads, decoders, dispatch and folds are native; what is left is spread
thin over dictionaries, boxed ints and one object per record).  Compiled
code pays for what is dynamic in it, so the hot paths are typed to the
end: a constant imported from another module is a dict lookup at every use
unless it is ``Final``, a tuple typed ``Any`` unpacks through an iterator,
a dataclass's ``__init__`` runs interpreted.

A compiled module takes precedence over its source on import, so a source
edited after the build would silently not run.  The build writes the SHA-256
of every source it compiled (``MANIFEST``); ``select()``, called as the package
is imported, compares them with the sources beside it and, if any differs or
``TRACE_RECLAIM_PURE=1`` is set, makes every compiled module load from its
source instead (all of them: compiled modules call each other directly, so
one cannot be swapped alone).  ``STATUS`` says which path runs and why;
``trace-reclaim --version`` prints it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
from typing import Any, Dict, Optional, Sequence

__all__ = ["COMPILED", "MANIFEST", "STATUS", "select", "compiled", "source_hashes", "why_not"]

#: The modules mypyc compiles, in one group (they call each other natively).
COMPILED = (
    "trace_reclaim.recording",
    "trace_reclaim.events",
    "trace_reclaim.correlate",
    "trace_reclaim.tracer",
    "trace_reclaim.kswapd",
    "trace_reclaim.stats",
    "trace_reclaim.episodes.model",
    "trace_reclaim.episodes.builder",
    "trace_reclaim.episodes.document",
    "trace_reclaim.tracers.reclaim",
    "trace_reclaim.tracers.compaction",
    "trace_reclaim.tracers.oom",
    "trace_reclaim._decoders",
)

_HERE = os.path.dirname(os.path.abspath(__file__))
#: Written by setup.py beside the compiled modules: {"sources": {module: sha256}}.
MANIFEST = os.path.join(_HERE, "_native_build.json")
#: What select() found: "compiled", or "interpreted (<why>)".
STATUS = "interpreted (not selected yet)"


def _source_path(module: str, here: str = _HERE) -> str:
    rel = module.split(".")[1:]
    return os.path.join(here, *rel) + ".py"


def _sha256() -> Any:
    """hashlib.sha256, without loading OpenSSL where CPython's own is built in:
    every command checks the sources as the package is imported, and
    hashlib's import (OpenSSL's libcrypto) cost more than the hashing."""
    try:
        return importlib.import_module("_sha256").sha256
    except ImportError:  # built without it: hashlib has one
        return importlib.import_module("hashlib").sha256


def source_hashes(modules: Sequence[str] = COMPILED, root: Optional[str] = None) -> Dict[str, str]:
    """SHA-256 of each module's source (under ``root``: the package directory)."""
    base = root or _HERE
    sha256 = _sha256()
    out = {}
    for m in modules:
        with open(os.path.join(base, *m.split(".")[1:]) + ".py", "rb") as f:
            out[m] = sha256(f.read()).hexdigest()
    return out


def _built(module: str, here: str = _HERE) -> bool:
    """Whether a compiled extension of ``module`` lies beside its source."""
    stem = _source_path(module, here)[:-3]
    return any(os.path.exists(stem + s) for s in importlib.machinery.EXTENSION_SUFFIXES)


class _SourceFinder:
    """Load the compiled modules from their sources (a meta path finder)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(name, _source_path(name))


def why_not(here: str = _HERE) -> Optional[str]:
    """Why the compiled modules of the package in ``here`` must not run
    (None: they may)."""
    if os.environ.get("TRACE_RECLAIM_PURE", "") not in ("", "0"):
        return "TRACE_RECLAIM_PURE is set"
    built = [m for m in COMPILED if _built(m, here)]
    if not built:
        return "not compiled: reinstall with a C compiler and python3-dev to compile it"
    if len(built) < len(COMPILED):
        return f"only {len(built)} of {len(COMPILED)} modules are compiled"
    try:
        with open(os.path.join(here, os.path.basename(MANIFEST))) as f:
            recorded = json.load(f)["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{os.path.basename(MANIFEST)} is missing or damaged"
    try:
        now = source_hashes(root=here)
    except OSError as e:
        return f"a source is unreadable ({e.strerror})"
    stale = sorted(m for m in COMPILED if recorded.get(m) != now[m])
    if stale:
        return (f"{len(stale)} source(s) changed since the build ({stale[0]}, ...): "
                "reinstall to compile them again")
    return None


def select() -> str:
    """Decide which path runs (once, before any compiled module is imported)."""
    global STATUS
    if STATUS != "interpreted (not selected yet)":
        return STATUS
    why = why_not()
    if why is None:
        STATUS = "compiled"
    else:
        if any(_built(m) for m in COMPILED):
            sys.meta_path.insert(0, _SourceFinder())
        STATUS = f"interpreted ({why})"
    return STATUS


def compiled() -> bool:
    """Whether the compiled modules are the ones running."""
    return STATUS == "compiled"
