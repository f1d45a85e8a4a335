"""The Triton path of :func:`efficient_kan.kan_linear`: autograd, precision and autocast policy,
and the ``torch.library`` custom ops that ``torch.compile`` sees.

Two ways in, one autograd formula (``_setup_context`` + ``_backward``):

- eager: :class:`KANLinearFunction` (a ``torch.autograd.Function``, the least Python per call,
  which matters for small, launch-bound batches), with ``vmap`` and ``jvp`` rules;
- under ``torch.compile``/``torch.export``: the custom ops ``efficient_kan::kan_linear`` and
  ``efficient_kan::kan_linear_backward`` with fake implementations and the same autograd formula
  registered, so a model of ``KANLinear``s traces with ``fullgraph=True`` and no graph break.

Both run one of two strategies (:func:`choose_strategy`): ``fused`` (``kernels/fused.py``:
the basis lives only in registers, the scaled spline weight is packed on load) or
``chunked`` (``kernels/chunked.py``: the expanded input in bounded slices, multiplied by
cuBLAS). Both save only ``x`` (in the operand dtype) and the parameters for backward; the
``(batch, in, grid_size + spline_order)`` basis is recomputed in backward, never stored whole.

Precision: accumulation is fp32 (fp64 for fp64 inputs). For fp32 operands the products follow
PyTorch's fp32 matmul setting (legacy ``set_float32_matmul_precision``/``allow_tf32`` or the newer
``fp32_precision``): IEEE unless TF32 is allowed. Under ``torch.autocast`` the input is cast to the
autocast dtype like ``nn.Linear``'s, the weights are packed in their own precision and cast to it,
and the output has the autocast dtype. Knot arithmetic is always at least fp32.

Fused base activations: ``"silu"`` and ``"identity"`` (:mod:`efficient_kan.activations`); anything
else raises here (the dispatcher in ``functional.py`` sends other activations to the PyTorch path).
"""

from __future__ import annotations

import torch

from efficient_kan.kernels import chunked_bwd, chunked_fwd, kan_bwd_dw, kan_bwd_dx, kan_fwd
from efficient_kan.kernels._config import interpreting

from .activations import FUSED, activation_name, kernel_code
from .reference import kan_linear_reference, kan_linear_reference_backward, kan_linear_reference_jvp
from .settings import settings

# TRITON_INTERPRET is read once (it must be set before triton is imported); a constant here keeps
# functools.cache out of what torch.compile traces.
_INTERPRETER = interpreting()

__all__ = [
    "kan_linear_triton",
    "choose_strategy",
    "KANLinearFunction",
]


def _fp32_matmul_allows_tf32() -> bool:
    """PyTorch's fp32 matmul setting for CUDA, whichever API the user set it with.

    Newer PyTorch has ``torch.backends.cuda.matmul.fp32_precision`` (and a global
    ``torch.backends.fp32_precision``); once a user sets those, reading the legacy getters raises,
    so the new ones are read first, and the legacy ones only while the new ones say ``"none"``.
    """
    matmul = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if matmul is not None:
        for value in (matmul, getattr(torch.backends, "fp32_precision", "none")):
            if value == "tf32":
                return True
            if value == "ieee":
                return False
    try:
        return torch.get_float32_matmul_precision() != "highest" or bool(
            torch.backends.cuda.matmul.allow_tf32
        )
    except RuntimeError:  # a mix of the APIs that PyTorch refuses to report: IEEE, the safe reading
        return False


def _input_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision for operands of ``dtype``: honour PyTorch's fp32 matmul setting."""
    if dtype != torch.float32:
        return "ieee"  # bf16/fp16 products are exact in fp32; fp64 is fp64
    return "tf32" if _fp32_matmul_allows_tf32() else "ieee"


# ---------------------------------------------------------------------------------------------
# Strategy: fused kernels, or the expanded input in bounded chunks feeding cuBLAS.


def choose_strategy(batch: int, n_in: int, n_out: int, dtype: torch.dtype = torch.float32) -> str:
    """``"fused"`` or ``"chunked"`` for one call: ``efficient_kan.settings().strategy`` and, when
    it is ``"auto"``, the shape.

    Both compute the same function to rounding. ``fused`` (``kernels/fused.py``: one launch
    forward, two backward, the basis only in registers) suits small, launch-bound calls; ``chunked``
    (``kernels/chunked.py``: Triton writes the expanded input in slices of at most ``chunk_bytes``, cuBLAS
    multiplies them) suits large ones, where the fused kernels' per-tile basis work, not the
    product, sets the time. The ``auto`` threshold (batch >= 1024 and out >= 128) is a first guess,
    to be set from ``benchmarks/bench_layer.py``, which times both. fp64 always takes ``chunked``
    under ``auto``: its products then run in cuBLAS's fp64 GEMM rather than Triton's fp64 ``tl.dot``.
    """
    chosen = settings().strategy
    if chosen != "auto":
        return chosen
    if dtype == torch.float64:
        return "chunked"
    return "chunked" if batch >= 1024 and n_out >= 128 else "fused"


# ---------------------------------------------------------------------------------------------
# The implementation both paths share.


def _forward_impl(x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act):
    args = (x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act)
    if choose_strategy(x.shape[0], x.shape[1], base_weight.shape[0], x.dtype) == "chunked":
        return chunked_fwd(*args, settings().chunk_bytes)
    return kan_fwd(*args, _input_precision(x.dtype))


def _backward_impl(
    grad_y, x, grid, base_weight, spline_weight, spline_scaler, spline_order, act, need_dx, need_dw, need_db
):
    """``(dx, d_base_weight, d_spline_weight, d_scaler, d_bias)``, each None when not needed (and
    ``d_scaler`` when there is no scaler); weight and bias gradients in the accumulator dtype,
    ``dx`` in ``x.dtype``."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if choose_strategy(x.shape[0], x.shape[1], base_weight.shape[0], x.dtype) == "chunked":
        dx, dbw, dsw, dsc = chunked_bwd(
            grad_y, x, grid, base_weight, spline_weight, spline_scaler, spline_order, act,
            need_dx, need_dw, settings().chunk_bytes,
        )  # fmt: skip
        return dx, dbw, dsw, dsc, grad_y.sum(0, dtype=acc) if need_db else None
    prec = _input_precision(x.dtype)
    dx = dbw = dsw = dsc = db = None
    if need_dx:
        dx = kan_bwd_dx(grad_y, x, grid, base_weight, spline_weight, spline_scaler, spline_order, act, prec)
    if need_dw:  # the weight-gradient kernel sums the bias gradient too
        dbw, dsw, dsc, db = kan_bwd_dw(
            grad_y, x, grid, spline_weight, spline_scaler, spline_order, act, prec, need_db
        )
    elif need_db:
        db = grad_y.sum(0, dtype=acc)
    return dx, dbw, dsw, dsc, db


def _as(t: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` in ``like``'s dtype (no copy when it already is); None stays None."""
    if t is None or like is None:
        return None
    return t if t.dtype == like.dtype else t.to(like.dtype)


# ---------------------------------------------------------------------------------------------
# Autograd: one setup_context/backward pair, used by the eager Function and the custom op.


def _setup_context(ctx, inputs, output) -> None:
    x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act = inputs
    ctx.save_for_backward(x, grid, base_weight, spline_weight, spline_scaler, bias)
    ctx.spline_order, ctx.act = spline_order, act


def _backward(ctx, grad_y):
    """Gradients of ``(x, grid, base_weight, spline_weight, spline_scaler, bias, order, act)``.

    First-order backward runs on the kernels. When the backward must itself be differentiable
    (``create_graph=True``, ``torch.func.grad`` and friends, which run it with grad mode on), it is
    the PyTorch formulation's vector-Jacobian product instead: same function, and exact derivatives
    of every order.
    """
    x, grid, base_weight, spline_weight, spline_scaler, bias = ctx.saved_tensors
    need = ctx.needs_input_grad
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        dx, dbw, dsw, dsc, db = kan_linear_reference_backward(
            grad_y, x, grid, base_weight, spline_weight, spline_scaler,
            spline_order=ctx.spline_order, base_activation=activation_name(ctx.act),
        )  # fmt: skip
    else:
        # Under torch.compile the backward is the opaque custom op; eagerly, a direct call (less
        # Python per step for small, launch-bound batches).
        impl = (
            torch.ops.efficient_kan.kan_linear_backward if torch.compiler.is_compiling() else _backward_impl
        )
        dx, dbw, dsw, dsc, db = impl(
            grad_y, x, grid, base_weight, spline_weight, spline_scaler,
            ctx.spline_order, ctx.act, need[0], any(need[2:5]), need[5],
        )  # fmt: skip
    return (
        dx if need[0] else None,
        None,
        _as(dbw, base_weight) if need[2] else None,
        _as(dsw, spline_weight) if need[3] else None,
        _as(dsc, spline_scaler) if need[4] else None,
        _as(db, bias) if need[5] else None,
        None,
        None,
    )


def _reference(spline_order: int, act: int):
    """The PyTorch formulation of the same layer, as a function of the six tensor arguments."""
    name = activation_name(act)

    def fn(*tensors):
        return kan_linear_reference(*tensors, spline_order=spline_order, base_activation=name)

    return fn


class KANLinearFunction(torch.autograd.Function):
    """The layer on the kernels (``x`` 2-D, already in the operand dtype), for eager autograd.

    ``torch.func`` support: a batched ``x`` under ``vmap`` folds into more rows of one kernel call;
    batched weights (model ensembles) and forward-mode AD (``jvp``) run the PyTorch formulation,
    as do derivatives of the backward (see :func:`_backward`).
    """

    @staticmethod
    def forward(x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act):
        return _forward_impl(x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:6])

    backward = staticmethod(_backward)

    @staticmethod
    def jvp(ctx, x_t, grid_t, base_weight_t, spline_weight_t, spline_scaler_t, bias_t, _order_t, _act_t):
        tangents = (x_t, grid_t, base_weight_t, spline_weight_t, spline_scaler_t, bias_t)
        name = activation_name(ctx.act)
        return kan_linear_reference_jvp(
            ctx.saved_tensors, tangents, spline_order=ctx.spline_order, base_activation=name
        )

    @staticmethod
    def vmap(info, in_dims, x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act):
        x_dim, weight_dims = in_dims[0], in_dims[1:6]
        weights = (grid, base_weight, spline_weight, spline_scaler, bias)
        if x_dim is not None and all(d is None for d in weight_dims):
            xb = x.movedim(x_dim, 0)  # (vmapped, rows, in): the vmapped rows are just more rows
            y = KANLinearFunction.apply(xb.reshape(-1, xb.shape[-1]), *weights, spline_order, act)
            return y.reshape(xb.shape[0], xb.shape[1], y.shape[-1]), 0
        fn = torch.vmap(_reference(spline_order, act), in_dims=tuple(in_dims[:6]))
        return fn(x, *weights), 0


# ---------------------------------------------------------------------------------------------
# The custom ops torch.compile sees (opaque to the compiler; they run the same implementation).


@torch.library.custom_op("efficient_kan::kan_linear", mutates_args=())
def _kan_linear_op(
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    bias: torch.Tensor | None,
    spline_order: int,
    act: int,
) -> torch.Tensor:
    return _forward_impl(x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act)


@_kan_linear_op.register_fake
def _(x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act):
    return x.new_empty((x.shape[0], base_weight.shape[0]))


@torch.library.custom_op("efficient_kan::kan_linear_backward", mutates_args=())
def _kan_linear_backward_op(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    spline_order: int,
    act: int,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, d_base_weight, d_spline_weight, d_scaler, d_bias)``; an output that is not needed (or
    the scaler's when there is none) is an empty tensor, since custom ops cannot return None."""
    grads = _backward_impl(
        grad_y,
        x,
        grid,
        base_weight,
        spline_weight,
        spline_scaler,
        spline_order,
        act,
        need_dx,
        need_dw,
        need_db,
    )
    return tuple(g if g is not None else x.new_empty((0,)) for g in grads)  # type: ignore[return-value]


@_kan_linear_backward_op.register_fake
def _(
    grad_y, x, grid, base_weight, spline_weight, spline_scaler, spline_order, act, need_dx, need_dw, need_db
):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    o, i, nb = spline_weight.shape
    dx = x.new_empty(x.shape) if need_dx else x.new_empty((0,))
    dbw = x.new_empty((o, i), dtype=acc) if need_dw else x.new_empty((0,))
    dsw = x.new_empty((o, i, nb), dtype=acc) if need_dw else x.new_empty((0,))
    dsc = x.new_empty((o, i), dtype=acc) if need_dw and spline_scaler is not None else x.new_empty((0,))
    db = x.new_empty((o,), dtype=acc) if need_db else x.new_empty((0,))
    return dx, dbw, dsw, dsc, db


torch.library.register_autograd("efficient_kan::kan_linear", _backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public entry.


def kan_linear_triton(
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
    """The KAN layer on the Triton kernels; same contract as ``kan_linear_reference``.

    ``x``: ``(..., in_features)``, any strides, any batch (0 included); activations ``"silu"`` and
    ``"identity"``. No validation here: :func:`efficient_kan.kan_linear` checks once. Differentiable
    in ``x`` and every weight (not in ``grid``): first-order gradients on the kernels; higher-order
    ones, forward mode and ``vmap`` over weights through the PyTorch formulation.
    """
    act = kernel_code(base_activation)
    if act is None:
        raise ValueError(
            f"the Triton path fuses base_activation {' or '.join(map(repr, FUSED))}, got {base_activation!r}; "
            "use backend='torch' (or 'auto', which picks PyTorch for other activations)"
        )
    if not x.is_cuda and not _INTERPRETER:
        raise RuntimeError(
            "the Triton path needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is imported "
            "to run on CPU (slow; for tests)"
        )
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type) and x.dtype != torch.float64:
        # Like nn.Linear: the input becomes the autocast dtype (its backward casts the gradient back);
        # the weights are cast on load inside the kernels, after packing in their own precision.
        x = x.to(torch.get_autocast_dtype(device_type))
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    args = (x2, grid, base_weight, spline_weight, spline_scaler, bias, int(spline_order), act)
    if torch.compiler.is_compiling():
        y = torch.ops.efficient_kan.kan_linear(*args)
    else:
        y = KANLinearFunction.apply(*args)
    return y.reshape(*lead, base_weight.shape[0])
