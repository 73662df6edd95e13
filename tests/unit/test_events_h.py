"""bpf/events.h and the Python decoders must agree on type numbers and sizes.

The C side is compiled with the system compiler against the same header, so
a field added on one side only fails here, not in a user's recording.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess

from tests import ROOT
import pytest

from trace_reclaim import events
from trace_reclaim import tracers

EVENTS_H = os.path.join(ROOT, "bpf", "events.h")


def c_enum() -> dict:
    text = open(EVENTS_H).read()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"\b(EV_\w+)\s*=\s*(\d+)", text)}


def tracer_modules():
    return [importlib.import_module(type(t).__module__) for t in tracers.registry().values()]


def test_python_type_numbers_match_the_c_enum():
    enum = c_enum()
    seen = 0
    for mod in tracer_modules():
        for name, value in vars(mod).items():
            if name.startswith("EV_") and isinstance(value, int):
                assert enum.get(name) == value, f"{mod.__name__}.{name}"
                seen += 1
    assert seen >= 4


def test_type_numbers_are_unique_and_below_the_user_range():
    values = list(c_enum().values())
    assert len(values) == len(set(values))
    assert max(values) < events.USER_BASE


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_struct_sizes_match_the_decoders(tmp_path):
    structs = {}
    for mod in tracer_modules():
        structs.update(getattr(mod, "C_STRUCTS", {}))
    assert structs
    names = sorted(set(structs.values())) + ["event_header"]
    src = tmp_path / "sizes.c"
    src.write_text('#include <stdio.h>\n#include <linux/types.h>\n#include "events.h"\n'
                   "int main(void) {\n" + "".join(
                       f'printf("{n} %zu\\n", sizeof(struct {n}));\n' for n in names)
                   + "return 0; }\n")
    exe = tmp_path / "sizes"
    subprocess.run(["cc", "-I", os.path.dirname(EVENTS_H), "-o", str(exe), str(src)],
                   check=True)
    sizes = dict(line.split() for line in subprocess.run(
        [str(exe)], capture_output=True, text=True, check=True).stdout.splitlines())
    assert int(sizes["event_header"]) == events.HEADER.size
    for type_id, name in structs.items():
        dec = events._DECODERS[type_id]
        assert dec.size == int(sizes[name]), (type_id, name)
