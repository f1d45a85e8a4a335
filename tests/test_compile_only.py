"""Compiles for sm_90 through the real launchers, without a GPU (``tools/compile_only.py``).

The interpreter, which runs every other kernel test on CPU, accepts code the GPU compiler rejects;
these catch what it cannot.
"""

from __future__ import annotations

import pytest


def _compile_only(*cli_args: str, timeout: int = 600):
    """``tools/compile_only.py`` in a subprocess without TRITON_INTERPRET: the real launchers
    on CPU tensors, Triton's JIT compiling for sm_90, nothing launched."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    script = os.path.join(root, "tools", "compile_only.py")
    return subprocess.run(
        [sys.executable, script, *cli_args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_narrow_bases_compile_for_sm90_in_tf32():
    """The first config of every fused kernel compiles for sm_90 through the real JIT at bases
    narrower than 8 lanes with TF32 products. The input gradient's reshape-broadcast of the scaler
    failed there ("Illegal shared layout", triton 3.6 and 3.8), so KANLinear(grid_size=1) raised
    on a GPU once TF32 was allowed; the interpreter never saw it."""
    proc = _compile_only("--no-autotune", "--steps", "37x20x17x1:tf32:fused", "9x5x3x2:tf32:fused:1")
    assert proc.returncode == 0 and " 0 failures" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "compiled 6 kernels" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_every_config_compiles_for_sm90_through_the_launchers():
    """Every autotuning candidate of every kernel both strategies reach, at awkward small shapes
    (grid 1, 5, 20, 64), in fp32, TF32, bf16 autocast and fp64, compiles for sm_90 through the
    real launchers (the candidates compiled in parallel threads, as a GPU run does)."""
    proc = _compile_only("--workload", "small", timeout=3000)
    assert proc.returncode == 0 and " 0 failures" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
