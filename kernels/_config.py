"""Launch configuration: block sizes, autotuning, interpreter detection (no CUDA queries at import)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from efficient_kan.settings import settings

from ._autotune import parallel_compile_autotune

__all__ = [
    "Geometry",
    "acc_dtype",
    "autotune_enabled",
    "check_block_sizes",
    "compute_tl_dtype",
    "geometry",
    "gpu_sms",
    "interpreting",
    "meta_for",
    "next_pow2",
    "num_sms",
    "strides_or_none",
    "tuned",
]


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``, which must be
    set before triton is imported)."""
    return settings().interpret


def autotune_enabled() -> bool:
    """False: each kernel's first config, no tuning compiles (``efficient_kan.settings().autotune``)."""
    return settings().autotune


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


class Geometry(NamedTuple):
    """Sizes of one layer's spline, as the kernels' constexprs take them."""

    k: int  # spline order
    nk: int  # knots per feature
    nb: int  # bases per feature (nk - 1 - k)
    p: int  # register lanes per feature: a power of two >= the lanes a kernel fills
    log_nk: int  # steps of the span search over nk knots

    def meta(self) -> dict:
        return {"K": self.k, "NK": self.nk, "NB": self.nb, "P": self.p, "LOG_NK": self.log_nk}


def geometry(grid: torch.Tensor, spline_order: int, act_lane: bool = False) -> Geometry:
    """The :class:`Geometry` of ``grid`` (``(I, NK)`` knots). ``act_lane``: one more lane per
    feature for the base activation (the chunked strategy's expanded rows hold ``NB + 1`` values)."""
    nk = grid.shape[1]
    nb = nk - 1 - spline_order
    return Geometry(spline_order, nk, nb, next_pow2(nb + int(act_lane)), max(1, (nk - 1).bit_length()))


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulator dtype of operands in ``dtype``: fp64 for fp64, fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def compute_tl_dtype(dtype: torch.dtype):
    """:func:`acc_dtype` as a Triton dtype: the kernels' accumulators and knot arithmetic."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def strides_or_none(t: torch.Tensor | None, ndim: int) -> tuple[int | None, ...]:
    """``t``'s strides, or ``ndim`` Nones for an absent optional tensor (whose pointer the
    launchers pass as None as well). Triton compiles a None argument as a constexpr, so a kernel
    launched without the tensor takes none of its arguments at run time; its ``HAS_*`` flag
    removes the code that would read them."""
    return tuple(t.stride()) if t is not None else (None,) * ndim


@functools.cache
def num_sms(device_index: int) -> int:
    """Streaming multiprocessors of a CUDA device (queried lazily, at first launch)."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def gpu_sms(x: torch.Tensor) -> int | None:
    """Streaming multiprocessors of the GPU that runs a launch on ``x``; None on CPU tensors and
    under the interpreter (where launch heuristics that fill a GPU do not apply)."""
    if interpreting() or not x.is_cuda:
        return None
    return num_sms(x.device.index or 0)


def meta_for(p: int, dtype: torch.dtype) -> dict:
    """Shape class for the config lists: the padded bases per feature (wide ones get their own
    lists, narrow ones share one) and whether operands are fp64."""
    return {"p": p if p >= 32 else 0, "fp64": dtype == torch.float64}


def check_block_sizes(kind: str, p: int, meta: dict) -> None:
    """Raise ``ValueError`` unless ``meta`` (a config of the fused kernel ``kind``: "fwd", "dx",
    "dw") keeps the block-size rules for ``p`` lanes per feature (0: every narrow ``P <= 16``).

    The rules, each also a ``tl.static_assert`` in the kernels:

    - ``tl.dot`` needs every dimension >= 16: ``BLOCK_M``, ``BLOCK_N`` >= 16 and the expanded tile
      ``BLOCK_I * P`` >= 16 columns.
    - forward: the spline product runs in sub-blocks of ``SUB_I`` features, widened to ``16 // P``
      features where ``SUB_I * P < 16`` and never wider than ``BLOCK_I``; that sub-block divides
      ``BLOCK_I``.

    Two code paths follow from the sizes and need no check:

    - wide bases (``P >= 32``) keep the expanded tile at 128-256 columns with ``BLOCK_I < 16``; the
      base branch, ``P`` times smaller than the spline product, is then a broadcast-and-sum in
      the kernel instead of a ``tl.dot``;
    - narrow bases (``P < 8``): the input gradient multiplies the scaler into the weight tile by a
      gather per column, not by a reshape-broadcast, which sm_90 compiles reject for fp32 (TF32)
      operands ("Illegal shared layout" in TritonGPUOptimizeDotOperands, triton 3.6 and 3.8).
    """
    bm, bn, bi = meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_I"]
    for lanes in [p] if p else [1, 2, 4, 8, 16]:
        problems = []
        if min(bm, bn) < 16:
            problems.append("BLOCK_M and BLOCK_N must be >= 16")
        if bi * lanes < 16:
            problems.append("BLOCK_I * P must be >= 16")
        if kind == "fwd":
            sub_i = meta["SUB_I"]
            sub = min(bi, sub_i if sub_i * lanes >= 16 else 16 // lanes)
            if bi % sub:
                problems.append(f"the spline sub-block ({sub} features) must divide BLOCK_I")
        if problems:
            raise ValueError(f"{kind} config {meta} at P={lanes}: " + "; ".join(problems))


def _configs(kind: str, p: int, fp64: bool) -> list[triton.Config]:
    """Candidate block sizes, best guess first (the only one used under the interpreter); each
    keeps the rules of :func:`check_block_sizes`."""
    if interpreting() or not autotune_enabled():
        # EFFICIENT_KAN_AUTOTUNE=0: first config only (quick runs; no tuning compiles).
        if not interpreting():
            return _configs_gpu(kind, p, fp64)[:1]
        # Small blocks so CPU tests hit the masks, several programs and both base-branch forms;
        # the interpreter ignores warps.
        bi = 16 if p == 0 else max(1, 128 // p)
        meta = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_I": bi}
        if kind == "fwd":  # one spline sub-block (tests/test_kernels.py covers several)
            meta["SUB_I"] = bi
        return [triton.Config(meta, num_warps=4)]
    return _configs_gpu(kind, p, fp64)


def _configs_gpu(kind: str, p: int, fp64: bool) -> list[triton.Config]:
    """GPU candidates. Stages are kept low: the weight tiles are packed on load from the fp32
    parameters (spline_weight and scaler), so each pipeline stage costs 2 fp32 tiles of shared
    memory; sm_90 compiles of the forward at 3 stages need 250-400 KiB (over the 227 KiB limit)."""

    def c(bm, bn, warps, stages, bi=16, sub=None):
        meta = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_I": bi}
        if kind == "fwd":  # the forward's spline product runs in sub-blocks of SUB_I features
            meta["SUB_I"] = sub or bi
        return triton.Config(meta, num_warps=warps, num_stages=stages)

    if p:
        b128, b256 = max(1, 128 // p), max(1, 256 // p)  # features per expanded tile of 128 / 256
        if fp64:
            return [c(16, 32, 4, 1, b128)]
        # First: least spilling in sm_90 compiles at G=20, K=3 with triton 3.6 and 3.8
        # (benchmarks/results/kernel_resources_sm90.md).
        if kind == "fwd":
            return [
                c(32, 64, 4, 1, b128),
                c(128, 64, 8, 1, b128),
                c(64, 128, 8, 1, b128),
                c(64, 64, 4, 1, b256),
            ]
        if kind == "dx":
            return [c(64, 32, 4, 2, b128), c(64, 64, 4, 1, b128), c(32, 64, 4, 1, b256)]
        return [c(64, 64, 4, 1, b128), c(64, 128, 8, 1, b128), c(32, 64, 4, 2, b256)]
    if fp64:
        return [c(16, 32, 4, 1)]
    # First in each list: the config that spills least in sm_90 compiles of the default shape
    # (G=5, K=3, bf16) with triton 3.6 and 3.8 (benchmarks/results/kernel_resources_sm90.md); it is
    # the one used without autotuning.
    if kind == "fwd":
        # Wide output tiles reuse each basis tile for more outputs; they run the spline product in
        # sub-blocks of 2 features, which keeps their packed weight tiles from spilling.
        return [
            c(32, 64, 4, 1),
            c(128, 64, 8, 1),
            c(64, 128, 4, 1, sub=2),
            c(128, 128, 8, 1, sub=2),
            c(128, 256, 8, 1, sub=2),
            c(64, 256, 8, 1, sub=2),
        ]
    if kind == "dx":
        return [c(128, 32, 8, 2), c(128, 64, 8, 1), c(64, 32, 4, 2), c(64, 64, 4, 2), c(32, 64, 4, 2)]
    # dw: (BLOCK_I * P, BLOCK_N) accumulator, batch loop of BLOCK_M rows.
    return [c(32, 64, 4, 2), c(128, 64, 8, 1), c(32, 128, 8, 2), c(64, 128, 8, 2), c(64, 64, 4, 2)]


_TUNED: dict = {}


def tuned(kind: str, kernel, key: list[str], p: int, fp64: bool):
    """The autotuned wrapper of ``kernel`` for one shape class, created once and cached.

    Triton's autotuner caches the best config per ``key`` value (shapes with the batch bucketed to
    a power of two), so tuning runs once per shape, not per call; a new key's candidates are
    compiled in parallel threads before they are timed (``_autotune.py``). Under the interpreter
    (or without CUDA) the list has one config and nothing is benchmarked.
    """
    k = (kind, id(kernel), p, fp64)
    if k not in _TUNED:
        configs = _configs(kind, p, fp64)
        for config in configs:
            check_block_sizes(kind, p, config.kwargs)
        _TUNED[k] = parallel_compile_autotune(configs=configs, key=key)(kernel)
    return _TUNED[k]
