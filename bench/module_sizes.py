"""Print the largest modules and the longest functions of a tree (rooms to keep small).

    python3 bench/module_sizes.py [ROOT]     # default: this checkout

Tests, benches, build output, venvs and the top-level links into the package are skipped.
"""

from __future__ import annotations

import ast
import os
import sys
from typing import List, Tuple


def sizes(root: str) -> Tuple[List[Tuple[int, str]], List[Tuple[int, str]]]:
    mods: List[Tuple[int, str]] = []
    funcs: List[Tuple[int, str]] = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in (".git", ".venv", "build", "tests", "bench",
                                                "__pycache__", "wip")
                   and not os.path.islink(os.path.join(d, x))]
        for f in files:
            if not f.endswith(".py"):
                continue
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)
            with open(p) as fh:
                src = fh.read()
            mods.append((src.count("\n"), rel))
            for n in ast.walk(ast.parse(src)):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    end = n.end_lineno or n.lineno
                    funcs.append((end - n.lineno + 1, f"{rel}:{n.lineno} {n.name}"))
    return sorted(mods, reverse=True), sorted(funcs, reverse=True)


def main() -> int:
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))
    mods, funcs = sizes(root)
    print("LINES  MODULE")
    for n, m in mods[:10]:
        print(f"{n:5d}  {m}")
    print("\nLINES  FUNCTION")
    for n, m in funcs[:10]:
        print(f"{n:5d}  {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
