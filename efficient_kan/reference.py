"""The KAN layer in plain PyTorch: the CPU implementation and the oracle for the fused kernels.

``y = act(x) @ base_weight.T + bases(x) @ (spline_weight * spline_scaler).T + bias``, with the
bases flattened to width ``in_features * (grid_size + spline_order)`` so the spline branch is one
dense product. Differentiable to any order in ``x`` and every weight, in reverse and forward
mode and under ``torch.func`` transforms; traceable by ``torch.compile`` and ``torch.export``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .activations import Activation, activation_fn, activation_grad_fn
from .bspline import bspline_basis, bspline_basis_derivative

__all__ = [
    "kan_linear_reference",
    "kan_linear_reference_backward",
    "kan_linear_reference_jvp",
    "scaled_spline_weight",
]


def scaled_spline_weight(spline_weight: torch.Tensor, spline_scaler: torch.Tensor | None) -> torch.Tensor:
    """``spline_weight * spline_scaler[..., None]`` (or ``spline_weight`` when there is no scaler)."""
    if spline_scaler is None:
        return spline_weight
    return spline_weight * spline_scaler.unsqueeze(-1)


def kan_linear_reference(
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    spline_order: int = 3,
    base_activation: Activation = "silu",
) -> torch.Tensor:
    """The KAN layer on ``x`` of shape ``(..., in_features)``; returns ``(..., out_features)``.

    Shapes: ``grid (I, G + 2K + 1)``, ``base_weight (O, I)``, ``spline_weight (O, I, G + K)``,
    ``spline_scaler (O, I)`` or None, ``bias (O,)`` or None. No input validation here
    (:func:`efficient_kan.kan_linear` checks once); not differentiable in ``grid``.
    """
    out_features, in_features, _ = spline_weight.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_features)
    y = F.linear(activation_fn(base_activation)(x2), base_weight, bias)
    bases = rearrange(bspline_basis(x2, grid, spline_order), "n i c -> n (i c)")
    weight = rearrange(scaled_spline_weight(spline_weight, spline_scaler), "o i c -> o (i c)")
    y = y + F.linear(bases, weight)
    return y.reshape(*lead, out_features)


# The derivatives written out, for the Triton path's higher-order and forward-mode derivatives
# (autograd cannot see through its kernels). Plain differentiable ops on 2-D ``x``, so they compose
# with torch.func transforms and with autograd to any order.


def kan_linear_reference_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    *,
    spline_order: int,
    base_activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(dx, d_base_weight, d_spline_weight, d_spline_scaler, d_bias)`` for 2-D ``x`` and
    ``grad_y``; ``d_spline_scaler`` is None without a scaler."""
    n_bases = spline_weight.shape[-1]
    weight = scaled_spline_weight(spline_weight, spline_scaler)
    bases = bspline_basis(x, grid, spline_order)
    d_bases = bspline_basis_derivative(x, grid, spline_order)
    g_act = grad_y @ base_weight  # (N, I)
    g_bases = rearrange(grad_y @ rearrange(weight, "o i c -> o (i c)"), "n (i c) -> n i c", c=n_bases)
    dx = activation_grad_fn(base_activation)(x) * g_act + (d_bases * g_bases).sum(-1)
    d_base_weight = grad_y.t() @ activation_fn(base_activation)(x)
    d_weight = rearrange(grad_y.t() @ rearrange(bases, "n i c -> n (i c)"), "o (i c) -> o i c", c=n_bases)
    if spline_scaler is None:
        d_spline_weight, d_scaler = d_weight, None
    else:
        d_spline_weight = d_weight * spline_scaler.unsqueeze(-1)
        d_scaler = (d_weight * spline_weight).sum(-1)
    return dx, d_base_weight, d_spline_weight, d_scaler, grad_y.sum(0)


def kan_linear_reference_jvp(
    primals: tuple[torch.Tensor | None, ...],
    tangents: tuple[torch.Tensor | None, ...],
    *,
    spline_order: int,
    base_activation: str,
) -> torch.Tensor:
    """The forward-mode derivative of the layer at ``primals = (x, grid, base_weight,
    spline_weight, spline_scaler, bias)`` along ``tangents`` (None: a zero tangent; the grid's is
    ignored, the layer is not differentiable in its knots); ``x`` 2-D."""
    x, grid, base_weight, spline_weight, spline_scaler, _ = primals
    x_t, _, base_weight_t, spline_weight_t, spline_scaler_t, bias_t = tangents
    n, n_out = x.shape[0], spline_weight.shape[0]
    act = activation_fn(base_activation)
    y_t = x.new_zeros(n, n_out)
    if x_t is not None:
        weight = rearrange(scaled_spline_weight(spline_weight, spline_scaler), "o i c -> o (i c)")
        y_t = y_t + F.linear(activation_grad_fn(base_activation)(x) * x_t, base_weight)
        d_bases = bspline_basis_derivative(x, grid, spline_order) * x_t.unsqueeze(-1)
        y_t = y_t + F.linear(rearrange(d_bases, "n i c -> n (i c)"), weight)
    if base_weight_t is not None:
        y_t = y_t + F.linear(act(x), base_weight_t)
    if spline_weight_t is not None or spline_scaler_t is not None:
        weight_t = x.new_zeros(spline_weight.shape)
        if spline_weight_t is not None:
            weight_t = weight_t + scaled_spline_weight(spline_weight_t, spline_scaler)
        if spline_scaler_t is not None:
            weight_t = weight_t + spline_weight * spline_scaler_t.unsqueeze(-1)
        bases = rearrange(bspline_basis(x, grid, spline_order), "n i c -> n (i c)")
        y_t = y_t + F.linear(bases, rearrange(weight_t, "o i c -> o (i c)"))
    if bias_t is not None:
        y_t = y_t + bias_t
    return y_t
