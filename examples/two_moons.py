"""Two-moons classification with a KAN, and the formula it learns.

Two forms, as in the pykan tutorial:
  * regression: KAN([2, 1]) fits the 0/1 label with squared error; the class is the rounded output;
  * classification: KAN([2, 2]) gives two logits, trained with cross-entropy; the class is the argmax.
Each is then turned into a symbolic formula (auto_symbolic + joint refit) whose accuracy is
reported on the train and test sets. The data come from a small generator (no sklearn).

Run: python examples/two_moons.py   (a few seconds on a laptop CPU)
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from efficient_kan import KAN
from efficient_kan.interpret import auto_symbolic, fit, refine_symbolic, round_formula, symbolic_formula

LIB = ["x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "tanh", "sin", "abs"]
DIGITS = 4  # significant digits of the printed formulas' constants


def make_moons(n: int, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of two interleaving half circles (sklearn's ``make_moons`` layout) and 0/1 labels."""
    gen = torch.Generator().manual_seed(seed)
    n_out = n // 2
    n_in = n - n_out
    t_out = torch.linspace(0, math.pi, n_out, dtype=torch.float64)
    t_in = torch.linspace(0, math.pi, n_in, dtype=torch.float64)
    outer = torch.stack([torch.cos(t_out), torch.sin(t_out)], dim=1)
    inner = torch.stack([1 - torch.cos(t_in), 1 - torch.sin(t_in) - 0.5], dim=1)
    x = torch.cat([outer, inner]) + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    y = torch.cat([torch.zeros(n_out, dtype=torch.long), torch.ones(n_in, dtype=torch.long)])
    perm = torch.randperm(n, generator=gen)
    return x[perm], y[perm]


def moons_dataset(n_train: int = 1000, n_test: int = 1000, noise: float = 0.1, seed: int = 0):
    x_tr, y_tr = make_moons(n_train, noise, seed)
    x_te, y_te = make_moons(n_test, noise, seed + 1)
    return {"train_input": x_tr, "train_label": y_tr, "test_input": x_te, "test_label": y_te}


def _formula_predict(exprs, x: torch.Tensor) -> torch.Tensor:
    import sympy

    symbols = sympy.symbols(f"x_1:{x.shape[1] + 1}")
    cols = []
    for expr in exprs:
        fn = sympy.lambdify(symbols, expr, "numpy")
        val = torch.as_tensor(fn(*x.double().T.numpy()), dtype=torch.float64)
        cols.append(val.expand(x.shape[0]) if val.dim() == 0 else val)
    return torch.stack(cols, dim=1)


def run_regression(data, seed: int = 0, steps: int = 20) -> dict[str, object]:
    """KAN([2, 1]) on the 0/1 label with squared error; returns accuracies and the formula."""
    torch.manual_seed(seed)
    model = KAN([2, 1], grid_size=3, bias=True, dtype=torch.float64)
    reg_data = {k: (v.double().unsqueeze(1) if k.endswith("label") else v) for k, v in data.items()}
    fit(model, reg_data, opt="LBFGS", steps=steps)

    def acc(pred: torch.Tensor, y: torch.Tensor) -> float:
        return float((pred[:, 0].round() == y).double().mean())

    out: dict[str, object] = {}
    with torch.no_grad():
        out["kan_train_acc"] = acc(model(data["train_input"]), data["train_label"])
        out["kan_test_acc"] = acc(model(data["test_input"]), data["test_label"])
    auto_symbolic(model, LIB, x=data["train_input"])
    refine_symbolic(model, reg_data["train_input"], reg_data["train_label"])
    exprs = symbolic_formula(model)
    out["formula"] = exprs[0]
    out["formula_train_acc"] = acc(_formula_predict(exprs, data["train_input"]), data["train_label"])
    out["formula_test_acc"] = acc(_formula_predict(exprs, data["test_input"]), data["test_label"])
    return out


def run_classification(data, seed: int = 0, steps: int = 20) -> dict[str, object]:
    """KAN([2, 2]) logits with cross-entropy; returns accuracies and the two logit formulas."""
    torch.manual_seed(seed)
    model = KAN([2, 2], grid_size=3, bias=True, dtype=torch.float64)

    def acc(logits: torch.Tensor, y: torch.Tensor) -> float:
        return float((logits.argmax(1) == y).double().mean())

    # A light sample-based regulariser keeps the edges smooth (without it cross-entropy grows
    # wild logit edges that no library function fits well).
    fit(model, data, opt="LBFGS", steps=steps, lamb=1e-3, loss_fn=F.cross_entropy)
    out: dict[str, object] = {}
    with torch.no_grad():
        out["kan_train_acc"] = acc(model(data["train_input"]), data["train_label"])
        out["kan_test_acc"] = acc(model(data["test_input"]), data["test_label"])
    auto_symbolic(model, LIB, x=data["train_input"])
    refine_symbolic(model, data["train_input"], data["train_label"], loss_fn=F.cross_entropy, steps=50)
    exprs = symbolic_formula(model)
    out["formula"] = exprs
    out["formula_train_acc"] = acc(_formula_predict(exprs, data["train_input"]), data["train_label"])
    out["formula_test_acc"] = acc(_formula_predict(exprs, data["test_input"]), data["test_label"])
    return out


def printed_formula(expr) -> str:
    """A formula as printed: constants gathered, then rounded to ``DIGITS`` significant digits."""
    return str(round_formula(expr, DIGITS))


def main() -> None:
    torch.set_num_threads(1)  # tiny models: threads only add overhead
    start = time.perf_counter()
    data = moons_dataset()
    reg = run_regression(data)
    print("regression KAN[2, 1] (rounded output):")
    print(f"  KAN      train acc {reg['kan_train_acc']:.3f}  test acc {reg['kan_test_acc']:.3f}")
    print(f"  formula  train acc {reg['formula_train_acc']:.3f}  test acc {reg['formula_test_acc']:.3f}")
    print(f"  formula: {printed_formula(reg['formula'])}")
    cls = run_classification(data)
    print("classification KAN[2, 2] (cross-entropy, argmax):")
    print(f"  KAN      train acc {cls['kan_train_acc']:.3f}  test acc {cls['kan_test_acc']:.3f}")
    print(f"  formula  train acc {cls['formula_train_acc']:.3f}  test acc {cls['formula_test_acc']:.3f}")
    for k, expr in enumerate(cls["formula"]):
        print(f"  logit {k}: {printed_formula(expr)}")
    print(f"total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
