"""The code's shape: no function of the package, benchmarks, tools or examples over 80 lines
(the Triton kernels excepted: one ``@triton.jit`` body is one GPU program), and the README's
layout section lists exactly what is there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
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


# Folders whose every module (and sub-package's module) the layout names.
LAID_OUT = ["efficient_kan", "kernels", "benchmarks", "tools", "examples"]
_NAME = re.compile(r"(?<![\w./-])(\w[\w.]*\.(?:py|sh)|\w+/(?!\w))")  # file.py, run.sh, folder/


def _layout_sections() -> dict[str, str]:
    """The layout block by top-level entry: ``{"efficient_kan/": "its description", ...}``."""
    match = re.search(r"## Layout\n\n```\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md has no code block under '## Layout'"
    sections: dict[str, str] = {}
    entry = ""
    for line in match.group(1).splitlines():
        if line and not line[0].isspace():
            entry = line.split()[0]
            sections[entry] = line[len(entry) :]
        elif entry:
            sections[entry] += " " + line.strip()
    return sections


def _tree_entries(folder: Path) -> list[Path]:
    skip = ("__pycache__", "__init__.py")
    return [p for p in sorted(folder.iterdir()) if p.name not in skip and not p.name.startswith(".")]


def test_readme_layout_matches_the_tree():
    sections = _layout_sections()
    missing = [entry for entry in sections if not (REPO / entry.rstrip("/")).exists()]
    assert not missing, f"README's layout lists top-level entries that do not exist: {missing}"
    for folder in LAID_OUT:
        text = sections.get(folder + "/")
        assert text is not None, f"README's layout has no entry for {folder}/"
        named = set(_NAME.findall(text))
        absent = [n for n in named if not (REPO / folder / n.rstrip("/")).exists()]
        assert not absent, f"README's layout names under {folder}/ what is not there: {sorted(absent)}"
        for path in _tree_entries(REPO / folder):
            if path.is_dir():
                assert path.name + "/" in named, f"README's layout does not list {folder}/{path.name}/"
                if not (path / "__init__.py").exists():
                    continue  # a data folder (benchmarks/results/): listed, its files are not modules
                about = re.search(rf"{re.escape(path.name)}/ \(([^)]*)\)", text)
                assert about, (
                    f"README's layout lists {folder}/{path.name}/ without its modules in parentheses"
                )
                for module in _tree_entries(path):
                    if module.suffix == ".py":
                        assert re.search(rf"\b{module.stem}\b", about.group(1)), (
                            f"README's layout does not name {folder}/{path.name}/{module.name} "
                            f"(as {module.stem!r} in {path.name}/'s parentheses)"
                        )
            elif path.suffix in (".py", ".sh"):
                assert path.name in named, f"README's layout does not list {folder}/{path.name}"


def test_every_implementation_takes_kan_linears_parameters():
    """``efficient_kan.kan_linear`` defines the layer's call; the implementations it dispatches to
    (and the public oracle) take the same parameters (names, kinds, defaults), so changing one
    without the others fails here rather than at a user's call."""
    import inspect

    from efficient_kan import kan_linear, kan_linear_reference
    from efficient_kan.eager import kan_linear_eager
    from efficient_kan.triton_backend import kan_linear_triton

    def params(fn, drop=()):
        return [
            (p.name, p.kind, p.default)
            for p in inspect.signature(fn).parameters.values()
            if p.name not in drop
        ]

    contract = params(kan_linear, drop=("backend",))
    for impl in (kan_linear_reference, kan_linear_eager, kan_linear_triton):
        assert params(impl) == contract, impl.__qualname__
