"""CPU speed of the PyTorch path against a straightforward dense Cox-de Boor layer.

Run (pytest-benchmark; the project's default pytest options disable benchmarks, so enable them):

    PYTHONPATH=. python -m pytest benchmarks/bench_cpu_layer.py --benchmark-enable \
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name

It prints its table and writes no files: pytest-benchmark saves only when asked, with
``--benchmark-json=PATH`` (that file) or ``--benchmark-save=NAME`` / ``--benchmark-autosave`` (under
``--benchmark-storage``, default ``./.benchmarks``, git-ignored). The committed
``benchmarks/results/cpu_layer_*`` files summarise three ``--benchmark-json`` runs (see their header).
Options and their defaults: ``python -m pytest benchmarks/bench_cpu_layer.py --help`` (the
"benchmark" section).

Cases: KAN([784, 64, 10]) at batch 64 (MNIST-sized, launch/overhead-bound) and one 1024x1024
layer at batch 256, forward and forward+backward, for ``efficient_kan`` ("ours") and the baseline.
The baseline evaluates every basis at every recursion level on (batch, in, knots) tensors and lets
autograd keep them, as the popular formulations do; its parameters are copied from ours, and the
two are checked to agree before timing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from efficient_kan import KAN, bspline_basis


def dense_cox_de_boor(x: torch.Tensor, grid: torch.Tensor, k: int) -> torch.Tensor:
    x = x.unsqueeze(-1)
    bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)
    for p in range(1, k + 1):
        bases = (x - grid[:, : -(p + 1)]) / (grid[:, p:-1] - grid[:, : -(p + 1)]) * bases[..., :-1] + (
            grid[:, p + 1 :] - x
        ) / (grid[:, p + 1 :] - grid[:, 1:(-p)]) * bases[..., 1:]
    return bases


class DenseBaselineKAN(nn.Module):
    """The same network, computed the straightforward way (dense recursion, autograd through it)."""

    def __init__(self, model: KAN) -> None:
        super().__init__()
        self.layers = model.layers  # shares parameters and grids with ours

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            bases = dense_cox_de_boor(x, layer.grid, layer.spline_order)
            scaled = layer.spline_weight * layer.spline_scaler.unsqueeze(-1)
            x = F.linear(F.silu(x), layer.base_weight) + F.linear(
                bases.reshape(x.shape[0], -1), scaled.reshape(layer.out_features, -1)
            )
        return x


CASES = {
    "mnist_784-64-10_b64": ([784, 64, 10], 64),
    "layer_1024-1024_b256": ([1024, 1024], 256),
}


def _setup(case: str, impl: str):
    widths, batch = CASES[case]
    torch.manual_seed(0)
    model = KAN(widths)
    for layer in model.layers:
        layer.backend = "torch"
    baseline = DenseBaselineKAN(model)
    x = torch.rand(batch, widths[0]) * 2 - 1
    torch.testing.assert_close(model(x), baseline(x), atol=1e-5, rtol=1e-4)
    return (model if impl == "ours" else baseline), x


@pytest.mark.parametrize("impl", ["ours", "baseline"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward(benchmark, case, impl):
    net, x = _setup(case, impl)
    benchmark.group = f"{case} forward"
    with torch.no_grad():
        benchmark(net, x)


@pytest.mark.parametrize("impl", ["ours", "baseline"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward(benchmark, case, impl):
    net, x = _setup(case, impl)
    # The MNIST network's input is data (no gradient); the single layer stands inside a network,
    # so its input needs one.
    x.requires_grad_(case.startswith("layer"))
    benchmark.group = f"{case} forward+backward"

    def step():
        net.zero_grad(set_to_none=True)
        net(x).sum().backward()

    benchmark(step)


@pytest.mark.parametrize("part", ["basis_ours", "basis_baseline", "spline_gemm"])
@pytest.mark.parametrize("case", list(CASES))
def test_parts_forward_backward(benchmark, case, part):
    """Where the time goes in the first layer: the bases alone (ours vs the dense recursion, with
    the input needing a gradient) and the spline product alone, which both implementations share."""
    widths, batch = CASES[case]
    torch.manual_seed(0)
    layer = KAN(widths[:2]).layers[0]
    x = (torch.rand(batch, widths[0]) * 2 - 1).requires_grad_()
    benchmark.group = f"{case} parts forward+backward"
    if part == "spline_gemm":
        n_expanded = layer.in_features * layer.spline_weight.shape[-1]
        bases = torch.rand(batch, n_expanded, requires_grad=True)
        weight = torch.randn(layer.out_features, n_expanded, requires_grad=True)
        benchmark(lambda: F.linear(bases, weight).sum().backward())
        return
    basis = bspline_basis if part == "basis_ours" else dense_cox_de_boor
    upstream = torch.randn(batch, layer.in_features, layer.spline_weight.shape[-1])
    benchmark(lambda: (basis(x, layer.grid, layer.spline_order) * upstream).sum().backward())
