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


# -- the kernel's BTF, read while bcc loads -----------------------------------------
def test_btf_read_ahead_is_the_btf_read_in_place(tmp_path):
    import shutil

    src = "/sys/kernel/btf/vmlinux"
    if not __import__("os").path.exists(src):
        pytest.skip("this kernel has no BTF")
    (tmp_path / "sys/kernel/btf").mkdir(parents=True)
    shutil.copyfile(src, tmp_path / "sys/kernel/btf/vmlinux")
    ahead, now = _probe(tmp_path), _probe(tmp_path)
    ahead.prefetch_btf()
    ahead.prefetch_btf()   # once
    a, b = ahead.btf_types, now.btf_types
    assert a is not None and ahead.btf_types is a
    assert a.member("task_struct", "cgroups") == b.member("task_struct", "cgroups")


def test_btf_read_ahead_that_failed_fails_where_the_btf_is_asked_for(tmp_path, monkeypatch):
    from trace_reclaim import btf

    probe = _probe(tmp_path)

    def broken(path):
        raise RuntimeError("libbpf went away")
    monkeypatch.setattr(btf, "_load", broken)
    probe.prefetch_btf()
    with pytest.raises(RuntimeError, match="libbpf went away"):
        _ = probe.btf_types
    monkeypatch.undo()
    assert _probe(tmp_path).btf_types is None   # asked again: read again (none here)


def test_no_btf_is_none_ahead_or_not(tmp_path):
    probe = _probe(tmp_path)
    probe.prefetch_btf()
    assert probe.btf_types is None
