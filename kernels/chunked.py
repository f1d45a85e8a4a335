"""The chunked strategy: Triton writes the expanded input ``[B(x) | act(x)]`` a bounded slice at a
time and cuBLAS multiplies it; backward, a second kernel reduces ``dY @ W`` with the basis
derivatives into ``dX``.

Chunking, the packed weight's layout and precision: README.md, "How the kernels work".
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._basis import _act, _act_grad, _basis_tile, _cast, _knot_rows, _load_tile, _load_tile_t, _store_tile
from ._config import acc_dtype, compute_tl_dtype, geometry, interpreting, strides_or_none

__all__ = ["chunked_fwd", "chunked_bwd"]


@triton.jit
def _kan_expand_kernel(
    x_ptr,
    g_ptr,
    a_ptr,
    M,
    I,
    stride_xm,
    stride_xi,
    stride_gi,
    stride_gt,
    stride_am,
    K: tl.constexpr,
    NK: tl.constexpr,
    NB: tl.constexpr,
    P: tl.constexpr,
    LOG_NK: tl.constexpr,
    ACT: tl.constexpr,
    CDT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    """``A[m, i * (NB + 1) + j]``: ``B_j(x[m, i])`` for ``j < NB``, ``act(x[m, i])`` for ``j = NB``.

    ``P = next_pow2(NB + 1)`` register lanes per feature; lanes past ``NB`` are not stored.
    """
    pid_m = tl.program_id(0).to(tl.int64)
    pid_i = tl.program_id(1).to(tl.int64)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    ri = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    m_ok = rm < M
    i_ok = ri < I
    x = _load_tile(x_ptr, rm, ri, stride_xm, stride_xi, m_ok, i_ok).to(CDT)
    row = _knot_rows(g_ptr, ri, I, stride_gi)
    basis = _basis_tile(x, row, stride_gt, i_ok[None, :], K, NK, NB, P, LOG_NK, False)
    jj = tl.arange(0, P)[None, None, :]
    tile = tl.where(jj == NB, _act(x, ACT)[:, :, None], basis)
    col = ri[None, :, None] * (NB + 1) + jj
    mask = m_ok[:, None, None] & i_ok[None, :, None] & (jj <= NB)
    tl.store(a_ptr + rm[:, None, None] * stride_am + col, _cast(tile, a_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _kan_dx_reduce_kernel(
    da_ptr,
    x_ptr,
    g_ptr,
    dx_ptr,
    M,
    I,
    stride_dam,
    stride_xm,
    stride_xi,
    stride_gi,
    stride_gt,
    stride_dxm,
    stride_dxi,
    K: tl.constexpr,
    NK: tl.constexpr,
    NB: tl.constexpr,
    P: tl.constexpr,
    LOG_NK: tl.constexpr,
    ACT: tl.constexpr,
    CDT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    """``dX[m, i] = sum_j B'_j(x) dA[m, i*(NB+1) + j] + act'(x) dA[m, i*(NB+1) + NB]``."""
    pid_m = tl.program_id(0).to(tl.int64)
    pid_i = tl.program_id(1).to(tl.int64)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    ri = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    m_ok = rm < M
    i_ok = ri < I
    x = _load_tile(x_ptr, rm, ri, stride_xm, stride_xi, m_ok, i_ok).to(CDT)
    row = _knot_rows(g_ptr, ri, I, stride_gi)
    der = _basis_tile(x, row, stride_gt, i_ok[None, :], K, NK, NB, P, LOG_NK, True)
    jj = tl.arange(0, P)[None, None, :]
    coef = tl.where(jj == NB, _act_grad(x, ACT)[:, :, None], der)
    col = ri[None, :, None] * (NB + 1) + jj
    mask = m_ok[:, None, None] & i_ok[None, :, None] & (jj <= NB)
    da = tl.load(da_ptr + rm[:, None, None] * stride_dam + col, mask=mask, other=0.0).to(CDT)
    dx = tl.sum(coef * da, axis=2)
    _store_tile(dx_ptr, rm, ri, stride_dxm, stride_dxi, m_ok, i_ok, dx)


@triton.jit
def _kan_pack_kernel(
    sw_ptr,
    sc_ptr,  # spline_scaler, or None (HAS_SCALER False; its strides are None too)
    bw_ptr,
    wt_ptr,
    I,
    O,
    stride_swo,
    stride_swi,
    stride_swj,
    stride_sco,
    stride_sci,
    stride_bwo,
    stride_bwi,
    NB: tl.constexpr,
    HAS_SCALER: tl.constexpr,
    CDT: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    """``Wt[i*(NB+1) + j, o] = spline_weight[o, i, j] * scaler[o, i]``; ``Wt[i*(NB+1) + NB, o] =
    base_weight[o, i]``. The product is formed in ``CDT`` and rounded once to ``Wt``'s dtype."""
    ri = tl.program_id(0).to(tl.int64) * BLOCK_I + tl.arange(0, BLOCK_I)
    ro = tl.program_id(1).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    i_ok = ri < I
    o_ok = ro < O
    mask = i_ok[:, None] & o_ok[None, :]
    out_rows = wt_ptr + (ri[:, None] * (NB + 1)) * O + ro[None, :]
    src = sw_ptr + ro[None, :] * stride_swo + ri[:, None] * stride_swi
    if HAS_SCALER:
        sc = _load_tile_t(sc_ptr, ro, ri, stride_sco, stride_sci, o_ok, i_ok).to(CDT)
    for j in range(NB):
        w = tl.load(src + j * stride_swj, mask=mask, other=0.0).to(CDT)
        if HAS_SCALER:
            w = w * sc
        tl.store(out_rows + j * O, _cast(w, wt_ptr.dtype.element_ty), mask=mask)
    wb = _load_tile_t(bw_ptr, ro, ri, stride_bwo, stride_bwi, o_ok, i_ok)
    tl.store(out_rows + NB * O, _cast(wb, wt_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _kan_unpack_kernel(
    dwt_ptr,
    sw_ptr,
    sc_ptr,  # spline_scaler, or None (HAS_SCALER False; its strides are None too)
    dsw_ptr,
    dsc_ptr,  # its gradient, or None with it
    dbw_ptr,
    I,
    O,
    stride_swo,
    stride_swi,
    stride_swj,
    stride_sco,
    stride_sci,
    stride_dswo,
    stride_dswi,
    stride_dswj,
    stride_go,
    stride_gi,
    NB: tl.constexpr,
    HAS_SCALER: tl.constexpr,
    CDT: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    """Parameter gradients from ``dWt`` (layout of ``Wt``), in ``CDT``, into outputs of any strides
    (``stride_go``/``stride_gi`` for the two ``(O, I)`` ones):
    ``d spline_weight = dWt * scaler``, ``d scaler = sum_j dWt * spline_weight``, ``d base = dWt[NB]``."""
    ri = tl.program_id(0).to(tl.int64) * BLOCK_I + tl.arange(0, BLOCK_I)
    ro = tl.program_id(1).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    i_ok = ri < I
    o_ok = ro < O
    mask = i_ok[:, None] & o_ok[None, :]
    g_rows = dwt_ptr + (ri[:, None] * (NB + 1)) * O + ro[None, :]
    w_src = sw_ptr + ro[None, :] * stride_swo + ri[:, None] * stride_swi
    dsw_dst = dsw_ptr + ro[None, :] * stride_dswo + ri[:, None] * stride_dswi
    oi = ro[None, :] * stride_go + ri[:, None] * stride_gi  # (o, i) in the (O, I) outputs
    if HAS_SCALER:
        sc = _load_tile_t(sc_ptr, ro, ri, stride_sco, stride_sci, o_ok, i_ok).to(CDT)
        dsc = tl.zeros((BLOCK_I, BLOCK_O), dtype=CDT)
    for j in range(NB):
        g = tl.load(g_rows + j * O, mask=mask, other=0.0).to(CDT)
        if HAS_SCALER:
            dsc += g * tl.load(w_src + j * stride_swj, mask=mask, other=0.0).to(CDT)
            g = g * sc
        tl.store(dsw_dst + j * stride_dswj, g.to(dsw_ptr.dtype.element_ty), mask=mask)
    if HAS_SCALER:
        tl.store(dsc_ptr + oi, dsc.to(dsc_ptr.dtype.element_ty), mask=mask)
    gb = tl.load(g_rows + NB * O, mask=mask, other=0.0).to(CDT)
    tl.store(dbw_ptr + oi, gb.to(dbw_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers.


def _tile_blocks(p: int) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_I, num_warps)`` for the elementwise kernels. On a GPU about 2K lanes per
    program: ~80 registers per thread in sm_90 compiles (tools/kernel_resources.py; 8K lanes
    took 255), so many programs share an SM, which this memory-bound work needs. Small under the
    interpreter so CPU tests cross block edges."""
    if interpreting():
        return 16, max(1, 64 // p), 4
    return 16, max(1, 128 // p), 4


def _expand(x: torch.Tensor, grid: torch.Tensor, out: torch.Tensor, spline_order: int, act: int) -> None:
    """Write ``A(x)`` (``x`` is ``(M, I)``, ``grid`` its ``(I, NK)`` knots) into ``out`` ``(M, I*(NB+1))``."""
    m, n_in = x.shape
    geo = geometry(grid, spline_order, act_lane=True)
    bm, bi, warps = _tile_blocks(geo.p)
    _kan_expand_kernel[(triton.cdiv(m, bm), triton.cdiv(n_in, bi))](
        x, grid, out, m, n_in, x.stride(0), x.stride(1), grid.stride(0), grid.stride(1), out.stride(0),
        **geo.meta(), ACT=act, CDT=compute_tl_dtype(x.dtype),
        BLOCK_M=bm, BLOCK_I=bi, num_warps=warps,
    )  # fmt: skip


def _dx_reduce(
    da: torch.Tensor, x: torch.Tensor, grid: torch.Tensor, dx: torch.Tensor, spline_order: int, act: int
) -> None:
    m, n_in = x.shape
    geo = geometry(grid, spline_order, act_lane=True)
    bm, bi, warps = _tile_blocks(geo.p)
    _kan_dx_reduce_kernel[(triton.cdiv(m, bm), triton.cdiv(n_in, bi))](
        da, x, grid, dx, m, n_in, da.stride(0), x.stride(0), x.stride(1), grid.stride(0), grid.stride(1),
        dx.stride(0), dx.stride(1),
        **geo.meta(), ACT=act, CDT=compute_tl_dtype(x.dtype),
        BLOCK_M=bm, BLOCK_I=bi, num_warps=warps,
    )  # fmt: skip


def _weight_blocks() -> tuple[int, int]:
    return (4, 16) if interpreting() else (8, 128)


def pack_weights(
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``Wt`` ``(I * (NB + 1), O)`` in ``dtype`` (layout: :func:`_kan_pack_kernel`)."""
    n_out, n_in, nb = spline_weight.shape
    wt = torch.empty((n_in * (nb + 1), n_out), device=spline_weight.device, dtype=dtype)
    if wt.numel() == 0:
        return wt
    bi, bo = _weight_blocks()
    acc = torch.float64 if torch.float64 in (dtype, spline_weight.dtype) else torch.float32
    _kan_pack_kernel[(triton.cdiv(n_in, bi), triton.cdiv(n_out, bo))](
        spline_weight, spline_scaler, base_weight, wt, n_in, n_out,
        *spline_weight.stride(), *strides_or_none(spline_scaler, 2), base_weight.stride(0), base_weight.stride(1),
        NB=nb, HAS_SCALER=spline_scaler is not None, CDT=compute_tl_dtype(acc), BLOCK_I=bi, BLOCK_O=bo,
    )  # fmt: skip
    return wt


def _unpack_grads(
    dwt: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    dbw: torch.Tensor,
    dsw: torch.Tensor,
    dsc: torch.Tensor | None,
) -> None:
    """Write the parameter gradients of the features ``dwt`` covers into ``dbw``, ``dsw``, ``dsc``
    (views of the full gradients, any strides); ``spline_weight``/``spline_scaler`` are the same
    features' slices."""
    n_out, n_in, nb = spline_weight.shape
    if n_in == 0 or n_out == 0:
        return
    bi, bo = _weight_blocks()
    if (dsc is None) != (spline_scaler is None):
        raise ValueError("d_scaler must be given exactly when spline_scaler is")
    if dsc is not None and dsc.stride() != dbw.stride():  # the kernel takes one set of (O, I) strides
        raise ValueError(f"d_scaler strides {dsc.stride()} differ from d_base_weight's {dbw.stride()}")
    _kan_unpack_kernel[(triton.cdiv(n_in, bi), triton.cdiv(n_out, bo))](
        dwt, spline_weight, spline_scaler, dsw, dsc, dbw, n_in, n_out,
        *spline_weight.stride(), *strides_or_none(spline_scaler, 2), *dsw.stride(), *dbw.stride(),
        NB=nb, HAS_SCALER=spline_scaler is not None, CDT=compute_tl_dtype(dbw.dtype), BLOCK_I=bi, BLOCK_O=bo,
    )  # fmt: skip


def chunked_fwd(
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor | None,
    bias: torch.Tensor | None,
    spline_order: int,
    act: int,
    chunk_bytes: int,
) -> torch.Tensor:
    """Forward of the chunked strategy; same contract as ``kan_fwd`` (``x`` is ``(M, I)`` in the
    operand dtype, ``y`` is ``(M, O)`` in that dtype). The products run with autocast disabled:
    the operands already have the dtype autocast chose."""
    m, n_in = x.shape
    n_out, _, nb = spline_weight.shape
    y = torch.empty((m, n_out), device=x.device, dtype=x.dtype)
    if m == 0 or n_out == 0:
        return y
    if n_in == 0:
        return y.copy_(bias.to(x.dtype).expand(m, n_out)) if bias is not None else y.zero_()
    width = n_in * (nb + 1)
    wt = pack_weights(base_weight, spline_weight, spline_scaler, x.dtype)
    b = bias.to(x.dtype) if bias is not None else None
    rows = max(1, min(m, chunk_bytes // (width * x.element_size())))
    buf = torch.empty(rows * width, device=x.device, dtype=x.dtype)
    with torch.autocast(x.device.type, enabled=False):
        for r0 in range(0, m, rows):
            r1 = min(m, r0 + rows)
            a = buf[: (r1 - r0) * width].view(r1 - r0, width)
            _expand(x[r0:r1], grid, a, spline_order, act)
            if b is not None:
                torch.addmm(b, a, wt, out=y[r0:r1])
            else:
                torch.mm(a, wt, out=y[r0:r1])
    return y


def chunked_bwd(
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
    chunk_bytes: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Backward of the chunked strategy: ``(dx, d_base_weight, d_spline_weight, d_scaler)``, like
    ``kan_bwd_dx`` + ``kan_bwd_dw`` (weight gradients in the accumulator dtype, None when not
    needed; ``dx`` in ``x.dtype``). Under autocast the packed weight gradient is rounded once to
    the operand dtype by its product, as ``nn.Linear``'s weight gradient is."""
    m, n_in = x.shape
    n_out, _, nb = spline_weight.shape
    acc = acc_dtype(x.dtype)
    dev = x.device
    dx = torch.empty((m, n_in), device=dev, dtype=x.dtype) if need_dx else None
    if m == 0 or n_out == 0 or n_in == 0 or not (need_dx or need_dw):
        # Nothing to multiply: the gradients are zero (dx is empty or all zero as well).
        if dx is not None:
            dx.zero_()
        if not need_dw:
            return dx, None, None, None
        dsc = torch.zeros((n_out, n_in), device=dev, dtype=acc) if spline_scaler is not None else None
        return (
            dx,
            torch.zeros((n_out, n_in), device=dev, dtype=acc),
            torch.zeros((n_out, n_in, nb), device=dev, dtype=acc),
            dsc,
        )

    dy = grad_y.to(x.dtype)
    if need_dw:
        dbw = torch.empty((n_out, n_in), device=dev, dtype=acc)
        dsw = torch.empty((n_out, n_in, nb), device=dev, dtype=acc)
        dsc = torch.empty((n_out, n_in), device=dev, dtype=acc) if spline_scaler is not None else None
    feats = max(1, min(n_in, chunk_bytes // (m * (nb + 1) * x.element_size())))
    buf = torch.empty(m * feats * (nb + 1), device=dev, dtype=x.dtype)
    # Per slice of features: the packed weight and its gradient for those features only, so every
    # transient is slice-sized; the gradients are unpacked straight into their slice.
    with torch.autocast(dev.type, enabled=False):
        for f0 in range(0, n_in, feats):
            f1 = min(n_in, f0 + feats)
            width = (f1 - f0) * (nb + 1)
            a = buf[: m * width].view(m, width)
            sw_f = spline_weight[:, f0:f1]
            sc_f = spline_scaler[:, f0:f1] if spline_scaler is not None else None
            if need_dw:
                _expand(x[:, f0:f1], grid[f0:f1], a, spline_order, act)
                dwt = torch.mm(a.t(), dy)  # (width, O): this slice's packed-weight gradient
                _unpack_grads(
                    dwt, sw_f, sc_f, dbw[:, f0:f1], dsw[:, f0:f1], dsc[:, f0:f1] if dsc is not None else None
                )
                del dwt
            if need_dx:
                wt = pack_weights(base_weight[:, f0:f1], sw_f, sc_f, x.dtype)
                torch.mm(dy, wt.t(), out=a)  # dA for this slice, reusing the buffer
                del wt
                _dx_reduce(a, x[:, f0:f1], grid[f0:f1], dx[:, f0:f1], spline_order, act)
    if not need_dw:
        return dx, None, None, None
    return dx, dbw, dsw, dsc
