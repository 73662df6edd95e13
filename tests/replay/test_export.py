"""trace-reclaim export: every fixture's events as tables, read back with DuckDB.

Row counts are checked against the recording itself (each record decoded
here, independently of the exporter) and against the report.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import sys
from collections import Counter

import pytest

from tests import FIXTURES, synth
from trace_reclaim import abi, cli, events, tracers
from trace_reclaim.env import Environment, ExitStatus
from trace_reclaim.export import MANIFEST, table_name
from trace_reclaim.recording import Reader
from trace_reclaim.replay import replay

RECORDINGS = sorted(glob.glob(os.path.join(FIXTURES, "*.trc")))
PRESSURE = os.path.join(FIXTURES, "pressure.trc")   # has stalls, kswapd, compaction


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(argv, Environment(stdout=out, stderr=err))
    return rc, out.getvalue(), err.getvalue()


def assert_user_error(rc, out, err, status=ExitStatus.ERROR):
    assert rc == status, err
    assert err.startswith("error: ") and "\nhint: " in err, err
    assert "Traceback" not in err
    assert out == ""


def recorded(path):
    """BPF records per table, and the snapshots, decoded straight from the file."""
    counts: Counter = Counter()
    snaps = []
    ticks = 0
    with open(path, "rb") as f:
        for t, p in Reader(f).records():
            ev = events.decode(t, p)
            if ev is None:
                continue
            if t < events.USER_BASE:
                counts[table_name(t)] += 1
            elif isinstance(ev, events.Snapshot):
                snaps.append(ev)
            elif isinstance(ev, events.Tick):
                ticks += 1
    return counts, snaps, ticks


def report_of(path):
    return replay(path, Environment(stderr=io.StringIO()), tracers.registry()).report()


@pytest.mark.parametrize("path", RECORDINGS, ids=os.path.basename)
def test_parquet_tables_hold_every_event(path, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["export", path, "-o", str(out)])
    assert rc == 0, err
    assert stdout == ""
    manifest = json.loads((out / MANIFEST).read_text())
    con = duckdb.connect()

    def q(sql):
        return con.execute(sql).fetchall()

    def count(table, where="true"):
        return q(f"SELECT count(*) FROM '{out / table}.parquet' WHERE {where}")[0][0]

    counts, snaps, ticks = recorded(path)
    assert counts, "a fixture with no events"
    doc = report_of(path)
    with open(path, "rb") as f:
        loaded = Reader(f).header["plan"]["tracers"]
    reg = tracers.registry()
    # every event type of the recording's tracers has its table, empty if none came
    declared = {table_name(ty) for name in loaded for ty in reg[name].event_types}
    assert set(counts) <= declared
    for table in declared:
        n = counts.get(table, 0)
        assert count(table) == n, table
        assert manifest["tables"][table]["rows"] == n
    t = doc["totals"]
    assert count("direct_reclaim", "in_window AND began_in_window") == \
        t["direct_reclaim_stalls"]
    assert q(f"SELECT coalesce(sum(delta_ns), 0), coalesce(sum(nr_reclaimed_pages), 0) FROM "
             f"'{out}/direct_reclaim.parquet' WHERE in_window AND began_in_window")[0] == \
        (t["direct_reclaim_ns"], t["direct_reclaim_pages"])
    assert count("kswapd_wake", "in_window") == t["kswapd_wakes"]
    # per-process stalls, as the report lists them
    by_pid = dict(q(f"SELECT tgid, count(*) FROM '{out}/direct_reclaim.parquet' "
                    "WHERE in_window AND began_in_window GROUP BY tgid"))
    assert by_pid == {p["pid"]: p["stalls"] for p in
                      doc["reclaim"]["direct_reclaim"]["processes"]}
    if "compaction" in counts:
        assert count("compaction", "in_window") == \
            t["compaction_runs_direct"] + t["compaction_runs_kcompactd"]
        assert count("compaction", "status_name IS NULL") == 0
    if "shrink_slab" in counts:
        assert count("shrink_slab", "in_window AND began_in_window") == \
            sum(s["calls"] for s in doc["slab"]["shrinkers"])
        assert count("shrink_slab", "shrinker IS NULL") == 0
    # typed columns, the same whether the table has rows or not
    types = dict(q(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                   f"'{out}/direct_reclaim.parquet')"))
    assert types["ts_ns"] == "BIGINT" and types["comm"] == "VARCHAR"
    assert types["in_window"] == "BOOLEAN" and types["gfp"] == "VARCHAR"
    assert types["delta_ns"] == types["nr_reclaimed_pages"] == "BIGINT"
    assert [list(c) for c in types.items()] == manifest["tables"]["direct_reclaim"]["columns"]
    # snapshots as long tables
    for what in ("vmstat", "meminfo"):
        assert count(what) == sum(len(s.data) for s in snaps if s.what == what)
    zi = [s for s in snaps if s.what == "zoneinfo"]
    assert count("zoneinfo") == sum(len(z) - 2 for s in zi for z in s.data)
    assert count("zoneinfo", "key = 'free'") == sum(len(s.data) for s in zi)
    assert count("psi") == 2 * sum(1 for s in snaps if s.what == "psi")
    assert count("intervals") == ticks
    run = q(f"SELECT kernel_release, start_ns, end_ns, records FROM '{out}/run.parquet'")
    with open(path, "rb") as f:
        records = sum(1 for _ in Reader(f).records())
    assert run == [(doc["system"]["kernel"], doc["window"]["start_ns"],
                    doc["window"]["end_ns"], records)]


def test_csv_tables_match_the_recording(tmp_path):
    path = PRESSURE
    rc, _, err = run_cli(["export", path, "--format", "csv", "-o", str(tmp_path / "c")])
    assert rc == 0, err
    manifest = json.loads((tmp_path / "c" / MANIFEST).read_text())
    counts, _, _ = recorded(path)
    for table, meta in manifest["tables"].items():
        with open(tmp_path / "c" / meta["file"], newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == [c for c, _ in meta["columns"]]
        assert len(rows) - 1 == meta["rows"]
        if table in counts:
            assert meta["rows"] == counts[table]
    doc = report_of(path)
    with open(tmp_path / "c" / "direct_reclaim.csv", newline="") as f:
        stalls = [r for r in csv.DictReader(f)
                  if r["in_window"] == "true" and r["began_in_window"] == "true"]
    assert len(stalls) == doc["totals"]["direct_reclaim_stalls"]


def digest(d):
    return {p: hashlib.sha256(open(os.path.join(d, p), "rb").read()).hexdigest()
            for p in sorted(os.listdir(d))}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_existing_files_are_never_overwritten(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("duckdb")
    out = tmp_path / "out"
    assert run_cli(["export", PRESSURE, "--format", fmt, "-o", str(out)])[0] == 0
    before = digest(out)
    assert_user_error(*run_cli(["export", PRESSURE, "--format", fmt, "-o", str(out)]))
    assert digest(out) == before
    # one table file in the way: nothing is written
    other = tmp_path / "other"
    other.mkdir()
    (other / f"direct_reclaim.{fmt}").write_text("mine")
    rc, out_, err = run_cli(["export", PRESSURE, "--format", fmt, "-o", str(other)])
    assert_user_error(rc, out_, err)
    assert "direct_reclaim" in err
    assert os.listdir(other) == [f"direct_reclaim.{fmt}"]
    assert (other / f"direct_reclaim.{fmt}").read_text() == "mine"


def test_default_directory_is_named_after_the_recording(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(["export", RECORDINGS[0], "--format", "csv"])
    assert rc == 0, err
    stem = os.path.basename(RECORDINGS[0])[:-4]
    assert (tmp_path / f"{stem}-export" / MANIFEST).exists()


def test_bad_input(tmp_path):
    assert_user_error(*run_cli(["export", str(tmp_path / "missing.trc"), "-o",
                                str(tmp_path / "o1")]))
    junk = tmp_path / "junk.trc"
    junk.write_bytes(b"this is not a recording at all")
    assert_user_error(*run_cli(["export", str(junk), "-o", str(tmp_path / "o2")]))
    damaged = tmp_path / "damaged.trc"
    data = open(RECORDINGS[0], "rb").read()
    damaged.write_bytes(data[:20] + b"\xff" * 8 + data[28:])    # inside the header
    assert_user_error(*run_cli(["export", str(damaged), "-o", str(tmp_path / "o3")]))
    assert_user_error(*run_cli(["export", RECORDINGS[0], "--format", "xlsx", "-o",
                                str(tmp_path / "o4")]), status=ExitStatus.USAGE)
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_user_error(*run_cli(["export", RECORDINGS[0], "--format", "csv", "-o",
                                str(afile)]))
    for d in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / d / MANIFEST).exists()


def test_parquet_without_duckdb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "duckdb", None)
    rc, out, err = run_cli(["export", RECORDINGS[0], "-o", str(tmp_path / "o")])
    assert_user_error(rc, out, err)
    assert "duckdb" in err and "--format csv" in err
    assert not (tmp_path / "o").exists()


def test_truncated_recording_exports_what_it_holds(tmp_path):
    data = open(RECORDINGS[0], "rb").read()
    cut = tmp_path / "cut.trc"
    cut.write_bytes(data[:len(data) * 2 // 3])
    rc, _, err = run_cli(["export", str(cut), "--format", "csv", "-o", str(tmp_path / "o")])
    assert rc == 0, err
    assert "warning:" in err and "ends early" in err
    counts, _, _ = recorded(str(cut))
    manifest = json.loads((tmp_path / "o" / MANIFEST).read_text())
    for table, n in counts.items():
        assert manifest["tables"][table]["rows"] == n


def test_awkward_values_survive_the_round_trip(tmp_path):
    """Comms with commas, quotes and newlines; kernel addresses past 2**63."""
    duckdb = pytest.importorskip("duckdb")
    base = 10 ** 9
    comms = ['a,b', 'say "hi"', 'two\nlines', '', "\u00e9t\u00e9"]
    recs = [synth.vmstat_snapshot(base, "start")]
    for i, c in enumerate(comms):
        recs.append(synth.direct_reclaim(base + 1000 * (i + 1), 10, comm=c, pid=50 + i))
    shr = 0xFFFF_8881_0000_1234
    t = abi.EV_SHRINK_SLAB
    recs.append((t, synth.record(
        "shrink_slab_event", t, base + 9000, comm="kswapd0", delta_ns=5, shr=shr,
        shrink=0xFFFF_FFFF_8100_0000, cache_items=1, delta=2, total_scan=3, unscanned=-1,
        nr_deferred=-2, new_deferred=-3, freed=7, priority=12)))
    recs.append(synth.user(events.End(base + 10 ** 6, "x")))
    path = tmp_path / "w.trc"
    path.write_bytes(synth.recording(recs, {"plan": {"tracers": ["reclaim", "slab"]}}))
    out = tmp_path / "o"
    rc, _, err = run_cli(["export", str(path), "-o", str(out)])
    assert rc == 0, err
    con = duckdb.connect()
    got = con.execute(f"SELECT pid, comm FROM '{out}/direct_reclaim.parquet' "
                      "ORDER BY pid").fetchall()
    # an empty comm reads back as NULL (CSV has no empty-vs-null distinction)
    assert [c or "" for _, c in got] == comms
    row = con.execute(f"SELECT shr, unscanned, nr_deferred, freed FROM "
                      f"'{out}/shrink_slab.parquet'").fetchall()
    assert row == [(shr, -1, -2, 7)]
    assert dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                            f"'{out}/shrink_slab.parquet')").fetchall())["shr"] == "UBIGINT"


def test_every_export_help_example_runs(tmp_path, monkeypatch):
    """The examples in 'export --help', the SQL one included, on a real recording."""
    duckdb = pytest.importorskip("duckdb")
    from trace_reclaim.commands.export import EPILOG

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.trc").write_bytes(open(PRESSURE, "rb").read())
    ran = 0
    sql = None
    for line in EPILOG.splitlines():
        line = line.strip()
        if line.startswith("trace-reclaim "):
            rc, out, err = run_cli(line.split("#")[0].split()[1:])
            assert rc == 0 and out == "" and "written to" in err, (line, err)
            ran += 1
        elif line.startswith("SELECT ") or sql is not None:
            sql = (sql + " " if sql else "") + line
            if not line.endswith(";"):
                continue
            rows = duckdb.connect().execute(sql).fetchall()
            sql = None
            doc = report_of(str(tmp_path / "run.trc"))
            assert sum(r[1] for r in rows) == doc["totals"]["direct_reclaim_stalls"]
            ran += 1
    assert ran == 3
