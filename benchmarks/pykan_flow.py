#!/usr/bin/env python
"""Time pykan's tutorial flows with pykan itself or with ``efficient_kan.pykan`` (same code).

The flows are those of pykan's tutorials, written once with pykan's API; only the import differs
(``from kan import *`` or ``from efficient_kan.pykan import *``):

- ``symbolic``: ``KAN([2, 5, 1])`` on ``exp(sin(pi x) + y^2)``: fit with regularisation, plot,
  prune, retrain, ``auto_symbolic``, refit, formula (test RMSE of the formula);
- ``moons_reg``: ``KAN([2, 1])`` on two moons, squared error on the 0/1 label, float64 data from
  numpy, accuracy metrics, ``auto_symbolic``, formula accuracy;
- ``moons_cls``: ``KAN([2, 2])`` with cross-entropy, integer labels, the same.

pykan is an optional comparison, not a dependency: install it in its own environment, e.g.
``python -m venv venv-pykan && venv-pykan/bin/pip install torch pykan matplotlib sympy scikit-learn
pandas pyyaml tqdm``, then::

    venv-pykan/bin/python benchmarks/pykan_flow.py --impl kan --threads 1
    python benchmarks/pykan_flow.py --impl efficient_kan --threads 1

Each run works in a fresh temporary directory (pykan writes checkpoints and figures there) and
prints one JSON line per flow: stage times (s), losses, the formula and its accuracy.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for _output
import _output  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")
LIB = ["x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "tanh", "sin", "abs"]


def make_moons(n_samples: int, noise: float, seed: int):
    """sklearn's ``make_moons`` layout with numpy only: float64 points, int64 labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_out, n_in = n_samples // 2, n_samples - n_samples // 2
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    outer = np.stack([np.cos(t_out), np.sin(t_out)], axis=1)
    inner = np.stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5], axis=1)
    x = np.concatenate([outer, inner])
    y = np.concatenate([np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)])
    perm = rng.permutation(n_samples)
    return x[perm] + rng.normal(scale=noise, size=x.shape), y[perm]


class Stages:
    """Seconds per stage, written into ``out["times"]`` as the flow goes."""

    def __init__(self, out: dict) -> None:
        self.times: dict[str, float] = out.setdefault("times", {})
        self.last = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round(now - self.last, 2)
        self.last = now


def formula_values(kan, exprs, x):
    import numpy as np
    import sympy

    symbols = sympy.symbols(f"x_1:{x.shape[1] + 1}")
    cols = []
    for expr in exprs:
        val = np.asarray(sympy.lambdify(symbols, expr, "numpy")(*x.double().numpy().T), dtype=np.float64)
        cols.append(np.broadcast_to(val, (x.shape[0],)))
    return kan.torch.as_tensor(np.stack(cols, axis=1))


def close_figures() -> None:
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def flow_symbolic(kan, steps: int, out: dict) -> None:
    torch, KAN, create_dataset = kan.torch, kan.KAN, kan.create_dataset
    s = Stages(out)
    model = KAN(width=[2, 5, 1], grid=5, k=3, seed=0)
    f = lambda x: torch.exp(torch.sin(torch.pi * x[:, [0]]) + x[:, [1]] ** 2)
    dataset = create_dataset(f, n_var=2)
    model.fit(dataset, opt="LBFGS", steps=steps, lamb=0.01, lamb_l1=1.0)
    s.done("fit")
    model(dataset["train_input"])
    model.plot()
    close_figures()
    s.done("plot")
    model = model.prune()
    s.done("prune")
    model.fit(dataset, opt="LBFGS", steps=steps)
    s.done("fit_pruned")
    model.auto_symbolic(lib=LIB)
    s.done("auto_symbolic")
    model.fit(dataset, opt="LBFGS", steps=steps)
    s.done("fit_symbolic")
    formula = model.symbolic_formula()[0][0]
    pred = formula_values(kan, [formula], dataset["test_input"])[:, 0]
    out["formula"] = str(kan.ex_round(formula, 4))
    out["formula_test_rmse"] = float((pred - dataset["test_label"][:, 0].double()).pow(2).mean().sqrt())


def moons_dataset(kan, labels_2d: bool) -> dict:
    torch = kan.torch
    train_x, train_y = make_moons(1000, 0.1, 0)
    test_x, test_y = make_moons(1000, 0.1, 1)
    if labels_2d:
        train_y, test_y = train_y[:, None], test_y[:, None]
    return {  # as pykan's tutorial builds it, minus .type(dtype): float64 / int64 tensors
        "train_input": torch.from_numpy(train_x),
        "test_input": torch.from_numpy(test_x),
        "train_label": torch.from_numpy(train_y),
        "test_label": torch.from_numpy(test_y),
    }


def flow_moons(kan, steps: int, out: dict, classification: bool) -> None:
    torch, KAN = kan.torch, kan.KAN
    dataset = moons_dataset(kan, labels_2d=not classification)
    if kan.__name__ == "kan":  # pykan needs inputs and labels in its dtype (float32)
        dtype = torch.get_default_dtype()
        for key in dataset:
            if key.endswith("input") or not classification:
                dataset[key] = dataset[key].type(dtype)
    s = Stages(out)
    model = KAN(width=[2, 2] if classification else [2, 1], grid=3, k=3, seed=2024)

    if classification:

        def train_acc():
            return torch.mean(
                (torch.argmax(model(dataset["train_input"]), dim=1) == dataset["train_label"]).float()
            )

        def test_acc():
            return torch.mean(
                (torch.argmax(model(dataset["test_input"]), dim=1) == dataset["test_label"]).float()
            )

        extra = {"loss_fn": torch.nn.CrossEntropyLoss()}
    else:

        def train_acc():
            pred = torch.round(model(dataset["train_input"])[:, 0])
            return torch.mean((pred == dataset["train_label"][:, 0]).float())

        def test_acc():
            pred = torch.round(model(dataset["test_input"])[:, 0])
            return torch.mean((pred == dataset["test_label"][:, 0]).float())

        extra = {}
    results = model.fit(dataset, opt="LBFGS", steps=steps, metrics=(train_acc, test_acc), **extra)
    s.done("fit")
    out["kan_train_acc"] = float(results["train_acc"][-1])
    out["kan_test_acc"] = float(results["test_acc"][-1])
    model.auto_symbolic(lib=LIB)
    s.done("auto_symbolic")
    exprs = model.symbolic_formula()[0]
    s.done("formula")
    pred = formula_values(kan, exprs, dataset["test_input"])
    label = dataset["test_label"].reshape(-1)
    if classification:
        acc = float((pred.argmax(1) == label).double().mean())
    else:
        acc = float((pred[:, 0].round() == label.double()).double().mean())
    out.update(formulas=[str(kan.ex_round(e, 3)) for e in exprs], formula_test_acc=acc)


FLOWS = {
    "symbolic": flow_symbolic,
    "moons_reg": lambda kan, steps, out: flow_moons(kan, steps, out, classification=False),
    "moons_cls": lambda kan, steps, out: flow_moons(kan, steps, out, classification=True),
}


class _Help(_output.HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in every option's help, and the module docstring as written."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument(
        "--impl",
        choices=["kan", "efficient_kan"],
        required=True,
        help="kan: pykan (from kan import *); efficient_kan: efficient_kan.pykan (default: none, required)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the run")
    parser.add_argument("--steps", type=int, default=20, help="LBFGS steps of every fit")
    parser.add_argument(
        "--flows", default="symbolic,moons_reg,moons_cls", help="comma-separated flows to run, in order"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the flows; prints one JSON line per flow. Writes files only in a temporary directory."""
    args = build_parser().parse_args(argv)
    checkout = str(Path(__file__).resolve().parents[1])
    start = time.perf_counter()
    kan = importlib.import_module("kan" if args.impl == "kan" else "efficient_kan.pykan")
    kan.torch.set_num_threads(args.threads)
    import_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for name in args.flows.split(","):
            if name not in FLOWS:
                raise SystemExit(f"unknown flow {name!r}; known: {', '.join(FLOWS)}")
            t0 = time.perf_counter()
            result: dict = {}
            try:
                FLOWS[name](kan, args.steps, result)
            except Exception as err:  # a failing flow is a result too (pykan's can diverge)
                result["error"] = f"{type(err).__name__}: {err}"
            result.update(
                flow=name,
                impl=args.impl,
                total_s=round(time.perf_counter() - t0, 2),
                import_s=round(import_s, 2),
                threads=args.threads,
                torch=kan.torch.__version__,
                files_written=sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*") if p.is_file())[
                    :5
                ],
            )
            print("\n" + json.dumps(result), flush=True)
    os.chdir(checkout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
