"""The fused strategy: forward, input-gradient and weight-gradient kernels that build the B-spline
basis in registers and feed it straight to ``tl.dot`` (it never goes to memory), and their launchers.

How each kernel tiles, splits and reduces: README.md, "How the kernels work".
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._basis import (
    _act,
    _act_grad,
    _basis_tile,
    _dot_operand,
    _knot_rows,
    _load_tile,
    _load_tile_t,
    _store_tile,
)
from ._config import (
    acc_dtype,
    compute_tl_dtype,
    geometry,
    gpu_sms,
    meta_for,
    next_pow2,
    strides_or_none,
    tuned,
)


@triton.jit
def _kan_fwd_kernel(
    x_ptr,
    g_ptr,
    sw_ptr,
    sc_ptr,  # spline_scaler, or None (HAS_SCALER False; its strides are None too)
    bw_ptr,
    b_ptr,  # bias, or None (HAS_BIAS False; stride_b is None too)
    y_ptr,
    M,
    I,
    O,
    M_BUCKET,  # autotune key only
    SPLIT,  # feature slices (programs along axis 2); autotune key too
    FEATS_PER_SPLIT,
    stride_xm,
    stride_xi,
    stride_gi,
    stride_gt,
    stride_swo,
    stride_swi,
    stride_swj,
    stride_sco,
    stride_sci,
    stride_bwo,
    stride_bwi,
    stride_b,
    stride_ys,
    stride_ym,
    stride_yo,
    K: tl.constexpr,
    NK: tl.constexpr,
    NB: tl.constexpr,
    P: tl.constexpr,
    LOG_NK: tl.constexpr,
    ACT: tl.constexpr,
    HAS_SCALER: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    CDT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_I: tl.constexpr,
    SUB_I: tl.constexpr,  # features per spline product (divides BLOCK_I)
):
    """A ``(BLOCK_M, BLOCK_N)`` tile of ``y``, or of feature slice ``pid_s``'s fp32 partial sum
    when ``SPLIT > 1``: base branch per ``BLOCK_I`` features, spline product per ``SUB_I``."""
    pid_m = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    pid_s = tl.program_id(2).to(tl.int64)
    i_start = pid_s * FEATS_PER_SPLIT  # a multiple of BLOCK_I (FEATS_PER_SPLIT is a multiple of 16)
    i_end = tl.minimum(i_start + FEATS_PER_SPLIT, I)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < O
    DOT = x_ptr.dtype.element_ty  # operand dtype: x's (already cast by autocast on the host)

    # Features per spline product: SUB_I, but at least 16 expanded columns (tl.dot's minimum) for
    # narrow bases; never more than the block (block-size rules: _config.check_block_sizes).
    SUB: tl.constexpr = min(BLOCK_I, SUB_I if SUB_I * P >= 16 else 16 // P)
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16, "tl.dot needs blocks of at least 16")
    tl.static_assert(SUB * P >= 16, "tl.dot needs BLOCK_I * P >= 16 expanded columns")
    tl.static_assert(BLOCK_I % SUB == 0, "the spline sub-block must divide BLOCK_I")
    # Expanded column c = i * P + j of the current feature sub-block, as (feature, lane) pairs.
    cc = tl.arange(0, SUB * P)
    ci_local = cc // P
    cj = cc % P

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=CDT)
    for i0 in range(i_start, i_end, BLOCK_I):
        ri = i0 + tl.arange(0, BLOCK_I).to(tl.int64)
        i_ok = ri < i_end
        x = _load_tile(x_ptr, rm, ri, stride_xm, stride_xi, m_ok, i_ok).to(CDT)
        wb = _dot_operand(_load_tile_t(bw_ptr, rn, ri, stride_bwo, stride_bwi, n_ok, i_ok), DOT)
        xa = _dot_operand(_act(x, ACT), DOT)
        if BLOCK_I >= 16:
            acc = tl.dot(xa, wb, acc=acc, input_precision=PRECISION, out_dtype=CDT)
        else:  # wide bases (check_block_sizes): a broadcast-and-sum, P times smaller than the spline's
            acc += tl.sum(xa.to(CDT)[:, :, None] * wb.to(CDT)[None, :, :], axis=1)

        # Spline branch in sub-blocks of SUB features: a smaller packed weight tile is live at a
        # time (it is packed on load through registers), which is what spills at wide BLOCK_N.
        for h in tl.static_range(BLOCK_I // SUB):
            if SUB == BLOCK_I:
                xs = x
                rs = ri
                s_ok = i_ok
            else:  # reload the sub-block's x (an L1 hit) rather than slice registers
                rs = i0 + h * SUB + tl.arange(0, SUB).to(tl.int64)
                s_ok = rs < i_end
                xs = _load_tile(x_ptr, rm, rs, stride_xm, stride_xi, m_ok, s_ok).to(CDT)
            row = _knot_rows(g_ptr, rs, I, stride_gi)
            basis = _basis_tile(xs, row, stride_gt, s_ok[None, :], K, NK, NB, P, LOG_NK, False)
            a = _dot_operand(tl.reshape(basis, (BLOCK_M, SUB * P)), DOT)
            ci = i0 + h * SUB + ci_local.to(tl.int64)
            w_mask = ((ci < i_end) & (cj < NB))[:, None] & n_ok[None, :]
            # Packed on load, in the compute dtype like the reference's fp32 product. The scaler
            # is loaded once per feature and broadcast over its P lanes (a gather per lane costs
            # P times the pointers and registers).
            w = tl.load(
                sw_ptr + rn[None, :] * stride_swo + ci[:, None] * stride_swi + cj[:, None] * stride_swj,
                mask=w_mask,
                other=0.0,
            ).to(CDT)
            if HAS_SCALER:
                sc = _load_tile_t(sc_ptr, rn, rs, stride_sco, stride_sci, n_ok, s_ok).to(CDT)
                w = tl.reshape(tl.reshape(w, (SUB, P, BLOCK_N)) * sc[:, None, :], (SUB * P, BLOCK_N))
            w = _dot_operand(w, DOT)
            acc = tl.dot(a, w, acc=acc, input_precision=PRECISION, out_dtype=CDT)

    if HAS_BIAS:  # once: in the first slice's partial when split
        acc += tl.load(b_ptr + rn * stride_b, mask=n_ok & (pid_s == 0), other=0.0).to(CDT)[None, :]
    _store_tile(y_ptr + pid_s * stride_ys, rm, rn, stride_ym, stride_yo, m_ok, n_ok, acc)


@triton.jit
def _kan_bwd_dx_kernel(
    dy_ptr,
    x_ptr,
    g_ptr,
    sw_ptr,
    sc_ptr,  # spline_scaler, or None (HAS_SCALER False; its strides are None too)
    bw_ptr,
    dx_ptr,
    M,
    I,
    O,
    M_BUCKET,  # autotune key only
    stride_dym,
    stride_dyo,
    stride_xm,
    stride_xi,
    stride_gi,
    stride_gt,
    stride_swo,
    stride_swi,
    stride_swj,
    stride_sco,
    stride_sci,
    stride_bwo,
    stride_bwi,
    stride_dxm,
    stride_dxi,
    K: tl.constexpr,
    NK: tl.constexpr,
    NB: tl.constexpr,
    P: tl.constexpr,
    LOG_NK: tl.constexpr,
    ACT: tl.constexpr,
    HAS_SCALER: tl.constexpr,
    CDT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    """A ``(BLOCK_M, BLOCK_I)`` tile of ``dX``: ``dY @ Wpacked`` times the basis derivatives, summed
    over each feature's ``P`` lanes, plus ``act'(x) * (dY @ base_weight)``."""
    pid_m = tl.program_id(0).to(tl.int64)
    pid_i = tl.program_id(1).to(tl.int64)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    ri = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    m_ok = rm < M
    i_ok = ri < I
    DOT = x_ptr.dtype.element_ty
    # Block-size rules: _config.check_block_sizes.
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16, "tl.dot needs blocks of at least 16")
    tl.static_assert(BLOCK_I * P >= 16, "tl.dot needs BLOCK_I * P >= 16 expanded columns")

    cc = tl.arange(0, BLOCK_I * P)
    ci = pid_i * BLOCK_I + (cc // P).to(tl.int64)
    cj = cc % P
    c_ok = (ci < I) & (cj < NB)

    acc_s = tl.zeros((BLOCK_M, BLOCK_I * P), dtype=CDT)
    acc_b = tl.zeros((BLOCK_M, BLOCK_I), dtype=CDT)
    for n0 in range(0, O, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        n_ok = rn < O
        dy = _dot_operand(_load_tile(dy_ptr, rm, rn, stride_dym, stride_dyo, m_ok, n_ok), DOT)
        # Packed on load (see _kan_fwd_kernel): the scaler once per feature, broadcast over lanes.
        wt = tl.load(
            sw_ptr + rn[:, None] * stride_swo + ci[None, :] * stride_swi + cj[None, :] * stride_swj,
            mask=n_ok[:, None] & c_ok[None, :],
            other=0.0,
        ).to(CDT)
        if HAS_SCALER:
            if P >= 8:
                sc = _load_tile(sc_ptr, rn, ri, stride_sco, stride_sci, n_ok, i_ok).to(CDT)
                wt = tl.reshape(
                    tl.reshape(wt, (BLOCK_N, BLOCK_I, P)) * sc[:, :, None], (BLOCK_N, BLOCK_I * P)
                )
            else:  # narrow bases (check_block_sizes)
                # Gathered per column: with fewer than 8 lanes and fp32 (TF32) operands, sm_90
                # compiles (triton 3.6 and 3.8) of the reshape form fail ("Illegal shared layout"
                # in TritonGPUOptimizeDotOperands): the dot operand's shared-memory layout is
                # hoisted above the reshape, onto a tile only P wide.
                sc = _load_tile(sc_ptr, rn, ci, stride_sco, stride_sci, n_ok, c_ok).to(CDT)
                wt = wt * sc
        wt = _dot_operand(wt, DOT)
        acc_s = tl.dot(dy, wt, acc=acc_s, input_precision=PRECISION, out_dtype=CDT)
        wbt = _dot_operand(_load_tile(bw_ptr, rn, ri, stride_bwo, stride_bwi, n_ok, i_ok), DOT)
        if BLOCK_I >= 16:
            acc_b = tl.dot(dy, wbt, acc=acc_b, input_precision=PRECISION, out_dtype=CDT)
        else:  # wide bases (check_block_sizes): a broadcast-and-sum
            acc_b += tl.sum(dy.to(CDT)[:, :, None] * wbt.to(CDT)[None, :, :], axis=1)

    x = _load_tile(x_ptr, rm, ri, stride_xm, stride_xi, m_ok, i_ok).to(CDT)
    row = _knot_rows(g_ptr, ri, I, stride_gi)
    dbasis = _basis_tile(x, row, stride_gt, i_ok[None, :], K, NK, NB, P, LOG_NK, True)
    dx = tl.sum(tl.reshape(acc_s, (BLOCK_M, BLOCK_I, P)) * dbasis, axis=2)
    dx += _act_grad(x, ACT) * acc_b
    _store_tile(dx_ptr, rm, ri, stride_dxm, stride_dxi, m_ok, i_ok, dx)


@triton.jit
def _kan_bwd_dw_kernel(
    dy_ptr,
    x_ptr,
    g_ptr,
    sw_ptr,
    sc_ptr,  # spline_scaler, or None (HAS_SCALER False; its strides are None too)
    dsw_ptr,
    dsc_ptr,  # its gradient, or None with it
    dbw_ptr,
    db_ptr,  # the bias gradient, or None (BIAS_GRAD False)
    M,
    I,
    O,
    M_BUCKET,  # autotune key only
    SPLIT,  # batch slices (programs along axis 2); autotune key only
    ROWS_PER_SPLIT,
    stride_dym,
    stride_dyo,
    stride_xm,
    stride_xi,
    stride_gi,
    stride_gt,
    stride_swo,
    stride_swi,
    stride_swj,
    stride_sco,
    stride_sci,
    K: tl.constexpr,
    NK: tl.constexpr,
    NB: tl.constexpr,
    P: tl.constexpr,
    LOG_NK: tl.constexpr,
    ACT: tl.constexpr,
    HAS_SCALER: tl.constexpr,
    BIAS_GRAD: tl.constexpr,
    CDT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    """A ``(BLOCK_I * P, BLOCK_N)`` tile of the packed weight gradient ``A(x)^T @ dY`` (and the base
    branch's) over batch slice ``pid_s``, written out as the parameters' gradients."""
    pid_i = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    pid_s = tl.program_id(2).to(tl.int64)
    ri = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    i_ok = ri < I
    n_ok = rn < O
    DOT = x_ptr.dtype.element_ty
    # Block-size rules: _config.check_block_sizes.
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16, "tl.dot needs blocks of at least 16")
    tl.static_assert(BLOCK_I * P >= 16, "tl.dot needs BLOCK_I * P >= 16 expanded columns")
    row = _knot_rows(g_ptr, ri, I, stride_gi)

    acc_s = tl.zeros((BLOCK_I * P, BLOCK_N), dtype=CDT)
    acc_b = tl.zeros((BLOCK_I, BLOCK_N), dtype=CDT)
    acc_db = tl.zeros((BLOCK_N,), dtype=CDT)
    m_start = pid_s * ROWS_PER_SPLIT
    m_end = tl.minimum(m_start + ROWS_PER_SPLIT, M)
    for m0 in range(m_start, m_end, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
        m_ok = rm < m_end
        x = _load_tile(x_ptr, rm, ri, stride_xm, stride_xi, m_ok, i_ok).to(CDT)
        dy = _dot_operand(_load_tile(dy_ptr, rm, rn, stride_dym, stride_dyo, m_ok, n_ok), DOT)
        if BIAS_GRAD:
            if pid_i == 0:  # the first column of programs also sums dY: the bias gradient
                acc_db += tl.sum(dy.to(CDT), axis=0)
        basis = _basis_tile(x, row, stride_gt, i_ok[None, :], K, NK, NB, P, LOG_NK, False)
        at = tl.trans(_dot_operand(tl.reshape(basis, (BLOCK_M, BLOCK_I * P)), DOT))
        acc_s = tl.dot(at, dy, acc=acc_s, input_precision=PRECISION, out_dtype=CDT)
        # Masked rows load x = 0 and dy = 0, so they add nothing (act(0) * 0).
        xa = _dot_operand(_act(x, ACT), DOT)
        if BLOCK_I >= 16:
            acc_b = tl.dot(tl.trans(xa), dy, acc=acc_b, input_precision=PRECISION, out_dtype=CDT)
        else:
            acc_b += tl.sum(xa.to(CDT)[:, :, None] * dy.to(CDT)[:, None, :], axis=0)

    # Epilogue: packed-weight gradient -> parameter gradients, written to this split's slot.
    cc = tl.arange(0, BLOCK_I * P)
    ci = pid_i * BLOCK_I + (cc // P).to(tl.int64)
    cj = cc % P
    c_mask = ((ci < I) & (cj < NB))[:, None] & n_ok[None, :]
    n_w = I * NB  # elements per output row of spline_weight's gradient
    dsw = acc_s
    if HAS_SCALER:
        sc = _load_tile_t(sc_ptr, rn, ri, stride_sco, stride_sci, n_ok, i_ok).to(CDT)
        dsw = tl.reshape(tl.reshape(acc_s, (BLOCK_I, P, BLOCK_N)) * sc[:, None, :], (BLOCK_I * P, BLOCK_N))
        sw = tl.load(
            sw_ptr + rn[None, :] * stride_swo + ci[:, None] * stride_swi + cj[:, None] * stride_swj,
            mask=c_mask,
            other=0.0,
        ).to(CDT)
        dsc = tl.sum(tl.reshape(acc_s * sw, (BLOCK_I, P, BLOCK_N)), axis=1)
        tl.store(
            dsc_ptr + pid_s * O * I + rn[None, :] * I + ri[:, None],
            dsc,
            mask=i_ok[:, None] & n_ok[None, :],
        )
    tl.store(dsw_ptr + pid_s * O * n_w + rn[None, :] * n_w + ci[:, None] * NB + cj[:, None], dsw, mask=c_mask)
    tl.store(
        dbw_ptr + pid_s * O * I + rn[None, :] * I + ri[:, None],
        acc_b,
        mask=i_ok[:, None] & n_ok[None, :],
    )
    if BIAS_GRAD:
        tl.store(db_ptr + pid_s * O + rn, acc_db, mask=n_ok & (pid_i == 0))


# Autotune keys: shapes (batch bucketed to a power of two, feature or batch slices) and every
# constexpr that changes the kernel's work, so launches that compile differently never share a
# tuned config. (Triton adds the pointer dtypes itself.)
_FWD_KEY = ["M_BUCKET", "SPLIT", "I", "O", "NK", "K", "ACT", "HAS_SCALER", "HAS_BIAS", "PRECISION"]
_DX_KEY = ["M_BUCKET", "I", "O", "NK", "K", "ACT", "HAS_SCALER", "PRECISION"]
_DW_KEY = ["M_BUCKET", "SPLIT", "I", "O", "NK", "K", "ACT", "HAS_SCALER", "BIAS_GRAD", "PRECISION"]


def fwd_split_count(x: torch.Tensor, m: int, n_in: int, n_out: int) -> int:
    """Feature slices for the forward: when the 64x64 output tiles would leave over half the SMs
    idle, enough slices to give every SM about one program, each slice at least 64 features.
    1 under the interpreter and on CPU."""
    sms = gpu_sms(x)
    if sms is None:
        return 1
    tiles = triton.cdiv(m, 64) * triton.cdiv(n_out, 64)
    if 2 * tiles >= sms:  # at least half the SMs busy already: not worth a partial buffer and a sum
        return 1
    return max(1, min(triton.cdiv(sms, tiles), n_in // 64, 32))


def kan_fwd(
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    bias: torch.Tensor | None,
    spline_order: int,
    act: int,
    input_precision: str,
    split: int | None = None,
) -> torch.Tensor:
    """Launch the forward kernel. ``x`` is ``(M, I)`` (any strides) in the operand dtype; returns
    ``(M, O)`` in ``x.dtype``. ``act``: 0 identity, 1 SiLU. ``input_precision``: "ieee" or "tf32".
    ``split``: feature slices (default :func:`fwd_split_count`); above 1 the slices' fp32 partial
    sums are added on the host, in a fixed order (deterministic)."""
    m, n_in = x.shape
    n_out = base_weight.shape[0]
    geo = geometry(grid, spline_order)
    y = torch.empty((m, n_out), device=x.device, dtype=x.dtype)
    if m == 0 or n_out == 0:
        return y
    if split is None:
        split = fwd_split_count(x, m, n_in, n_out)
    split = max(1, min(split, triton.cdiv(max(n_in, 1), 16)))
    feats = triton.cdiv(triton.cdiv(max(n_in, 1), split), 16) * 16
    split = triton.cdiv(max(n_in, 1), feats)
    acc = acc_dtype(x.dtype)
    out = y if split == 1 else torch.empty((split, m, n_out), device=x.device, dtype=acc)
    stride_s = 0 if split == 1 else out.stride(0)
    kernel = tuned("fwd", _kan_fwd_kernel, _FWD_KEY, **meta_for(geo.p, x.dtype))

    def launch_grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n_out, meta["BLOCK_N"]), split)

    kernel[launch_grid](
        x, grid, spline_weight, spline_scaler, base_weight, bias, out,
        m, n_in, n_out, next_pow2(m), split, feats,
        x.stride(0), x.stride(1), grid.stride(0), grid.stride(1),
        *spline_weight.stride(), *strides_or_none(spline_scaler, 2),
        *base_weight.stride(), *strides_or_none(bias, 1),
        stride_s, out.stride(-2), out.stride(-1),
        **geo.meta(), ACT=act,
        HAS_SCALER=spline_scaler is not None, HAS_BIAS=bias is not None,
        CDT=compute_tl_dtype(x.dtype), PRECISION=input_precision,
    )  # fmt: skip
    if split > 1:
        if y.dtype == acc:
            torch.sum(out, dim=0, out=y)
        else:
            y.copy_(out.sum(0))
    return y


def kan_bwd_dx(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    spline_order: int,
    act: int,
    input_precision: str,
) -> torch.Tensor:
    """``dL/dx`` of shape ``(M, I)`` in ``x.dtype``, from ``grad_y`` ``(M, O)`` (any strides)."""
    m, n_in = x.shape
    n_out = base_weight.shape[0]
    geo = geometry(grid, spline_order)
    dx = torch.empty((m, n_in), device=x.device, dtype=x.dtype)
    if m == 0 or n_in == 0:
        return dx
    if n_out == 0:
        return dx.zero_()
    kernel = tuned("dx", _kan_bwd_dx_kernel, _DX_KEY, **meta_for(geo.p, x.dtype))

    def launch_grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n_in, meta["BLOCK_I"]))

    kernel[launch_grid](
        grad_y, x, grid, spline_weight, spline_scaler, base_weight, dx,
        m, n_in, n_out, next_pow2(m),
        grad_y.stride(0), grad_y.stride(1), x.stride(0), x.stride(1), grid.stride(0), grid.stride(1),
        *spline_weight.stride(), *strides_or_none(spline_scaler, 2),
        base_weight.stride(0), base_weight.stride(1), dx.stride(0), dx.stride(1),
        **geo.meta(), ACT=act,
        HAS_SCALER=spline_scaler is not None, CDT=compute_tl_dtype(x.dtype), PRECISION=input_precision,
    )  # fmt: skip
    return dx


def dw_split_count(x: torch.Tensor, m: int, n_in: int, n_out: int) -> int:
    """How many batch slices the weight gradient uses: enough programs to fill the GPU (about two
    per SM, counted with the smallest tiles), each slice at least 512 rows long."""
    sms = gpu_sms(x)
    if sms is None or n_in == 0 or n_out == 0:
        return 1
    tiles = triton.cdiv(n_in, 16) * triton.cdiv(n_out, 64)
    want = triton.cdiv(2 * sms, tiles)
    return max(1, min(want, m // 512, 64))


def kan_bwd_dw(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    grid: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    spline_order: int,
    act: int,
    input_precision: str,
    need_bias_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Weight gradients ``(d base_weight (O, I), d spline_weight (O, I, NB), d scaler (O, I) or
    None, d bias (O,) or None)``; the bias gradient (``grad_y.sum(0)``) is summed by the same
    kernel when ``need_bias_grad``.

    Returned in the accumulator dtype (fp32, fp64 for fp64 inputs); the caller casts to the
    parameters' dtypes.
    """
    m, n_in = x.shape
    n_out = grad_y.shape[1]
    geo = geometry(grid, spline_order)
    acc = acc_dtype(x.dtype)
    split = dw_split_count(x, m, n_in, n_out) if m > 0 else 1
    has_sc = spline_scaler is not None
    dev = x.device
    # One slot per split; with one split the outputs are allocated without the slot dimension.
    lead = (split,) if split > 1 else ()
    dsw = torch.empty((*lead, n_out, n_in, geo.nb), device=dev, dtype=acc)
    dbw = torch.empty((*lead, n_out, n_in), device=dev, dtype=acc)
    dsc = torch.empty((*lead, n_out, n_in), device=dev, dtype=acc) if has_sc else None
    db = None
    if need_bias_grad:
        db = torch.empty((*lead, n_out), device=dev, dtype=acc)
    if n_in == 0 and db is not None:  # no weight tiles, so no program sums the bias gradient
        db = grad_y.sum(0, dtype=acc).expand(*lead, n_out).contiguous()
    if n_in > 0 and n_out > 0:
        rows = triton.cdiv(triton.cdiv(max(m, 1), split), 128) * 128
        kernel = tuned("dw", _kan_bwd_dw_kernel, _DW_KEY, **meta_for(geo.p, x.dtype))

        def launch_grid(meta):
            return (triton.cdiv(n_in, meta["BLOCK_I"]), triton.cdiv(n_out, meta["BLOCK_N"]), split)

        kernel[launch_grid](
            grad_y, x, grid, spline_weight, spline_scaler, dsw, dsc, dbw, db,
            m, n_in, n_out, next_pow2(m), split, rows,
            grad_y.stride(0), grad_y.stride(1), x.stride(0), x.stride(1), grid.stride(0), grid.stride(1),
            *spline_weight.stride(), *strides_or_none(spline_scaler, 2),
            **geo.meta(), ACT=act,
            HAS_SCALER=has_sc, BIAS_GRAD=db is not None, CDT=compute_tl_dtype(x.dtype),
            PRECISION=input_precision,
        )  # fmt: skip
    if split > 1:
        return dbw.sum(0), dsw.sum(0), dsc.sum(0) if has_sc else None, db.sum(0) if db is not None else None
    return dbw, dsw, dsc, db
