"""The code's shape: no function of the package, benchmarks, tools or examples over 80 lines
(the Triton kernels excepted: one ``@triton.jit`` body is one GPU program)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 80
CHECKED = ["efficient_kan", "kernels", "benchmarks", "tools", "examples", "train_mnist.py"]


def _long_functions() -> list[str]:
    found = []
    for entry in CHECKED:
        path = REPO / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                if any("jit" in ast.unparse(d) for d in node.decorator_list):
                    continue
                lines = node.end_lineno - node.lineno + 1  # from `def` to the last line, docstring included
                if lines > MAX_LINES:
                    found.append(f"{file.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_over_80_lines():
    assert not _long_functions(), "split these into named steps:\n" + "\n".join(_long_functions())
