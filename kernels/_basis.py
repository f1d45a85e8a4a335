"""Device helpers shared by the KAN kernels: knots, span search, local B-spline values, activations.

Everything here is ``@triton.jit`` and is inlined into the kernels. The maths mirrors
``efficient_kan/bspline.py`` (local de Boor, "The NURBS Book" A2.2/A2.3):

- knots are read per feature from ``grid`` (any strides, any float dtype) and converted to the
  compute dtype ``x.dtype`` (fp32, or fp64 for fp64 inputs); beyond both ends the knot vector is
  extended linearly at its end spacing, like ``bspline._pad_knots``, so every de Boor denominator
  is positive and no padding table is needed in memory;
- the span ``s`` (``grid[s] <= x < grid[s+1]``) is found by a binary search over the feature's own
  knots, so non-uniform per-feature grids (``update_grid``) cost the same as uniform ones;
- bases are 0 outside ``[grid[0], grid[-1])``, for NaN ``x`` and for masked features.

It also holds the two casts to the operand dtype that keep bf16 testable under ``TRITON_INTERPRET=1``
(:func:`_dot_operand`, :func:`_cast`: on a GPU they are plain ``.to(dtype)``) and the masked 2-D
tile loads and store every kernel uses (:func:`_load_tile`, :func:`_load_tile_t`, :func:`_store_tile`).
"""

import triton
import triton.language as tl

from ._config import interpreting

# True when the kernels run in Triton's CPU interpreter. A module-level constexpr, so the branches
# below are resolved when a kernel is compiled: GPU kernels get exactly `x.to(dtype)`.
_INTERPRET = tl.constexpr(interpreting())


@triton.jit
def _round_bf16(x):
    """The bf16 value nearest ``x`` (fp32; ties to even; NaN stays NaN), kept in fp32.

    What a GPU's fp32 -> bf16 conversion gives. The interpreter's own conversion (triton 3.8) drops
    the low 16 bits instead, rounding toward zero: half of normal samples land one step off, a mean
    relative bias of -2.8e-3.
    """
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))


@triton.jit
def _dot_operand(x, DOT: tl.constexpr):
    """``x`` as a ``tl.dot`` operand of dtype ``DOT``: ``x.to(DOT)``.

    Under the interpreter, a bf16 operand is instead the bf16-rounded value held in fp32: the
    interpreter's ``tl.dot`` multiplies bf16 operands as their raw 16-bit patterns (results ~1e10
    off; https://github.com/triton-lang/triton/issues/11584). A tensor core multiplies the same bf16 values exactly in fp32 and accumulates in fp32, so
    the fp32 product of the rounded values is what a GPU computes (up to the order of the sums).
    """
    if _INTERPRET and DOT == tl.bfloat16:
        y = _round_bf16(x.to(tl.float32))
    else:
        y = x.to(DOT)
    return y


@triton.jit
def _cast(x, DT: tl.constexpr):
    """``x.to(DT)`` for values stored in a low-precision output; under the interpreter a bf16
    result is rounded to nearest even first, as a GPU does (see :func:`_round_bf16`)."""
    if _INTERPRET and DT == tl.bfloat16:
        y = _round_bf16(x.to(tl.float32)).to(DT)
    else:
        y = x.to(DT)
    return y


@triton.jit
def _load_tile(ptr, rows, cols, stride_r, stride_c, row_ok, col_ok):
    """The ``(len(rows), len(cols))`` tile ``ptr[rows, cols]`` of a 2-D tensor with strides
    ``(stride_r, stride_c)``, zero where ``row_ok`` or ``col_ok`` is False."""
    return tl.load(
        ptr + rows[:, None] * stride_r + cols[None, :] * stride_c,
        mask=row_ok[:, None] & col_ok[None, :],
        other=0.0,
    )


@triton.jit
def _load_tile_t(ptr, rows, cols, stride_r, stride_c, row_ok, col_ok):
    """The transpose of :func:`_load_tile`'s tile: ``ptr[rows, cols]^T``, shape
    ``(len(cols), len(rows))`` (a weight tile loaded feature-major, for example). Arguments in the
    tensor's order, and the address sum adds the leading dimension first as in ``_load_tile``: the
    other order of those terms compiles to different sm_90 code."""
    return tl.load(
        ptr + rows[None, :] * stride_r + cols[:, None] * stride_c,
        mask=col_ok[:, None] & row_ok[None, :],
        other=0.0,
    )


@triton.jit
def _store_tile(ptr, rows, cols, stride_r, stride_c, row_ok, col_ok, value):
    """Store ``value`` (shape ``(len(rows), len(cols))``) into ``ptr[rows, cols]`` where both
    masks hold, cast with :func:`_cast` to ``ptr``'s dtype."""
    tl.store(
        ptr + rows[:, None] * stride_r + cols[None, :] * stride_c,
        _cast(value, ptr.dtype.element_ty),
        mask=row_ok[:, None] & col_ok[None, :],
    )


@triton.jit
def _knot_rows(g_ptr, feats, I, stride_gi):
    """Pointers ``(1, len(feats))`` to each feature's first knot in ``grid`` (``(I, NK)``), for
    :func:`_basis_tile`. Features past ``I`` are clamped onto the last real row, so every knot
    load is in bounds; their bases are masked to zero by ``_basis_tile``'s ``feat_ok``."""
    return g_ptr + tl.minimum(feats, I - 1)[None, :] * stride_gi


@triton.jit
def _knot(row_ptr, t, stride_gt, NK: tl.constexpr, k_first, k_last, h_lo, h_hi):
    """Knot ``t`` (``-K <= t <= NK-1+K``) of each feature, linearly extended past both ends."""
    tc = tl.minimum(tl.maximum(t, 0), NK - 1)
    v = tl.load(row_ptr + tc * stride_gt).to(k_first.dtype)
    v = tl.where(t < 0, k_first + t.to(k_first.dtype) * h_lo, v)
    v = tl.where(t > NK - 1, k_last + (t - (NK - 1)).to(k_first.dtype) * h_hi, v)
    return v


@triton.jit
def _knot_ends(row_ptr, stride_gt, NK: tl.constexpr, DT: tl.constexpr):
    """First and last knot of each feature and the knot spacing at both ends, in ``DT``."""
    k_first = tl.load(row_ptr).to(DT)
    k_last = tl.load(row_ptr + (NK - 1) * stride_gt).to(DT)
    h_lo = tl.load(row_ptr + stride_gt).to(DT) - k_first
    h_hi = k_last - tl.load(row_ptr + (NK - 2) * stride_gt).to(DT)
    return k_first, k_last, h_lo, h_hi


@triton.jit
def _span(x, row_ptr, stride_gt, NK: tl.constexpr, LOG_NK: tl.constexpr):
    """The largest ``s <= NK - 2`` with ``grid[s] <= x``, by binary lifting over the ``NK`` knots."""
    s = tl.zeros(x.shape, dtype=tl.int32)
    for b in tl.static_range(LOG_NK):
        cand = s + (1 << (LOG_NK - 1 - b))
        kv = tl.load(row_ptr + tl.minimum(cand, NK - 1) * stride_gt).to(x.dtype)
        s = tl.where((cand < NK) & (kv <= x), cand, s)
    return tl.minimum(s, NK - 2)


@triton.jit
def _local_bases(x, s, row_ptr, stride_gt, ends, K: tl.constexpr, NK: tl.constexpr, DERIV: tl.constexpr):
    """The ``K + 1`` non-zero values ``B_{s-K+r}(x)`` (or their derivatives when ``DERIV``),
    ``r = 0..K``, by de Boor's recursion ("The NURBS Book" A2.2/A2.3) on span ``s``."""
    k_first, k_last, h_lo, h_hi = ends
    one = tl.full(x.shape, 1.0, x.dtype)
    zero = tl.zeros(x.shape, dtype=x.dtype)
    vals = (one,)
    ders = (zero,)
    if K > 0:
        # left[j] = x - t[s+1-j], right[j] = t[s+j] - x for j = 1..K (index 0 unused).
        left = (zero,)
        right = (zero,)
        for j in tl.static_range(1, K + 1):
            left = left + (x - _knot(row_ptr, s + 1 - j, stride_gt, NK, k_first, k_last, h_lo, h_hi),)
            right = right + (_knot(row_ptr, s + j, stride_gt, NK, k_first, k_last, h_lo, h_hi) - x,)
        for j in tl.static_range(1, K + 1):
            if DERIV:
                if j == K:
                    # B'_{i,K} = K (B_{i,K-1}/(t_{i+K}-t_i) - B_{i+1,K-1}/(t_{i+K+1}-t_{i+1})),
                    # from the order K-1 values: a[m] is the second term for lane m.
                    a = ()
                    for m in tl.static_range(K):
                        a = a + (vals[m] / (right[m + 1] + left[K - m]),)
                    ders = ()
                    for r in tl.static_range(K + 1):
                        d = zero
                        if r > 0:
                            d = d + a[r - 1]
                        if r < K:
                            d = d - a[r]
                        ders = ders + (d * K,)
            saved = zero
            new = ()
            for r in tl.static_range(j):
                temp = vals[r] / (right[r + 1] + left[j - r])
                new = new + (saved + right[r + 1] * temp,)
                saved = left[j - r] * temp
            vals = new + (saved,)
    src = vals
    if DERIV:
        src = ders
    return src


@triton.jit
def _place_lanes(src, s, inside, K: tl.constexpr, NB: tl.constexpr, P: tl.constexpr):
    """The ``(BLOCK_M, BLOCK_I, P)`` tile with ``src[r]`` in lane ``s - K + r`` of each (row,
    feature), zero in every other lane, in padding lanes ``>= NB`` and where not ``inside``."""
    x = src[0]
    d = s - K  # lane of src[0]
    # One (BLOCK_M, BLOCK_I) tensor per lane, then a tree of joins: tl.join adds a minor dimension
    # held inside each thread, so a thread keeps all P lanes of its own (row, feature) pairs and the
    # span search and de Boor run once per pair (a broadcast over a P axis let Triton spread the
    # lanes over threads, each recomputing the whole recursion).
    # (The two forms are the two branches of one constexpr if: Triton keeps compiling the
    # statements after a `return` inside an if, so an early return would not do.)
    if P > 64:  # very wide bases (grid_size + order > 64): a select per element of a 3-D tile
        jj = tl.arange(0, P)[None, None, :]
        lane = jj - d[:, :, None]
        out = tl.zeros((x.shape[0], x.shape[1], P), dtype=x.dtype)
        for r in tl.static_range(K + 1):
            out = tl.where(lane == r, src[r][:, :, None], out)
        out = tl.where(inside[:, :, None] & (jj < NB), out, 0.0)
    else:
        zero = tl.zeros(x.shape, dtype=x.dtype)
        masked = ()
        for r in tl.static_range(K + 1):
            masked = masked + (tl.where(inside, src[r], 0.0),)
        lanes = ()
        for j in tl.static_range(P):
            v = zero
            if j < NB:
                for r in tl.static_range(K + 1):
                    v = tl.where(d == j - r, masked[r], v)
            lanes = lanes + (v,)
        # Level by level, lane t joins lane t + half: the flattened minor dimensions then count
        # lanes in natural order (the last join's index is the lowest bit).
        for level in tl.static_range(1, 7):  # P <= 64
            if (P >> level) >= 1:
                nxt = ()
                for t in tl.static_range(P >> level):
                    nxt = nxt + (tl.join(lanes[t], lanes[t + (P >> level)]),)
                lanes = nxt
        out = tl.reshape(lanes[0], (x.shape[0], x.shape[1], P))
    return out


@triton.jit
def _basis_tile(
    x,
    row_ptr,
    stride_gt,
    feat_ok,
    K: tl.constexpr,
    NK: tl.constexpr,
    NB: tl.constexpr,
    P: tl.constexpr,
    LOG_NK: tl.constexpr,
    DERIV: tl.constexpr,
):
    """Expanded basis tile ``(BLOCK_M, BLOCK_I, P)`` of ``x`` (shape ``(BLOCK_M, BLOCK_I)``).

    ``row_ptr`` (shape ``(1, BLOCK_I)``) points at each feature's first knot; ``feat_ok`` masks
    features past the end. Column ``j < NB`` holds ``B_j(x)`` (or ``B_j'(x)`` when ``DERIV``);
    columns ``NB <= j < P`` are zero padding. Steps: the knot ends, the span, the ``K + 1``
    non-zero values there, and their placement into lanes.
    """
    ends = _knot_ends(row_ptr, stride_gt, NK, x.dtype)
    # False for NaN x too, so NaN inputs give zero bases (their row is NaN through act(x) anyway).
    inside = (x >= ends[0]) & (x < ends[1]) & feat_ok
    s = _span(x, row_ptr, stride_gt, NK, LOG_NK)
    src = _local_bases(x, s, row_ptr, stride_gt, ends, K, NK, DERIV)
    return _place_lanes(src, s, inside, K, NB, P)


@triton.jit
def _act(x, ACT: tl.constexpr):
    """Base activation: 0 identity, 1 SiLU (NaN propagates, as in PyTorch)."""
    y = x
    if ACT == 1:
        y = x / (1.0 + tl.exp(-x))
    return y


@triton.jit
def _act_grad(x, ACT: tl.constexpr):
    """Derivative of ``_act``: silu'(x) = sig(x) (1 + x (1 - sig(x)))."""
    g = tl.full(x.shape, 1.0, x.dtype)
    if ACT == 1:
        sg = 1.0 / (1.0 + tl.exp(-x))
        g = sg * (1.0 + x * (1.0 - sg))
    return g
