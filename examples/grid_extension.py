"""Grid extension: train a KAN on a coarse grid, then refine it to finer grids and train on.

The KAN paper's scaling experiment (section 2.5, figure 2.3) on f(x, y) = exp(sin(pi x) + y^2):
KAN([2, 1, 1]) is trained at G = 3 grid intervals, then ``refine`` re-expresses every spline on
G = 10, 20, 50 intervals (a least-squares fit to the current spline, so the function is kept: the
loss right after refining equals the loss before), and training continues at each size. The
printed table has, per stage, the test RMSE before refining, right after, and after training.

Run: PYTHONPATH=. python examples/grid_extension.py [--steps 50]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from efficient_kan import KAN
from efficient_kan.interpret import create_dataset, fit

GRIDS = (3, 10, 20, 50)


def target(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)


def rmse(model: KAN, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x) - y).pow(2).mean().sqrt())


def run(grids: tuple[int, ...] = GRIDS, steps: int = 50, seed: int = 0) -> list[dict[str, float]]:
    """Train at ``grids[0]``, then refine to each next size and train ``steps`` LBFGS steps there.

    Returns one record per stage: ``grid``, ``params``, ``test_rmse_refined`` (right after
    refining; for the first stage, before any training), ``train_rmse``, ``test_rmse`` (after
    training) and ``seconds``.
    """
    data = create_dataset(target, n_var=2, train_num=1000, test_num=1000, seed=seed, dtype=torch.float64)
    x_test, y_test = data["test_input"], data["test_label"]
    torch.manual_seed(seed)
    model = KAN([2, 1, 1], grid_size=grids[0], bias=True, dtype=torch.float64)
    records = []
    for stage, grid in enumerate(grids):
        start = time.perf_counter()
        if stage > 0:
            model.refine(grid)  # in place; fit() builds its optimizer afterwards
        refined = rmse(model, x_test, y_test)
        # Grid updates only at the coarsest size: later grids start from the refined knots.
        history = fit(model, data, opt="LBFGS", steps=steps, update_grid=stage == 0)
        records.append(
            {
                "grid": grid,
                "params": sum(p.numel() for p in model.parameters()),
                "test_rmse_refined": refined,
                "train_rmse": math.sqrt(history["train_loss"][-1]),
                "test_rmse": math.sqrt(history["test_loss"][-1]),
                "seconds": time.perf_counter() - start,
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=50, help="LBFGS steps per grid size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a tiny model: threads only add overhead
    print(
        f"{'grid':>5} {'params':>7} {'test RMSE refined':>18} {'train RMSE':>11} {'test RMSE':>10} {'s':>6}"
    )
    for r in run(steps=args.steps, seed=args.seed):
        print(
            f"{r['grid']:>5} {r['params']:>7} {r['test_rmse_refined']:>18.3e} {r['train_rmse']:>11.3e} "
            f"{r['test_rmse']:>10.3e} {r['seconds']:>6.1f}"
        )


if __name__ == "__main__":
    main()
