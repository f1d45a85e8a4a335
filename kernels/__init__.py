"""Triton kernels for KAN layers (fused: ``kan_fwd``/``kan_bwd``; chunked: ``kan_chunked``):
``@triton.jit`` kernels and thin launchers only.

Installed as ``efficient_kan.kernels``. Nothing here queries CUDA at import time.
"""

from .kan_bwd import kan_bwd_dw, kan_bwd_dx
from .kan_chunked import chunked_bwd, chunked_fwd
from .kan_fwd import kan_fwd

__all__ = ["chunked_bwd", "chunked_fwd", "kan_bwd_dw", "kan_bwd_dx", "kan_fwd"]
