"""Launch configuration: block sizes, autotuning, interpreter detection (no CUDA queries at import)."""

from __future__ import annotations

import functools
import os

import torch
import triton

__all__ = ["interpreting", "meta_for", "next_pow2", "num_sms", "tuned"]


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@functools.cache
def num_sms(device_index: int) -> int:
    """Streaming multiprocessors of a CUDA device (queried lazily, at first launch)."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def meta_for(p: int, dtype: torch.dtype) -> dict:
    """Shape-class key for the config lists: the expanded width per feature and the operand size."""
    return {"wide": p >= 32, "fp64": dtype == torch.float64}


def _configs(kind: str, wide: bool, fp64: bool) -> list[triton.Config]:
    """Candidate block sizes, best guess first (the only one used under the interpreter).

    ``BLOCK_I`` is 16: ``tl.dot`` needs every dimension >= 16 and the base branch contracts over
    features. The expanded tile is ``BLOCK_I * P`` wide, so wide bases (``P >= 32``) get short tiles.
    """
    c = triton.Config
    if interpreting():
        # Small blocks so CPU tests hit the masks and several programs; the interpreter ignores warps.
        return [c({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_I": 16}, num_warps=4)]
    if fp64:
        return [c({"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_I": 16}, num_warps=4, num_stages=1)]
    if kind == "fwd":
        if wide:
            return [
                c({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=8, num_stages=2),
                c({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=4, num_stages=2),
                c({"BLOCK_M": 32, "BLOCK_N": 128, "BLOCK_I": 16}, num_warps=8, num_stages=2),
            ]
        return [
            c({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_I": 16}, num_warps=8, num_stages=3),
            c({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_I": 16}, num_warps=8, num_stages=3),
            c({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=4, num_stages=3),
            c({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=8, num_stages=2),
            c({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=4, num_stages=2),
            c({"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_I": 16}, num_warps=8, num_stages=2),
        ]
    if kind == "dx":
        if wide:
            return [
                c({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_I": 16}, num_warps=8, num_stages=2),
                c({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=4, num_stages=2),
            ]
        return [
            c({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=4, num_stages=3),
            c({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=8, num_stages=3),
            c({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_I": 16}, num_warps=4, num_stages=3),
            c({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_I": 16}, num_warps=8, num_stages=2),
            c({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=4, num_stages=2),
        ]
    # dw: (BLOCK_I * P, BLOCK_N) accumulator, batch loop of BLOCK_M rows.
    if wide:
        return [
            c({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_I": 16}, num_warps=8, num_stages=2),
            c({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=8, num_stages=2),
        ]
    return [
        c({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=4, num_stages=3),
        c({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_I": 16}, num_warps=8, num_stages=3),
        c({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=4, num_stages=3),
        c({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_I": 16}, num_warps=8, num_stages=2),
        c({"BLOCK_M": 32, "BLOCK_N": 128, "BLOCK_I": 16}, num_warps=8, num_stages=2),
    ]


_TUNED: dict = {}


def tuned(kind: str, kernel, key: list[str], wide: bool, fp64: bool):
    """The autotuned wrapper of ``kernel`` for one shape class, created once and cached.

    Triton's autotuner caches the best config per ``key`` value (shapes with the batch bucketed to
    a power of two), so tuning runs once per shape, not per call. Under the interpreter (or without
    CUDA) the list has one config and nothing is benchmarked.
    """
    k = (kind, id(kernel), wide, fp64, interpreting())
    if k not in _TUNED:
        _TUNED[k] = triton.autotune(configs=_configs(kind, wide, fp64), key=key)(kernel)
    return _TUNED[k]
