#!/usr/bin/env python
"""Host (Python) cost of one fused-strategy forward+backward, with Triton's kernel launches stubbed.

At small batches a KAN layer is launch-bound: the Python work per call, not the GPU, sets the time.
This measures our share of it on any machine, GPU or not: ``JITFunction.run`` (Triton's launch) is
replaced by a no-op, the CUDA-device check is bypassed, and tiny CPU tensors keep PyTorch's own
work small. ``F.linear`` forward+backward on the same tensors is timed alongside as the yardstick
(best of ``--rounds`` rounds of ``--calls`` calls each). Triton's launcher cost comes on top on a
real GPU. It writes no files: it prints.

    python tools/host_overhead.py [--profile]

Run without ``TRITON_INTERPRET``; ``EFFICIENT_KAN_AUTOTUNE=0`` is set here (one config, no
benchmarking, which would need a GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# This checkout's efficient_kan: its import stops, saying so, unless it is installed (-e).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # for _output

import _output  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton.runtime.jit as triton_jit  # noqa: E402

import efficient_kan  # noqa: E402
import efficient_kan.triton_backend as tb  # noqa: E402
from efficient_kan.bspline import uniform_grid  # noqa: E402


def best_us(fn, calls: int = 3000, rounds: int = 5) -> float:
    for _ in range(200):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls * 1e6)
    return best


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option's help shows its default)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_output.HelpFormatter)
    ap.add_argument("--calls", type=int, default=3000, help="calls per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds; the best one counts")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of the KAN call")
    return ap


def main(argv: list[str] | None = None) -> int:
    # Checked here rather than at import so that tests (under the interpreter) can read the parser.
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("host_overhead.py stubs the real launcher: run it without TRITON_INTERPRET")
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.calls < 1 or args.rounds < 1:
        ap.error("--calls and --rounds must be at least 1")
    os.environ["EFFICIENT_KAN_AUTOTUNE"] = "0"  # read at the first launch, which comes below
    triton_jit.JITFunction.run = lambda self, *a, **k: None  # no launch
    tb._INTERPRETER = True  # only lets CPU tensors through the device check
    efficient_kan.configure(strategy="fused")
    torch.set_num_threads(1)
    m, i, o = 2, 8, 8
    x = torch.randn(m, i, requires_grad=True)
    grid = uniform_grid(i, 5, 3)
    params = [torch.randn(o, i), torch.randn(o, i, 8), torch.randn(o, i), torch.randn(o)]
    params = [p.requires_grad_() for p in params]
    w, b = torch.randn(o, i, requires_grad=True), torch.randn(o, requires_grad=True)
    gy = torch.randn(m, o)

    def kan():
        x.grad = None
        for p in params:
            p.grad = None
        tb.kan_linear_triton(x, grid, *params, spline_order=3, base_activation="silu").backward(gy)

    def linear():
        x.grad = w.grad = b.grad = None
        F.linear(x, w, b).backward(gy)

    lin_us, kan_us = (best_us(fn, args.calls, args.rounds) for fn in (linear, kan))
    print(f"F.linear forward+backward: {lin_us:.1f} us; KAN fused strategy, launches stubbed: {kan_us:.1f} us "
          f"({kan_us / lin_us:.2f}x); torch {torch.__version__}")  # fmt: skip
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(2000):
            kan()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
