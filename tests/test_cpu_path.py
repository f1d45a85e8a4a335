"""The PyTorch path's eager fast case (efficient_kan/eager.py) and its closed form on uniform knots
(the C kernels themselves: tests/test_cpu_kernels.py).

The fast case must compute the reference's function exactly (float64 to rounding), on uniform
grids (closed form) and on the non-uniform grids update_grid makes (de Boor), with every
derivative the reference has; and it must step aside wherever the reference's rules are needed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import forward_ad

from efficient_kan import KANLinear, cpu_kernels, kan_linear
from efficient_kan.activations import spec_of_module
from efficient_kan.bspline import _uniform_polynomials, uniform_grid, uniform_knots
from efficient_kan.eager import eager_path_applies
from efficient_kan.reference import kan_linear_reference

from .test_layer import per_edge_oracle, perturbed_grid, random_layer
from .utils import assert_close

# The fast case runs on the C kernels; without a C compiler every call takes the reference path,
# which its own tests cover (tests/test_cpu_kernels.py checks the fallback itself).
pytestmark = pytest.mark.skipif(cpu_kernels.load() is None, reason="no C compiler here")


def _uniform_layer(i, o, *, grid_range=(-1.0, 1.0), dtype=torch.float64, **kw) -> KANLinear:
    layer = random_layer(i, o, **kw) if dtype == torch.float64 else KANLinear(i, o, dtype=dtype, **kw)
    with torch.no_grad():  # knots uniform to float64 precision (the constructor rounds them to fp32)
        layer.grid.copy_(
            uniform_grid(i, layer.grid_size, layer.spline_order, grid_range, dtype=torch.float64)
        )
    return layer


def _inputs(layer: KANLinear, n: int = 40, seed: int = 0) -> torch.Tensor:
    """Inside, at knots, at both ends, outside the grid, and non-finite."""
    gen = torch.Generator().manual_seed(seed)
    g = layer.grid.double()
    lo, hi = g[:, 0], g[:, -1]
    span = hi - lo
    x = lo + (torch.rand(n, layer.in_features, generator=gen, dtype=torch.float64) * 1.4 - 0.2) * span
    x[0] = g[:, 0]  # first knot: inside
    x[1] = g[:, -1]  # last knot: outside
    x[2] = g[:, g.shape[1] // 2]  # an interior knot
    x[3] = torch.nextafter(g[:, -1], g[:, 0])  # just inside the end
    x[4, 0], x[4, -1] = float("nan"), float("inf")
    return x.to(layer.grid.dtype if layer.grid.dtype != torch.float32 else torch.float32)


def test_uniform_polynomials_are_the_cubic_b_spline_pieces():
    third = [[f"{c}" for c in piece] for piece in _uniform_polynomials(3)]
    assert third == [
        ["1/6", "-1/2", "1/2", "-1/6"],
        ["2/3", "0", "-1", "1/2"],
        ["1/6", "1/2", "1/2", "-1/2"],
        ["0", "0", "0", "1/6"],
    ]


@pytest.mark.parametrize("grid_size,spline_order", [(1, 1), (3, 2), (5, 3), (4, 5), (20, 3)], ids=str)
@pytest.mark.parametrize("bias,scaler,act", [(True, True, nn.SiLU), (False, False, nn.Identity)])
def test_uniform_closed_form_matches_per_edge_oracle(grid_size, spline_order, bias, scaler, act):
    layer = _uniform_layer(
        3, 2, grid_size=grid_size, spline_order=spline_order, bias=bias,
        enable_standalone_scale_spline=scaler, base_activation=act, grid_range=(-1.5, 0.5),
    )  # fmt: skip
    assert uniform_knots(layer.grid, torch.float64) is not None
    x = _inputs(layer)
    assert eager_path_applies(x, layer.grid, (layer.base_weight,), "silu")
    assert_close(layer(x), per_edge_oracle(layer, x), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("spline_order", [0, 1, 3, 5])
def test_fast_case_equals_reference_values_and_gradients(uniform, spline_order):
    layer = _uniform_layer(5, 4, grid_size=4, spline_order=spline_order)
    if not uniform:
        perturbed_grid(layer)
    assert (uniform_knots(layer.grid, torch.float64) is not None) == (uniform and spline_order >= 1) or (
        spline_order == 0
    )
    x = _inputs(layer)[5:]  # finite rows: gradients compared exactly
    args = (layer.grid, layer.base_weight, layer.spline_weight, layer.spline_scaler, layer.bias)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = kan_linear(xa, *args, spline_order=spline_order)
    yb = kan_linear_reference(xb, *args, spline_order=spline_order)
    assert eager_path_applies(xa, layer.grid, args[1:], "silu")
    assert_close(ya, yb, atol=1e-12, rtol=1e-12)
    w = torch.randn_like(ya)
    params = [xa, *layer.parameters()]
    ga = torch.autograd.grad(ya, params, w)
    gb = torch.autograd.grad(yb, [xb, *layer.parameters()], w)
    for name, a, b in zip(["x", *(n for n, _ in layer.named_parameters())], ga, gb, strict=True):
        assert_close(a, b, atol=1e-11, rtol=1e-11, name=name)


def test_float32_uniform_grid_is_detected_and_close_to_reference():
    torch.manual_seed(0)
    layer = KANLinear(16, 8)  # float32, default uniform grid
    assert uniform_knots(layer.grid, torch.float32) is not None
    x = (torch.rand(64, 16) * 2.4 - 1.2).requires_grad_()
    args = (layer.grid, layer.base_weight, layer.spline_weight, layer.spline_scaler, layer.bias)
    y = layer(x)
    x64 = x.detach().double().requires_grad_()
    y64 = kan_linear_reference(x64, *(a.double() if a is not None else None for a in args))
    assert_close(y, y64, atol=2e-6, rtol=2e-6)
    w = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, w)
    (gx64,) = torch.autograd.grad(y64, x64, w.double())
    assert_close(gx, gx64, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("uniform", [True, False])
def test_gradcheck_and_gradgradcheck_through_the_fast_case(uniform):
    layer = _uniform_layer(3, 2, grid_size=4)
    if not uniform:
        perturbed_grid(layer)
    x = (torch.rand(6, 3, dtype=torch.float64) * 2.2 - 1.1).requires_grad_()
    params = list(layer.parameters())
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(f, (x, *params), eps=1e-6, atol=1e-7)


def test_forward_mode_through_the_fast_case_matches_reference():
    layer = _uniform_layer(4, 3, grid_size=5)
    x, tangent = torch.rand(7, 4, dtype=torch.float64) * 2 - 1, torch.randn(7, 4, dtype=torch.float64)
    args = (layer.grid, layer.base_weight, layer.spline_weight, layer.spline_scaler, layer.bias)
    with forward_ad.dual_level():
        y = kan_linear(forward_ad.make_dual(x, tangent), *args)
        y_t = forward_ad.unpack_dual(y).tangent
    _, expected = torch.func.jvp(lambda v: kan_linear_reference(v, *args), (x,), (tangent,))
    assert_close(y_t, expected, atol=1e-12, rtol=1e-12)


def test_grid_changes_are_seen():
    """The uniform check is cached per grid version: update_grid, copy_ and load_state_dict
    (in-place writes) and a new grid tensor all invalidate it."""
    layer = _uniform_layer(4, 3, grid_size=5)
    x = torch.rand(50, 4, dtype=torch.float64) * 2 - 1

    def check():
        args = (layer.grid, layer.base_weight, layer.spline_weight, layer.spline_scaler, layer.bias)
        assert_close(layer(x), kan_linear_reference(x, *args), atol=1e-12, rtol=1e-12)

    check()
    assert uniform_knots(layer.grid, torch.float64) is not None
    with torch.no_grad():
        layer.update_grid(torch.randn(64, 4, dtype=torch.float64))
    assert uniform_knots(layer.grid, torch.float64) is None
    check()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        layer.grid.copy_(uniform_grid(4, 5, 3, (-3.0, 2.0), dtype=torch.float64))
    assert uniform_knots(layer.grid, torch.float64) is not None
    check()
    layer.load_state_dict(state)
    assert uniform_knots(layer.grid, torch.float64) is None
    check()
    layer.grid = uniform_grid(4, 5, 3, dtype=torch.float64)  # a new tensor
    check()


def test_update_grid_with_uniform_knots_stays_on_the_closed_form():
    layer = _uniform_layer(3, 2, grid_size=5, grid_eps=1.0)
    with torch.no_grad():
        layer.update_grid(torch.randn(64, 3, dtype=torch.float64) * 3)
    assert uniform_knots(layer.grid, torch.float64) is not None  # per feature, its own range
    x = _inputs(layer)
    assert_close(layer(x), per_edge_oracle(layer, x), atol=1e-12, rtol=1e-12)


def test_inference_mode_and_inference_grids():
    layer = _uniform_layer(4, 3, grid_size=5)
    x = torch.rand(9, 4, dtype=torch.float64) * 2 - 1
    expected = per_edge_oracle(layer, x)
    with torch.inference_mode():
        assert_close(layer(x), expected, atol=1e-12, rtol=1e-12)
        grid = layer.grid.clone()  # an inference tensor: no version counter, general algorithm
        assert uniform_knots(grid, torch.float64) is None
        args = (grid, layer.base_weight, layer.spline_weight, layer.spline_scaler, layer.bias)
        assert_close(kan_linear(x, *args), expected, atol=1e-12, rtol=1e-12)


def test_fast_case_steps_aside_for_transforms_autocast_and_other_dtypes():
    layer = _uniform_layer(3, 2, grid_size=4)
    x = torch.rand(5, 3, dtype=torch.float64)
    weights = (layer.base_weight, layer.spline_weight, layer.spline_scaler, layer.bias)
    assert eager_path_applies(x, layer.grid, weights, "silu")
    assert not eager_path_applies(x, layer.grid, weights, torch.tanh)
    assert not eager_path_applies(x.float(), layer.grid, weights, "silu")  # weights in another dtype
    assert not eager_path_applies(x.bfloat16(), layer.grid, (), "silu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not eager_path_applies(x, layer.grid, weights, "silu")
    seen = []
    torch.func.vmap(lambda v: seen.append(eager_path_applies(v, layer.grid, weights, "silu")) or v)(x)
    assert seen == [False]


# ---------------------------------------------------------------------------------------------
# Blocks of input features and the per-thread workspace (efficient_kan/eager.py): the packed
# weight, backward's temporaries and, without a graph, the expanded input live in scratch buffers
# that are reused across calls; nothing computed from them may go stale or alias.


def _args(layer: KANLinear) -> tuple:
    return (layer.grid, layer.base_weight, layer.spline_weight, layer.spline_scaler, layer.bias)


def _reference_grads(layer: KANLinear, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    xr = x.detach().clone().requires_grad_()
    act = spec_of_module(layer.base_activation)
    y = kan_linear_reference(xr, *_args(layer), spline_order=layer.spline_order, base_activation=act)
    return (y, *torch.autograd.grad(y, [xr, *layer.parameters()], w))


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("scaler,act", [(True, nn.SiLU), (False, nn.Identity)])
def test_blocks_of_input_features_equal_reference(monkeypatch, uniform, scaler, act):
    """Blocks of 1-3 features (uneven last block): values and every gradient, float64."""
    from efficient_kan import eager

    layer = _uniform_layer(7, 4, grid_size=5, enable_standalone_scale_spline=scaler, base_activation=act)
    if not uniform:
        perturbed_grid(layer)
    lanes = layer.grid_size + layer.spline_order + 1
    monkeypatch.setattr(eager, "_BLOCK_BYTES", 3 * 4 * lanes * 8)  # three features per block
    assert len(eager._feature_blocks(7, 4, lanes, 8)) == 3
    x = _inputs(layer)[5:].requires_grad_()
    w = torch.randn(x.shape[0], 4, dtype=torch.float64)
    y = layer(x)
    grads = torch.autograd.grad(y, [x, *layer.parameters()], w)
    expected = _reference_grads(layer, x, w)
    assert_close(y, expected[0], atol=1e-12, rtol=1e-12)
    for name, a, b in zip(["x", *(n for n, _ in layer.named_parameters())], grads, expected[1:], strict=True):
        assert_close(a, b, atol=1e-11, rtol=1e-11, name=name)
    with torch.no_grad():
        assert_close(layer(x), expected[0], atol=1e-12, rtol=1e-12)
    params = list(layer.parameters())
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x[:4].detach().requires_grad_(), *params), eps=1e-6, atol=1e-8)


def test_parameter_changes_are_seen_by_every_call():
    """The packed weight is rebuilt on every call: optimizer steps, in-place edits and writes
    through ``.data`` (which no version counter sees) all show in the next output."""
    layer = _uniform_layer(6, 3, grid_size=5)
    x = torch.rand(9, 6, dtype=torch.float64) * 2 - 1
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)

    def check():
        expected = kan_linear_reference(x, *_args(layer))
        with torch.no_grad():
            assert_close(layer(x), expected, atol=1e-12, rtol=1e-12)
        with torch.inference_mode():
            assert_close(layer(x), expected, atol=1e-12, rtol=1e-12)
        assert_close(layer(x), expected, atol=1e-12, rtol=1e-12)

    check()
    layer(x).square().sum().backward()
    opt.step()
    check()
    with torch.no_grad():
        layer.spline_weight.mul_(-2)
        layer.base_weight.add_(1)
    check()
    layer.spline_scaler.data.mul_(3)
    layer.spline_weight.data[0, 0].fill_(5)
    check()


def test_live_graphs_and_no_grad_calls_do_not_share_buffers():
    """Two graphs alive at once (different batch sizes), and calls without a graph (which use the
    workspace) in between: every backward gets its own forward's values."""
    layer = _uniform_layer(5, 4, grid_size=5)
    x1 = (torch.rand(7, 5, dtype=torch.float64) * 2 - 1).requires_grad_()
    x2 = (torch.rand(3, 5, dtype=torch.float64) * 2 - 1).requires_grad_()
    w1, w2 = torch.randn(7, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    y1, y2 = layer(x1), layer(x2)
    with torch.no_grad():
        z = layer(torch.rand(11, 5, dtype=torch.float64))
    z_before = z.clone()
    with torch.inference_mode():
        layer(torch.rand(2, 5, dtype=torch.float64))
    g2 = torch.autograd.grad(y2, [x2, *layer.parameters()], w2)
    g1 = torch.autograd.grad(y1, [x1, *layer.parameters()], w1)
    for x, w, y, g in ((x1, w1, y1, g1), (x2, w2, y2, g2)):
        expected = _reference_grads(layer, x, w)
        assert_close(y, expected[0], atol=1e-12, rtol=1e-12)
        for a, b in zip(g, expected[1:], strict=True):
            assert_close(a, b, atol=1e-11, rtol=1e-11)
    assert torch.equal(z, z_before)  # outputs never point into the workspace


def test_threads_each_get_their_own_workspace():
    import threading

    layer = _uniform_layer(16, 8, grid_size=5)
    inputs = [torch.rand(20 + 3 * t, 16, dtype=torch.float64) * 2 - 1 for t in range(4)]
    expected = [kan_linear_reference(x, *_args(layer)) for x in inputs]
    failures = []

    def work(t):
        for _ in range(20):
            with torch.no_grad():
                y = layer(inputs[t])
            if not torch.allclose(y, expected[t], atol=1e-12, rtol=1e-12):
                failures.append(t)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not failures


def test_forward_mode_without_a_graph_keeps_its_tangents():
    """Under no_grad with parameters that need no gradient nothing is recorded, but an open dual
    level still needs the Function's jvp rule."""
    layer = _uniform_layer(4, 3, grid_size=5).requires_grad_(False)
    x, tangent = torch.rand(7, 4, dtype=torch.float64) * 2 - 1, torch.randn(7, 4, dtype=torch.float64)
    _, expected = torch.func.jvp(lambda v: kan_linear_reference(v, *_args(layer)), (x,), (tangent,))
    with torch.no_grad(), forward_ad.dual_level():
        y = layer(forward_ad.make_dual(x, tangent))
        y_t = forward_ad.unpack_dual(y).tangent
    assert y_t is not None
    assert_close(y_t, expected, atol=1e-12, rtol=1e-12)


def test_backward_of_a_broadcast_gradient():
    """``y.sum().backward()`` hands backward a stride-0 gradient."""
    layer = _uniform_layer(5, 3, grid_size=5)
    x = (torch.rand(6, 5, dtype=torch.float64) * 2 - 1).requires_grad_()
    layer(x).sum().backward()
    expected = _reference_grads(layer, x, torch.ones(6, 3, dtype=torch.float64))
    assert_close(x.grad, expected[1], atol=1e-11, rtol=1e-11)
    for p, e in zip(layer.parameters(), expected[2:], strict=True):
        assert_close(p.grad, e, atol=1e-11, rtol=1e-11)


def test_temporaries_above_the_workspace_cap_are_not_kept(monkeypatch):
    from efficient_kan import eager

    monkeypatch.setattr(eager, "_WORKSPACE_MAX_BYTES", 256)
    monkeypatch.setattr(eager, "_BLOCK_BYTES", 256)
    layer = _uniform_layer(6, 4, grid_size=5)
    x = (torch.rand(9, 6, dtype=torch.float64) * 2 - 1).requires_grad_()
    w = torch.randn(9, 4, dtype=torch.float64)
    eager._WORKSPACE.buffers.clear()
    y = layer(x)
    grads = torch.autograd.grad(y, [x, *layer.parameters()], w)
    with torch.no_grad():
        y_no_grad = layer(x)
    expected = _reference_grads(layer, x, w)
    assert_close(y, expected[0], atol=1e-12, rtol=1e-12)
    assert_close(y_no_grad, expected[0], atol=1e-12, rtol=1e-12)
    for a, b in zip(grads, expected[1:], strict=True):
        assert_close(a, b, atol=1e-11, rtol=1e-11)
    assert all(b.numel() * b.element_size() <= 256 for b in eager._WORKSPACE.buffers.values())


@pytest.mark.parametrize("act", [nn.SiLU, nn.Identity])
def test_one_row_without_packing_equals_reference(monkeypatch, act):
    """A single row whose weights outgrow the cache skips the packed weight (here: a cache of 1 byte)."""
    from efficient_kan import eager

    layer = _uniform_layer(9, 4, grid_size=5, base_activation=act)
    x = torch.rand(1, 9, dtype=torch.float64) * 2 - 1
    expected = _reference_grads(layer, x, torch.ones(1, 4, dtype=torch.float64))[0]
    calls = []
    monkeypatch.setattr(eager, "_last_level_cache", lambda: 1)
    monkeypatch.setattr(
        cpu_kernels.CpuKernels, "product_unpacked",
        lambda self, *a, _f=cpu_kernels.CpuKernels.product_unpacked: calls.append(1) or _f(self, *a),
    )  # fmt: skip
    with torch.no_grad():
        assert_close(layer(x), expected, atol=1e-12, rtol=1e-12)
    with torch.inference_mode():
        assert_close(layer(x), expected, atol=1e-12, rtol=1e-12)
    assert len(calls) == 2
    assert_close(layer(x), expected, atol=1e-12, rtol=1e-12)  # recording a graph: packed, as always
    assert len(calls) == 2


def test_frozen_weights_pack_once_and_see_every_change_made_through_torch(monkeypatch):
    from efficient_kan import eager, frozen_weights

    model = nn.Sequential(_uniform_layer(6, 5, grid_size=5), nn.ReLU(), _uniform_layer(5, 3, grid_size=4))
    x = torch.rand(4, 6, dtype=torch.float64) * 2 - 1

    def expected():
        with torch.no_grad():
            h = kan_linear_reference(x, *_args(model[0])).relu()
            return kan_linear_reference(h, *_args(model[2]))

    packs = []
    original = cpu_kernels.CpuKernels.pack
    monkeypatch.setattr(
        cpu_kernels.CpuKernels, "pack", lambda self, *a: packs.append(1) or original(self, *a)
    )
    with frozen_weights(model) as same:
        assert same is model
        for _ in range(3):
            with torch.inference_mode():
                assert_close(model(x), expected(), atol=1e-12, rtol=1e-12)
            with torch.no_grad():
                assert_close(model(x), expected(), atol=1e-12, rtol=1e-12)
        assert len(packs) == 2  # once per layer
        with torch.no_grad():
            model[0].spline_scaler.mul_(-2)  # in-place through torch: seen
        model[2].load_state_dict(
            {k: v * 3 for k, v in model[2].state_dict().items() if k != "grid"}, strict=False
        )
        with torch.no_grad():
            assert_close(model(x), expected(), atol=1e-12, rtol=1e-12)
        assert len(packs) == 4
        y = model(x.requires_grad_())  # recording a graph: packed per call, as always
        assert len(packs) == 6 and y.requires_grad
    assert not eager._FROZEN.entries
    with pytest.raises(RuntimeError, match="inside"), frozen_weights(model):
        raise RuntimeError("inside")
    assert not eager._FROZEN.entries
    with frozen_weights(model), frozen_weights(model[0]):  # nested; a weight replaced inside
        model[0].spline_weight = nn.Parameter(model[0].spline_weight.detach() * 2)
        with torch.no_grad():
            assert_close(model(x), expected(), atol=1e-12, rtol=1e-12)  # the new weight, per call
    assert not eager._FROZEN.entries


def test_frozen_weights_of_one_layer_leave_the_others_on_their_own_paths(monkeypatch):
    """Only the layers inside the block use kept packs; another layer's single row still skips
    packing when its weights outgrow the cache."""
    from efficient_kan import eager, frozen_weights

    inside, outside = _uniform_layer(9, 4, grid_size=5), _uniform_layer(9, 4, grid_size=5)
    x = torch.rand(1, 9, dtype=torch.float64) * 2 - 1
    unpacked = []
    original = cpu_kernels.CpuKernels.product_unpacked
    monkeypatch.setattr(eager, "_last_level_cache", lambda: 1)
    monkeypatch.setattr(
        cpu_kernels.CpuKernels, "product_unpacked", lambda self, *a: unpacked.append(1) or original(self, *a)
    )
    with frozen_weights(inside), torch.inference_mode():
        assert_close(inside(x), kan_linear_reference(x, *_args(inside)), atol=1e-12, rtol=1e-12)
        assert not unpacked  # its kept pack
        assert_close(outside(x), kan_linear_reference(x, *_args(outside)), atol=1e-12, rtol=1e-12)
        assert unpacked == [1]
