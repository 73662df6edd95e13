"""The text report's layout helpers keep every line within 80 columns, losing nothing."""

from __future__ import annotations

import re

import pytest

from trace_reclaim.report import (NBSP, WIDTH, ellipsize, fit_count, fit_ns, fmt_count,
                                  interval_header, interval_line, table, wrap)
from trace_reclaim.tracers.slab.render import context_letters, shrinker_lines

FLAGS = ["GFP_HIGHUSER_MOVABLE", "__GFP_HIGHMEM", "__GFP_MOVABLE", "__GFP_RECLAIMABLE",
         "__GFP_NOWARN", "__GFP_RETRY_MAYFAIL", "__GFP_NOFAIL", "__GFP_NORETRY",
         "__GFP_COMP", "__GFP_ZERO", "__GFP_NOMEMALLOC", "__GFP_HARDWALL", "__GFP_THISNODE",
         "__GFP_ACCOUNT", "__GFP_ZEROTAGS", "__GFP_SKIP_KASAN", "__GFP_NOLOCKDEP"]


@pytest.mark.parametrize("width", [40, 50, 79, 80])
def test_gfp_flags_wrap_at_bars_never_inside_a_flag(width):
    text = ", ".join(f"{'|'.join(FLAGS[i:] + FLAGS[:i])} x{10 ** (i + 5)}" for i in range(4))
    lines = wrap(text, "  gfp flags: ", width=width, hang="    ", breaks="|")
    assert all(len(ln) <= width for ln in lines), lines
    # put the lines back together: a line that ends in "|" continues the flag list
    joined = lines[0][len("  gfp flags: "):]
    for ln in lines[1:]:
        joined += ("" if joined.endswith("|") else " ") + ln[4:]
    assert joined == text
    for ln in lines:
        for tok in re.findall(r"[A-Z_]+", ln):
            assert tok in FLAGS, f"{tok!r} is a piece of a flag: {ln!r}"


def test_no_break_space_keeps_a_count_with_its_word():
    lines = wrap("x" * 70 + f", 0{NBSP}failed, 1{NBSP}freed", width=79)
    assert lines[-1].strip().startswith("0 failed") and NBSP not in "".join(lines)


def test_huge_counts_become_short_with_a_note():
    rows = [["node0", 10 ** 15, 123456789, 42, "1000000.00s"]]
    lines = table(["NAME", "CALLS", "SCANNED", "FREED", "TIME"] + ["X" * 6] * 5,
                  [r + [10 ** 12] * 5 for r in rows])
    assert all(len(ln) <= WIDTH for ln in lines), lines
    assert "1P" in lines[1] and "123M" in lines[1] and " 42 " in lines[1]
    assert "278h" in lines[1]                    # 10^6 s
    assert "exact in -j" in lines[-1]


def test_counts_that_fit_stay_exact():
    lines = table(["PID", "CALLS"], [["4194304", 1468023]])
    assert lines == ["  PID      CALLS", "  4194304  1468023"]   # tabulate's spacing


def test_long_name_gets_a_line_of_its_own():
    name = "super_cache_scan (ext4 /dev/mapper/vg0-root)"
    rows = [[name, 1, 2, 3, 4, "5.0ms", "6.0ms", 0, "kdc"], ["ext4_es_scan"] + [1] * 8]
    lines = table(["SHRINKER", "CALLS", "OBJS", "SCANNED", "FREED", "TIME", "P99", "PR",
                   "CTX"], [r[:1] + [10 ** 9] * 4 + r[5:] for r in rows],
                  pad=0, flex=0, own_line=True)
    assert all(len(ln) <= WIDTH for ln in lines), lines
    assert lines[1] == "  " + name and lines[2].startswith("   " + " " * 10)
    assert lines[3].startswith("  ext4_es_scan ")


def test_names_longer_than_a_line_keep_both_ends():
    assert ellipsize("abcdefghij", 5) == "abcd~"
    assert ellipsize("abcdefghij", 5, middle=True) == "ab~ij"
    assert ellipsize("abc", 5) == "abc"
    name = "super_cache_scan (" + "x" * 100 + " vda1)"
    lines = table(["SHRINKER", "CALLS"] + ["COLUMN"] * 9, [[name] + [1] * 10], flex=0,
                  own_line=True)
    assert all(len(ln) <= WIDTH for ln in lines)
    assert lines[1].startswith("  super_cache_scan (") and lines[1].endswith(" vda1)")


def test_last_column_wraps_inside_itself_or_spills_below():
    zones = " ".join(f"Movable/o{o}:{10 ** 9}" for o in range(11))
    lines = table(["NODE", "REQUESTS", "WAKES", "ZONES"], [["0", 1, 2, zones]], flex=3)
    assert all(len(ln) <= WIDTH for ln in lines), lines
    col = lines[0].index("ZONES")
    assert all(ln[:col].strip() == "" for ln in lines[2:])
    assert " ".join(ln[col:] for ln in lines[1:]) == zones
    # no room to wrap inside: the cell goes below its row, named by its header
    lines = table(["A" * 35, "B" * 35, "ZONES"], [["a", "b", zones]], flex=2)
    assert all(len(ln) <= WIDTH for ln in lines), lines
    assert lines[2].startswith("    ZONES: Movable/o0:")


@pytest.mark.parametrize("n,w,text", [(999, 3, "999"), (1000, 3, "1k"), (12345, 4, "12k"),
                                      (999_999, 4, "1M"), (4194304, 7, "4194304"),
                                      (10 ** 20, 5, "100E")])
def test_fit_count(n, w, text):
    assert fit_count(n, w) == text


def test_fmt_count_and_fit_ns():
    assert [fmt_count(n) for n in (99_999, 123_456, 1_234_567, -12_345_678)] == \
        ["99999", "123k", "1.23M", "-12.3M"]
    assert fit_ns(999_999_999, 8) == "1.00s"
    assert fit_ns(12_345 * 10 ** 9, 8) == "12345s"
    assert fit_ns(10 ** 18, 8) == "277778h"


def test_live_rows_keep_their_columns_beyond_any_field_width():
    big = {"reclaim": {"wakeup_requests": 10 ** 12, "kswapd_wakes": 10 ** 9,
                       "kswapd_awake_ns": {0: 10 ** 18}, "stalls": 10 ** 10,
                       "stall_ns": 10 ** 17, "stall_max_ns": 10 ** 13, "pages": 10 ** 15},
           "vmalloc": {"huge_areas": 10 ** 6, "fallbacks": 12345}, "lost_events": 10 ** 9}
    head, row = interval_header(), interval_line(big, "23:59:59")
    assert len(head) == len(row) <= WIDTH
    # every field right-aligned under its header
    for m in re.finditer(r"\S+", head):
        assert row[m.end() - 1] != " ", (m.group(), row)
    assert row.split()[-1] == "1000M"              # lost events still shown


def _shrinker(name, by, calls=10, freed=5):
    return {"name": name, "calls": calls, "objects": 1, "scanned": 100, "freed": freed,
            "asked": 100, "time_ns": 1000, "p99_ns": 100, "min_priority": 0,
            "contexts": {"direct": calls} if by else {"kswapd": calls},
            "direct_reclaim_by": by, "frees_nothing": freed == 0}


def test_direct_reclaim_lines_fold_by_task_set_and_keep_every_pair():
    a, b = "30066 (python)", "30062 (python)"
    sh = [_shrinker(f"super_cache_scan (ext4 vda{i})#{i}", {a: 8, b: 1}) for i in range(10)]
    sh += [_shrinker("ext4_es_scan", {a: 3}), _shrinker("kfree_rcu_shrink_scan", {})]
    lines = shrinker_lines({"shrinkers": sh, "contexts": {"direct": 103, "kswapd": 10},
                            "drop_caches_runs": 0})
    assert all(len(ln) <= WIDTH for ln in lines), lines
    text = "\n".join(lines)
    direct = re.findall(r"^  direct reclaim by pid .*(?:\n    .*)*", text, re.M)
    assert len(direct) == 2, direct
    first, second = (" ".join(d.split()) for d in direct)
    assert first.startswith(f"direct reclaim by pid {a} x80, {b} x10: ")
    assert all(f"super_cache_scan (ext4 vda{i})#{i}" in first for i in range(10))
    assert second == f"direct reclaim by pid {a} x3: ext4_es_scan"
    assert "kfree_rcu_shrink_scan" not in first + second
    # a line never ends inside a task or a shrinker name
    for d in direct:
        for ln in d.splitlines()[:-1]:
            assert not re.search(r"\d$|\($|\(ext4$", ln), ln


def test_context_letters():
    assert context_letters({"drop_caches": 3, "kswapd": 1, "direct": 0}) == "kc"
    assert context_letters({}) == "-"
