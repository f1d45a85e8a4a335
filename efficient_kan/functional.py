"""Functional entry point: one call computes a KAN layer, on the fused Triton kernels or in PyTorch.

Dispatch happens here and nowhere else. ``backend="auto"`` picks Triton for CUDA tensors whose base
activation the kernels fuse (SiLU, identity) and PyTorch otherwise; ``"triton"`` and ``"torch"``
force one path (``"triton"`` on CPU tensors runs under ``TRITON_INTERPRET=1``). A forced backend
that cannot run raises: nothing silently switches to the other path.
"""

from __future__ import annotations

import torch

from .reference import Activation, kan_linear_reference

__all__ = ["kan_linear", "BACKENDS", "FUSED_ACTIVATIONS"]

BACKENDS = ("auto", "triton", "torch")
# Base activations the Triton kernels compute in-kernel; others take the PyTorch path.
FUSED_ACTIVATIONS = ("silu", "identity")


def _triton_usable(x: torch.Tensor, base_activation: Activation) -> bool:
    if not (x.is_cuda and isinstance(base_activation, str) and base_activation in FUSED_ACTIVATIONS):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def kan_linear(
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    spline_order: int = 3,
    base_activation: Activation = "silu",
    backend: str = "auto",
) -> torch.Tensor:
    """Apply a B-spline KAN layer to ``x`` of shape ``(..., in_features)``.

    ``y = act(x) @ base_weight.T + bases(x) @ (spline_weight * spline_scaler).T + bias``.
    See :func:`efficient_kan.reference.kan_linear_reference` for the shapes. ``base_activation``
    is ``"silu"``, ``"identity"`` or any callable (callables always run in PyTorch).
    """
    if backend == "auto":
        use_triton = _triton_usable(x, base_activation)
    elif backend == "torch":
        use_triton = False
    elif backend == "triton":
        use_triton = True
    else:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if use_triton:
        from .triton_backend import kan_linear_triton as impl
    else:
        impl = kan_linear_reference
    return impl(
        x,
        grid,
        base_weight,
        spline_weight,
        spline_scaler,
        bias,
        spline_order=spline_order,
        base_activation=base_activation,
    )
