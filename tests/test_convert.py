"""from_linear and kanify: converting existing models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from efficient_kan import KANLinear, kanify

from .utils import assert_close


@pytest.mark.parametrize("bias", [True, False])
def test_from_linear_init_linear_computes_the_linear_map(bias):
    torch.manual_seed(0)
    linear = nn.Linear(7, 5, bias=bias, dtype=torch.float64)
    layer = KANLinear.from_linear(linear, init="linear", grid_size=4)
    assert (layer.bias is not None) == bias and layer.base_weight.dtype == torch.float64
    x = torch.randn(11, 7, dtype=torch.float64) * 3  # also outside the grid
    assert_close(layer(x), linear(x), atol=1e-12, rtol=1e-12)
    # The splines then learn: their weights get gradients.
    layer(x).square().sum().backward()
    assert layer.spline_weight.grad.abs().sum() > 0


def test_from_linear_default_is_a_fresh_kan():
    linear = nn.Linear(4, 3)
    layer = KANLinear.from_linear(linear, grid_size=3, spline_order=2)
    assert isinstance(layer.base_activation, nn.SiLU) and layer.grid_size == 3 and layer.spline_order == 2
    assert not torch.equal(layer.base_weight, linear.weight)


def test_from_linear_rejects_bad_arguments():
    with pytest.raises(TypeError, match="nn.Linear"):
        KANLinear.from_linear(nn.Conv1d(3, 3, 1))
    with pytest.raises(ValueError, match="init"):
        KANLinear.from_linear(nn.Linear(3, 3), init="zeros")
    with pytest.raises(ValueError, match="Identity"):
        KANLinear.from_linear(nn.Linear(3, 3), init="linear", base_activation=nn.SiLU)


def test_kanify_sequential_keeps_function_with_init_linear():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Tanh()), nn.Linear(8, 2)
    )
    x = torch.randn(5, 6)
    expected = model(x)
    names = kanify(model, init="linear")
    assert names == ["0", "2.0", "3"]
    assert all(isinstance(model.get_submodule(n), KANLinear) for n in names)
    assert_close(model(x), expected, atol=1e-6, rtol=1e-6)
    assert kanify(model) == []  # nothing left to convert


def test_kanify_filter_and_kwargs():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    names = kanify(model, filter=lambda mod, fqn: mod.out_features == 2, grid_size=7)
    assert names == ["1"] and isinstance(model[0], nn.Linear) and model[1].grid_size == 7


def test_kanify_leaves_multihead_attention_out_proj_alone():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.ff = nn.Linear(8, 8)

        def forward(self, x):
            return self.ff(self.attn(x, x, x)[0])

    model = Block()
    with pytest.warns(UserWarning, match=r"attn\.out_proj"):
        names = kanify(model)
    assert names == ["ff"]
    assert type(model.attn.out_proj) is not KANLinear
    assert model(torch.randn(2, 3, 8)).shape == (2, 3, 8)


def test_kanify_rejects_a_bare_linear():
    with pytest.raises(ValueError, match="from_linear"):
        kanify(nn.Linear(3, 3))
