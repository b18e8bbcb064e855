"""Line counts of the package: total, the largest files and the longest functions (issue 23's before/after table).

    python benchmarks/line_counts.py --json [--root DIR] [--top 12]

A function's lines run from its ``def`` to its last line (signature and docstring included), as
``tests/test_imports.py`` counts them against its 80-line limit.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

MAX_FUNCTION_LINES = 80
"""The longest a function may be without a reason (``tests/test_imports.py``'s ``LONG_FUNCTIONS``)."""


def counts(root: Path, top: int) -> dict:
    """Total lines and files of ``root/synq_hf``, its ``top`` largest files and functions, and every function over ``MAX_FUNCTION_LINES``."""
    files, functions = [], []
    for path in sorted((root / "synq_hf").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(root).as_posix()
        files.append((len(text.splitlines()), rel))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}"))
    files.sort(reverse=True)
    functions.sort(reverse=True)
    return {"lines": sum(n for n, _ in files), "files": len(files),
            "largest_files": {f: n for n, f in files[:top]}, "longest_functions": {f: n for n, f in functions[:top]},
            "functions_over_80": {f: n for n, f in functions if n > MAX_FUNCTION_LINES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="a checkout")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    args = parser.parse_args()
    print(json.dumps(counts(args.root, args.top), indent=1))


if __name__ == "__main__":
    main()
