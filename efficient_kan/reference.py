"""The KAN layer in plain PyTorch: the CPU implementation and the oracle for the fused kernels.

``y = act(x) @ base_weight.T + bases(x) @ (spline_weight * spline_scaler).T + bias``, with the
bases flattened to width ``in_features * (grid_size + spline_order)`` so the spline branch is one
dense product. Everything kernels and benchmarks are checked against comes through here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .bspline import bspline_basis

__all__ = ["kan_linear_reference", "resolve_activation", "scaled_spline_weight"]

Activation = str | Callable[[torch.Tensor], torch.Tensor]

_NAMED_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "identity": lambda t: t,
}


def resolve_activation(base_activation: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """Map ``"silu"`` / ``"identity"`` or any callable to a callable."""
    if callable(base_activation):
        return base_activation
    try:
        return _NAMED_ACTIVATIONS[base_activation]
    except KeyError:
        raise ValueError(
            f"unknown base_activation {base_activation!r}: use one of {sorted(_NAMED_ACTIVATIONS)} or a callable"
        ) from None


class _ScaleSpline(torch.autograd.Function):
    """``spline_weight * spline_scaler[..., None]`` with a backward that does not broadcast.

    Autograd's own backward of the broadcast product materialises ``grad * spline_weight`` over
    ``(out, in, G + K)`` before reducing it; a contraction gives the scaler's gradient directly.
    """

    @staticmethod
    def forward(ctx, spline_weight: torch.Tensor, spline_scaler: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(spline_weight, spline_scaler)
        return spline_weight * spline_scaler.unsqueeze(-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        spline_weight, spline_scaler = ctx.saved_tensors
        grad_weight = grad * spline_scaler.unsqueeze(-1) if ctx.needs_input_grad[0] else None
        grad_scaler = torch.einsum("oic,oic->oi", grad, spline_weight) if ctx.needs_input_grad[1] else None
        return grad_weight, grad_scaler


def scaled_spline_weight(spline_weight: torch.Tensor, spline_scaler: torch.Tensor | None) -> torch.Tensor:
    """``spline_weight * spline_scaler[..., None]`` (or ``spline_weight`` when there is no scaler)."""
    if spline_scaler is None:
        return spline_weight
    return _ScaleSpline.apply(spline_weight, spline_scaler)


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
    ``spline_scaler (O, I)`` or None, ``bias (O,)`` or None. No input validation here (the module
    validates once); differentiable in ``x`` and every weight, not in ``grid``.
    """
    out_features, in_features, n_bases = spline_weight.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_features)
    act = resolve_activation(base_activation)
    y = F.linear(act(x2), base_weight, bias)
    bases = bspline_basis(x2, grid, spline_order)
    weight = scaled_spline_weight(spline_weight, spline_scaler)
    y = y + F.linear(bases.reshape(x2.shape[0], in_features * n_bases), weight.reshape(out_features, -1))
    return y.reshape(*lead, out_features)
