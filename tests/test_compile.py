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
