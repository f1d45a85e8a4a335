"""What a non-editable install ships: every package of the tree and its data files.

pyproject.toml lists the packages by hand (kernels/ sits at the repository top but installs as
``efficient_kan.kernels``), so a new sub-package is easy to forget there; an editable install hides
the omission and only ``pip install .`` shows it.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
# Where each installed top-level name lives in the checkout.
SOURCES = {"efficient_kan": REPO / "efficient_kan", "efficient_kan.kernels": REPO / "kernels"}


def _setuptools_config() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _tree_packages() -> dict[str, Path]:
    """Every folder with an ``__init__.py`` under the sources, by its installed dotted name."""
    found = {}
    for name, root in SOURCES.items():
        for init in root.rglob("__init__.py"):
            parts = init.parent.relative_to(root).parts
            found[".".join((name, *parts))] = init.parent
    return found


def _data_files(folder: Path) -> list[str]:
    """Files of one package folder (not its sub-packages) that are not Python sources."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and p.suffix not in (".py", ".pyc") and not p.name.startswith(".")
    )


def test_every_package_of_the_tree_is_listed():
    config = _setuptools_config()
    listed = set(config["packages"])
    tree = set(_tree_packages())
    assert not tree - listed, f"pyproject.toml [tool.setuptools] packages lacks {sorted(tree - listed)}"
    assert not listed - tree, f"pyproject.toml lists packages with no folder: {sorted(listed - tree)}"
    package_dir = config.get("package-dir", {})
    for name, folder in SOURCES.items():
        if name in package_dir:
            assert (REPO / package_dir[name]).resolve() == folder


def test_every_data_file_is_package_data():
    patterns = _setuptools_config().get("package-data", {})
    for name, folder in _tree_packages().items():
        globs = patterns.get(name, [])
        missing = [f for f in _data_files(folder) if not any(fnmatch.fnmatch(f, g) for g in globs)]
        assert not missing, f"{name}: files not in [tool.setuptools.package-data]: {missing}"
        for g in globs:
            assert any(fnmatch.fnmatch(f, g) for f in _data_files(folder)), f"{name}: {g!r} matches nothing"


@pytest.mark.slow
def test_wheel_holds_every_module_and_data_file(tmp_path):
    """Build a wheel offline from a copy of the sources and compare its files with the tree."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"building needs setuptools>=77 in this environment, found {setuptools.__version__}")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in SOURCES.values():
        shutil.copytree(folder, src / folder.name, ignore=ignore)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*cmd, "--wheel-dir", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}
    expected = set()
    for name, folder in _tree_packages().items():
        prefix = name.replace(".", "/")
        expected |= {f"{prefix}/{p.name}" for p in folder.glob("*.py")}
        expected |= {f"{prefix}/{f}" for f in _data_files(folder)}
    assert not expected - shipped, f"the wheel lacks {sorted(expected - shipped)}"


def _uninstalled_copy(root: Path) -> Path:
    """A copy of the package's sources laid out like a checkout, installed nowhere."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in SOURCES.values():
        shutil.copytree(folder, root / folder.name, ignore=ignore)
    return root


def test_this_checkout_runs_its_own_kernels():
    """The tests themselves exercise this checkout's kernels, not another copy's."""
    import efficient_kan.kernels

    assert Path(efficient_kan.kernels.__file__).resolve().parent == REPO / "kernels"


@pytest.mark.parametrize("site", [False, True], ids=["no-site-packages", "with-site-packages"])
def test_uninstalled_checkout_says_to_install(tmp_path, site):
    """Importing efficient_kan from a checkout that is not installed stops at once and says how to
    fix it: without site-packages the kernels are nowhere; with them, an editable install of
    another checkout (this one, in CI) would otherwise lend its kernels silently."""
    copy = _uninstalled_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    flags = [] if site else ["-S"]
    proc = subprocess.run(
        [sys.executable, *flags, "-c", "import efficient_kan"],
        cwd=copy, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0, "an uninstalled checkout imported (its kernels came from elsewhere)"
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:") and f"pip install -e {copy}" in last, proc.stderr[-2000:]


def test_core_and_commands_need_no_numpy(tmp_path):
    """numpy is not a dependency (torch does not require it): the layer, the training engine's
    data loaders and ``efficient-kan bench`` must work without it."""
    script = f"""
import sys
sys.modules["numpy"] = None  # `import numpy` raises ImportError from here on
import torch
from efficient_kan import KAN
from efficient_kan.data import load_bundled
from efficient_kan.cli import main
data = load_bundled()
assert data.x_train.shape == (4000, 784) and data.y_train.dtype == torch.int64
print(KAN([784, 8, 10])(data.x_train[:4]).shape)
main(["bench", "mlp:16,8,4", "--batch", "4", "--quick", "--json", {str(tmp_path / "r.json")!r}])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch.Size([4, 10])" in done.stdout
    assert (tmp_path / "r.json").is_file()
