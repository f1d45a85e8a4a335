"""Where the benchmark scripts write, and how their ``--help`` shows defaults.

``benchmarks/results/`` holds the committed measurements, so a trial run must never write there.
Every script that writes files takes ``--out DIR``; without it the files go to a new folder
``bench-out/<script>-<UTC time>/`` at the top of the checkout (listed in ``.gitignore``), whose path
the script prints. Scripts whose results are meant to be committed also take ``--publish``, which
means exactly ``--out benchmarks/results``.

The default folder is inside the checkout rather than under the system temp directory because
resumable runs (``mnist_table.py --max-minutes``, ``bench_layer.py --skip-done``) continue from the
files in it: temp directories are emptied by reboots and cleaners, and a path next to the code is
the one a user looks for.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FRESH_ROOT = REPO / "bench-out"  # read at call time, so tests can point it elsewhere


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default; an option whose help states its default itself
    (a value chosen at run time, such as ``--out``'s new folder) keeps that wording."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_out_arguments(parser: argparse.ArgumentParser, script: str, publish: bool, existing: str) -> None:
    """``--out DIR`` (default: a new folder under ``bench-out/``) and, if ``publish``, ``--publish``
    (the committed ``benchmarks/results/``); the two exclude each other. ``existing`` says what
    the script does with its files already in the folder."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help=f"folder to write into; {existing} "
        f"(default: a new folder bench-out/{script}-<UTC time>/, git-ignored, printed at the end)",
    )
    if publish:
        group.add_argument(
            "--publish",
            action="store_true",
            help="write into benchmarks/results/, the committed results (exactly --out benchmarks/results)",
        )


def resolve_out(args: argparse.Namespace, script: str) -> tuple[Path, bool]:
    """The folder to write into (created) and whether it is a new default one (so that a run to be
    continued must be told ``--out`` with its path)."""
    if getattr(args, "publish", False):
        path = RESULTS
    elif args.out is not None:
        path = Path(args.out)
    else:
        return fresh_dir(script), True
    path.mkdir(parents=True, exist_ok=True)
    return path, False


def fresh_dir(script: str) -> Path:
    """A new, empty ``<FRESH_ROOT>/<script>-<UTC time>[-n]`` folder (never one that exists)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    FRESH_ROOT.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = FRESH_ROOT / (f"{script}-{stamp}" if n == 1 else f"{script}-{stamp}-{n}")
        try:
            path.mkdir()  # atomic: two runs started in the same second get different folders
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")
