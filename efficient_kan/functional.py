"""Functional entry point: one call computes a KAN layer, on the Triton kernels or in PyTorch.

Inputs are validated here, once, and dispatch happens here and nowhere else. ``backend="auto"``
follows ``efficient_kan.settings().backend``; when that is ``"auto"`` too, Triton runs CUDA tensors
whose base activation the kernels fuse (SiLU, identity) and PyTorch the rest. ``"triton"`` and
``"torch"`` force one path (``"triton"`` on CPU tensors runs under ``TRITON_INTERPRET=1``). A forced
backend that cannot run raises: nothing silently switches path.
"""

from __future__ import annotations

import torch

from .activations import Activation, activation_fn, kernel_code
from .eager import eager_path_applies, kan_linear_eager
from .reference import kan_linear_reference
from .settings import BACKENDS, settings

__all__ = ["BACKENDS", "check_inputs", "kan_linear"]


def check_inputs(
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    bias: torch.Tensor | None,
    spline_order: int,
) -> None:
    """Raise ``ValueError``/``TypeError`` naming the problem; Python ints only (no device work).

    Shapes are compared as tuples of ints: ``torch.Size`` equality goes through the
    symbolic-shape machinery under ``torch.compile``.
    """
    n_out, n_in, n_bases = spline_weight.shape
    if x.dim() == 0 or x.shape[-1] != n_in:
        raise ValueError(f"expected input of shape (*, {n_in}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point input, got {x.dtype}")
    if spline_order < 0 or n_bases < 1 or tuple(grid.shape) != (n_in, n_bases + spline_order + 1):
        raise ValueError(
            f"grid {tuple(grid.shape)} does not match spline_weight {tuple(spline_weight.shape)} "
            f"and spline_order {spline_order}: expected grid ({n_in}, {n_bases + spline_order + 1})"
        )
    if tuple(base_weight.shape) != (n_out, n_in):
        raise ValueError(f"base_weight must be {(n_out, n_in)}, got {tuple(base_weight.shape)}")
    if spline_scaler is not None and tuple(spline_scaler.shape) != (n_out, n_in):
        raise ValueError(f"spline_scaler must be {(n_out, n_in)}, got {tuple(spline_scaler.shape)}")
    if bias is not None and tuple(bias.shape) != (n_out,):
        raise ValueError(f"bias must be {(n_out,)}, got {tuple(bias.shape)}")


def _triton_importable() -> bool:
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

    ``y = act(x) @ base_weight.T + bases(x) @ (spline_weight * spline_scaler).T + bias``; shapes as
    in :func:`efficient_kan.reference.kan_linear_reference`. ``base_activation`` is ``"silu"``,
    ``"identity"`` or any callable (callables always run in PyTorch).

    Differentiable in ``x`` and every weight, to any order, in reverse and forward mode, under
    ``torch.func`` transforms, ``torch.compile`` and ``torch.export``. On the Triton path the
    first-order backward runs on the kernels; higher-order derivatives, forward-mode AD and
    ``vmap`` over weights are computed by the PyTorch formulation of the same function.
    """
    check_inputs(x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order)
    if backend == "auto":
        backend = settings().backend
    if backend == "auto":
        use_triton = x.is_cuda and kernel_code(base_activation) is not None and _triton_importable()
    elif backend in ("torch", "triton"):
        use_triton = backend == "triton"
    else:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if use_triton:
        from .triton_backend import kan_linear_triton

        impl = kan_linear_triton
    else:
        activation_fn(base_activation)  # an unknown name raises here, before any work
        weights = (base_weight, spline_weight, spline_scaler, bias)
        # Plain eager CPU calls take the one-Function fast case; transforms, tracing and the rest
        # the reference (same function).
        impl = (
            kan_linear_eager
            if eager_path_applies(x, grid, weights, base_activation, spline_order)
            else kan_linear_reference
        )
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
