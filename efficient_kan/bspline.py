"""B-spline bases over per-feature knot vectors, evaluated locally.

A KAN layer's grid is a buffer ``grid`` of shape ``(in_features, grid_size + 2*spline_order + 1)``:
one strictly increasing knot vector per input feature. Over it live ``grid_size + spline_order``
B-splines of order ``spline_order`` (the Cox-de Boor recursion), and at any ``x`` at most
``spline_order + 1`` of them are non-zero. Outside ``[grid[:, 0], grid[:, -1])`` all are zero.

The textbook recursion builds every basis at every level on tensors of shape ``(batch, in, knots)``
and autograd keeps all of them for backward. Here we find each input's knot span once
(``searchsorted``), evaluate only the ``spline_order + 1`` non-zero values with de Boor's triangular
scheme ("The NURBS Book", algorithms A2.2/A2.3), get their derivatives from the order ``k - 1``
values in the same pass, and scatter into the dense ``(batch, in, grid_size + spline_order)``
tensor the matrix product wants. A first-order backward is one gather and a multiply; higher
orders, ``torch.func`` transforms and forward-mode AD go through :func:`bspline_basis_derivative`,
itself a combination of order ``k - 1`` bases, so every derivative is exact.
"""

from __future__ import annotations

import functools
import weakref
from fractions import Fraction

import torch

__all__ = ["uniform_grid", "bspline_basis", "check_grid", "uniform_knots"]


def uniform_grid(
    in_features: int,
    grid_size: int,
    spline_order: int,
    grid_range: tuple[float, float] = (-1.0, 1.0),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The initial knots: uniform on ``grid_range``, extended by ``spline_order`` knots each side.

    ``grid[i, t] = lo + (t - spline_order) * h`` with ``h = (hi - lo) / grid_size``, the same
    for every feature ``i``. Returns a tensor of shape ``(in_features, grid_size + 2*spline_order + 1)``.
    """
    lo, hi = float(grid_range[0]), float(grid_range[1])
    h = (hi - lo) / grid_size
    steps = torch.arange(-spline_order, grid_size + spline_order + 1, device=device, dtype=torch.float64)
    knots = (steps * h + lo).to(dtype or torch.get_default_dtype())
    return knots.expand(in_features, -1).contiguous()


def check_grid(grid: torch.Tensor) -> None:
    """Raise ``ValueError`` unless every feature's knots are finite and strictly increasing."""
    if not bool(torch.isfinite(grid).all()):
        raise ValueError("grid has non-finite knots")
    if grid.shape[-1] > 1 and not bool((grid[:, 1:] > grid[:, :-1]).all()):
        raise ValueError("grid knots must be strictly increasing along each feature")


def _pad_knots(grid: torch.Tensor, spline_order: int) -> torch.Tensor:
    """Extend each knot vector by ``spline_order`` knots on both sides, at its end spacings.

    The local scheme reads knots ``span - k + 1 .. span + k``; near the ends of the grid these
    fall outside it. The extra knots only shape bases with indices outside ``0 .. G+K-1`` (which
    are dropped), so any strictly increasing padding gives the same kept values; padding keeps
    every denominator positive, so no NaN appears even in the dropped lanes.
    """
    if spline_order == 0:
        return grid
    k = spline_order
    steps = torch.arange(1, k + 1, device=grid.device, dtype=grid.dtype)
    h_lo = grid[:, 1:2] - grid[:, 0:1]
    h_hi = grid[:, -1:] - grid[:, -2:-1]
    lower = grid[:, 0:1] - h_lo * steps.flip(0)
    upper = grid[:, -1:] + h_hi * steps
    return torch.cat([lower, grid, upper], dim=1)


def _local_bases(
    x: torch.Tensor, grid: torch.Tensor, spline_order: int, with_derivative: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Non-zero bases of ``x`` (shape ``(N, I)``, in the compute dtype) and where they go.

    Returns ``(index, values, derivatives)``, each of shape ``(K + 1, N, I)`` (lanes leading, so
    every elementwise step below runs over long contiguous rows): ``values[r]`` is basis
    ``index[r]`` at ``x``. Lanes whose basis does not exist, or whose ``x`` is outside the grid (or
    NaN), have value and derivative 0 and an index clamped into range.

    Only out-of-place tensor operations: the same code then runs under ``vmap``, is traced by
    ``torch.export`` into ops autograd can differentiate, and compiles without graph breaks.
    """
    k = spline_order
    n, n_in = x.shape
    n_knots = grid.shape[1]
    x = x.contiguous()
    # Span s: grid[s] <= x < grid[s + 1], i.e. the number of knots <= x, minus one.
    if torch.compiler.is_compiling():
        # Counted, not searched: inductor's CPU backend runs searchsorted as an eager fallback
        # and chooses its input's layout itself, so the transposed copy arrived non-contiguous
        # and searchsorted warned and copied it again. The count needs no transpose and compiles
        # into one fused loop over the knots.
        span = (x.unsqueeze(-1) >= grid).sum(-1) - 1
    else:
        # searchsorted wants contiguous sorted rows, one per feature: the search runs on x^T.
        span = torch.searchsorted(grid.contiguous(), x.t().contiguous(), right=True).t() - 1
    inside = (x >= grid[:, 0]) & (x < grid[:, -1])  # False for NaN too
    # Inputs outside the grid get a span whose every lane falls past the last basis: all dropped.
    n_bases = n_knots - 1 - k
    span = torch.where(inside, span, n_knots - 1 + k)
    first = span + torch.arange(-k, 1, device=x.device).view(-1, 1, 1)  # (K+1, N, I) basis indices
    index = first.clamp(0, n_bases - 1)
    keep = index == first

    if k == 0:
        values = keep.to(x.dtype)
        return index, values, (torch.zeros_like(values) if with_derivative else None)

    # The 2k knots around the span, grid[s - k + 1 .. s + k], in one gather from padded knots.
    padded = _pad_knots(grid, k).t().contiguous()  # (n_knots + 2k, I); padded[s + k] == grid[s]
    offsets = torch.arange(1, 2 * k + 1, device=x.device).view(-1, 1, 1)
    span = span.clamp(max=n_knots - 2)  # outside inputs: any valid span, their lanes are dropped
    knots = padded.gather(0, (span + offsets).reshape(2 * k * n, n_in)).view(2 * k, n, n_in)
    left = x - knots[:k]  # left[p] = x - t[s + 1 - (k - p)]
    right = knots[k:] - x  # right[p] = t[s + 1 + p] - x

    # De Boor's triangular scheme, one level at a time on (j, N, I) tensors: at level j the values
    # of order j - 1 are B_{s-j+1+r}, r = 0..j-1, and
    #   B_{s-j+r, j} = right[r] * temp[r] + left[k-j+r-1] * temp[r-1],  temp = V / (right + left).
    values = torch.ones(1, n, n_in, dtype=x.dtype, device=x.device)
    derivs = None
    for j in range(1, k + 1):
        r_j, l_j = right[:j], left[k - j :]
        temp = values / (r_j + l_j)
        if j == k and with_derivative:
            # B'_{s-k+r, k} = k * (temp[r-1] - temp[r]): the order k-1 values over their spans.
            derivs = k * (_pad_lanes(temp, 1, 0) - _pad_lanes(temp, 0, 1))
        values = _pad_lanes(r_j * temp, 0, 1) + _pad_lanes(l_j * temp, 1, 0)
    zero = values.new_zeros(())
    values = torch.where(keep, values, zero)
    if derivs is not None:
        derivs = torch.where(keep, derivs, zero)
    return index, values, derivs


# ---------------------------------------------------------------------------------------------
# Knots that are uniform per feature (every grid until update_grid moves it; update_grid with
# grid_eps=1 too): span and local bases then have a closed form, which the eager CPU path's C
# kernels use (efficient_kan/cpu_kernels.c).


def _fit_uniform(grid: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(inv_h, shift)`` per feature, in ``dtype``, if every feature's knots are uniform, else None.

    Uniform means: each knot is within a few ``dtype`` roundings of the line through the feature's
    first and last knots, i.e. the closed form below and the knots as stored define the same bases
    to the precision the layer computes in. ``shift = 1 - grid[:, 0] * inv_h``, so that
    ``x * inv_h + shift`` is one more than ``x``'s position in knot intervals.
    """
    if grid.shape[1] < 2:
        return None
    g = grid.detach().to(torch.float64)
    lo, hi = g[:, 0], g[:, -1]
    h = (hi - lo) / (g.shape[1] - 1)
    steps = torch.arange(g.shape[1], device=g.device, dtype=torch.float64)
    deviation = (g - (lo.unsqueeze(1) + steps * h.unsqueeze(1))).abs().amax(1)
    tolerance = 4 * torch.finfo(dtype).eps * g.abs().amax(1)
    if not bool(((deviation <= tolerance) & (h > 0)).all()):
        return None
    inv_h = 1.0 / h
    return inv_h.to(dtype), (1.0 - lo * inv_h).to(dtype)


# id(grid) -> (weak reference to grid, (data_ptr, version, dtype, shape), {compute dtype: fit})
_UNIFORM_CACHE: dict[int, tuple[weakref.ref, tuple, dict]] = {}


def uniform_knots(grid: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`_fit_uniform` of ``grid``, computed once per change of the grid.

    A change is any in-place write through PyTorch (``update_grid``, ``copy_``,
    ``load_state_dict``: they bump the tensor's version counter) or a new tensor; so the check
    (one host synchronisation) runs once per grid change, not once per call. Writes through
    ``.data``, which bypass the version counter, are not seen: change a grid with in-place ops.
    Grids created under ``torch.inference_mode`` have no version counter and are treated as
    non-uniform (the general algorithm, same function).
    """
    if grid.is_inference():
        return None
    key = id(grid)
    stamp = (grid.data_ptr(), grid._version, grid.dtype, tuple(grid.shape))
    entry = _UNIFORM_CACHE.get(key)
    if entry is None or entry[0]() is not grid or entry[1] != stamp:
        ref = weakref.ref(grid, lambda _ref, key=key: _UNIFORM_CACHE.pop(key, None))
        entry = (ref, stamp, {})
        _UNIFORM_CACHE[key] = entry
    fits = entry[2]
    if dtype not in fits:
        fits[dtype] = _fit_uniform(grid, dtype)
    return fits[dtype]


@functools.cache
def _uniform_polynomials(k: int) -> tuple[tuple[tuple[Fraction, ...], ...], ...]:
    """Coefficients of the ``k + 1`` non-zero bases on unit knots as polynomials in ``t``.

    ``result[r][p]`` is the coefficient of ``t**p`` in basis ``span - k + r`` at
    ``x = knot[span] + t * h``, ``0 <= t < 1``. Derived, exactly, by running the recursion of
    :func:`_local_bases` on polynomials: with unit spacing ``left[p] = t + k - 1 - p``,
    ``right[p] = 1 + p - t`` and every level-``j`` denominator is ``j``.
    """

    def add(a, b):
        n = max(len(a), len(b))
        return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]

    def times_linear(a, c0, c1):  # a * (c0 + c1 t)
        return add([c0 * v for v in a] + [Fraction(0)], [Fraction(0)] + [c1 * v for v in a])

    values = [[Fraction(1)]]
    for j in range(1, k + 1):
        temp = [[v / j for v in poly] for poly in values]
        new = [[Fraction(0)] for _ in range(j + 1)]
        for q in range(j):
            new[q] = add(new[q], times_linear(temp[q], Fraction(1 + q), Fraction(-1)))  # right[q]
            new[q + 1] = add(new[q + 1], times_linear(temp[q], Fraction(j - 1 - q), Fraction(1)))  # left
        values = new
    return tuple(tuple(poly + [Fraction(0)] * (k + 1 - len(poly))) for poly in values)


def _pad_lanes(t: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """``t`` (lanes, N, I) with ``before``/``after`` lanes of zeros added along the lane axis."""
    return torch.nn.functional.pad(t, (0, 0, 0, 0, before, after))


def _dense(index: torch.Tensor, lanes: torch.Tensor, n_bases: int) -> torch.Tensor:
    """Scatter ``(K+1, N, I)`` lane values into the dense ``(N, I, n_bases)`` layout.

    Clamped duplicate indices carry the value 0, so the sum of a scatter-add is exact.
    """
    n, n_in = lanes.shape[1:]
    out = lanes.new_zeros(n, n_in, n_bases)
    return out.scatter_add(2, index.permute(1, 2, 0), lanes.permute(1, 2, 0))


def _compute_dtype(x: torch.Tensor, grid: torch.Tensor) -> torch.dtype:
    """Knot arithmetic runs in at least float32 (bf16 knots cannot resolve a fine grid)."""
    return torch.promote_types(torch.promote_types(x.dtype, grid.dtype), torch.float32)


class _BSplineBasisTraced(torch.autograd.Function):
    """Dense bases; a first-order backward from the local derivatives saved by the forward.

    ``forward``/``setup_context`` style with a generated vmap rule, so ``torch.func`` transforms
    apply. The forward also returns the lane indices and local derivatives (non-differentiable
    outputs that the public function drops) because they come out of the same de Boor pass.
    A backward that must itself be differentiable (``create_graph=True``, ``torch.func``) uses
    :func:`bspline_basis_derivative` instead, which is exact to every order.

    This class is what ``torch.compile`` traces: dynamo refuses Functions with a custom ``jvp``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, grid, spline_order, with_derivative):
        compute_dtype = _compute_dtype(x, grid)
        n_bases = grid.shape[1] - 1 - spline_order
        index, vals, derivs = _local_bases(
            x.to(compute_dtype), grid.to(compute_dtype), spline_order, with_derivative
        )
        out = _dense(index, vals, n_bases).to(x.dtype)
        if derivs is None:  # autograd Functions return tensors: an empty one means "not computed"
            derivs = vals.new_empty(0)
        return out, index, derivs

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, grid, spline_order, _ = inputs
        _, index, derivs = output
        ctx.mark_non_differentiable(index, derivs)
        ctx.save_for_backward(x, grid, index, derivs)
        ctx.save_for_forward(x, grid)
        ctx.spline_order = spline_order

    @staticmethod
    def backward(ctx, grad_out, _grad_index, _grad_derivs):
        x, grid, index, derivs = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        if torch.is_grad_enabled() or derivs.numel() == 0:
            # A graph of the backward is wanted (double backward, torch.func), or the forward ran
            # without derivatives: the dense derivative, differentiable in x.
            dense = bspline_basis_derivative(x, grid, ctx.spline_order)
            grad_x = (grad_out * dense).sum(-1)
        else:
            grad_x = (
                grad_out.to(derivs.dtype).gather(2, index.permute(1, 2, 0)) * derivs.permute(1, 2, 0)
            ).sum(-1)
        return grad_x.to(x.dtype), None, None, None


class _BSplineBasis(_BSplineBasisTraced):
    """:class:`_BSplineBasisTraced` with the forward-mode rule, for eager calls."""

    @staticmethod
    def jvp(ctx, x_tangent, _grid_tangent, _order, _wd):
        x, grid = ctx.saved_tensors
        if x_tangent is None:
            return None, None, None
        dense = bspline_basis_derivative(x, grid, ctx.spline_order)
        return dense * x_tangent.unsqueeze(-1), None, None


def bspline_basis(x: torch.Tensor, grid: torch.Tensor, spline_order: int) -> torch.Tensor:
    """B-spline bases of ``x`` (shape ``(N, in_features)``) over ``grid``.

    Returns ``(N, in_features, grid.shape[1] - 1 - spline_order)`` in ``x.dtype`` (knot arithmetic
    is done in at least float32). Differentiable with respect to ``x`` to any order, in reverse and
    forward mode and under ``torch.func`` transforms; the grid is treated as a constant, as in the
    reference formulation where it is a buffer.
    """
    with_derivative = x.requires_grad and torch.is_grad_enabled()
    fn = _BSplineBasisTraced if torch.compiler.is_compiling() else _BSplineBasis
    return fn.apply(x, grid, spline_order, with_derivative)[0]


def bspline_basis_derivative(x: torch.Tensor, grid: torch.Tensor, spline_order: int) -> torch.Tensor:
    """``d B_j / d x`` of :func:`bspline_basis`, same shape, differentiable to any order.

    ``B'_{j,k} = k B_{j,k-1} / (t_{j+k} - t_j) - k B_{j+1,k-1} / (t_{j+k+1} - t_{j+1})``: the
    derivative of an order ``k`` basis is a fixed combination of order ``k - 1`` bases on the same
    knots, so differentiating it again recurses down to order 0, whose derivative is 0.
    """
    k = spline_order
    n_bases = grid.shape[1] - 1 - k
    if k == 0:
        return x.new_zeros(*x.shape, n_bases)
    lower = bspline_basis(x, grid, k - 1)  # (N, I, n_bases + 1)
    knots = grid.to(_compute_dtype(x, grid))
    scale = (k / (knots[:, k:] - knots[:, :-k])).to(lower.dtype)  # (I, n_bases + 1)
    weighted = lower * scale
    return weighted[..., :-1] - weighted[..., 1:]
