"""cgroupfs parsing, naming and id resolution; examples/_cgroup's refusals (no root)."""

import os

import pytest

from trace_reclaim import cgroupfs
from trace_reclaim.examples import _cgroup

MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 31 0:39 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw
"""


def test_parse_mountinfo_finds_cgroup_mounts_and_decodes_spaces():
    got = cgroupfs.parse_mountinfo(MOUNTINFO)
    assert [g[0] for g in got] == ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory",
                                   "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified",
                                   "/mnt/my cg"]
    assert got[1] == ("/sys/fs/cgroup/memory", "cgroup", "rw,memory")
    assert got[3][1] == "cgroup2"


def test_memory_mount_prefers_v1_memory_then_v2_with_memory():
    M = cgroupfs.CgroupMount
    hybrid = [M("/u", 2, ()), M("/m", 1, ("memory",)), M("/c", 1, ("cpu",))]
    assert cgroupfs.memory_mount(hybrid).path == "/m"
    assert cgroupfs.unified_mount(hybrid).path == "/u"
    pure = [M("/sys/fs/cgroup", 2, ("cpu", "memory", "io"))]
    assert cgroupfs.memory_mount(pure).path == "/sys/fs/cgroup"
    assert cgroupfs.memory_mount([M("/u", 2, ("cpu",))]) is None


def test_parse_proc_cgroup_hybrid():
    got = cgroupfs.parse_proc_cgroup(
        "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/x\n0::/user.slice\n")
    assert got["memory"] == "/process_api/abc"
    assert got["cpu"] == got["cpuacct"] == "/x"
    assert got[""] == "/user.slice"
    assert got["name=systemd"] == "/"


def test_parse_flat_keyed_skips_junk():
    assert cgroupfs.parse_flat_keyed("low 0\nhigh 12\nmax 3\noom 0\nbad x\n\n") == \
        {"low": 0, "high": 12, "max": 3, "oom": 0}


@pytest.mark.parametrize("path,kind,name", [
    ("/", "root", "/"),
    ("/system.slice/docker-" + "ab" * 32 + ".scope", "docker", "ab" * 6),
    ("/docker/" + "cd" * 32, "docker", "cd" * 6),
    ("/system.slice/containerd.service/cri-containerd-" + "ef" * 32 + ".scope",
     "containerd", "ef" * 6),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
     "0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice",
     "k8s-pod", "pod 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 (burstable)"),
    ("/kubepods/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "k8s-pod",
     "pod 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 (guaranteed)"),
    ("/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/" + "12" * 32,
     "k8s-pod", "pod 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 (besteffort)"),
    ("/system.slice/nginx.service", "systemd", "nginx.service"),
    ("/user.slice/user-1000.slice/session-2.scope", "systemd", "session-2.scope"),
    ("/process_api/96f2c7c3", "cgroup", "96f2c7c3"),
])
def test_classify(path, kind, name):
    assert cgroupfs.classify(path) == (kind, name)


def test_read_memory_counters_v1_and_v2(tmp_path):
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.usage_in_bytes").write_text("4096\n")
    (v1 / "memory.limit_in_bytes").write_text("67108864\n")
    (v1 / "memory.failcnt").write_text("17\n")
    (v1 / "memory.stat").write_text("cache 4096\npgpgout 12\n")
    c = cgroupfs.read_memory_counters(str(v1), 1)
    assert c["failcnt"] == 17 and c["limit_bytes"] == 64 << 20
    assert c["stat"]["pgpgout"] == 12
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("max\n")
    (v2 / "memory.high").write_text("1048576\n")
    (v2 / "memory.events").write_text("low 0\nhigh 5\nmax 2\noom 0\noom_kill 0\n")
    (v2 / "memory.pressure").write_text(
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=1234\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=99\n")
    c = cgroupfs.read_memory_counters(str(v2), 2)
    assert c["max_bytes"] is None and c["high_bytes"] == 1 << 20
    assert c["events"]["high"] == 5
    assert c["pressure"]["full"]["total"] == 99


def test_resolver_maps_inode_to_path_and_caches(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    r = cgroupfs.CgroupResolver(str(tmp_path))
    ino = os.stat(tmp_path / "a" / "b").st_ino
    assert r.lookup(ino) == "/a/b"
    assert r.id_of("/a/b") == ino
    walks = r.walks
    assert r.lookup(ino) == "/a/b" and r.walks == walks      # cached
    assert r.lookup(1 << 60) is None                          # unknown: one more walk
    assert r.lookup(1 << 60, rescan=False) is None and r.walks == walks + 1


def test_resolver_is_bounded(tmp_path):
    for i in range(10):
        (tmp_path / str(i)).mkdir()
    r = cgroupfs.CgroupResolver(str(tmp_path), max_entries=4)
    r.rescan()
    assert len(r.paths) == 4


def test_cgroup_refuses_paths_that_are_not_ours(tmp_path):
    with pytest.raises(ValueError):
        _cgroup.Cgroup(str(tmp_path / "process_api"), 1, str(tmp_path))
    with pytest.raises(ValueError):
        _cgroup.Cgroup("/sys/fs/cgroup/memory", 1, "/sys/fs/cgroup/memory")


def test_cgroup_refuses_to_move_the_caller(tmp_path):
    cg = _cgroup.Cgroup(str(tmp_path / (_cgroup.PREFIX + "1-x")), 1, str(tmp_path))
    with pytest.raises(ValueError):
        cg.attach(os.getpid())


def test_cgroup_remove_rmdirs_an_empty_dir_and_tolerates_absence(tmp_path):
    d = tmp_path / (_cgroup.PREFIX + "1-x")
    d.mkdir()
    cg = _cgroup.Cgroup(str(d), 1, str(tmp_path))
    assert cg.rel == "/" + d.name and cg.pids() == []
    cg.remove()
    assert not d.exists()
    cg.remove()   # already gone: no error


def test_cgroup_set_high_on_v1_is_a_workload_error(tmp_path):
    cg = _cgroup.Cgroup(str(tmp_path / (_cgroup.PREFIX + "1-x")), 1, str(tmp_path))
    with pytest.raises(_cgroup._restore.WorkloadError):
        cg.set_high(1 << 20)


def test_memory_cgroup_rejects_odd_names(monkeypatch):
    monkeypatch.setattr(_cgroup._restore, "require_root", lambda: None)
    for bad in ("../x", "a/b", "", "x" * 65):
        with pytest.raises(ValueError):
            with _cgroup.memory_cgroup(bad):
                pass


def test_select_cgroups_by_path_mount_path_unit_and_container_id(tmp_path):
    mem, uni = tmp_path / "memory", tmp_path / "unified"
    cid = "ab" * 32
    for d in (mem / "system.slice" / "nginx.service",
              mem / "system.slice" / f"docker-{cid}.scope" / "child",
              uni / "system.slice" / "nginx.service"):
        d.mkdir(parents=True)
    m, u = cgroupfs.CgroupResolver(str(mem)), cgroupfs.CgroupResolver(str(uni))

    def ids(root, *rels):
        return sorted(os.stat(root / r).st_ino for r in rels)

    sel = cgroupfs.select_cgroups(["nginx.service"], m, u)
    assert sel == {"memcg": ids(mem, "system.slice/nginx.service"),
                   "cgroup": ids(uni, "system.slice/nginx.service")}
    # a container by its 12-character id, descendants included
    sel = cgroupfs.select_cgroups([cid[:12]], m, u)
    assert sorted(sel["memcg"]) == ids(mem, f"system.slice/docker-{cid}.scope",
                                       f"system.slice/docker-{cid}.scope/child")
    assert sel["cgroup"] == []
    # a path in the hierarchy and a path under the mount name the same cgroup
    a = cgroupfs.select_cgroups(["/system.slice/nginx.service"], m, u)
    b = cgroupfs.select_cgroups([str(mem / "system.slice" / "nginx.service")], m, u)
    assert a["memcg"] == b["memcg"]
    with pytest.raises(LookupError) as e:
        cgroupfs.select_cgroups(["nginx.service", "missing.service"], m, u)
    assert e.value.args[0] == "missing.service"


def test_memcg_id_cflags_say_why_not_without_btf():
    assert cgroupfs.memcg_id_cflags(None) == ([], "no kernel BTF (/sys/kernel/btf/vmlinux)")


def test_memcg_id_cflags_from_this_kernels_btf():
    from trace_reclaim import btf

    b = btf.load_btf()
    if b is None:
        pytest.skip("no /sys/kernel/btf/vmlinux")
    cflags, why = cgroupfs.memcg_id_cflags(b)
    assert why == "" and [c.split("=")[0] for c in cflags] == [
        "-DCG_TASK_CGROUPS_OFF", "-DCG_CSS_SET_SUBSYS_OFF", "-DCG_CSS_CGROUP_OFF",
        "-DCG_CGROUP_KN_OFF", "-DCG_KERNFS_ID_OFF", "-DCG_MEMORY_CGRP_ID"]
    ids = {"cgroup_subsys_id": b.enum_value("cgroup_subsys_id", "CGROUP_SUBSYS_COUNT")}
    memory = int(cflags[-1].split("=")[1])
    assert 0 <= memory < ids["cgroup_subsys_id"]
