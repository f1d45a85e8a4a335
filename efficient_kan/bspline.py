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
tensor the matrix product wants. Backward is one gather and a multiply.
"""

from __future__ import annotations

import torch

__all__ = ["uniform_grid", "bspline_basis", "check_grid"]


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
    """
    k = spline_order
    n, n_in = x.shape
    n_knots = grid.shape[1]
    x = x.contiguous()
    # Span s: grid[s] <= x < grid[s + 1], i.e. the number of knots <= x, minus one.
    if torch.compiler.is_compiling():
        # Counted, not searched: inductor's CPU backend runs searchsorted as an eager fallback
        # and chooses its input's layout itself (its `.contiguous()` leaves layout to the
        # consumer, and this consumer states none), so the transposed copy below arrived
        # non-contiguous and searchsorted warned and copied it again. The count needs no
        # transpose and compiles into one fused loop over the knots.
        span = (x.unsqueeze(-1) >= grid).sum(-1) - 1
    else:
        # searchsorted wants one sorted row per feature, so the search runs on x transposed.
        span = torch.searchsorted(grid, x.t().contiguous(), right=True).t().contiguous().sub_(1)
    inside = (x >= grid[:, 0]) & (x < grid[:, -1])  # False for NaN too
    # Inputs outside the grid get a span whose every lane falls past the last basis: all dropped.
    n_bases = n_knots - 1 - k
    span = torch.where(inside, span, n_knots - 1 + k)
    first = span + torch.arange(-k, 1, device=x.device).view(-1, 1, 1)  # (K+1, N, I) basis indices
    index = first.clamp(0, n_bases - 1)
    drop = index != first

    if k == 0:
        values = (~drop).to(x.dtype)
        return index, values, (torch.zeros_like(values) if with_derivative else None)

    # The 2k knots around the span, grid[s - k + 1 .. s + k], in one gather from padded knots.
    padded = _pad_knots(grid, k).t().contiguous()  # (n_knots + 2k, I); padded[s + k] == grid[s]
    offsets = torch.arange(1, 2 * k + 1, device=x.device).view(-1, 1, 1)
    span = span.clamp_(max=n_knots - 2)  # outside inputs: any valid span, their lanes are dropped
    knots = padded.gather(0, (span + offsets).view(2 * k * n, n_in)).view(2 * k, n, n_in)
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
            derivs = torch.zeros(k + 1, n, n_in, dtype=x.dtype, device=x.device)
            derivs[:k].sub_(temp)
            derivs[1:].add_(temp)
            derivs.mul_(k)
        values = torch.zeros(j + 1, n, n_in, dtype=x.dtype, device=x.device)
        torch.mul(r_j, temp, out=values[:j])
        values[1:].addcmul_(l_j, temp)
    values.masked_fill_(drop, 0.0)
    if derivs is not None:
        derivs.masked_fill_(drop, 0.0)
    return index, values, derivs


class _BSplineBasis(torch.autograd.Function):
    """Dense bases with a backward that needs only the saved local derivatives."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, grid: torch.Tensor, spline_order: int) -> torch.Tensor:
        compute_dtype = torch.promote_types(torch.promote_types(x.dtype, grid.dtype), torch.float32)
        n_bases = grid.shape[1] - 1 - spline_order
        index, vals, derivs = _local_bases(
            x.to(compute_dtype), grid.to(compute_dtype), spline_order, with_derivative=ctx.needs_input_grad[0]
        )
        # (K+1, N, I) lanes -> (N, I, K+1) views for the scatter into (N, I, n_bases); clamped
        # duplicate indices carry value 0, so scatter_add is exact.
        index = index.permute(1, 2, 0)
        out = torch.zeros(*x.shape, n_bases, device=x.device, dtype=compute_dtype)
        if torch.compiler.is_compiling():
            # Under torch.compile the returned tensor must be neither filled in place nor a no-op
            # ``.to`` of an intermediate: with either, dynamo (torch 2.11) traced the backward with
            # a zero gradient, and x's gradient through the bases came out silently zero.
            out = out.scatter_add(2, index, vals.permute(1, 2, 0))
        else:  # eager: in place, one (N, I, n_bases) buffer fewer
            out.scatter_add_(2, index, vals.permute(1, 2, 0))
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(index, derivs.permute(1, 2, 0))
            ctx.input_dtype = x.dtype
        return out if out.dtype == x.dtype else out.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        index, derivs = ctx.saved_tensors
        grad_x = (grad_out.to(derivs.dtype).gather(2, index) * derivs).sum(-1)
        return grad_x.to(ctx.input_dtype), None, None


def bspline_basis(x: torch.Tensor, grid: torch.Tensor, spline_order: int) -> torch.Tensor:
    """B-spline bases of ``x`` (shape ``(N, in_features)``) over ``grid``.

    Returns ``(N, in_features, grid.shape[1] - 1 - spline_order)`` in ``x.dtype`` (knot arithmetic
    is done in at least float32). Differentiable with respect to ``x`` (first order); the grid is
    treated as a constant, as in the reference formulation where it is a buffer.
    """
    return _BSplineBasis.apply(x, grid, spline_order)
