"""Grid extension: train a KAN on a coarse grid, then refine it to finer grids and train on.

The KAN paper's scaling experiment (section 2.5, figure 2.3) on f(x, y) = exp(sin(pi x) + y^2),
written as pykan's tutorial does it (``efficient_kan.pykan``): KAN([2, 1, 1]) is trained at G = 3
grid intervals, then ``model.refine(G)`` re-expresses every spline on G = 10, 20, 50 intervals (a
least-squares fit to the current spline, so the function is kept: the test RMSE right after
refining is the one before, up to the fit when G is not a multiple of the old size), and training
continues at each size. With the plain API the same step is ``KAN.refine(G)``, in place.

Run: python examples/grid_extension.py [--steps 50]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from efficient_kan.pykan import KAN, create_dataset

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
    data = create_dataset(target, n_var=2, train_num=1000, test_num=1000, seed=seed)
    data = {key: value.double() for key, value in data.items()}
    x_test, y_test = data["test_input"], data["test_label"]
    model = KAN(width=[2, 1, 1], grid=grids[0], k=3, seed=seed, dtype=torch.float64)
    records = []
    for stage, grid in enumerate(grids):
        start = time.perf_counter()
        if stage > 0:
            model = model.refine(grid)
        refined = rmse(model, x_test, y_test)
        results = model.fit(data, opt="LBFGS", steps=steps, stop_grid_update_step=30, log=0)
        records.append(
            {
                "grid": grid,
                "params": sum(p.numel() for p in model.parameters()),
                "test_rmse_refined": refined,
                "train_rmse": results["train_loss"][-1],  # pykan's fit reports RMSE
                "test_rmse": results["test_loss"][-1],
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
