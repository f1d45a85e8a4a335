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


def test_absent_optionals_compile_for_sm90():
    """Without spline_scaler and bias the launchers pass None for their pointers and strides
    (tests/test_kernels.py checks that); Triton compiles those as constexprs, and every kernel of
    both strategies still compiles for sm_90 through the real JIT (first config, bf16 and fp32)."""
    steps = ("37x20x17x5:bf16:fused", "37x20x17x5:fp32:chunked")
    proc = _compile_only("--no-autotune", "--without", "scaler", "bias", "--steps", *steps)
    assert proc.returncode == 0 and " 0 failures" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "compiled 7 kernels" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_every_config_compiles_for_sm90_through_the_launchers():
    """Every autotuning candidate of every kernel both strategies reach, at awkward small shapes
    (grid 1, 5, 20, 64), in fp32, TF32, bf16 autocast and fp64, compiles for sm_90 through the
    real launchers (the candidates compiled in parallel threads, as a GPU run does)."""
    proc = _compile_only("--workload", "small", timeout=3000)
    assert proc.returncode == 0 and " 0 failures" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


_BF16_DOTS_SCRIPT = """
import re
import triton
import triton.language as tl
from triton._C.libtriton import ir
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from efficient_kan.kernels import _basis, _config
from efficient_kan.kernels.fused import _kan_bwd_dw_kernel, _kan_bwd_dx_kernel, _kan_fwd_kernel

assert _basis._INTERPRET.value is False, _basis._INTERPRET
fp32_ptrs = {"g_ptr", "sw_ptr", "sc_ptr", "bw_ptr", "b_ptr", "dsw_ptr", "dsc_ptr", "dbw_ptr", "db_ptr"}
target = GPUTarget("cuda", 90, 32)
backend = make_backend(target)
for kind, fn in (("fwd", _kan_fwd_kernel), ("dx", _kan_bwd_dx_kernel), ("dw", _kan_bwd_dw_kernel)):
    cfg = _config._configs_gpu(kind, 0, False)[0]
    consts = dict(K=3, NK=12, NB=8, P=8, LOG_NK=4, ACT=1, HAS_SCALER=True, HAS_BIAS=True, BIAS_GRAD=True,
                  CDT=tl.float32, PRECISION="ieee", **cfg.kwargs)  # fmt: skip
    consts = {k: v for k, v in consts.items() if k in fn.arg_names}
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in fp32_ptrs else "*bf16"
        else:
            sig[name] = "i64" if name.startswith("stride") else "i32"
    options = backend.parse_options({"num_warps": cfg.num_warps})
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    codegen = backend.get_codegen_implementation(options)
    ttir = str(ASTSource(fn, sig, constexprs=consts).make_ir(target, options, codegen, backend.get_module_map(), context))
    dots = re.findall(r"tt\\.dot .*: (tensor<[^>]*>) \\* (tensor<[^>]*>) -> (tensor<[^>]*>)", ttir)
    assert len(dots) == 2, (kind, dots)
    for a, b, out in dots:
        assert a.endswith("xbf16>") and b.endswith("xbf16>") and out.endswith("xf32>"), (kind, a, b, out)
    print(kind, dots)
"""


def test_gpu_kernels_take_bf16_dot_operands():
    """Outside the interpreter the bf16 workaround in kernels/_basis.py is off: the fused kernels'
    Triton IR for sm_90 (frontend only, no full compile) multiplies bf16 operands in every
    ``tl.dot`` (accumulating in fp32), with no detour through fp32."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _BF16_DOTS_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
