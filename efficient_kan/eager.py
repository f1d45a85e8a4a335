"""The PyTorch path's fast case: the whole layer as one autograd Function, for eager CPU calls.

The general PyTorch path (:func:`efficient_kan.reference.kan_linear_reference`) is built for every
transform (``vmap``, ``torch.func``, ``torch.compile``, ``torch.export``, double backward) and pays
for it in small ops: a dense basis tensor from one Function, a weight scaling, two products and an
add, each a node of the autograd graph. On a CPU at MNIST-sized batches those small ops, not the
products, set the time. Here the layer is one Function:

- forward: the span and the ``spline_order + 1`` non-zero local bases of each input (closed form on
  uniform knots, de Boor's scheme elsewhere; see :func:`efficient_kan.bspline.local_bases`), placed
  straight into the expanded input ``A = [B(x) | act(x)]`` of shape ``(N, in * (n_bases + 1))``
  (the floor's), then ``y = B @ (spline_weight * spline_scaler).T + act @ base_weight.T + bias``.
  The local derivatives come out of the same pass when ``x`` needs a gradient.
- backward: ``dY @ W`` at the basis lanes, gathered at the forward's lane indices and times the local
  derivatives, plus ``act'(x) * (dY @ base_weight)`` for ``dx``; ``dY.T @ A`` for the weights; no
  basis is recomputed.
- without a graph to record (``no_grad``, ``inference_mode``) the Function is skipped and the
  expanded input is a per-thread scratch buffer, as the scaled spline weight and backward's
  temporaries always are (:class:`_Workspace`).

The function is the reference's; only the order of floating-point operations differs. Whatever this
Function does not cover goes to the reference: derivatives of the backward (``create_graph=True``)
run its explicit, differentiable backward formula; forward-mode AD its ``jvp`` formula; ``torch.func``
transforms, ``torch.compile``/``torch.export``, autocast, other devices and dtypes, and callable
activations never enter here (:func:`eager_path_applies`).
"""

from __future__ import annotations

import math
import threading

import torch
from torch.autograd import forward_ad

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


# The workspace below keeps no buffer larger than this (a larger temporary, say of a huge batch, is
# allocated for its call and freed), so it holds at most a few times this per thread.
_WORKSPACE_MAX_BYTES = 40 << 20
# The scaled spline weight (and backward's weight gradient) is made in blocks of input features of
# at most this size, so that it fits the workspace. One block where it fits: a block's slice of the
# weights is not contiguous, and the scaling of two blocks measured 6.7 ms against 4.5 ms for one
# at 1024 -> 1024, grid 5 (every layer of the CPU benchmark is one block).
_BLOCK_BYTES = _WORKSPACE_MAX_BYTES


class _Workspace(threading.local):
    """Per-thread scratch buffers, one per named slot and dtype, grown as needed.

    Large temporaries allocated per call are returned to the operating system by glibc and their
    pages faulted in again on the next call, which on CPU costs as much as the arithmetic at
    MNIST-sized layers. A buffer here backs only tensors that live within one forward or backward
    call: nothing from it is returned, saved for backward, or alive across calls. Per thread, so
    concurrent calls from several threads do not share one.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, torch.dtype, bool], torch.Tensor] = {}

    def get(self, slot: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` backed by ``slot``'s buffer (a fresh one
        above ``_WORKSPACE_MAX_BYTES``)."""
        numel = math.prod(shape)
        if numel * dtype.itemsize > _WORKSPACE_MAX_BYTES:
            return torch.empty(shape, dtype=dtype)
        # A buffer made under inference_mode cannot be written outside it: one per mode.
        key = (slot, dtype, torch.is_inference_mode_enabled())
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=dtype)
            self.buffers[key] = buf
        return buf[:numel].view(shape)


_WORKSPACE = _Workspace()


def _feature_blocks(n_in: int, n_out: int, lanes: int, itemsize: int) -> list[tuple[int, int]]:
    """Ranges ``(start, stop)`` of input features whose share of ``[spline | base]`` weights is about
    ``_BLOCK_BYTES``."""
    if n_in == 0:
        return [(0, 0)]
    n_blocks = max(1, -(-(n_in * n_out * lanes * itemsize) // _BLOCK_BYTES))
    step = -(-n_in // n_blocks)
    return [(i, min(i + step, n_in)) for i in range(0, n_in, step)]


def _scaled_spline_weight(
    spline_weight: torch.Tensor, spline_scaler: torch.Tensor | None, start: int, stop: int
) -> torch.Tensor:
    """``spline_weight * spline_scaler`` of the input features ``start:stop``, ``(O, width * n_bases)``,
    in the workspace (contiguous, so the product runs as one flat loop)."""
    spline_weight = spline_weight[:, start:stop]
    spline_scaler = None if spline_scaler is None else spline_scaler[:, start:stop]
    n_out, width, n_bases = spline_weight.shape
    if spline_scaler is None and spline_weight.is_contiguous():
        return spline_weight.view(n_out, width * n_bases)
    scaled = _WORKSPACE.get("scaled", (n_out, width, n_bases), spline_weight.dtype)
    if spline_scaler is None:
        scaled.copy_(spline_weight)
    else:
        torch.mul(spline_weight, spline_scaler.unsqueeze(-1), out=scaled)
    return scaled.view(n_out, width * n_bases)


def _forward(
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    bias: torch.Tensor | None,
    spline_order: int,
    act: str,
    need_dx: bool,
    record: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(y, expanded, index, derivs)`` of 2-D ``x``; see :class:`_KANLinearEager`.

    ``record``: whether backward will use the intermediates. Without it the expanded input is a
    workspace temporary and only ``y`` is returned (the rest None).
    """
    n, n_in = x.shape
    n_out, _, n_bases = spline_weight.shape
    lanes = n_bases + 1
    index, values, derivs = local_bases(x, grid, spline_order, need_dx)  # (K+1, N, I) each
    values = values.to(x.dtype)
    if record:
        expanded = x.new_zeros(n, n_in * lanes)
    else:
        expanded = _WORKSPACE.get("expanded", (n, n_in * lanes), x.dtype).zero_()
    y = None
    for start, stop in _feature_blocks(n_in, n_out, lanes, x.element_size()):
        first, split, last = start * lanes, start * lanes + (stop - start) * n_bases, stop * lanes
        # Dropped lanes carry 0 at a clamped index that may repeat a kept one: add, not assign.
        expanded[:, first:split].view(n, stop - start, n_bases).scatter_add_(
            2, index[..., start:stop].permute(1, 2, 0), values[..., start:stop].permute(1, 2, 0)
        )
        if act == "silu":
            torch.ops.aten.silu.out(x[:, start:stop], out=expanded[:, split:last])
        else:
            expanded[:, split:last] = x[:, start:stop]
        spline = _scaled_spline_weight(spline_weight, spline_scaler, start, stop)
        part = expanded[:, first:split]
        if y is None:
            y = torch.mm(part, spline.t()) if bias is None else torch.addmm(bias, part, spline.t())
        else:
            y.addmm_(part, spline.t())
        y.addmm_(expanded[:, split:last], base_weight[:, start:stop].t())
    if not record:  # nothing may keep a view of the workspace
        return y, None, None, None
    return y, expanded, index, derivs


def _input_grad_block(
    grad_y, x, dx, base_weight, spline_weight, spline_scaler, index, derivs, act_grad, start, stop
) -> None:
    """Write ``dx[:, start:stop]`` of one block of input features: ``dY @ W`` of the block's
    spline lanes gathered at the forward's lane indices times the local derivatives, plus the base
    branch's ``act'(x) * (dY @ base_weight)`` (``act_grad`` None: SiLU's own backward)."""
    n, width = x.shape[0], stop - start
    n_bases = spline_weight.shape[-1]
    spline = _scaled_spline_weight(spline_weight, spline_scaler, start, stop)
    d_exp = torch.mm(grad_y, spline, out=_WORKSPACE.get("d_exp", (n, width * n_bases), x.dtype))
    g_act = torch.mm(grad_y, base_weight[:, start:stop], out=_WORKSPACE.get("g_act", (n, width), x.dtype))
    xs, dxs = x[:, start:stop], dx[:, start:stop]
    if act_grad is None:
        torch.ops.aten.silu_backward.grad_input(g_act, xs, grad_input=dxs)
    else:
        torch.mul(g_act, act_grad(xs), out=dxs)
    # Gathered lanes first: the sum over lanes then runs over contiguous rows.
    g_bases = _WORKSPACE.get("g_bases", (index.shape[0], n, width), x.dtype)
    torch.gather(
        d_exp.view(n, width, n_bases),
        2,
        index[..., start:stop].permute(1, 2, 0),
        out=g_bases.permute(1, 2, 0),
    )
    for lane, d_lane in zip(g_bases, derivs[..., start:stop], strict=True):
        dxs.addcmul_(lane, d_lane)


def _weight_grads_block(
    grad_t, expanded, spline_weight, spline_scaler, dbw, dsw, dsc, ones, start, stop
) -> None:
    """Write the weight gradients of one block of input features from ``dY^T @ A`` of the block's
    lanes: ``dbw``/``dsw`` columns, and ``dsc`` (None: not wanted) with ``ones`` of ``(n_bases, 1)``."""
    n_out, n_in, n_bases = spline_weight.shape
    width = stop - start
    split, first = width * n_bases, start * (n_bases + 1)
    d_weight = torch.mm(
        grad_t, expanded[:, first : first + split],
        out=_WORKSPACE.get("d_weight", (n_out, split), expanded.dtype),
    )  # fmt: skip
    if width == n_in:
        torch.mm(grad_t, expanded[:, first + split : first + split + width], out=dbw)
    else:
        dbw[:, start:stop] = grad_t @ expanded[:, first + split : first + split + width]
    d_spline = d_weight.view(n_out, width, n_bases)
    if spline_scaler is None:
        dsw[:, start:stop] = d_spline
        return
    if dsc is not None:
        # The per-weight dot products over the bases: a product with ones sums the short rows
        # faster than a reduction over the last dimension.
        prods = _WORKSPACE.get("prods", (n_out * width, n_bases), expanded.dtype)
        torch.mul(d_spline, spline_weight[:, start:stop], out=prods.view(n_out, width, n_bases))
        dsc[:, start:stop] = torch.mm(prods, ones).view(n_out, width)
    torch.mul(d_spline, spline_scaler[:, start:stop].unsqueeze(-1), out=dsw[:, start:stop])


class _KANLinearEager(torch.autograd.Function):
    """The layer on 2-D ``x``; returns ``y`` and the intermediates backward reuses.

    The expanded input ``A`` (shape ``(N, I * (n_bases + 1))``, the floor's) holds the basis
    values and ``act(x)`` of every input feature, grouped in blocks of features (see
    :func:`_feature_blocks`): per block, first its ``n_bases`` lanes per feature, then its
    activations, so that every elementwise step runs over contiguous rows. Per block, the scaled
    spline weight is made in the workspace (:func:`_scaled_spline_weight`; backward makes it again
    rather than keeping a copy of the weights' size alive) and two products (spline lanes, base
    lanes) add into ``y``. One product over ``[spline * scaler | base]`` packed side by side was
    measured 1-5% slower on the CPU benchmark's rows: writing the packed weight's strided rows
    costs more than the second, small product.

    ``forward``/``setup_context`` style; the extra outputs (expanded input, lane indices, local
    derivatives) are non-differentiable and dropped by :func:`kan_linear_eager`. Only calls that
    record a graph or carry forward-mode tangents come here (:func:`_forward` runs the others), so
    they are always fresh tensors.
    """

    @staticmethod
    def forward(x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act, need_dx):
        y, expanded, index, derivs = _forward(
            x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act, need_dx, True
        )
        # Autograd Functions return tensors: an empty one means "not computed".
        return y, expanded, index, x.new_empty(0) if derivs is None else derivs

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act, _ = inputs
        _, expanded, index, derivs = output
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(x, grid, base_weight, spline_weight, spline_scaler, expanded, index, derivs)
        ctx.save_for_forward(x, grid, base_weight, spline_weight, spline_scaler, bias)
        ctx.spline_order, ctx.act = spline_order, act

    @staticmethod
    def backward(ctx, grad_y, *_unused):
        x, grid, base_weight, spline_weight, spline_scaler, expanded, index, derivs = ctx.saved_tensors
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
        lanes = n_bases + 1
        dx = dbw = dsw = dsc = db = None
        need_weights = need[2] or need[3] or need[4]
        act_grad = ones = None
        if need[0]:
            if derivs.numel() == 0 and x.numel() != 0:
                raise RuntimeError(
                    "kan_linear_eager: x needs a gradient but the forward ran without derivatives"
                )
            dx = x.new_empty(n, n_in)
            derivs = derivs.to(x.dtype)
            if ctx.act != "silu":
                act_grad = activation_grad_fn(ctx.act)
        if need_weights:
            dbw = base_weight.new_empty(n_out, n_in)
            dsw = spline_weight.new_empty(n_out, n_in, n_bases)
            if spline_scaler is not None and need[4]:
                dsc = spline_scaler.new_empty(n_out, n_in)
                ones = spline_weight.new_ones(n_bases, 1)
        # A broadcast gradient (from ``y.sum()``, stride 0) sends the products below off BLAS's
        # fast path; a copy of (N, O) costs far less.
        grad_y = grad_y.contiguous()
        grad_t = grad_y.t()
        for start, stop in _feature_blocks(n_in, n_out, lanes, x.element_size()):
            if need[0]:
                _input_grad_block(
                    grad_y, x, dx, base_weight, spline_weight, spline_scaler, index, derivs, act_grad,
                    start, stop,
                )  # fmt: skip
            if need_weights:
                _weight_grads_block(
                    grad_t, expanded, spline_weight, spline_scaler, dbw, dsw, dsc, ones, start, stop
                )
        if need[5]:
            db = grad_y.sum(0)
        dbw, dsw = (dbw if need[2] else None), (dsw if need[3] else None)
        return dx, None, dbw, dsw, dsc, db, None, None, None

    @staticmethod
    def jvp(ctx, x_t, grid_t, bw_t, sw_t, sc_t, bias_t, *_unused):
        y_t = kan_linear_reference_jvp(
            ctx.saved_tensors,
            (x_t, grid_t, bw_t, sw_t, sc_t, bias_t),
            spline_order=ctx.spline_order,
            base_activation=ctx.act,
        )
        return y_t, None, None, None


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
    weights = (base_weight, spline_weight, spline_scaler, bias)
    x2 = x if x.dim() == 2 else x.reshape(-1, n_in)  # no view node for the common 2-D input
    grad_mode = torch.is_grad_enabled()
    need_dx = x.requires_grad and grad_mode
    record = grad_mode and (x.requires_grad or any(w is not None and w.requires_grad for w in weights))
    if record or forward_ad._current_level >= 0:
        y = _KANLinearEager.apply(x2, grid, *weights, spline_order, base_activation, need_dx)[0]
    else:
        # No graph and no forward-mode tangents (a dual level is open): nothing for the Function
        # to do, so its overhead is skipped and the expanded input is a workspace temporary.
        y = _forward(x2, grid, *weights, spline_order, base_activation, False, False)[0]
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], y.shape[-1])
