"""torch.compile traces the PyTorch path whole (no graph breaks)."""

from __future__ import annotations

import pytest
import torch

from efficient_kan import KAN

from .utils import assert_close


def _model() -> KAN:
    torch.manual_seed(0)
    model = KAN([6, 5, 3], grid_size=4)
    for layer in model.layers:
        layer.backend = "torch"
    return model


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_fullgraph_forward_and_backward(backend):
    model = _model()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    x = torch.rand(8, 6) * 2 - 1
    x_eager, x_comp = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_eager, y_comp = model(x_eager), compiled(x_comp)
    assert_close(y_comp, y_eager, atol=1e-5, rtol=1e-5)
    y_eager.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    y_comp.square().sum().backward()
    assert_close(x_comp.grad, x_eager.grad, atol=1e-5, rtol=1e-5, name="x")
    for name, param in model.named_parameters():
        assert_close(param.grad, grads[name], atol=1e-5, rtol=1e-5, name=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_compiled_basis_gradient_matches_eager(dtype):
    """x's gradient through the bases under torch.compile. torch 2.11's dynamo traced the basis
    Function's backward with a zero gradient when its forward returned a tensor filled in place
    (or a no-op ``.to`` of one): the gradient came out all zeros, silently."""
    from efficient_kan.bspline import bspline_basis, uniform_grid

    torch.manual_seed(0)
    grid = uniform_grid(6, 4, 3)
    x = (torch.rand(8, 6) * 2 - 1).to(dtype)
    w = torch.randn(6, 7, dtype=dtype)

    def f(t):
        return (bspline_basis(t, grid, 3) * w).sum(-1)

    grads = []
    for fn in (f, torch.compile(f, backend="aot_eager", fullgraph=True)):
        t = x.clone().requires_grad_()
        fn(t).square().sum().backward()
        grads.append(t.grad)
    assert grads[0].abs().sum() > 0
    assert_close(grads[1], grads[0], atol=0, rtol=0, name="x")
