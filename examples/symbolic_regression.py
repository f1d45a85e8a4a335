"""Symbolic regression with a KAN: recover f(x, y) = exp(sin(pi x) + y^2) from samples.

The pykan "hello KAN" workflow on efficient_kan's layer:
  1. train KAN([2, 5, 1]) with the sample-based L1 + entropy regulariser (LBFGS, grid updates),
  2. prune the hidden nodes that carry nothing (-> KAN([2, 1, 1])), retrain without regulariser,
  3. auto_symbolic: fit every edge to c * f(a * t + b) + d from a small library,
  4. refit all constants jointly, print the formula (constants gathered, then rounded to DIGITS
     significant digits) and the RMSE on held-out data of the fitted and of the printed formula.

Run: python examples/symbolic_regression.py   (about 15-20 s on a laptop CPU)
"""

from __future__ import annotations

import math
import time

import torch

from efficient_kan import KAN
from efficient_kan.interpret import (
    auto_symbolic,
    create_dataset,
    fit,
    prune,
    refine_symbolic,
    round_formula,
    symbolic_formula,
)

LIB = ["x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "tanh", "sin", "abs"]
DIGITS = 4  # significant digits of the printed formula's constants


def target(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)


def make_data(seed: int = 0, train_num: int = 1000, test_num: int = 1000) -> dict[str, torch.Tensor]:
    return create_dataset(
        target, n_var=2, train_num=train_num, test_num=test_num, seed=seed, dtype=torch.float64
    )


def train_and_prune(
    dataset: dict[str, torch.Tensor], seed: int = 0, steps: int = 20, steps_after_prune: int = 20
) -> tuple[KAN, KAN, dict[str, list[float]]]:
    """Train KAN([2, 5, 1]) sparsely, prune it, retrain the pruned model; returns (full, pruned, history)."""
    torch.manual_seed(seed)
    # bias=True: each node's constant lives in the bias, so the L1 of the edges can go to 0.
    model = KAN([2, 5, 1], grid_size=5, bias=True, dtype=torch.float64)
    fit(model, dataset, opt="LBFGS", steps=steps, lamb=0.01, lamb_entropy=10.0)
    pruned = prune(model, dataset["train_input"], threshold=1e-2)
    history = fit(pruned, dataset, opt="LBFGS", steps=steps_after_prune, update_grid=False)
    return model, pruned, history


def recover_formula(model: KAN, dataset: dict[str, torch.Tensor], refine_steps: int = 200):
    """auto_symbolic + joint refit; returns (side table, sympy expression)."""
    table = auto_symbolic(model, LIB, x=dataset["train_input"])
    refine_symbolic(model, dataset["train_input"], dataset["train_label"], steps=refine_steps)
    return table, symbolic_formula(model)[0]


def formula_rmse(expr, x: torch.Tensor, y: torch.Tensor) -> float:
    import sympy

    fn = sympy.lambdify(sympy.symbols(f"x_1:{x.shape[1] + 1}"), expr, "numpy")
    pred = torch.as_tensor(fn(*x.double().T.numpy()), dtype=torch.float64).reshape(-1)
    return float((pred - y.double().reshape(-1)).pow(2).mean().sqrt())


def printed_formula(expr) -> str:
    """The formula as printed: constants gathered, then rounded to ``DIGITS`` significant digits."""
    return str(round_formula(expr, DIGITS))


def main() -> None:
    import sympy

    torch.set_num_threads(1)  # a 13-parameter-edge model: threads only add overhead
    start = time.perf_counter()
    data = make_data(seed=0)
    full, pruned, history = train_and_prune(data, seed=0)
    print(f"KAN[2, 5, 1] pruned to {[len(k) for k in pruned.kept_nodes]} (kept nodes {pruned.kept_nodes})")
    print(f"pruned KAN test RMSE: {math.sqrt(history['test_loss'][-1]):.2e}")
    table, expr = recover_formula(pruned, data)
    for (layer, i, o), edge in sorted(table.items()):
        print(f"  layer {layer} edge {i} -> {o}: {edge.name:4s} (R^2 = {edge.r2:.6f})")
    printed = printed_formula(expr)
    print("recovered formula:", printed)
    rmse = formula_rmse(expr, data["test_input"], data["test_label"])
    print(f"formula test RMSE: {rmse:.2e}")
    rmse_printed = formula_rmse(sympy.sympify(printed), data["test_input"], data["test_label"])
    print(f"printed formula test RMSE: {rmse_printed:.2e}")
    print(f"total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
