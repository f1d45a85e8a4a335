"""The PyTorch path's fast case: the whole layer as one autograd Function, for eager CPU calls.

The general PyTorch path (:func:`efficient_kan.reference.kan_linear_reference`) is built for every
transform (``vmap``, ``torch.func``, ``torch.compile``, ``torch.export``, double backward) and pays
for it in small ops: a dense basis tensor from one Function, a weight scaling, two products and an
add, each a node of the autograd graph. On a CPU at MNIST-sized batches those small ops, not the
products, set the time. Here the layer is one Function whose elementwise work runs in C
(:mod:`efficient_kan.cpu_kernels`) around the same products as the floor:

- forward: the bases of each input (closed form on uniform knots, de Boor's scheme elsewhere)
  written straight into the expanded input ``A = [B(x) | act(x)]`` of shape
  ``(N, in * (n_bases + 1))`` (the floor's), the weights packed in the same layout, and
  ``y = A @ W_packed.T + bias``: one product.
- backward: ``dY @ W_packed`` gives the gradient at every lane; the basis lanes times the bases'
  derivatives (recomputed from ``x``) and the activation lanes times ``act'(x)`` make ``dx``;
  ``dY.T @ A`` split back into the parameters' shapes makes the weight gradients.
- without a graph to record (``no_grad``, ``inference_mode``) the Function is skipped and the
  expanded input is a per-thread scratch buffer, as the packed weight and backward's temporaries
  always are (:class:`_Workspace`).

The function is the reference's; only the order of floating-point operations differs. Whatever this
Function does not cover goes to the reference: derivatives of the backward (``create_graph=True``)
run its explicit, differentiable backward formula; forward-mode AD its ``jvp`` formula; ``torch.func``
transforms, ``torch.compile``/``torch.export``, autocast, other devices and dtypes, callable
activations, and machines where the C kernels cannot be built never enter here
(:func:`eager_path_applies`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.autograd import forward_ad

from . import cpu_kernels
from .activations import kernel_code
from .bspline import _uniform_polynomials, uniform_knots
from .cpu_kernels import MAX_K, UNIFORM_ORDERS, CpuKernels, KnotInfo
from .reference import kan_linear_reference_backward, kan_linear_reference_jvp

__all__ = ["eager_path_applies", "frozen_weights", "kan_linear_eager"]

_DTYPES = (torch.float32, torch.float64)


def eager_path_applies(
    x: torch.Tensor,
    grid: torch.Tensor,
    weights: tuple[torch.Tensor | None, ...],
    base_activation: object,
    spline_order: int = 3,
) -> bool:
    """Whether :func:`kan_linear_eager` computes this call (Python checks, no device work).

    CPU tensors in float32/float64 with the grid and every weight in ``x``'s dtype, a named
    activation (``"silu"``, ``"identity"``), no autocast, and plain eager execution: not traced by
    ``torch.compile``/``torch.export`` and not inside a ``torch.func`` transform (the reference
    path, which has rules for every transform, runs those); and the C kernels loaded (built on the
    first call that gets this far, see :mod:`efficient_kan.cpu_kernels`).
    """
    if x.device.type != "cpu" or x.dtype not in _DTYPES or grid.device.type != "cpu":
        return False
    if grid.dtype != x.dtype or not 0 <= spline_order <= MAX_K:
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
    if type(x) is not torch.Tensor or type(grid) is not torch.Tensor:
        return False
    return cpu_kernels.load() is not None


# The workspace below keeps no buffer larger than this (a larger temporary, say of a huge batch, is
# allocated for its call and freed), so it holds at most a few times this per thread.
_WORKSPACE_MAX_BYTES = 40 << 20
# The packed weight (and backward's weight gradient) is made in blocks of input features of at most
# this size, so that it fits the workspace; one block where it fits (every layer of the CPU
# benchmark is one block): each block is a product of its own.
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


def _knot_info(kernels, grid: torch.Tensor, spline_order: int, dtype: torch.dtype) -> KnotInfo:
    """The grid as the basis kernels take it: the closed form's terms on uniform knots (checked once
    per change of the grid, see :func:`efficient_kan.bspline.uniform_knots`), else the knots."""
    fit = uniform_knots(grid, dtype) if spline_order in UNIFORM_ORDERS else None
    return KnotInfo(grid, spline_order, dtype, fit, _coefficients(spline_order, dtype) if fit else None)


@functools.lru_cache(maxsize=32)
def _coefficients(spline_order: int, dtype: torch.dtype) -> torch.Tensor:
    """The closed form's polynomial coefficients, ``(K + 1, K + 1)``: row ``r`` holds lane ``r``'s
    coefficients of ``t**0 .. t**K`` (exact fractions rounded once to ``dtype``)."""
    poly = _uniform_polynomials(spline_order)
    return torch.tensor([[float(c) for c in row] for row in poly], dtype=dtype)


@functools.cache
def _last_level_cache() -> int:
    """Bytes of the CPU's largest cache (Linux sysfs; 32 MiB where it cannot be read)."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=32 << 20)


def _packed_weight(kernels, base_weight, spline_weight, spline_scaler, start: int, stop: int) -> torch.Tensor:
    """The weights of input features ``start:stop`` in the expanded input's layout,
    ``(O, width * (n_bases + 1))``: per output, ``spline_weight * spline_scaler`` of the block's
    features, then their ``base_weight``; in the workspace."""
    n_out, _, n_bases = spline_weight.shape
    packed = _WORKSPACE.get("packed", (n_out, (stop - start) * (n_bases + 1)), spline_weight.dtype)
    scaler = None if spline_scaler is None else spline_scaler[:, start:stop]
    kernels.pack(spline_weight[:, start:stop], scaler, base_weight[:, start:stop], packed)
    return packed


class _FrozenPacks:
    """Packed weights kept across calls for the layers inside :func:`frozen_weights`.

    Keyed by the weight tensors themselves (the same objects, checked by identity) and the block of
    features; a pack is remade when any of its weights' version counters moved (an optimizer step,
    ``copy_``, ``load_state_dict``). Shared by all threads, as the layers are.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # id(spline_weight) -> [weights, users, {(start, stop): (versions, packed)}]
        self.entries: dict[int, list] = {}

    def hold(self, layers: list) -> list[int]:
        """Keep packs for ``layers`` (nested blocks count); returns the keys for :meth:`release`."""
        keys = []
        with self.lock:
            for layer in layers:
                key = id(layer.spline_weight)
                entry = self.entries.setdefault(key, [None, 0, {}])
                entry[0] = (layer.base_weight, layer.spline_weight, layer.spline_scaler)
                entry[1] += 1
                keys.append(key)
        return keys

    def release(self, keys: list[int]) -> None:
        """Undo :meth:`hold` (by its keys: a weight replaced inside the block is released too)."""
        with self.lock:
            for key in keys:
                entry = self.entries[key]
                entry[1] -= 1
                if entry[1] == 0:
                    del self.entries[key]

    def lookup(self, base_weight, spline_weight, spline_scaler) -> list | None:
        """The entry of exactly these weight tensors, if their layer is inside the block."""
        entry = self.entries.get(id(spline_weight))
        if entry is None or any(
            a is not b for a, b in zip(entry[0], (base_weight, spline_weight, spline_scaler), strict=True)
        ):
            return None
        return entry

    def packed(self, kernels, entry: list, start: int, stop: int) -> torch.Tensor:
        """The entry's packed weight of features ``start:stop``, packed again if a weight changed."""
        base_weight, spline_weight, spline_scaler = entry[0]
        versions = tuple(-1 if t is None else t._version for t in entry[0])
        with self.lock:
            cached = entry[2].get((start, stop))
            if cached is None or cached[0] != versions:
                n_out, _, n_bases = spline_weight.shape
                packed = spline_weight.new_empty(n_out, (stop - start) * (n_bases + 1))
                scaler = None if spline_scaler is None else spline_scaler[:, start:stop]
                kernels.pack(spline_weight[:, start:stop], scaler, base_weight[:, start:stop], packed)
                cached = entry[2][start, stop] = (versions, packed)
        return cached[1]


_FROZEN = _FrozenPacks()


@contextlib.contextmanager
def frozen_weights(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Pack the weights of ``module``'s KAN layers once for the CPU calls inside the block that
    record no graph (``torch.no_grad``/``torch.inference_mode``), instead of once per call.

    For inference at small batches, where packing ``spline_weight * spline_scaler`` with
    ``base_weight`` costs as much as the product itself. It holds one packed copy of each layer's
    weights for the block's duration. Weights changed through PyTorch inside the block (an optimizer
    step, ``copy_``, ``load_state_dict``) are packed again at the next call; writes that bypass the
    version counters (``.data``, NumPy views) are not seen, which is why this is not the default.

    >>> with torch.inference_mode(), efficient_kan.frozen_weights(model):
    ...     y = model(x)
    """
    from .layer import KANLinear

    layers = [m for m in module.modules() if isinstance(m, KANLinear)]
    keys = _FROZEN.hold(layers)
    try:
        yield module
    finally:
        _FROZEN.release(keys)


def _forward(
    x: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    bias: torch.Tensor | None,
    act: str,
    kernels: CpuKernels,
    knots: KnotInfo,
    record: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(y, expanded)`` of 2-D ``x`` (contiguous rows); see :class:`_KANLinearEager`.

    ``record``: whether backward will use the expanded input. Without it the expanded input is a
    workspace temporary and only ``y`` is returned (``expanded`` None).
    """
    n, n_in = x.shape
    n_out, _, n_bases = spline_weight.shape
    lanes = n_bases + 1
    if record:
        expanded = x.new_empty(n, n_in * lanes)
    else:
        expanded = _WORKSPACE.get("expanded", (n, n_in * lanes), x.dtype)
    frozen = (
        _FROZEN.lookup(base_weight, spline_weight, spline_scaler) if not record and _FROZEN.entries else None
    )
    unpacked = (
        not record
        and frozen is None
        and n == 1
        and 2 * spline_weight.numel() * x.element_size() > _last_level_cache()
    )
    blocks = [(0, n_in)] if unpacked else _feature_blocks(n_in, n_out, lanes, x.element_size())
    y = None
    for start, stop in blocks:
        part = expanded[:, start * lanes : stop * lanes]
        split = (stop - start) * n_bases
        xs = x[:, start:stop]
        kernels.expand(xs, knots.block(start, stop), part[:, :split])
        if act == "silu":
            torch.ops.aten.silu.out(xs, out=part[:, split:])
        else:
            part[:, split:] = xs
        if unpacked:
            # One input row whose weights, packed, would not stay in the cache: the product is bound
            # by reading the weights, and packing them costs a write and a read of their size more.
            y = x.new_empty(n, n_out)
            kernels.product_unpacked(part, spline_weight, spline_scaler, base_weight, bias, y)
            break
        if frozen is not None:
            packed = _FROZEN.packed(kernels, frozen, start, stop)
        else:
            packed = _packed_weight(kernels, base_weight, spline_weight, spline_scaler, start, stop)
        if y is None:
            y = torch.mm(part, packed.t()) if bias is None else torch.addmm(bias, part, packed.t())
        else:
            y.addmm_(part, packed.t())
    if not record:  # nothing may keep a view of the workspace
        return y, None
    return y, expanded


def _input_grad_block(
    grad_y, x, dx, base_weight, spline_weight, spline_scaler, act, kernels, knots, start, stop
):
    """Write ``dx[:, start:stop]`` of one block of input features from ``dY @ W`` at the block's
    lanes: the activation lanes times ``act'(x)``, plus the basis lanes times the bases'
    derivatives (recomputed from ``x`` in C)."""
    n, width = x.shape[0], stop - start
    n_bases = spline_weight.shape[-1]
    packed = _packed_weight(kernels, base_weight, spline_weight, spline_scaler, start, stop)
    d_exp = torch.mm(grad_y, packed, out=_WORKSPACE.get("d_exp", (n, width * (n_bases + 1)), x.dtype))
    g_act = d_exp[:, width * n_bases :]
    xs, dxs = x[:, start:stop], dx[:, start:stop]
    if act == "silu":
        torch.ops.aten.silu_backward.grad_input(g_act, xs, grad_input=dxs)
    else:
        dxs.copy_(g_act)
    kernels.expand_grad(xs, knots.block(start, stop), d_exp[:, : width * n_bases], dxs)


def _weight_grads_block(grad_t, expanded, spline_weight, spline_scaler, dbw, dsw, dsc, kernels, start, stop):
    """Write the weight gradients (``None``: not wanted) of one block of input features from
    ``dY^T @ A`` at the block's lanes."""
    n_out, _, n_bases = spline_weight.shape
    lanes = n_bases + 1
    d_weight = torch.mm(
        grad_t, expanded[:, start * lanes : stop * lanes],
        out=_WORKSPACE.get("d_weight", (n_out, (stop - start) * lanes), expanded.dtype),
    )  # fmt: skip

    def cols(t):
        return None if t is None else t[:, start:stop]

    kernels.pack_grads(
        d_weight, spline_weight[:, start:stop], cols(spline_scaler), cols(dsw), cols(dsc), cols(dbw)
    )


class _KANLinearEager(torch.autograd.Function):
    """The layer on 2-D ``x``; returns ``y`` and the expanded input backward reuses.

    The expanded input ``A`` (shape ``(N, I * (n_bases + 1))``, the floor's) holds the basis
    values and ``act(x)`` of every input feature, grouped in blocks of features (see
    :func:`_feature_blocks`): per block, first its ``n_bases`` lanes per feature, then its
    activations. The weights are packed per block in the same layout (:func:`_packed_weight`;
    backward packs them again rather than keeping a copy of the weights' size alive), so each
    block is one product, as in the floor. Backward recomputes the bases' derivatives from ``x``
    (cheaper than keeping them).

    The expanded input is a non-differentiable output, dropped by :func:`kan_linear_eager`. Only
    calls that record a graph or carry forward-mode tangents come here (:func:`_forward` runs the
    others), so it is always a fresh tensor. ``forward(ctx, ...)`` style on purpose: with a
    ``setup_context``, ``Function.apply`` binds the arguments through ``inspect.signature`` on
    every call (30 us measured, half this Function's overhead), and this Function never runs
    under the ``torch.func`` transforms that need that style (:func:`eager_path_applies`).
    """

    @staticmethod
    def forward(
        ctx, x, grid, base_weight, spline_weight, spline_scaler, bias, spline_order, act, kernels, knots
    ):
        y, expanded = _forward(x, base_weight, spline_weight, spline_scaler, bias, act, kernels, knots, True)
        ctx.mark_non_differentiable(expanded)
        # Else autograd hands backward a zero-filled gradient of the expanded input, which costs
        # as much as a fifth of the whole backward at MNIST sizes.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, grid, base_weight, spline_weight, spline_scaler, expanded)
        ctx.save_for_forward(x, grid, base_weight, spline_weight, spline_scaler, bias)
        ctx.spline_order, ctx.act, ctx.kernels, ctx.knots = spline_order, act, kernels, knots
        return y, expanded

    @staticmethod
    def backward(ctx, grad_y, _grad_expanded):
        x, grid, base_weight, spline_weight, spline_scaler, expanded = ctx.saved_tensors
        need = ctx.needs_input_grad
        none = (None,) * 4  # order, act, kernels, knots
        if grad_y is None:  # not materialised: y took no part in what is differentiated
            return None, None, None, None, None, None, *none
        if torch.is_grad_enabled():
            # A differentiable backward is wanted (create_graph=True): the reference's formula.
            grads = kan_linear_reference_backward(
                grad_y, x, grid, base_weight, spline_weight, spline_scaler,
                spline_order=ctx.spline_order, base_activation=ctx.act,
            )  # fmt: skip
            dx, dbw, dsw, dsc, db = (
                g if need[i] else None for i, g in zip((0, 2, 3, 4, 5), grads, strict=True)
            )
            return dx, None, dbw, dsw, dsc, db, *none
        n, n_in = x.shape
        n_out, _, n_bases = spline_weight.shape
        kernels, knots = ctx.kernels, ctx.knots
        dx = x.new_empty(n, n_in) if need[0] else None
        dbw = base_weight.new_empty(n_out, n_in) if need[2] else None
        dsw = spline_weight.new_empty(n_out, n_in, n_bases) if need[3] else None
        dsc = spline_scaler.new_empty(n_out, n_in) if spline_scaler is not None and need[4] else None
        # A broadcast gradient (from ``y.sum()``, stride 0) sends the products below off BLAS's
        # fast path; a copy of (N, O) costs far less.
        grad_y = grad_y.contiguous()
        grad_t = grad_y.t()
        for start, stop in _feature_blocks(n_in, n_out, n_bases + 1, x.element_size()):
            if need[0]:
                _input_grad_block(
                    grad_y, x, dx, base_weight, spline_weight, spline_scaler, ctx.act, kernels, knots,
                    start, stop,
                )  # fmt: skip
            if need[2] or need[3] or need[4]:
                _weight_grads_block(
                    grad_t, expanded, spline_weight, spline_scaler, dbw, dsw, dsc, kernels, start, stop
                )
        db = grad_y.sum(0) if need[5] else None
        return dx, None, dbw, dsw, dsc, db, *none

    @staticmethod
    def jvp(ctx, x_t, grid_t, bw_t, sw_t, sc_t, bias_t, *_unused):
        y_t = kan_linear_reference_jvp(
            ctx.saved_tensors,
            (x_t, grid_t, bw_t, sw_t, sc_t, bias_t),
            spline_order=ctx.spline_order,
            base_activation=ctx.act,
        )
        return y_t, None


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
    kernels = cpu_kernels.load()  # eager_path_applies has seen them load
    knots = _knot_info(kernels, grid, spline_order, x.dtype)
    # The kernels take rows with unit column stride; parameters are contiguous unless made otherwise.
    spline_weight = spline_weight.contiguous()
    spline_scaler = None if spline_scaler is None else spline_scaler.contiguous()
    weights = (base_weight, spline_weight, spline_scaler, bias)
    x2 = (x if x.dim() == 2 else x.reshape(-1, n_in)).contiguous()  # no view node for 2-D input
    grad_mode = torch.is_grad_enabled()
    record = grad_mode and (x.requires_grad or any(w is not None and w.requires_grad for w in weights))
    if record or forward_ad._current_level >= 0:
        y = _KANLinearEager.apply(x2, grid, *weights, spline_order, base_activation, kernels, knots)[0]
    else:
        # No graph and no forward-mode tangents (a dual level is open): nothing for the Function
        # to do, so its overhead is skipped and the expanded input is a workspace temporary.
        y = _forward(x2, *weights, base_activation, kernels, knots, False)[0]
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], y.shape[-1])
