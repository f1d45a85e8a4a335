#!/usr/bin/env python
"""Registers, local-memory stack (spills) and shared memory of every kernel config, for sm_90,
without a GPU: Triton compiles to a cubin with its bundled ptxas, ``cuobjdump -res-usage`` reads it.

A config that spills (STACK > 0) or needs more than the H100's 227 KiB of shared memory is a
config to fix before any GPU time is spent on it. Run without ``TRITON_INTERPRET``::

    python tools/kernel_resources.py                  # every kernel, bf16
    python tools/kernel_resources.py --kinds fwd --dtype fp32
    python tools/kernel_resources.py --generic        # no launch specialization

Prints one line per (kernel, shape class, config): registers per thread, stack bytes per thread,
shared bytes. Compiles take ~1-10 s each.

By default each kernel is compiled as a launch on contiguous tensors at batch 4096, 1024 -> 1024
specializes it: Triton turns integer arguments equal to 1 (unit strides) into constants and marks
multiples of 16 and aligned pointers, and that changes the register count a lot (the forward's
first config: 145 registers and no spill, against 253 registers when compiled generically).
``--generic`` compiles without those assumptions: the worst case, what strided or huge tensors get.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# This checkout's efficient_kan: its import stops, saying so, unless it is installed (-e).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from efficient_kan.kernels import _config, chunked  # noqa: E402
from efficient_kan.kernels.fused import _kan_bwd_dw_kernel, _kan_bwd_dx_kernel, _kan_fwd_kernel  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # for _output
import _output  # noqa: E402

# Pointers to knots, parameters and their gradients stay fp32; x, y, dy, the expanded buffer are
# in the operand dtype.
FP32_PTRS = {"g_ptr", "sw_ptr", "sc_ptr", "bw_ptr", "b_ptr", "dsw_ptr", "dsc_ptr", "dbw_ptr", "db_ptr"}
SHAPE_CLASSES = {"G5K3": (3, 12, 8), "G20K3": (3, 27, 23), "G64K5": (5, 75, 69)}  # (K, NK, NB)
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([str(CUOBJDUMP), "-res-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    found = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out))
    return {k.lower(): int(v) for k, v in found.items()}


def contiguous_launch_ints(
    nk: int, nb: int, kernel: str = "", m: int = 4096, n_in: int = 1024, n_out: int = 1024
) -> dict:
    """The integer arguments of ``kernel`` (its Python name) for contiguous tensors at batch ``m``,
    ``n_in`` -> ``n_out`` (one feature slice, one batch slice): what a real launch passes and
    Triton specializes on."""
    width = n_in * (nb + 1)  # the chunked strategy's expanded buffer, one chunk of every feature
    if kernel == "_kan_unpack_kernel":  # there stride_go/stride_gi are the (O, I) base-weight gradient's
        return {
            "I": n_in, "O": n_out, "stride_swo": n_in * nb, "stride_swi": nb, "stride_swj": 1,
            "stride_sco": n_in, "stride_sci": 1, "stride_dswo": n_in * nb, "stride_dswi": nb,
            "stride_dswj": 1, "stride_go": n_in, "stride_gi": 1,
        }  # fmt: skip
    return {
        "M": m, "I": n_in, "O": n_out, "M_BUCKET": m, "SPLIT": 1, "FEATS_PER_SPLIT": n_in,
        "ROWS_PER_SPLIT": m,
        "stride_xm": n_in, "stride_xi": 1, "stride_gi": nk, "stride_gt": 1,
        "stride_swo": n_in * nb, "stride_swi": nb, "stride_swj": 1, "stride_sco": n_in, "stride_sci": 1,
        "stride_bwo": n_in, "stride_bwi": 1, "stride_b": 1,
        "stride_ys": 0, "stride_ym": n_out, "stride_yo": 1,
        "stride_dym": n_out, "stride_dyo": 1, "stride_dxm": n_in, "stride_dxi": 1,
        "stride_am": width, "stride_dam": width,
    }  # fmt: skip


def compile_one(fn, consts: dict, warps: int, stages: int, dtype: str, ints: dict | None = None) -> dict:
    """Compile ``fn`` for sm_90 and read its resources.

    ``ints`` (argument name -> value) specializes like a real launch: an integer equal to 1 becomes
    a constant, others are i32 with a divisibility-by-16 hint where it holds, pointers are 16-byte
    aligned. Without it every integer is a generic i32 (strides i64) and nothing is assumed: the
    worst case, for strided or huge tensors.
    """
    consts = {n: v for n, v in consts.items() if n in fn.arg_names}
    sig, attrs = {}, {}
    for idx, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in FP32_PTRS and dtype != "fp64" else f"*{dtype}"
            if ints is not None:
                attrs[(idx,)] = [["tt.divisibility", 16]]
        elif ints is None:
            sig[name] = "i64" if name.startswith("stride") else "i32"
        else:
            value = ints[name]  # a KeyError here: a new kernel argument contiguous_launch_ints lacks
            if value == 1:
                sig[name], consts[name] = "constexpr", 1
            else:
                sig[name] = "i32"
                if value % 16 == 0:
                    attrs[(idx,)] = [["tt.divisibility", 16]]
    compiled = triton.compile(
        ASTSource(fn, sig, constexprs=consts, attrs=attrs),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": warps, "num_stages": stages},
    )
    return {"shared_from_triton": compiled.metadata.shared, **resources(compiled.asm["cubin"])}


KINDS = ("fwd", "dx", "dw", "expand", "dx_reduce", "pack", "unpack")


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option's help shows its default). The script writes no files: it
    prints one line per config."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_output.HelpFormatter)
    ap.add_argument(
        "--kinds", nargs="+", default=list(KINDS), choices=KINDS,
        help="kernels: the fused strategy's fwd, dx, dw; the chunked strategy's expand, dx_reduce, pack, unpack",
    )  # fmt: skip
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32", "fp64"), help="operand dtype")
    ap.add_argument(
        "--shapes", nargs="+", default=list(SHAPE_CLASSES), choices=list(SHAPE_CLASSES),
        help="shape classes: grid size G and spline order K",
    )  # fmt: skip
    ap.add_argument(
        "--generic",
        action="store_true",
        help="compile without a launch's specializations (i64 strides, no unit strides, no "
        "alignment): the worst case. Off: contiguous tensors at batch 4096, 1024 -> 1024",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("kernel_resources.py compiles for a GPU target: run it without TRITON_INTERPRET")
    args = build_parser().parse_args(argv)
    cdt = triton.language.float64 if args.dtype == "fp64" else triton.language.float32
    fused = {"fwd": _kan_fwd_kernel, "dx": _kan_bwd_dx_kernel, "dw": _kan_bwd_dw_kernel}
    chunked_kernels = {
        "expand": chunked._kan_expand_kernel,
        "dx_reduce": chunked._kan_dx_reduce_kernel,
        "pack": chunked._kan_pack_kernel,
        "unpack": chunked._kan_unpack_kernel,
    }
    print(f"{'kernel':10s} {'shape':6s} {'config':44s} {'regs':>5s} {'stack':>6s} {'shared':>7s}")
    for shape in args.shapes:
        k, nk, nb = SHAPE_CLASSES[shape]
        base = dict(K=k, NK=nk, NB=nb, LOG_NK=max(1, (nk - 1).bit_length()), ACT=1, HAS_SCALER=True)
        base |= dict(HAS_BIAS=True, BIAS_GRAD=True, CDT=cdt)
        for kind in args.kinds:
            if kind in fused:
                p = _config.next_pow2(nb)
                cfgs = [
                    (c.kwargs, c.num_warps, c.num_stages)
                    for c in _config._configs_gpu(kind, p if p >= 32 else 0, args.dtype == "fp64")
                ]
                extra = dict(P=p, PRECISION="tf32" if args.dtype == "fp32" else "ieee")
                fn = fused[kind]
            else:
                p = _config.next_pow2(nb + 1)
                if kind in ("pack", "unpack"):
                    bi, bo = chunked._weight_blocks()
                    cfgs = [(dict(BLOCK_I=bi, BLOCK_O=bo), 4, 1)]
                else:
                    bm, bi, warps = chunked._tile_blocks(p)
                    cfgs = [(dict(BLOCK_M=bm, BLOCK_I=bi), warps, 1)]
                extra = dict(P=p)
                fn = chunked_kernels[kind]
            for kwargs, warps, stages in cfgs:
                desc = " ".join(f"{k[6:] if k.startswith('BLOCK_') else k}={v}" for k, v in kwargs.items())
                desc += f" w{warps} s{stages}"
                try:
                    ints = None if args.generic else contiguous_launch_ints(nk, nb, fn.fn.__name__)
                    r = compile_one(fn, {**base, **extra, **kwargs}, warps, stages, args.dtype, ints)
                    shared = r["shared_from_triton"]  # dynamic shared memory; cuobjdump shows static only
                    print(
                        f"{kind:10s} {shape:6s} {desc:44s} {r.get('reg', -1):5d} {r.get('stack', -1):6d} {shared:7d}"
                    )
                except Exception as e:  # a config the compiler rejects is a finding, not a crash
                    print(f"{kind:10s} {shape:6s} {desc:44s} FAILED: {type(e).__name__}: {str(e)[-160:]}")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
