"""KANLinear / KAN in PyTorch against independent oracles, plus the module's contract."""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from efficient_kan import KAN, KANLinear, bspline_basis
from efficient_kan.bspline import uniform_grid
from efficient_kan.layer import _fit_spline_coefficients

from .utils import assert_close


# ---------------------------------------------------------------- independent oracles
def _de_boor(x: float, knots: list[float], coeffs: list[float], k: int) -> float:
    """Value of the spline sum_j coeffs[j] * B_j(x) by de Boor's algorithm, in Python floats.

    A different path from the layer's (no basis values at all): the curve is evaluated from its
    control points. Knots are padded by k on each side and the extra coefficients are 0, which
    reproduces the truncated bases at the ends of the grid.
    """
    if not (knots[0] <= x < knots[-1]):
        return 0.0
    h_lo, h_hi = knots[1] - knots[0], knots[-1] - knots[-2]
    t = (
        [knots[0] - h_lo * m for m in range(k, 0, -1)]
        + list(knots)
        + [knots[-1] + h_hi * m for m in range(1, k + 1)]
    )
    c = [0.0] * k + list(coeffs) + [0.0] * (k + 1)  # c[p + k] is coefficient p
    s = max(i for i in range(len(t) - 1) if t[i] <= x)  # span in the padded knots
    d = [c[j + s - k] for j in range(k + 1)]
    for r in range(1, k + 1):
        for j in range(k, r - 1, -1):
            i = j + s - k
            alpha = (x - t[i]) / (t[i + k + 1 - r] - t[i])
            d[j] = (1 - alpha) * d[j - 1] + alpha * d[j]
    return d[k]


def _silu(v: float) -> float:
    return v / (1 + math.exp(-v)) if math.isfinite(v) else float("nan")


def per_edge_oracle(layer: KANLinear, x: torch.Tensor) -> torch.Tensor:
    """y[b, o] = bias[o] + sum_i phi[o, i](x[b, i]), each edge evaluated on its own."""
    grid = layer.grid.double().tolist()
    bw = layer.base_weight.double().tolist()
    sw = layer.spline_weight.double().tolist()
    sc = None if layer.spline_scaler is None else layer.spline_scaler.double().tolist()
    bias = None if layer.bias is None else layer.bias.double().tolist()
    act = _silu if isinstance(layer.base_activation, nn.SiLU) else (lambda v: v)
    out = torch.zeros(x.shape[0], layer.out_features, dtype=torch.float64)
    for b, row in enumerate(x.double().tolist()):
        for o in range(layer.out_features):
            total = 0.0 if bias is None else bias[o]
            for i, v in enumerate(row):
                spline = _de_boor(v, grid[i], sw[o][i], layer.spline_order)
                total += bw[o][i] * act(v) + (1.0 if sc is None else sc[o][i]) * spline
            out[b, o] = total
    return out


def dense_cox_de_boor(x: torch.Tensor, grid: torch.Tensor, k: int) -> torch.Tensor:
    """The textbook recursion over all bases, as the efficient-kan formulation writes it."""
    x = x.unsqueeze(-1)
    bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)
    for p in range(1, k + 1):
        bases = (x - grid[:, : -(p + 1)]) / (grid[:, p:-1] - grid[:, : -(p + 1)]) * bases[..., :-1] + (
            grid[:, p + 1 :] - x
        ) / (grid[:, p + 1 :] - grid[:, 1:(-p)]) * bases[..., 1:]
    return bases


def efficient_kan_forward(state: dict[str, torch.Tensor], x: torch.Tensor, k: int) -> torch.Tensor:
    """The efficient-kan formulation's forward, written from its equations."""
    bases = dense_cox_de_boor(x, state["grid"], k)
    scaled = state["spline_weight"] * state["spline_scaler"].unsqueeze(-1)
    base = F.linear(F.silu(x), state["base_weight"])
    return base + F.linear(bases.reshape(x.shape[0], -1), scaled.reshape(scaled.shape[0], -1))


def perturbed_grid(layer: KANLinear, seed: int = 0) -> None:
    """Give every feature its own non-uniform knots (what update_grid produces)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        g = layer.grid
        h = (g[0, 1] - g[0, 0]).item()
        jitter = (torch.rand(g.shape, generator=gen, dtype=torch.float64) - 0.5) * 0.6 * h
        g.copy_(g + jitter.to(g.dtype))


def random_layer(i: int, o: int, seed: int = 0, **kw) -> KANLinear:
    torch.manual_seed(seed)
    layer = KANLinear(i, o, dtype=torch.float64, **kw)
    with torch.no_grad():  # fresh, sizeable values everywhere (the init's splines are tiny)
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    return layer


# ---------------------------------------------------------------- the function
@pytest.mark.parametrize(
    "grid_size,spline_order", [(1, 0), (1, 1), (3, 2), (5, 3), (4, 5), (20, 3)], ids=lambda v: str(v)
)
@pytest.mark.parametrize("bias,scaler", [(True, True), (False, False)])
def test_matches_per_edge_oracle(grid_size, spline_order, bias, scaler):
    layer = random_layer(
        3, 2, grid_size=grid_size, spline_order=spline_order, bias=bias, enable_standalone_scale_spline=scaler
    )
    perturbed_grid(layer)
    # Inside, near and beyond the ends of the grid.
    x = torch.cat(
        [
            torch.rand(9, 3, dtype=torch.float64) * 2.4 - 1.2,
            torch.tensor([[-9.0, 0.0, 9.0]], dtype=torch.float64),
        ]
    )
    assert_close(layer(x), per_edge_oracle(layer, x), atol=1e-12, rtol=1e-12)


def test_identity_activation_matches_oracle():
    layer = random_layer(4, 3, base_activation=nn.Identity)
    x = torch.randn(7, 4, dtype=torch.float64)
    assert_close(layer(x), per_edge_oracle(layer, x), atol=1e-12, rtol=1e-12)


def test_basis_matches_textbook_recursion_and_partition_of_unity():
    layer = random_layer(5, 1, grid_size=7, spline_order=3)
    perturbed_grid(layer)
    x = torch.rand(200, 5, dtype=torch.float64) * 4 - 2
    ours = bspline_basis(x, layer.grid, 3)
    assert_close(ours, dense_cox_de_boor(x, layer.grid, 3), atol=1e-14, rtol=0)
    # Inside the interior knots the bases sum to 1.
    inner = torch.rand(50, 5, dtype=torch.float64) * 1.6 - 0.8
    assert_close(
        bspline_basis(inner, uniform_grid(5, 7, 3, dtype=torch.float64), 3).sum(-1),
        torch.ones(50, 5, dtype=torch.float64),
    )


@pytest.mark.parametrize("spline_order", [0, 1, 3, 5])
@pytest.mark.parametrize(
    "bias,scaler,act", [(True, True, nn.SiLU), (False, False, nn.Identity), (True, False, nn.Tanh)]
)
def test_gradcheck_input_and_every_parameter(spline_order, bias, scaler, act):
    layer = random_layer(
        3,
        2,
        grid_size=4,
        spline_order=spline_order,
        bias=bias,
        enable_standalone_scale_spline=scaler,
        base_activation=act,
    )
    perturbed_grid(layer)
    x = (torch.rand(5, 3, dtype=torch.float64) * 2.6 - 1.3).requires_grad_()
    params = [p for p in layer.parameters()]
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-8)


def test_efficient_kan_state_dict_loads_and_agrees():
    """A checkpoint in the efficient-kan layout gives the same outputs and gradients."""
    torch.manual_seed(1)
    i, o, g, k = 6, 4, 5, 3
    state = {
        "grid": uniform_grid(i, g, k, dtype=torch.float64),
        "base_weight": torch.randn(o, i, dtype=torch.float64),
        "spline_weight": torch.randn(o, i, g + k, dtype=torch.float64),
        "spline_scaler": torch.randn(o, i, dtype=torch.float64),
    }
    state["grid"] = state["grid"] + torch.rand_like(state["grid"]) * 0.1  # non-uniform, still increasing
    layer = KANLinear(i, o, bias=False, grid_size=g, spline_order=k, dtype=torch.float64)
    assert set(layer.state_dict()) == set(state)
    layer.load_state_dict(state, strict=True)

    x = (torch.randn(32, i, dtype=torch.float64)).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ref_params = {n: t.clone().requires_grad_(n != "grid") for n, t in state.items()}
    y, y_ref = layer(x), efficient_kan_forward(ref_params, x_ref, k)
    assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    assert_close(x.grad, x_ref.grad, atol=1e-10, rtol=1e-10)
    for name in ("base_weight", "spline_weight", "spline_scaler"):
        assert_close(getattr(layer, name).grad, ref_params[name].grad, atol=1e-10, rtol=1e-10, name=name)


def test_shapes_leading_dims_one_d_empty_and_non_contiguous():
    layer = KANLinear(5, 3)
    assert layer(torch.randn(5)).shape == (3,)
    assert layer(torch.randn(2, 4, 5)).shape == (2, 4, 3)
    empty = layer(torch.randn(0, 5))
    assert empty.shape == (0, 3)
    x = torch.randn(5, 8)[:, ::2].t()  # (4, 5), non-contiguous
    assert not x.is_contiguous()
    assert_close(layer(x), layer(x.contiguous()), atol=1e-6, rtol=1e-6)
    x3 = torch.randn(2, 4, 5)
    assert_close(layer(x3), layer(x3.reshape(8, 5)).reshape(2, 4, 3), atol=1e-6, rtol=1e-6)


def test_nan_and_inf_stay_in_their_row():
    layer = KANLinear(4, 3)
    x = torch.randn(5, 4)
    x[1, 2] = float("nan")
    x[3, 0] = float("-inf")
    y = layer(x)
    clean = layer(x[[0, 2, 4]])
    assert torch.isnan(y[1]).all() and torch.isnan(y[3]).all()
    assert_close(y[[0, 2, 4]], clean, atol=1e-6, rtol=1e-6)


def test_regularization_loss_matches_formula_and_never_nan():
    layer = KANLinear(4, 3)
    l1 = layer.spline_weight.abs().mean(-1)
    p = l1 / l1.sum()
    expected = 2.0 * l1.sum() + 0.5 * -(p * p.log()).sum()
    assert_close(layer.regularization_loss(2.0, 0.5), expected, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        layer.spline_weight[0].zero_()  # an all-zero row: log(0) must not appear
    loss = layer.regularization_loss()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(layer.spline_weight.grad).all()
    with torch.no_grad():
        layer.spline_weight.zero_()
    layer.spline_weight.grad = None
    loss = layer.regularization_loss()
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(layer.spline_weight.grad).all()


# ---------------------------------------------------------------- update_grid
def _layer_with_cubic_edges(grid_size: int = 6) -> KANLinear:
    """A layer whose every spline edge is a random cubic polynomial on [-1, 1]."""
    torch.manual_seed(0)
    layer = KANLinear(4, 3, grid_size=grid_size, dtype=torch.float64)
    t = torch.linspace(-1, 1, 101, dtype=torch.float64).unsqueeze(1).expand(-1, 4)
    coeffs = torch.randn(4, 3, 4, dtype=torch.float64)  # (in, out, power)
    values = (coeffs.unsqueeze(1) * t.t().unsqueeze(-1).unsqueeze(-1) ** torch.arange(4)).sum(-1)  # (I, N, O)
    fitted = _fit_spline_coefficients(bspline_basis(t, layer.grid, 3).transpose(0, 1), values)
    with torch.no_grad():
        layer.spline_weight.copy_(fitted.permute(2, 0, 1))
        layer.spline_scaler.uniform_(-3, 3)  # far from 1: applying it twice would show at once
    return layer


def test_update_grid_keeps_the_function():
    """Cubic edges are representable on any cubic-spline grid, so the refit must be exact."""
    layer = _layer_with_cubic_edges()
    x = torch.rand(500, 4, dtype=torch.float64) * 1.6 - 0.8
    before = layer(x)
    layer.update_grid(x)
    # The knots now follow the data (quantiles), not the initial uniform [-1, 1] grid.
    assert (layer.grid[:, 3 + 6] < 0.81).all() and (layer.grid[:, 3] > -0.81).all()
    assert_close(layer(x), before, atol=1e-8, rtol=1e-8)
    # And on fresh points inside the batch's range.
    inside = torch.rand(300, 4, dtype=torch.float64) * 1.5 - 0.75
    with torch.no_grad():
        expected = _layer_with_cubic_edges()(inside)
    assert_close(layer(inside), expected, atol=1e-8, rtol=1e-8)


def test_update_grid_keeps_a_general_spline_up_to_the_refit_error():
    """Random wiggly splines are not representable on the new knots: a least-squares refit keeps
    them to about 10% here (measured), where applying the scaler twice changes them by >200%."""
    torch.manual_seed(0)
    layer = KANLinear(4, 3, grid_size=5, dtype=torch.float64)
    with torch.no_grad():
        layer.spline_weight.copy_(torch.randn_like(layer.spline_weight))
        layer.spline_scaler.uniform_(-3, 3)
    x = torch.randn(2000, 4, dtype=torch.float64) * 0.4
    before = layer(x)
    spline_before = before - F.linear(F.silu(x), layer.base_weight, layer.bias)
    layer.update_grid(x)
    rel = ((layer(x) - before).norm() / spline_before.norm()).item()
    assert rel < 0.15, f"update_grid changed the spline part by {rel:.1%}"


def test_update_grid_rejects_bad_batches_and_changes_nothing():
    layer = KANLinear(3, 2)
    state = copy.deepcopy(layer.state_dict())
    bad = torch.randn(10, 3)
    bad[4, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        layer.update_grid(bad)
    with pytest.raises(ValueError, match="at least 2"):
        layer.update_grid(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"shape \(\*, 3\)"):
        layer.update_grid(torch.randn(8, 4))
    tied = KANLinear(3, 2, grid_eps=0.0)
    tied_state = copy.deepcopy(tied.state_dict())
    with pytest.raises(ValueError, match="strictly increasing"):
        tied.update_grid(torch.zeros(20, 3))  # every quantile equal: knots would collide
    for before, now in ((state, layer.state_dict()), (tied_state, tied.state_dict())):
        for key in before:
            assert torch.equal(before[key], now[key]), key


def test_kan_forward_with_update_grid_and_regularization():
    torch.manual_seed(0)
    model = KAN([6, 5, 2])
    assert all(layer.bias is None for layer in model.layers)
    x = torch.randn(64, 6)
    y = model(x, update_grid=True)
    assert y.shape == (64, 2) and torch.isfinite(y).all()
    assert_close(model(x), y, atol=0, rtol=0)
    assert torch.isfinite(model.regularization_loss())


# ---------------------------------------------------------------- module plumbing
def test_deepcopy_pickle_save_load_weights_only_and_to():
    torch.manual_seed(0)
    layer = KANLinear(4, 3)
    layer.update_grid(torch.randn(50, 4))
    x = torch.randn(6, 4)
    y = layer(x)
    assert_close(copy.deepcopy(layer)(x), y, atol=0, rtol=0)
    assert_close(pickle.loads(pickle.dumps(layer))(x), y, atol=0, rtol=0)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    fresh = KANLinear(4, 3)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert_close(fresh(x), y, atol=0, rtol=0)
    double = copy.deepcopy(layer).to(torch.float64)
    assert double.grid.dtype == torch.float64
    assert_close(double(x.double()), y.double(), atol=1e-5, rtol=1e-5)


def test_reset_parameters_and_repr():
    torch.manual_seed(0)
    layer = KANLinear(4, 3, grid_size=6, spline_order=2)
    layer.update_grid(torch.randn(40, 4) * 3)
    first = copy.deepcopy(layer.state_dict())
    torch.manual_seed(0)
    layer.reset_parameters()
    assert torch.equal(layer.grid, uniform_grid(4, 6, 2))
    assert not torch.equal(first["spline_weight"], layer.spline_weight)
    text = repr(layer)
    for part in ("in_features=4", "out_features=3", "grid_size=6", "spline_order=2", "backend='auto'"):
        assert part in text
    # Initial splines are small (the noise scale), the base weight like nn.Linear's.
    assert layer.spline_weight.abs().max() < 0.1


def test_same_seed_same_layer():
    torch.manual_seed(3)
    a = KANLinear(5, 4)
    torch.manual_seed(3)
    b = KANLinear(5, 4)
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), na


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"in_features": 0}, "in_features"),
        ({"out_features": -2}, "out_features"),
        ({"in_features": 2.5}, "in_features"),
        ({"grid_size": 0}, "grid_size"),
        ({"spline_order": -1}, "spline_order"),
        ({"grid_range": (1, -1)}, "increasing"),
        ({"grid_range": (0, 0)}, "increasing"),
        ({"grid_range": (0, float("inf"))}, "finite"),
        ({"grid_range": (0, 1, 2)}, "two"),
        ({"grid_eps": 1.5}, "grid_eps"),
        ({"scale_noise": -1.0}, "scale_noise"),
    ],
)
def test_constructor_rejects_invalid_arguments(kwargs, match):
    args = {"in_features": 3, "out_features": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        KANLinear(args.pop("in_features"), args.pop("out_features"), **args)


def test_constructor_rejects_bad_activation_and_backend():
    with pytest.raises(TypeError, match="base_activation"):
        KANLinear(3, 2, base_activation=torch.tanh)
    layer = KANLinear(3, 2)
    with pytest.raises(ValueError, match="backend"):
        layer.backend = "cuda"


def test_forward_rejects_bad_input():
    layer = KANLinear(3, 2)
    with pytest.raises(ValueError, match=r"shape \(\*, 3\).*\(4, 5\)"):
        layer(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"shape \(\*, 3\)"):
        layer(torch.tensor(1.0))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(4, 3, dtype=torch.int64))


def test_torch_backend_is_used_on_cpu():
    layer = KANLinear(3, 2)
    layer.backend = "torch"
    x = torch.randn(4, 3)
    layer.backend = "auto"
    assert_close(layer(x), per_edge_oracle(layer, x).float(), atol=1e-5, rtol=1e-5)


def test_kan_from_layers_chains_and_checks_widths():
    a, b = KANLinear(4, 3, grid_size=3), KANLinear(3, 2, grid_size=7, bias=False)
    model = KAN.from_layers([a, b])
    x = torch.randn(5, 4)
    assert_close(model(x), b(a(x)), atol=0, rtol=0)
    with pytest.raises(ValueError, match="chain"):
        KAN.from_layers([a, KANLinear(2, 2)])
    with pytest.raises(TypeError, match="KANLinear"):
        KAN.from_layers([])


def test_cpu_autocast_behaves_like_linear():
    torch.manual_seed(0)
    layer = KANLinear(8, 4)
    x = torch.randn(5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        y_linear = nn.Linear(8, 4)(x)
    assert y.dtype == y_linear.dtype == torch.bfloat16
    assert_close(y.float(), layer(x), atol=2e-2, rtol=2e-2)
    y.float().sum().backward()
    assert layer.spline_weight.grad.dtype == torch.float32 and torch.isfinite(layer.spline_weight.grad).all()
