"""The kernel/Python ABI, read from its one source: ``bpf/events.h``.

Event type numbers (``enum event_type``), the other enums and the
``#define`` constants of ``events.h`` are parsed from the header that the BPF
programs include, so Python never keeps a copy that could disagree.
``tests/unit/test_abi.py`` compiles the header and checks every value.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Dict

__all__ = ["source", "ENUMS", "DEFINES", "EVENT_TYPES", "value"]


def source() -> str:
    """The text of ``bpf/events.h`` as shipped in the package."""
    return (resources.files("trace_reclaim") / "bpf" / "events.h").read_text()


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _parse_enums(text: str) -> Dict[str, Dict[str, int]]:
    enums: Dict[str, Dict[str, int]] = {}
    for name, body in re.findall(r"enum\s+(\w+)\s*\{(.*?)\}\s*;", text, flags=re.S):
        members: Dict[str, int] = {}
        nxt = 0
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            m = re.fullmatch(r"(\w+)\s*(?:=\s*(.+))?", item, flags=re.S)
            if m is None:
                raise ValueError(f"events.h: cannot parse enum {name} member {item!r}")
            nxt = int(m.group(2), 0) if m.group(2) else nxt
            members[m.group(1)] = nxt
            nxt += 1
        enums[name] = members
    return enums


def _parse_defines(text: str) -> Dict[str, int]:
    return {k: int(v, 0) for k, v in
            re.findall(r"^\s*#define\s+(\w+)\s+((?:0x[0-9a-fA-F]+)|\d+)\s*$", text, flags=re.M)}


_TEXT = _strip_comments(source())
ENUMS: Dict[str, Dict[str, int]] = _parse_enums(_TEXT)
DEFINES: Dict[str, int] = _parse_defines(_TEXT)
#: EV_* name -> record type number.
EVENT_TYPES: Dict[str, int] = ENUMS["event_type"]


def value(name: str) -> int:
    """An enum member or #define of events.h by name (KeyError if it has none)."""
    if name in DEFINES:
        return DEFINES[name]
    for members in ENUMS.values():
        if name in members:
            return members[name]
    raise KeyError(f"events.h has no constant {name}")


def __getattr__(name: str) -> int:
    # abi.EV_DIRECT_RECLAIM etc.: every constant of events.h, by its C name.
    try:
        return value(name)
    except KeyError:
        raise AttributeError(name) from None
