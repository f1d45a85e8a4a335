"""The PyTorch path's fast case: the whole layer as one autograd Function, for eager CPU calls.

The general PyTorch path (:func:`efficient_kan.reference.kan_linear_reference`) is built for every
transform (``vmap``, ``torch.func``, ``torch.compile``, ``torch.export``, double backward) and pays
for it in small ops: a dense basis tensor from one Function, a weight scaling, two products and an
add, each a node of the autograd graph. On a CPU at MNIST-sized batches those small ops, not the
products, set the time. Here the layer is one Function:

- forward: the span and the ``spline_order + 1`` non-zero local bases of each input (closed form on
  uniform knots, de Boor's scheme elsewhere; see :func:`efficient_kan.bspline.local_bases`), placed
  straight into the expanded input ``A`` of shape ``(N, in * n_bases)``, then
  ``y = act(x) @ base_weight.T + A @ (spline_weight * spline_scaler).T + bias`` as two products into
  one output. The local derivatives come out of the same pass when ``x`` needs a gradient.
- backward: ``dA = dY @ W`` gathered at the forward's lane indices times the local derivatives for
  ``dx``; ``dY.T @ A`` for the weights; no basis is recomputed.

The function is the reference's; only the order of floating-point operations differs. Whatever this
Function does not cover goes to the reference: derivatives of the backward (``create_graph=True``)
run its explicit, differentiable backward formula; forward-mode AD its ``jvp`` formula; ``torch.func``
transforms, ``torch.compile``/``torch.export``, autocast, other devices and dtypes, and callable
activations never enter here (:func:`eager_path_applies`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .activations import activation_grad_fn, kernel_code
from .bspline import local_bases
from .reference import kan_linear_reference_backward, kan_linear_reference_jvp

__all__ = ["eager_path_applies", "kan_linear_eager"]

_DTYPES = (torch.float32, torch.float64)


def eager_path_applies(
    x: torch.Tensor,
    grid: torch.Tensor,
    weights: tuple[torch.Tensor | None, ...],
    base_activation: object,
) -> bool:
    """Whether :func:`kan_linear_eager` computes this call (all Python checks, no device work).

    CPU tensors in float32/float64 with every weight in ``x``'s dtype, a named activation
    (``"silu"``, ``"identity"``), no autocast, and plain eager execution: not traced by
    ``torch.compile``/``torch.export`` and not inside a ``torch.func`` transform (the reference
    path, which has rules for every transform, runs those).
    """
    if x.device.type != "cpu" or x.dtype not in _DTYPES or grid.device.type != "cpu":
        return False
    if not isinstance(base_activation, str) or kernel_code(base_activation) is None:
        return False
    if any(w is not None and (w.dtype != x.dtype or w.device.type != "cpu") for w in weights):
        return False
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    if torch._C._are_functorch_transforms_active() or torch.is_autocast_enabled("cpu"):
        return False
    # Tensor subclasses (fake tensors of tracers, DTensor, ...) take the general path.
    return type(x) is torch.Tensor and type(grid) is torch.Tensor


def _spline_weight(spline_weight: torch.Tensor, spline_scaler: torch.Tensor | None) -> torch.Tensor:
    """``(O, I * n_bases)`` spline weight with the scaler applied (one pass, no other copy)."""
    n_out = spline_weight.shape[0]
    if spline_scaler is None:
        return spline_weight.reshape(n_out, -1)
    return torch.mul(spline_weight, spline_scaler.unsqueeze(-1)).view(n_out, -1)


class _KANLinearEager(torch.autograd.Function):
    """The layer on 2-D ``x``; returns ``y`` and the intermediates backward reuses.

    ``forward``/``setup_context`` style; the extra outputs (expanded input, activation, lane
    indices, local derivatives, scaled spline weight) are non-differentiable and dropped by
    :func:`kan_linear_eager`.
    """

    @staticmethod
    def forward(x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act, need_dx):
        n, n_in = x.shape
        n_bases = spline_weight.shape[-1]
        index, values, derivs = local_bases(x, grid, spline_order, need_dx)  # (K+1, N, I) each
        index = index.permute(1, 2, 0)  # lanes last, as the expanded input has them
        expanded = x.new_zeros(n, n_in * n_bases)
        # Dropped lanes carry 0 at a clamped index that may repeat a kept one: add, not assign.
        expanded.view(n, n_in, n_bases).scatter_add_(2, index, values.permute(1, 2, 0).to(x.dtype))
        activated = F.silu(x) if act == "silu" else x
        weight = _spline_weight(spline_weight, spline_scaler)
        if bias is None:
            y = torch.mm(activated, base_weight.t())
        else:
            y = torch.addmm(bias, activated, base_weight.t())
        y.addmm_(expanded, weight.t())
        # Autograd Functions return tensors: an empty one means "not computed" (derivatives) or
        # "x itself" (the identity activation; an input returned as an output cannot be saved).
        if derivs is None:
            derivs = x.new_empty(0)
        if act != "silu":
            activated = x.new_empty(0)
        return y, expanded, activated, index, derivs, weight

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act, _ = inputs
        _, expanded, activated, index, derivs, weight = output
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(
            x, grid, base_weight, spline_weight, spline_scaler, expanded, activated, index, derivs, weight
        )
        ctx.save_for_forward(x, grid, base_weight, spline_weight, spline_scaler, bias)
        ctx.spline_order, ctx.act = spline_order, act

    @staticmethod
    def backward(ctx, grad_y, *_unused):
        x, grid, base_weight, spline_weight, spline_scaler, expanded, activated, index, derivs, weight = (
            ctx.saved_tensors
        )
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():
            # A differentiable backward is wanted (create_graph=True): the reference's formula.
            grads = kan_linear_reference_backward(
                grad_y, x, grid, base_weight, spline_weight, spline_scaler,
                spline_order=ctx.spline_order, base_activation=ctx.act,
            )  # fmt: skip
            dx, dbw, dsw, dsc, db = (
                g if need[i] else None for i, g in zip((0, 2, 3, 4, 5), grads, strict=True)
            )
            return dx, None, dbw, dsw, dsc, db, None, None, None
        n, n_in = x.shape
        n_out, _, n_bases = spline_weight.shape
        dx = dbw = dsw = dsc = db = None
        if need[0]:
            if derivs.numel() == 0:
                raise RuntimeError(
                    "kan_linear_eager: x needs a gradient but the forward ran without derivatives"
                )
            g_bases = torch.mm(grad_y, weight).view(n, n_in, n_bases).gather(2, index)
            g_act = torch.mm(grad_y, base_weight)
            if ctx.act == "silu":
                dx = torch.ops.aten.silu_backward(g_act, x)
            else:
                dx = g_act * activation_grad_fn(ctx.act)(x)
            dx = dx + torch.linalg.vecdot(g_bases, derivs.permute(1, 2, 0).to(g_bases.dtype))
        if need[2]:
            dbw = torch.mm(grad_y.t(), activated if ctx.act == "silu" else x)
        if need[3] or need[4]:
            d_weight = torch.mm(grad_y.t(), expanded).view(n_out, n_in, n_bases)
            if spline_scaler is None:
                dsw = d_weight
            else:
                if need[4]:
                    # A batch of tiny dot products: bmm needs no temporary of the weight's size,
                    # which (d_weight * spline_weight).sum(-1) and vecdot allocate.
                    dsc = torch.bmm(d_weight.view(-1, 1, n_bases), spline_weight.reshape(-1, n_bases, 1))
                    dsc = dsc.view(n_out, n_in)
                if need[3]:
                    dsw = d_weight.mul_(spline_scaler.unsqueeze(-1))
        if need[5]:
            db = grad_y.sum(0)
        return dx, None, dbw, dsw, dsc, db, None, None, None

    @staticmethod
    def jvp(ctx, x_t, grid_t, bw_t, sw_t, sc_t, bias_t, *_unused):
        y_t = kan_linear_reference_jvp(
            ctx.saved_tensors,
            (x_t, grid_t, bw_t, sw_t, sc_t, bias_t),
            spline_order=ctx.spline_order,
            base_activation=ctx.act,
        )
        return y_t, None, None, None, None, None


def kan_linear_eager(
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    spline_order: int = 3,
    base_activation: str = "silu",
) -> torch.Tensor:
    """The KAN layer, same contract as :func:`efficient_kan.reference.kan_linear_reference`, for
    the calls :func:`eager_path_applies` accepts (it does not check them again)."""
    n_in = spline_weight.shape[1]
    x2 = x if x.dim() == 2 else x.reshape(-1, n_in)  # no view node for the common 2-D input
    need_dx = x.requires_grad and torch.is_grad_enabled()
    y = _KANLinearEager.apply(
        x2, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, base_activation, need_dx
    )[0]
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], y.shape[-1])
