"""Build the wheel, install it in a fresh venv, run the installed tool from elsewhere.

What a user gets from ``pip install trace-reclaim``: one package,
``trace_reclaim``, with its BPF sources and workloads inside, and a
``trace-reclaim`` script that works from any directory.  The checkout is
copied (so the build leaves nothing in it) and built with ``pip wheel
--no-deps``; the venv is made from Debian's /usr/bin/python3 with
--system-site-packages (bcc comes from python3-bpfcc); the wheel's
dependencies are installed with --no-index from a wheelhouse that ``pip
download`` fills once (TRACE_RECLAIM_WHEELHOUSE, default
~/.cache/trace-reclaim/wheelhouse) at the versions the project venv runs.
Then ``check``, ``live --ebpf``, ``report -j`` and ``run --list-params`` run
from a directory outside the checkout.  ``check`` needs root: a live test.
"""

from __future__ import annotations

import glob
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from typing import Dict, List

import pytest

from tests import FIXTURES, ROOT
from tests.livetools import live_unavailable_reason
from tests.regen_golden import fixture_names, golden_paths

REQUIRE_LIVE = os.environ.get("TRACE_RECLAIM_REQUIRE_LIVE") == "1"
DEBIAN_PYTHON = "/usr/bin/python3"
WHEELHOUSE = os.environ.get("TRACE_RECLAIM_WHEELHOUSE") or os.path.expanduser(
    "~/.cache/trace-reclaim/wheelhouse")
PKG = os.path.join(ROOT, "trace_reclaim")
#: Left out of the copy the wheel is built from: not package sources.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                     "__pycache__", ".*_cache", ".hypothesis", "tests",
                                     "*.trc")

pytestmark = pytest.mark.slow


def _run(cmd: List[str], timings: Dict[str, float], what: str, timeout: float = 600,
         **kw) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    timings[what] = round(time.monotonic() - t0, 2)
    assert r.returncode == 0, f"{what}: {' '.join(cmd)} exited {r.returncode}\n" \
        f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _requirements(wheel: str) -> List[str]:
    """The wheel's Requires-Dist, pinned to the versions the project venv runs."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    reqs = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:") or "extra ==" in line:
            continue
        name = re.split(r"[ <>=!;~(\[]", line.split(":", 1)[1].strip(), maxsplit=1)[0]
        try:
            reqs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(line.split(":", 1)[1].split(";")[0].strip())
    return reqs


def _cached(req: str) -> bool:
    name, _, version = req.partition("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()
    return bool(version) and any(
        os.path.basename(p).lower().startswith(f"{stem}-{version}-")
        for p in glob.glob(os.path.join(WHEELHOUSE, "*.whl")))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build and install; yield {"venv", "py", "bin", "wheel", "cwd", "timings"}."""
    why = live_unavailable_reason()
    if why:
        if REQUIRE_LIVE:
            pytest.fail(f"live test cannot run ({why}) but TRACE_RECLAIM_REQUIRE_LIVE=1")
        pytest.skip(why)
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        pytest.fail(f"{DEBIAN_PYTHON} missing: Debian's python3 is where bcc imports")
    tmp = tmp_path_factory.mktemp("wheel")
    timings: Dict[str, float] = {}
    t0 = time.monotonic()
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=NOT_SOURCES)
    timings["copy checkout"] = round(time.monotonic() - t0, 2)
    dist = tmp / "dist"
    # The project venv has setuptools and wheel: no build isolation, no download.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", "-w", str(dist), str(src)], timings, "pip wheel")
    wheels = glob.glob(str(dist / "*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    _run([DEBIAN_PYTHON, "-m", "venv", "--system-site-packages", str(venv)], timings,
         "venv from /usr/bin/python3")
    py = str(venv / "bin" / "python")
    reqs = _requirements(wheels[0])
    os.makedirs(WHEELHOUSE, exist_ok=True)
    if not all(_cached(r) for r in reqs):
        _run([py, "-m", "pip", "download", "--disable-pip-version-check",
              "--only-binary=:all:", "-d", WHEELHOUSE, *reqs], timings,
             "pip download dependencies (once)")
    _run([py, "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
          "--find-links", WHEELHOUSE, wheels[0]], timings, "pip install wheel")
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    yield {"venv": str(venv), "py": py, "bin": str(venv / "bin" / "trace-reclaim"),
           "wheel": wheels[0], "cwd": str(cwd), "timings": timings}
    print("\nwheel test timings:\n" + "\n".join(f"  {k:<48} {v:6.2f} s"
                                                for k, v in timings.items()))


def _tool(inst, args: List[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed script from outside the checkout, with a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    t0 = time.monotonic()
    r = subprocess.run([inst["bin"], *args], capture_output=True, text=True,
                       cwd=inst["cwd"], env=env, timeout=timeout)
    # Summed per subcommand (report -j runs once per fixture).
    key = "trace-reclaim " + " ".join(a for a in args[:2] if not a.startswith("/"))
    inst["timings"][key] = round(inst["timings"].get(key, 0) + time.monotonic() - t0, 2)
    return r


def _in_process(args: List[str]) -> str:
    from trace_reclaim import cli
    from trace_reclaim.env import Environment

    out, err = io.StringIO(), io.StringIO()
    assert cli.main(args, Environment(stdout=out, stderr=err)) == 0, err.getvalue()
    return out.getvalue()


def test_wheel_holds_one_package_with_bpf_sources_and_workloads(installed):
    with zipfile.ZipFile(installed["wheel"]) as z:
        names = z.namelist()
    from trace_reclaim import __version__

    top = {n.split("/", 1)[0] for n in names}
    assert top == {"trace_reclaim", f"trace_reclaim-{__version__}.dist-info"}, top

    def shipped(pattern: str) -> set:
        return {n for n in names if re.fullmatch(pattern, n)}

    def checkout(pattern: str) -> set:
        return {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(PKG, pattern))}

    assert shipped(r"trace_reclaim/bpf/[^/]+\.bpf\.c") == checkout("bpf/*.bpf.c") != set()
    assert shipped(r"trace_reclaim/bpf/[^/]+\.h") == checkout("bpf/*.h") != set()
    assert shipped(r"trace_reclaim/examples/[^/]+\.py") == checkout("examples/*.py") != set()
    assert shipped(r"trace_reclaim/tracers/[^/]+\.py") == checkout("tracers/*.py") != set()
    assert "trace_reclaim/py.typed" in names
    with zipfile.ZipFile(installed["wheel"]) as z:
        ep = z.read(f"trace_reclaim-{__version__}.dist-info/entry_points.txt").decode()
    assert re.search(r"^trace-reclaim = trace_reclaim\.cli:main$", ep, re.M), ep


def test_installed_package_is_the_one_imported(installed):
    r = subprocess.run([installed["py"], "-c", "import trace_reclaim, bcc, tabulate, pyroute2;"
                        "print(trace_reclaim.__file__)"],
                       capture_output=True, text=True, cwd=installed["cwd"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(installed["venv"] + "/lib/"), r.stdout
    v = _tool(installed, ["--version"])
    from trace_reclaim import __version__
    assert v.returncode == 0 and __version__ in v.stdout, (v.stdout, v.stderr)
    # The wheel's report path is compiled where the build could compile it
    # (CI installs gcc and python3-dev: then it must be).
    if os.environ.get("TRACE_RECLAIM_REQUIRE_COMPILED"):
        assert "(report path: compiled)" in v.stdout, v.stdout
        with zipfile.ZipFile(installed["wheel"]) as z:
            names = z.namelist()
        built = [n for n in names if n.endswith(".so")]
        assert "trace_reclaim/_native_build.json" in names and built, names


def test_installed_check(live, installed):
    r = _tool(installed, ["check"])
    print(r.stdout)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^root +yes$", r.stdout, re.M)
    assert re.search(r"^bcc +importable$", r.stdout, re.M)
    assert "attach plan:" in r.stdout
    assert re.search(r"^tracers +reclaim", r.stdout, re.M)
    assert re.search(r"^ready +yes$", r.stdout, re.M), r.stdout


def test_installed_live_ebpf_prints_the_shipped_bpf_sources(live, installed):
    r = _tool(installed, ["live", "--ebpf"])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    tracers = re.search(r"^tracers +(.+)$", _tool(installed, ["check"]).stdout, re.M)
    assert tracers, "check names no tracers"
    from trace_reclaim import tracers as registry

    reg = registry.registry()
    files = ["common.bpf.h"] + [reg[n.strip()].bpf_source
                                for n in tracers.group(1).split(",")]
    for name in files:
        with open(os.path.join(PKG, "bpf", name)) as f:
            text = f.read()
        assert f"/* ---- bpf/{name} ---- */\n{text}" in out, f"{name} not in --ebpf output"
    # one cflags line per BPF object: the reclaim programs', then the rest's
    cflags = re.findall(r"^/\* cflags: (.*) \*/$", out, re.M)
    objects = re.findall(r"^/\* ==== BPF object \d of (\d) ", out, re.M)
    assert len(cflags) == max(1, len(objects)), out[-2000:]
    assert all(re.search(r"(^| )-D", c) for c in cflags), cflags
    if objects:
        assert "-DMAPS_EXPORT" in cflags[0] and all("-DMAPS_EXTERN" in c for c in cflags[1:])


def test_installed_report_matches_the_golden_files(installed):
    for name in fixture_names():
        trc = os.path.join(FIXTURES, name + ".trc")
        r = _tool(installed, ["report", "-j", trc])
        assert r.returncode == 0, (name, r.stderr)
        with open(golden_paths(name)[0]) as f:
            golden = f.read()
        assert json.loads(r.stdout)["totals"] == json.loads(golden)["totals"], name
        assert r.stdout == golden, f"{name}: installed report -j differs from its golden file"
        assert r.stderr == "", r.stderr


def test_installed_run_lists_params(installed):
    r = _tool(installed, ["run", "vmalloc-huge", "--list-params"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "no parameters listed"
    assert r.stdout == _in_process(["run", "vmalloc-huge", "--list-params"])
