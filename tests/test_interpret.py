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
    symbolic_formula,
    symbolic_forward,
)

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


def test_symbolic_regression_recovers_formula(one_thread):
    pytest.importorskip("sympy")
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


def test_two_moons_accuracy(one_thread):
    pytest.importorskip("sympy")
    pytest.importorskip("scipy")
    ex = _load_example("two_moons")
    data = ex.moons_dataset()
    reg = ex.run_regression(data)
    cls = ex.run_classification(data)
    for result in (reg, cls):
        assert result["kan_test_acc"] >= 0.95
        assert result["formula_test_acc"] >= 0.95


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
