"""Interpretability tools: edge scores vs brute force, pruning, symbolic recovery, two moons, plots."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from efficient_kan import KAN, KANLinear
from efficient_kan.interpret import (
    auto_symbolic,
    create_dataset,
    edge_function,
    edge_scores,
    edge_values,
    fit,
    fix_symbolic,
    layer_edge_scores,
    node_scores,
    plot,
    plot_input_heatmap,
    prune,
    round_formula,
    symbolic_formula,
    symbolic_forward,
)
from efficient_kan.interpret.symbolic import SYMBOLIC_LIB, SymbolicEdge

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """Tiny models train much faster (and reproducibly) on one thread; restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _brute_force_scores(layer: KANLinear, x: torch.Tensor) -> torch.Tensor:
    """mean_b |phi[o, i](x[b, i])| edge by edge, from the layer's own output on one-hot inputs."""
    out = torch.zeros(layer.out_features, layer.in_features, dtype=torch.float64)
    with torch.no_grad():
        for i in range(layer.in_features):
            # phi[:, i](t) = y(t e_i) - y(0) + phi[:, i](0), and y(0) = sum_i phi[:, i](0) + bias
            xi = torch.zeros(x.shape[0], layer.in_features, dtype=x.dtype)
            xi[:, i] = x[:, i]
            zero = torch.zeros(1, layer.in_features, dtype=x.dtype)
            phi0 = torch.stack(
                [
                    edge_function(layer, o, i, torch.zeros(1, dtype=x.dtype))[0]
                    for o in range(layer.out_features)
                ]
            )
            vals = layer(xi) - layer(zero) + phi0
            out[:, i] = vals.abs().mean(0)
    return out


@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (7, 5)])
@pytest.mark.parametrize("max_elements", [1, 37, 1 << 22])
def test_edge_scores_match_brute_force(shape, max_elements):
    torch.manual_seed(0)
    n_in, n_out = shape
    layer = KANLinear(n_in, n_out, dtype=torch.float64)
    x = torch.randn(29, n_in, dtype=torch.float64) * 1.3
    expected = _brute_force_scores(layer, x)
    got = layer_edge_scores(layer, x, max_elements=max_elements)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    full = edge_values(layer, x)  # (B, O, I)
    torch.testing.assert_close(full.sum(-1) + layer.bias, layer(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, full.abs().mean(0), rtol=1e-12, atol=1e-14)


def test_node_scores_follow_edge_scores():
    torch.manual_seed(0)
    model = KAN([3, 4, 2], dtype=torch.float64)
    x = torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    scores = edge_scores(model, x)
    incoming, outgoing = node_scores(model, x)
    assert incoming[0] is None and outgoing[-1] is None
    torch.testing.assert_close(incoming[1], scores[0].amax(1))
    torch.testing.assert_close(outgoing[1], scores[1].amax(0))
    torch.testing.assert_close(outgoing[0], scores[0].amax(0))


def test_wide_layer_scores_bounded_memory(one_thread):
    torch.manual_seed(0)
    layer = KANLinear(784, 64)
    x = torch.rand(100, 784)
    got = layer_edge_scores(layer, x, max_elements=1 << 18)  # 256k elements per chunk
    ref = layer_edge_scores(layer, x, max_elements=1 << 26)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)


def test_prune_drops_dead_nodes_exactly():
    torch.manual_seed(0)
    model = KAN([2, 5, 1], dtype=torch.float64)
    with torch.no_grad():
        for node in (1, 3):  # nodes 1 and 3 carry nothing in or out
            model.layers[0].base_weight[node].zero_()
            model.layers[0].spline_weight[node].zero_()
            model.layers[1].base_weight[:, node].zero_()
            model.layers[1].spline_weight[:, node].zero_()
    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    pruned = prune(model, x, threshold=1e-2)
    assert pruned.kept_nodes == [[0, 1], [0, 2, 4], [0]]
    assert [lay.out_features for lay in pruned.layers] == [3, 1]
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-12, atol=1e-12)


def test_fix_symbolic_by_hand_and_formula():
    sympy = pytest.importorskip("sympy")
    torch.manual_seed(0)
    ds = create_dataset(
        lambda x: 2 * x[:, 0] ** 2 - 1, n_var=1, train_num=300, test_num=100, dtype=torch.float64
    )
    model = KAN([1, 1], bias=True, dtype=torch.float64)
    fit(model, ds, steps=10)
    edge = fix_symbolic(model, 0, 0, 0, "x^2", x=ds["train_input"])
    assert edge.name == "x^2" and edge.r2 > 0.999
    table = auto_symbolic(model, ["x", "sin", "exp"], x=ds["train_input"])
    assert table[(0, 0, 0)].name == "x^2"  # fixed by hand: kept
    expr = symbolic_formula(model)[0]
    fn = sympy.lambdify(sympy.symbols("x_1:2"), expr)
    xt = ds["test_input"]
    pred = torch.as_tensor(fn(xt[:, 0].numpy()))
    torch.testing.assert_close(pred, symbolic_forward(model, xt)[:, 0], rtol=1e-9, atol=1e-9)
    assert float((pred - ds["test_label"][:, 0]).abs().max()) < 0.05


def _edge(name: str, a: float, b: float, c: float, d: float) -> SymbolicEdge:
    fn, sympy_fn, complexity = SYMBOLIC_LIB[name]
    return SymbolicEdge(name, fn, sympy_fn, complexity, a, b, c, d, 1.0)


def _printed_rtol(digits: int) -> float:
    """What a formula printed to ``digits`` significant digits may be off by, relative.

    Each printed constant is within half a unit in its last digit, i.e. relative 0.5 * 10**(1 - d);
    the formulas below have a few constants with sensitivities of order one: twice that.
    """
    return 10.0 ** (1 - digits)


def _evaluate(expr, x: torch.Tensor) -> torch.Tensor:
    sympy = pytest.importorskip("sympy")
    fn = sympy.lambdify(sympy.symbols(f"x_1:{x.shape[1] + 1}"), expr, "numpy")
    val = torch.as_tensor(fn(*x.double().T.numpy()), dtype=torch.float64)
    return val.expand(x.shape[0]) if val.dim() == 0 else val


def _example_symbolic_fit() -> KAN:
    """KAN([2, 1, 1]) with the symbolic fit examples/symbolic_regression.py finds, built by hand.

    Edge constants as refine_symbolic left them in a real run (seed 0); the inner coefficients
    and biases are then set so that the network is exactly exp(sin(pi x_1) + x_2^2), whose sympy
    composition is 1.0*exp(0.0363668*(5.2438161*x_2 - 1.9e-16)**2 + 1.0*sin(3.14159*x_1 + 1.9e-17)).
    """
    a_exp, b_exp, c_exp, d_exp = (
        1.054149027506264,
        9.210953815374998,
        1.4153069571941042e-4,
        -1.1222809199825339,
    )
    a_sin, b_sin, d_sin = math.pi, 1.9351701558996642e-17, -0.30716004389091456
    a_sq, b_sq, d_sq = 5.243816078736787, -1.9356664542330273e-16, -0.4598416249362896
    model = KAN([2, 1, 1], bias=True, dtype=torch.float64)
    model.symbolic_edges = {
        (0, 0, 0): _edge("sin", a_sin, b_sin, 1 / a_exp, d_sin),
        (0, 1, 0): _edge("x^2", a_sq, b_sq, 1 / (a_exp * a_sq**2), d_sq),
        (1, 0, 0): _edge("exp", a_exp, b_exp, c_exp, d_exp),
    }
    with torch.no_grad():  # c_exp * exp(a_exp * (d_sin + d_sq + bias0) + b_exp) = 1; d_exp + bias1 = 0
        model.layers[0].bias.fill_((-math.log(c_exp) - b_exp) / a_exp - d_sin - d_sq)
        model.layers[1].bias.fill_(-d_exp)
    return model


def test_printed_formula_is_the_fitted_function():
    """The printed formula of the example's fit: constants gathered before they are rounded."""
    sympy = pytest.importorskip("sympy")
    model = _example_symbolic_fit()
    exact = symbolic_formula(model)[0]
    assert "0.0363668" in str(exact) and "5.243816" in str(exact)  # the composition to be gathered
    printed = str(round_formula(exact, 4))
    # Rounded before gathering, this was 1.0*exp(1.0009*x_2**2 + 1.0*sin(3.1416*x_1)).
    assert printed == "1.0*exp(1.0*x_2**2 + 1.0*sin(3.142*x_1))"
    assert str(symbolic_formula(model, digits=4)[0]) == printed
    x = torch.rand(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    back = _evaluate(sympy.sympify(printed), x)
    target = torch.exp(torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)
    torch.testing.assert_close(_evaluate(exact, x), target, rtol=1e-12, atol=0)
    torch.testing.assert_close(symbolic_forward(model, x)[:, 0], target, rtol=1e-12, atol=0)
    torch.testing.assert_close(back, target, rtol=_printed_rtol(4), atol=0)


@pytest.mark.parametrize("digits", [2, 3, 4, 6])
@pytest.mark.parametrize(
    ("formula", "printed4"),
    [
        # c * (a*x + b)**n: one coefficient (rounded separately: 1.0009*x_1**2).
        ("0.0363668*(5.2438161*x_1 - 1.9e-16)**2", "1.0*x_1**2"),
        # Small coefficients keep their significant digits (to 4 decimals: 0.0001*x_1**3).
        ("1.4153e-4*(3.0*x_1 - 0.3)**3", "0.003821*(x_1 - 0.1)**3"),
        # sqrt and 1/x of affine arguments: the argument's scale moves into the coefficient.
        (
            "0.25*sqrt(7.3*x_1 + 9.1) + 0.012/(4.7*x_2 + 6.3)",
            "0.6755*sqrt(x_1 + 1.247) + 0.002553/(x_2 + 1.34)",
        ),
        # abs of an affine argument, and a fit's ~1e-16 residues dropped (sum and sin argument).
        (
            "0.3*Abs(-2.5*x_1 + 0.4) + 2.0*sin(1.3*x_2 + 1e-17) + 1e-16",
            "2.0*sin(1.3*x_2) + 0.75*Abs(x_1 - 0.16)",
        ),
        # Terms whose arguments round alike are combined (0.5123 + 0.3123), and rounded again.
        ("0.51234*tanh(1.00001*x_1) + 0.31234*tanh(1.00002*x_1)", "0.8246*tanh(1.0*x_1)"),
    ],
)
def test_round_formula_prints_the_function(formula, printed4, digits):
    """sympify(printed) evaluates to the unrounded formula within the printed precision."""
    sympy = pytest.importorskip("sympy")
    exact = sympy.sympify(formula)
    printed = str(round_formula(exact, digits))
    if digits == 4:
        assert printed == printed4
    x = torch.rand(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    want = _evaluate(exact, x)
    got = _evaluate(sympy.sympify(printed), x)
    torch.testing.assert_close(
        got, want, rtol=_printed_rtol(digits), atol=_printed_rtol(digits) * float(want.abs().max())
    )


def test_round_formula_rejects_bad_digits():
    sympy = pytest.importorskip("sympy")
    for digits in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="digits"):
            round_formula(sympy.sympify("0.5*x_1"), digits)


def test_printed_formula_matches_exact_spline_model():
    """Edges a cubic spline represents exactly (x, x^2, x^3): printed formula = model's function."""
    sympy = pytest.importorskip("sympy")
    from efficient_kan.bspline import bspline_basis

    torch.manual_seed(0)
    model = KAN([2, 1], grid_size=5, bias=True, dtype=torch.float64)
    lay = model.layers[0]
    t = torch.linspace(-1, 1, 101, dtype=torch.float64)
    funcs = [
        lambda u: 0.0363668 * (5.2438161 * u) ** 2 - 0.2,
        lambda u: 1.4153e-4 * (3.0 * u - 0.3) ** 3 + 0.7,
    ]
    with torch.no_grad():
        lay.base_weight.zero_()
        lay.spline_scaler.fill_(1.0)
        for i, f in enumerate(funcs):
            bases = bspline_basis(t.unsqueeze(1).expand(-1, 2), lay.grid.double(), lay.spline_order)[:, i]
            lay.spline_weight[0, i] = torch.linalg.lstsq(bases, f(t).unsqueeze(1)).solution[:, 0]
        lay.bias.fill_(0.1)
    x = torch.rand(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref = model(x)[:, 0]
    torch.testing.assert_close(ref, funcs[0](x[:, 0]) + funcs[1](x[:, 1]) + 0.1, rtol=1e-10, atol=1e-10)
    fix_symbolic(model, 0, 0, 0, "x^2")
    fix_symbolic(model, 0, 1, 0, "x^3")
    exact = symbolic_formula(model)[0]
    torch.testing.assert_close(_evaluate(exact, x), ref, rtol=1e-8, atol=1e-8)
    printed = str(symbolic_formula(model, digits=4)[0])
    torch.testing.assert_close(
        _evaluate(sympy.sympify(printed), x),
        ref,
        rtol=_printed_rtol(4),
        atol=_printed_rtol(4) * float(ref.abs().max()),
    )


def test_symbolic_regression_recovers_formula(one_thread):
    sympy = pytest.importorskip("sympy")
    pytest.importorskip("scipy")
    ex = _load_example("symbolic_regression")
    data = ex.make_data(seed=0)
    full, pruned, _ = ex.train_and_prune(data, seed=0)
    assert [len(k) for k in pruned.kept_nodes] == [2, 1, 1]
    with torch.no_grad():  # pruning (before the retraining) kept the function up to dropped nodes
        again = prune(full, data["train_input"], threshold=1e-2)
        diff = (again(data["test_input"]) - full(data["test_input"])).abs().max()
    assert float(diff) < 1e-2  # |f| is up to e^2 ~ 7.4 here
    table, expr = ex.recover_formula(pruned, data)
    names = {key: edge.name for key, edge in table.items()}
    assert names == {(0, 0, 0): "sin", (0, 1, 0): "x^2", (1, 0, 0): "exp"}
    rmse = ex.formula_rmse(expr, data["test_input"], data["test_label"])
    assert rmse < 1e-2, rmse
    # What the example prints, read back: the fitted formula (and here the target) to its precision.
    printed = ex.printed_formula(expr)
    assert printed == "1.0*exp(1.0*x_2**2 + 1.0*sin(3.142*x_1))"
    back = _evaluate(sympy.sympify(printed), data["test_input"])
    torch.testing.assert_close(
        back, _evaluate(expr, data["test_input"]), rtol=_printed_rtol(ex.DIGITS), atol=0
    )
    torch.testing.assert_close(back, data["test_label"][:, 0], rtol=_printed_rtol(ex.DIGITS), atol=0)


def test_two_moons_accuracy(one_thread):
    sympy = pytest.importorskip("sympy")
    pytest.importorskip("scipy")
    ex = _load_example("two_moons")
    data = ex.moons_dataset()
    reg = ex.run_regression(data)
    cls = ex.run_classification(data)
    for result in (reg, cls):
        assert result["kan_test_acc"] >= 0.95
        assert result["formula_test_acc"] >= 0.95
    # The printed formulas, read back, are the fitted ones to their precision.
    x = data["test_input"]
    for expr in [reg["formula"], *cls["formula"]]:
        exact = _evaluate(expr, x)
        back = _evaluate(sympy.sympify(ex.printed_formula(expr)), x)
        tol = _printed_rtol(ex.DIGITS)
        torch.testing.assert_close(back, exact, rtol=tol, atol=tol * float(exact.abs().max()))


def test_plots_write_images(tmp_path):
    pytest.importorskip("matplotlib")
    torch.manual_seed(0)
    model = KAN([2, 3, 1])
    x = torch.rand(100, 2) * 2 - 1
    for ext in ("png", "svg"):
        path = tmp_path / f"net.{ext}"
        plot(model, x, path, in_vars=["x", "y"], out_vars=["f"])
        assert path.stat().st_size > 1000
    wide = KAN([784, 8, 10])
    images = torch.rand(64, 784)
    path = tmp_path / "wide.png"
    plot(wide, images, path, top_k=20)
    assert path.stat().st_size > 1000
    path = tmp_path / "heatmap.png"
    plot_input_heatmap(wide, images, path, image_shape=(28, 28))
    assert path.stat().st_size > 1000


def test_create_dataset_shapes_and_seed():
    ds = create_dataset(lambda x: torch.sin(math.pi * x[:, :1]), n_var=3, train_num=10, test_num=5, seed=3)
    assert ds["train_input"].shape == (10, 3) and ds["train_label"].shape == (10, 1)
    assert ds["test_input"].shape == (5, 3)
    again = create_dataset(lambda x: torch.sin(math.pi * x[:, :1]), n_var=3, train_num=10, test_num=5, seed=3)
    torch.testing.assert_close(ds["train_input"], again["train_input"])
    with pytest.raises(ValueError):
        create_dataset(lambda x: x[:, 0], n_var=2, ranges=[(0, 1)])
