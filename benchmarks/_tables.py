"""What the training tables (``mnist_table.py``, ``vision_table.py``) share: one ``train_mnist.py``
run in its own process, and the mean and spread of a measure over seeds."""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_train_mnist_process(argv: list[str]) -> dict[str, Any]:
    """The ``--json`` results of ``train_mnist.py argv`` run in a fresh process, so that its peak
    RSS is its own; a failed run stops the table with the end of its stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        cmd = [sys.executable, str(REPO / "train_mnist.py"), *argv, "--json", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"error: train_mnist.py {shlex.join(argv)} failed:\n{proc.stderr[-2000:]}")
        return json.loads(out.read_text())


def seed_stats(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds, ignoring missing values (``None``); the
    spread of a single value is 0, and of none both are NaN."""
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def gap_verdict(kan: dict[str, Any], other: dict[str, Any]) -> tuple[float, str]:
    """The KAN row's accuracy lead over ``other`` in points, and what it says against the seeds'
    spread (``acc_mean``, ``acc_std``, ``n_seeds`` of each row). With one seed on either side there
    is no spread, so no gap can be called a lead."""
    diff = kan["acc_mean"] - other["acc_mean"]
    if min(kan["n_seeds"], other["n_seeds"]) < 2:
        return diff, "one seed: no spread to judge the gap against"
    if abs(diff) <= max(kan["acc_std"], other["acc_std"]):
        return diff, "tie within the seed spread"
    return diff, "KAN ahead" if diff > 0 else "MLP ahead"
