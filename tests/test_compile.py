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


def _reference_call(which: str):
    """One of the reference path's three functions on small inputs, as ``(fn, args)``."""
    from efficient_kan.bspline import uniform_grid
    from efficient_kan.reference import (
        kan_linear_reference,
        kan_linear_reference_backward,
        kan_linear_reference_jvp,
    )

    torch.manual_seed(0)
    n, i, o, g, k = 8, 6, 5, 4, 3
    grid = uniform_grid(i, g, k)
    x, bw, sw, sc, b = (torch.randn(*s) for s in [(n, i), (o, i), (o, i, g + k), (o, i), (o,)])
    if which == "forward":
        args = (x.requires_grad_(), bw.requires_grad_(), sw.requires_grad_(), sc.requires_grad_(), b)
        return lambda *a: kan_linear_reference(a[0], grid, *a[1:], spline_order=k), args
    if which == "backward":
        fn = lambda gy, *a: kan_linear_reference_backward(
            gy, a[0], grid, *a[1:], spline_order=k, base_activation="silu"
        )
        return fn, (torch.randn(n, o), x, bw, sw, sc)
    fn = lambda xt, *a: kan_linear_reference_jvp(
        (a[0], grid, *a[1:]), (xt, None, *a[1:]), spline_order=k, base_activation="silu"
    )
    return fn, (torch.randn(n, i), x, bw, sw, sc, b)


@pytest.mark.parametrize("which", ["forward", "backward", "jvp"])
def test_reference_compiles_whole_and_its_reshapes_copy_nothing(which):
    """The reference path's reshapes (einops patterns) trace into one graph, and none of them is a
    copy: a reshape that cannot be a view shows in the graph as a contiguous ``clone`` feeding a
    ``view``; the graphs (forward and, where there is one, backward) must have none."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    copies: list[str] = []

    def inspect(gm, example_inputs):
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target in (
                torch.ops.aten.clone.default,
                torch.ops.aten.copy.default,
            ):
                views = [u for u in node.users if "view" in str(u.target) or "reshape" in str(u.target)]
                copies.extend(u.format_node() for u in views)
        return make_boxed_func(gm.forward)

    fn, args = _reference_call(which)
    torch._dynamo.reset()
    compiled = torch.compile(
        fn, backend=aot_autograd(fw_compiler=inspect, bw_compiler=inspect), fullgraph=True
    )
    out, expected = compiled(*args), fn(*args)
    for got, want in zip(*(o if isinstance(o, tuple) else (o,) for o in (out, expected)), strict=True):
        assert_close(got, want, atol=1e-5, rtol=1e-5, name=which)
    if which == "forward":
        out.square().sum().backward()  # the backward graph, inspected too
    assert not copies, f"reshapes that copy: {copies}"
