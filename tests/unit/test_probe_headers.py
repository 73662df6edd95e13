"""Where bcc finds kernel headers: the build tree, else the kernel's own (IKHEADERS)."""

from __future__ import annotations

import pytest

from trace_reclaim.probe import KHEADERS, Probe
from trace_reclaim.procfs import ProcFS

REL = "6.12.0-trpatch"


def _probe(tmp_path) -> Probe:
    probe = Probe(ProcFS(str(tmp_path)))
    probe.release = REL  # as if that kernel ran (uname)
    return probe


def test_the_build_tree_first(tmp_path):
    gen = tmp_path / f"lib/modules/{REL}/build/include/generated"
    gen.mkdir(parents=True)
    (gen / "utsrelease.h").write_text(f'#define UTS_RELEASE "{REL}"\n')
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/kheaders.tar.xz").write_bytes(b"\xfd7zXZ")
    h = _probe(tmp_path).headers
    assert h["path"].endswith(f"lib/modules/{REL}/build") and h["matches"]
    assert not h.get("kheaders")


@pytest.mark.parametrize("how", ["builtin", "module"])
def test_the_kernels_own_headers_without_a_tree(tmp_path, how):
    if how == "builtin":
        (tmp_path / "sys/kernel").mkdir(parents=True)
        (tmp_path / "sys/kernel/kheaders.tar.xz").write_bytes(b"\xfd7zXZ")
    else:
        (tmp_path / f"lib/modules/{REL}").mkdir(parents=True)
        (tmp_path / f"lib/modules/{REL}/modules.dep").write_text(
            "kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko\nkernel/kernel/kheaders.ko:\n")
    h = _probe(tmp_path).headers
    assert h == {"path": KHEADERS, "release": REL, "matches": True, "source": None,
                 "kheaders": True}


def test_neither_is_missing(tmp_path):
    (tmp_path / f"lib/modules/{REL}").mkdir(parents=True)
    (tmp_path / f"lib/modules/{REL}/modules.dep").write_text("kernel/fs/fat/fat.ko:\n")
    assert _probe(tmp_path).headers["path"] is None
