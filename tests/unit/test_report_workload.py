"""The report's workload lines: what ran during the trace, readable, from any JSON."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trace_reclaim.report import WIDTH, render_workload

RUN = {
    "name": "pressure", "repetition": 2, "runner": "trace-reclaim run",
    "params": {"ballast_mib": 19500, "mib": 5000, "args": []},
    "sysctls": {"vm.watermark_scale_factor": "300"},
    "sysctls_before": {"vm.watermark_scale_factor": "10"},
    "vm": {"vm.swappiness": "60", "vm.min_free_kbytes": "67584"},
    "machine": {"cpus": 2, "mem_total_bytes": 25276059648, "hostname": "vm"},
    "settle": {"drop_caches": 3, "compact_memory": True, "kswapd_asleep": False,
               "seconds": 0.618},
}


def test_a_run_of_trace_reclaim_run_reads_as_settings() -> None:
    text = "\n".join(render_workload(RUN))
    assert text == (
        "workload: pressure (run 2, by trace-reclaim run)\n"
        "  params: ballast_mib=19500 mib=5000\n"
        "  sysctls set for it: vm.watermark_scale_factor=300 (was 10)\n"
        "  vm sysctls: min_free_kbytes=67584 swappiness=60\n"
        "  machine: 2 CPUs, 23.5GiB RAM\n"
        "  settled first in 0.6 s: caches dropped, memory compacted, kswapd still awake")


def test_no_python_reprs_and_unknown_keys_kept() -> None:
    lines = render_workload({"name": "x", "fixture": "f", "extra": {"b": [1, 2]}})
    assert lines == ["workload: x", '  extra={"b":[1,2]} fixture=f']
    assert render_workload("just a name") == ["workload: just a name"]
    assert render_workload({"params": "[redacted]"}) == [
        "workload: (unnamed)", "  params: [redacted]"]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)


@settings(max_examples=300, derandomize=True)
@given(st.dictionaries(st.sampled_from(sorted(RUN) + ["other"]), JSON, max_size=9) | JSON)
def test_any_json_renders_within_the_width(wl: object) -> None:
    for line in render_workload(wl):
        assert len(line) < WIDTH
        assert "{'" not in line
