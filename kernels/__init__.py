"""Triton kernels for KAN layers, one file per strategy: ``fused`` (``kan_fwd``, ``kan_bwd_dx``,
``kan_bwd_dw``) and ``chunked`` (``chunked_fwd``, ``chunked_bwd``); ``@triton.jit`` kernels and
thin launchers only.

Installed as ``efficient_kan.kernels``. Nothing here queries CUDA at import time.
"""

from .chunked import chunked_bwd, chunked_fwd
from .fused import kan_bwd_dw, kan_bwd_dx, kan_fwd

__all__ = ["chunked_bwd", "chunked_fwd", "kan_bwd_dw", "kan_bwd_dx", "kan_fwd"]
