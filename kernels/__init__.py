"""Fused Triton kernels for KAN layers: ``@triton.jit`` kernels and thin launchers only.

Installed as ``efficient_kan.kernels``. Nothing here queries CUDA at import time.
"""

from .kan_bwd import kan_bwd_dw, kan_bwd_dx
from .kan_fwd import kan_fwd

__all__ = ["kan_bwd_dw", "kan_bwd_dx", "kan_fwd"]
