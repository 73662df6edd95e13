"""Build trace-reclaim; compile its report path with mypyc where that can be done.

The metadata is in setup.cfg.  This file only adds the compiled modules of
``trace_reclaim.native.COMPILED``: where mypyc, a C compiler or Python's
headers are missing, or ``TRACE_RECLAIM_PURE=1`` is set, the package installs
as plain Python with the same behaviour (slower to report a large recording)
and says so.  ``trace-reclaim --version`` tells which one runs.
"""

from __future__ import annotations

import json
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _say(msg: str) -> None:
    print(f"trace-reclaim setup: {msg}", file=sys.stderr)


def _native():  # type: ignore[no-untyped-def]
    """trace_reclaim/native.py, loaded by path (it imports nothing of the package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "_trace_reclaim_native", os.path.join(HERE, "trace_reclaim", "native.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class OptionalBuildExt(build_ext):
    """Build the compiled modules, or go on without them if the C build fails;
    write the manifest of the sources compiled beside them when it succeeds."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any compiler failure: install interpreted
            _say(f"compiling failed ({e}); installing the interpreted modules only")
            return
        if not self.extensions:
            return
        native = _native()
        out = HERE if self.inplace else self.build_lib
        manifest = os.path.join(out, "trace_reclaim", os.path.basename(native.MANIFEST))
        with open(manifest, "w") as f:
            json.dump({"sources": native.source_hashes(root=os.path.join(HERE, "trace_reclaim"))},
                      f, indent=1, sort_keys=True)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"{ext.name}: {e}") from None


def _extensions() -> list:
    if os.environ.get("TRACE_RECLAIM_PURE", "") not in ("", "0"):
        _say("TRACE_RECLAIM_PURE is set: not compiling")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not installed: not compiling (pip install mypy, then reinstall)")
        return []
    paths = [os.path.join(*m.split(".")) + ".py" for m in _native().COMPILED]
    try:
        return mypycify(paths, opt_level="3", group_name="trace_reclaim._native")
    except Exception as e:  # noqa: BLE001 - mypyc's type check or code generation
        _say(f"mypyc could not compile ({e}): not compiling")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
