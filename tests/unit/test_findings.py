"""Findings over synthetic report documents (no root)."""

from __future__ import annotations

from trace_reclaim.findings import findings


def base(**kw):
    doc = {"window": {"start_ns": 0}, "totals": {"direct_reclaim_stalls": 0},
           "zones": [], "meminfo": [], "episodes": [], "reclaim": {"kswapd": []}}
    doc.update(kw)
    return doc


def ep(**kw):
    e = {"id": 0, "node": 0, "kind": "kswapd", "start_ns": 0, "end_ns": 10,
         "kswapd_wakes": 1, "kswapd_re_wakes": 0, "max_order": 0,
         "direct_reclaim_stalls": 0, "direct_reclaim_ns": 0, "direct_reclaim_max_ns": 0,
         "stalls_while_kswapd_awake": 0, "pages_reclaimed": 0, "stalls": [],
         "oom_kills": [], "sequence": [], "watermarks": None}
    e.update(kw)
    return e


def kinds(doc):
    return [(f["kind"], f["severity"]) for f in findings(doc)]


def test_nothing_unusual():
    assert findings(base()) == []


def test_direct_reclaim_while_kswapd_awake():
    e = ep(direct_reclaim_stalls=3, stalls_while_kswapd_awake=3, direct_reclaim_ns=3_000_000,
           direct_reclaim_max_ns=2_000_000, pages_reclaimed=96,
           stalls=[{"pid": 5, "comm": "dd", "stalls": 3}])
    [f] = findings(base(episodes=[e]))
    assert f["kind"] == "direct_reclaim_kswapd_awake" and f["severity"] == "warning"
    assert f["evidence"]["stalls"] == 3 and f["evidence"]["pages_reclaimed"] == 96
    assert "5 (dd) x3" in f["evidence"]["top_tasks"]
    assert f["title"] and "\n" not in f["title"] and f["meaning"]


def test_direct_burst_while_asleep_is_info():
    e = ep(kind="direct", kswapd_wakes=0, direct_reclaim_stalls=2, direct_reclaim_ns=10)
    assert kinds(base(episodes=[e])) == [("direct_reclaim_kswapd_asleep", "info")]


def test_zone_below_min_from_snapshots_and_episodes():
    z = {"node": 0, "zone": "Normal", "free": 5, "min": 10, "low": 12, "high": 14}
    doc = base(zones=[{"ts_ns": 1, "when": "start", "zones": [z]}])
    [f] = findings(doc)
    assert f["kind"] == "zone_below_min" and f["severity"] == "critical"
    assert f["evidence"]["free"] == 5 and f["evidence"]["min"] == 10
    wm = {"ts_ns": 2, "when": "kswapd_wake", "inside_episode": True,
          "zones": [{"zone": "DMA32", "free": 1, "min": 2, "low": 3, "high": 4,
                     "state": "below_min"}]}
    [f] = findings(base(episodes=[ep(watermarks=wm)]))
    assert f["episodes"] == [0] and f["evidence"]["zone"] == "DMA32"


def test_repeated_kswapd_re_wakes():
    e = ep(kswapd_wakes=50, kswapd_re_wakes=49, max_order=9)
    doc = base(episodes=[e], reclaim={"kswapd": [
        {"nid": 0, "requests": [{"zone": "Movable", "order": 9, "count": 50}]}]})
    [f] = findings(doc)
    assert f["kind"] == "kswapd_re_wakes"
    assert f["evidence"]["re_wakes"] == 49
    assert f["evidence"]["requests_by_zone_order"] == {"Movable/o9": 50}


def test_slab_findings_and_absent_section():
    doc = base(slab={"shrinkers": [
        {"name": "super_cache_scan", "calls": 9, "scanned": 900, "freed": 0, "time_ns": 5},
        {"name": "scan_shadow_nodes", "calls": 9, "scanned": 900, "freed": 12, "time_ns": 5},
        {"name": "idle", "calls": 3, "scanned": 0, "freed": 0, "time_ns": 1}],
        "caches": [{"name": "dentry", "never_drains": True, "reason": "pinned by open files"},
                   {"name": "kmalloc-64", "never_drains": False}]})
    got = kinds(doc)
    assert got == [("shrinker_frees_nothing", "warning"), ("cache_never_drains", "warning")]
    f = findings(doc)
    assert f[0]["evidence"]["name"] == "super_cache_scan" and f[0]["evidence"]["scanned"] == 900
    assert "pinned" in f[1]["title"]
    assert kinds(base(slab=None)) == []


def test_vmalloc_fallback():
    doc = base(vmalloc={"areas": [
        {"verdict": "huge", "size": 6295552, "comm": "a"},
        {"verdict": "fallback", "size": 6295552, "comm": "bpf-loader"},
        {"verdict": "not_eligible", "size": 1 << 20},
        {"verdict": "unknown"}]})
    [f] = findings(doc)
    assert f["kind"] == "vmalloc_huge_fallback" and "bpf-loader" in f["title"]
    assert f["evidence"]["size"] == 6295552


def mem(free, avail, total=24 << 20, hugetlb=0, cached=0):
    return {"ts_ns": 1, "when": "tick", "MemTotal": total, "MemFree": free,
            "MemAvailable": avail, "Hugetlb": hugetlb, "Cached": cached}


def test_low_free_but_available_is_not_a_shortage():
    doc = base(meminfo=[mem(20 << 20, 22 << 20), mem(200 << 10, 3 << 20, hugetlb=20 << 20,
                                                      cached=3 << 20)])
    [f] = findings(doc)
    assert (f["kind"], f["severity"]) == ("low_free_high_available", "info")
    assert f["evidence"]["MemFree_kB"] == 200 << 10 and f["evidence"]["Hugetlb_kB"] == 20 << 20


def test_real_shortage():
    [f] = findings(base(meminfo=[mem(100 << 10, 150 << 10)]))
    assert (f["kind"], f["severity"]) == ("memory_shortage", "critical")


def test_oom_kill_names_the_episode():
    v = {"ts_ns": 5, "pid": 77, "comm": "hog", "anon_rss_kb": 8 << 20, "file_rss_kb": 0,
         "shmem_rss_kb": 0, "oom_score_adj": 0, "by_pid": 78, "by_comm": "alloc"}
    e = ep(id=4, oom_kills=[v], reclaim_retry_zone=16,
           sequence=[["kswapd_wake", 0], ["direct_reclaim", 5], ["oom_kill", 9]])
    doc = base(episodes=[e], oom={"victims": [v]})
    fs = findings(doc)
    assert [f["kind"] for f in fs] == ["oom_kill"]
    assert fs[0]["episodes"] == [4] and fs[0]["evidence"]["episode"] == 4
    assert fs[0]["evidence"]["sequence"] == "kswapd_wake -> direct_reclaim -> oom_kill"
    # a victim outside every episode is still reported
    fs = findings(base(oom={"victims": [v]}))
    assert [f["kind"] for f in fs] == ["oom_kill"] and "outside" in fs[0]["title"]


def test_severity_order():
    z = {"node": 0, "zone": "Normal", "free": 5, "min": 10, "low": 12, "high": 14}
    e = ep(kind="direct", direct_reclaim_stalls=1)
    doc = base(episodes=[e], zones=[{"ts_ns": 1, "when": "start", "zones": [z]}])
    assert [f["severity"] for f in findings(doc)] == ["critical", "info"]
