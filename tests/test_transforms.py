"""Function transforms, higher-order autograd, torch.export and TorchScript, on both paths.

Everything in float64 against plain autograd of the PyTorch formulation, or finite differences.
The Triton path runs under the interpreter on CPU (tests/conftest.py), at a handful of rows.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, jacrev, jvp, stack_module_state, vmap

from efficient_kan import KANLinear, kan_linear
from efficient_kan.bspline import bspline_basis, bspline_basis_derivative, uniform_grid

from .utils import assert_close

TOL = dict(atol=1e-10, rtol=1e-9)


@pytest.fixture(params=["torch", "triton"])
def backend(request):
    return request.param


def _layer(backend: str, i: int = 4, o: int = 3, seed: int = 0, **kwargs) -> KANLinear:
    torch.manual_seed(seed)
    layer = KANLinear(i, o, grid_size=3, dtype=torch.float64, **kwargs)
    with torch.no_grad():  # non-uniform knots, as update_grid makes them
        layer.update_grid(torch.randn(64, i, dtype=torch.float64))
        layer.spline_weight.normal_()
    layer.backend = backend
    return layer


def _reference_layer(layer: KANLinear) -> KANLinear:
    ref = _layer("torch", layer.in_features, layer.out_features)
    ref.load_state_dict(layer.state_dict())
    return ref


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 1.2 * torch.randn(*shape, generator=gen, dtype=torch.float64)


def test_vmap_over_inputs(backend):
    layer = _layer(backend)
    x = _x(2, 3, 4)
    assert_close(vmap(layer)(x), torch.stack([layer(x[0]), layer(x[1])]), **TOL)
    assert_close(vmap(layer, in_dims=1)(x), torch.stack([layer(x[:, j]) for j in range(3)]), **TOL)


def test_grad_and_jacrev_match_autograd(backend):
    layer = _layer(backend)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x = _x(3, 4)

    def loss(p, inp):
        return functional_call(layer, p, (inp,)).square().sum()

    grads = grad(loss)(params, x)
    expected = torch.autograd.grad(loss(dict(layer.named_parameters()), x), list(layer.parameters()))
    for (name, g), e in zip(grads.items(), expected, strict=True):
        assert_close(g, e, **TOL, name=name)
    jac = jacrev(lambda inp: functional_call(layer, params, (inp,)))(x)
    ref = torch.autograd.functional.jacobian(_reference_layer(layer), x)
    assert_close(jac, ref, **TOL, name="jacobian")


def test_per_sample_gradients(backend):
    layer = _layer(backend)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x, target = _x(3, 4), _x(3, 3, seed=2)

    def loss(p, xi, ti):
        return (functional_call(layer, p, (xi.unsqueeze(0),)) - ti).square().sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, target)
    for n in range(3):
        one = torch.autograd.grad(
            loss(dict(layer.named_parameters()), x[n], target[n]), list(layer.parameters())
        )
        for (name, g), e in zip(per_sample.items(), one, strict=True):
            assert_close(g[n], e, **TOL, name=f"{name}[{n}]")


def test_vmap_over_weights_model_ensemble(backend):
    models = [_layer(backend, seed=s) for s in range(2)]
    params, buffers = stack_module_state(models)
    x = _x(3, 4)

    def call(p, b):
        return functional_call(models[0], (p, b), (x,))

    out = vmap(call)(params, buffers)
    assert_close(out, torch.stack([m(x) for m in models]), **TOL)


def test_forward_mode_matches_finite_differences(backend):
    layer = _layer(backend)
    x, v = _x(3, 4), _x(3, 4, seed=5)
    y, y_dot = jvp(layer, (x,), (v,))
    eps = 1e-6
    fd = (layer(x + eps * v) - layer(x - eps * v)) / (2 * eps)
    assert_close(y, layer(x), **TOL)
    assert_close(y_dot, fd, atol=1e-7, rtol=1e-6, name="jvp")
    # The dual-number API too, with a weight tangent.
    import torch.autograd.forward_ad as fwAD

    w_dot = torch.randn_like(layer.spline_weight)
    with fwAD.dual_level():
        params = {k: v.detach() for k, v in layer.named_parameters()}
        params["spline_weight"] = fwAD.make_dual(params["spline_weight"], w_dot)
        tangent = fwAD.unpack_dual(functional_call(layer, params, (x,))).tangent
    plus, minus = dict(params), dict(params)
    with torch.no_grad():
        base = {k: v.detach() for k, v in layer.named_parameters()}
        plus = {**base, "spline_weight": base["spline_weight"] + eps * w_dot}
        minus = {**base, "spline_weight": base["spline_weight"] - eps * w_dot}
        fd_w = (functional_call(layer, plus, (x,)) - functional_call(layer, minus, (x,))) / (2 * eps)
    assert_close(tangent, fd_w, atol=1e-7, rtol=1e-6, name="dual tangent")


@pytest.mark.parametrize(("backend", "scaler"), [("torch", True), ("torch", False), ("triton", True)])
def test_gradcheck_and_gradgradcheck(backend, scaler):
    layer = _layer(backend, i=3, o=2, enable_standalone_scale_spline=scaler)
    x = _x(3, 3).requires_grad_()
    inputs = (x, *layer.parameters())

    def fn(inp, *params):
        names = [n for n, _ in layer.named_parameters()]
        return functional_call(layer, dict(zip(names, params, strict=True)), (inp,))

    # fast_mode checks random projections of the Jacobians: the same maths, far fewer calls.
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


def test_gradient_penalty_double_backward(backend):
    """``create_graph=True`` then backward again (a WGAN-GP style penalty on the input gradient)."""
    layer = _layer(backend)
    ref = _reference_layer(layer)
    grads = []
    for model in (layer, ref):
        x = _x(3, 4).requires_grad_()
        (gx,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
        gx.square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for g, e in zip(*grads, strict=True):
        assert (g is None) == (e is None)  # the bias does not reach the input gradient
        if g is not None:
            assert_close(g, e, **TOL)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_basis_derivatives_of_every_order(order):
    """The basis Function's first and second derivatives match finite differences of the bases."""
    grid = uniform_grid(3, 5, order, dtype=torch.float64)
    x = (torch.rand(7, 3, dtype=torch.float64) * 2.2 - 1.1).requires_grad_()
    eps = 1e-6
    d = bspline_basis_derivative(x.detach(), grid, order)
    fd = (bspline_basis(x.detach() + eps, grid, order) - bspline_basis(x.detach() - eps, grid, order)) / (
        2 * eps
    )
    assert_close(d, fd, atol=1e-6, rtol=1e-6, name="first derivative")
    w = torch.randn(3, grid.shape[1] - 1 - order, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: (bspline_basis(t, grid, order) * w).sum(-1), (x,))
    assert torch.autograd.gradgradcheck(lambda t: (bspline_basis(t, grid, order) * w).sum(-1), (x,))


def test_export_trains_like_eager(backend):
    layer = _layer(backend)
    x = _x(3, 4)
    exported = torch.export.export(layer, (x,)).module()
    xe, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    ye, yr = exported(xe), layer(xr)
    assert_close(ye, yr, **TOL)
    ye.square().sum().backward()
    yr.square().sum().backward()
    assert_close(xe.grad, xr.grad, **TOL, name="x")
    exported_params = dict(exported.named_parameters())
    for name, p in layer.named_parameters():
        assert_close(exported_params[name].grad, p.grad, **TOL, name=name)


def test_torchscript_says_what_to_use_instead():
    with pytest.raises(RuntimeError, match=r"torch\.compile.*torch\.export"):
        torch.jit.script(torch.nn.Sequential(KANLinear(4, 3)))


def test_functional_validates_once_with_clear_messages():
    layer = KANLinear(4, 3)
    args = (layer.grid, layer.base_weight, layer.spline_weight, layer.spline_scaler, layer.bias)
    with pytest.raises(ValueError, match=r"shape \(\*, 4\), got \(2, 5\)"):
        kan_linear(torch.randn(2, 5), *args)
    with pytest.raises(ValueError, match="base_weight must be"):
        kan_linear(torch.randn(2, 4), layer.grid, layer.base_weight.t(), *args[2:])
    with pytest.raises(ValueError, match="unknown base_activation"):
        kan_linear(torch.randn(2, 4), *args, base_activation="gelu")
