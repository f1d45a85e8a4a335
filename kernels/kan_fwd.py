"""Forward kernel: ``y = [B(x) | act(x)] @ [spline_weight * spline_scaler | base_weight]^T + bias``.

Each program owns a ``(BLOCK_M, BLOCK_N)`` tile of ``y`` (or, when those tiles are too few to fill
the GPU, of one of ``SPLIT`` fp32 partial sums over slices of the input features, summed on the
host: small batches would otherwise run the whole reduction over ``I`` on a handful of SMs). For
every block of ``BLOCK_I`` input features it loads ``x`` and accumulates the base branch
``act(x) @ base_weight^T``; then, per sub-block of ``SUB_I`` features (widened to 16 expanded
columns for narrow bases), it builds the ``(BLOCK_M, SUB_I * P)`` basis tile in registers
(``P = next_pow2(G + K)``, the padding lanes are zero), packs the matching weight tile on load and
accumulates the spline product. All ``tl.dot`` accumulation is fp32 (fp64 for fp64 inputs). The
basis never goes to memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._basis import _act, _basis_tile, _cast, _dot_operand
from ._config import gpu_sms, meta_for, next_pow2, tuned


@triton.jit
def _kan_fwd_kernel(
    x_ptr,
    g_ptr,
    sw_ptr,
    sc_ptr,
    bw_ptr,
    b_ptr,
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
    # narrow bases; never more than the block.
    SUB: tl.constexpr = min(BLOCK_I, SUB_I if SUB_I * P >= 16 else 16 // P)
    tl.static_assert(BLOCK_I % SUB == 0)
    # Expanded column c = i * P + j of the current feature sub-block, as (feature, lane) pairs.
    cc = tl.arange(0, SUB * P)
    ci_local = cc // P
    cj = cc % P

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=CDT)
    for i0 in range(i_start, i_end, BLOCK_I):
        ri = i0 + tl.arange(0, BLOCK_I).to(tl.int64)
        i_ok = ri < i_end
        x = tl.load(
            x_ptr + rm[:, None] * stride_xm + ri[None, :] * stride_xi,
            mask=m_ok[:, None] & i_ok[None, :],
            other=0.0,
        ).to(CDT)
        wb = tl.load(
            bw_ptr + rn[None, :] * stride_bwo + ri[:, None] * stride_bwi,
            mask=i_ok[:, None] & n_ok[None, :],
            other=0.0,
        )
        wb = _dot_operand(wb, DOT)
        xa = _dot_operand(_act(x, ACT), DOT)
        if BLOCK_I >= 16:
            acc = tl.dot(xa, wb, acc=acc, input_precision=PRECISION, out_dtype=CDT)
        else:  # wide bases, few features per block: tl.dot needs 16; this branch is P times smaller
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
                xs = tl.load(
                    x_ptr + rm[:, None] * stride_xm + rs[None, :] * stride_xi,
                    mask=m_ok[:, None] & s_ok[None, :],
                    other=0.0,
                ).to(CDT)
            # Clamp masked features onto a real row of knots so every load is in bounds.
            row = g_ptr + tl.minimum(rs, I - 1)[None, :] * stride_gi
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
                sc = tl.load(
                    sc_ptr + rn[None, :] * stride_sco + rs[:, None] * stride_sci,
                    mask=s_ok[:, None] & n_ok[None, :],
                    other=0.0,
                ).to(CDT)
                w = tl.reshape(tl.reshape(w, (SUB, P, BLOCK_N)) * sc[:, None, :], (SUB * P, BLOCK_N))
            w = _dot_operand(w, DOT)
            acc = tl.dot(a, w, acc=acc, input_precision=PRECISION, out_dtype=CDT)

    if HAS_BIAS:  # once: in the first slice's partial when split
        acc += tl.load(b_ptr + rn * stride_b, mask=n_ok & (pid_s == 0), other=0.0).to(CDT)[None, :]
    tl.store(
        y_ptr + pid_s * stride_ys + rm[:, None] * stride_ym + rn[None, :] * stride_yo,
        _cast(acc, y_ptr.dtype.element_ty),
        mask=m_ok[:, None] & n_ok[None, :],
    )


# Autotune key: shapes (batch bucketed to a power of two, feature slices) and the constexprs that
# change the kernel's work; Triton adds the pointer dtypes itself.
_FWD_KEY = ["M_BUCKET", "SPLIT", "I", "O", "NK", "K", "ACT", "HAS_SCALER", "HAS_BIAS", "PRECISION"]


def compute_tl_dtype(dtype: torch.dtype):
    """Accumulator / knot-arithmetic dtype: fp64 for fp64 operands, fp32 otherwise."""
    return tl.float64 if dtype == torch.float64 else tl.float32


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
    nk = grid.shape[1]
    nb = nk - 1 - spline_order
    p = next_pow2(nb)
    y = torch.empty((m, n_out), device=x.device, dtype=x.dtype)
    if m == 0 or n_out == 0:
        return y
    if split is None:
        split = fwd_split_count(x, m, n_in, n_out)
    split = max(1, min(split, triton.cdiv(max(n_in, 1), 16)))
    feats = triton.cdiv(triton.cdiv(max(n_in, 1), split), 16) * 16
    split = triton.cdiv(max(n_in, 1), feats)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = y if split == 1 else torch.empty((split, m, n_out), device=x.device, dtype=acc_dtype)
    stride_s = 0 if split == 1 else out.stride(0)
    sc = spline_scaler if spline_scaler is not None else spline_weight  # dummy pointer when absent
    sc_strides = (sc.stride(0), sc.stride(1)) if spline_scaler is not None else (0, 0)
    kernel = tuned("fwd", _kan_fwd_kernel, _FWD_KEY, **meta_for(p, x.dtype))

    def launch_grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n_out, meta["BLOCK_N"]), split)

    kernel[launch_grid](
        x, grid, spline_weight, sc, base_weight, bias if bias is not None else y, out,
        m, n_in, n_out, next_pow2(m), split, feats,
        x.stride(0), x.stride(1), grid.stride(0), grid.stride(1),
        spline_weight.stride(0), spline_weight.stride(1), spline_weight.stride(2), *sc_strides,
        base_weight.stride(0), base_weight.stride(1), bias.stride(0) if bias is not None else 0,
        stride_s, out.stride(-2), out.stride(-1),
        K=spline_order, NK=nk, NB=nb, P=p, LOG_NK=max(1, (nk - 1).bit_length()), ACT=act,
        HAS_SCALER=spline_scaler is not None, HAS_BIAS=bias is not None,
        CDT=compute_tl_dtype(x.dtype), PRECISION=input_precision,
    )  # fmt: skip
    if split > 1:
        if y.dtype == acc_dtype:
            torch.sum(out, dim=0, out=y)
        else:
            y.copy_(out.sum(0))
    return y
