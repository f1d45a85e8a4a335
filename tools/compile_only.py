#!/usr/bin/env python
"""Compile the Triton path's kernels for sm_90 on a machine without a GPU, through the real launchers.

Inside :func:`compile_only`, ``kan_linear_triton`` runs on CPU tensors as it would on an H100: the
launchers compute the same splits (132 SMs), Triton's JIT specializes the real arguments and
compiles to a cubin with its bundled ptxas, the autotuner compiles every candidate (in parallel
threads, ``kernels/_autotune.py``), and then nothing is launched: outputs stay uninitialised. What
it tells, without a GPU:

- that every kernel a workload reaches compiles for the GPU (the interpreter accepts code the GPU
  compiler rejects);
- how many kernels a GPU session will compile, and how long that takes here (and so how much of a
  10-minute device call it needs);
- Triton's cache left in ``--cache-dir`` holds them all.

::

    python tools/compile_only.py --workload bench   # bench_layer.py's layers, 3 precisions
    python tools/compile_only.py --workload mnist   # mnist_table.py's KANs, batch 64
    python tools/compile_only.py --workload small --no-autotune   # a quick check

Run without ``TRITON_INTERPRET``. The interposition touches Triton internals (the active driver,
````CompiledKernel._init_handles``, ``Autotuner._bench``) that triton 3.6 and 3.8 share; it is a tool, not
library code, and restores them on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

# This checkout's efficient_kan: its import stops, saying so, unless it is installed (-e).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # for _output and bench_layer

import _output  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler.compiler import CompiledKernel  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402

H100_SMS = 132


class _CompileOnlyDriver:
    """What Triton's JIT asks of the active driver before it compiles; launching is not offered."""

    def __init__(self, target: GPUTarget) -> None:
        self.target = target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")


class Record:
    """Kernels compiled and failures seen inside :func:`compile_only`."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.compiled = 0
        self.lock = threading.Lock()  # compiles finish in the autotuner's pool threads too


@contextlib.contextmanager
def compile_only(target: GPUTarget | None = None, sms: int = H100_SMS):
    """Make the Triton path compile for ``target`` (default sm_90) and launch nothing; yields a
    :class:`Record`. The autotuner's timing becomes a compile with a fixed score (the first
    config wins); a config that fails to compile is recorded and skipped, as Triton's autotuner
    skips one that runs out of resources."""
    import importlib

    import efficient_kan.triton_backend as backend

    fused = importlib.import_module("efficient_kan.kernels.fused")
    from triton.runtime import jit

    record = Record()
    saved = {
        "driver": driver._active,  # not .active: that would create the CUDA driver, absent here
        "handles": CompiledKernel._init_handles,
        "bench": Autotuner._bench,
        "interp": backend._INTERPRETER,
        "sms": fused.gpu_sms,
        "compile": jit.JITFunction._do_compile,
    }

    def bench(self, *args, config, **meta):
        meta = {k: v for k, v in meta.items() if k != "warmup"}
        try:
            self.fn.run(*args, warmup=True, **meta, **config.all_kwargs())
        except Exception as e:  # recorded, then skipped like an out-of-resources config
            record.failures.append(f"{self.fn.__name__} {config}: {type(e).__name__}: {str(e)[-300:]}")
            return [float("inf")] * 3
        return [float(self.configs.index(config))] * 3

    def do_compile(self, *args, **kwargs):
        kernel = saved["compile"](self, *args, **kwargs)
        with record.lock:
            record.compiled += 1
        return kernel

    driver.set_active(_CompileOnlyDriver(target or GPUTarget("cuda", 90, 32)))
    # Loading the cubin onto a device is where a launch starts: give every kernel a no-op launcher.
    CompiledKernel._init_handles = lambda self: setattr(self, "_run", lambda *a, **k: None)
    Autotuner._bench = bench
    jit.JITFunction._do_compile = do_compile
    backend._INTERPRETER = True  # only lets CPU tensors past the device check
    fused.gpu_sms = lambda x: sms
    try:
        yield record
    finally:
        driver._active = saved["driver"]
        CompiledKernel._init_handles = saved["handles"]
        Autotuner._bench = saved["bench"]
        jit.JITFunction._do_compile = saved["compile"]
        backend._INTERPRETER = saved["interp"]
        fused.gpu_sms = saved["sms"]


def layer_step(batch: int, n_in: int, n_out: int, grid_size: int, precision: str, strategy: str,
               spline_order: int = 3, scaler: bool = True, bias: bool = True, backward: bool = True) -> None:  # fmt: skip
    """One forward (+ backward) of ``kan_linear_triton`` on CPU tensors with a strategy forced."""
    from efficient_kan.bspline import uniform_grid
    from efficient_kan.settings import configure
    from efficient_kan.triton_backend import kan_linear_triton

    dtype = torch.float64 if precision == "fp64" else torch.float32
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    x = torch.randn(batch, n_in, dtype=dtype, requires_grad=backward)
    nb = grid_size + spline_order
    params = [
        torch.randn(n_out, n_in, dtype=dtype, requires_grad=backward),
        torch.randn(n_out, n_in, nb, dtype=dtype, requires_grad=backward),
        torch.randn(n_out, n_in, dtype=dtype, requires_grad=backward) if scaler else None,
        torch.randn(n_out, dtype=dtype, requires_grad=backward) if bias else None,
    ]
    grid = uniform_grid(n_in, grid_size, spline_order, dtype=dtype)
    previous = configure(strategy=strategy)
    try:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with ctx:
            y = kan_linear_triton(x, grid, *params, spline_order=spline_order)
        if backward:
            y.backward(torch.ones_like(y))
    finally:
        configure(strategy=previous.strategy)


def bench_workload() -> list[tuple]:
    """What ``bench_layer.py`` runs through the Triton path: its shapes, both strategies, three
    precisions, and the ``KAN([784, 64, 10])`` training step's two layers at batch 64."""
    from bench_layer import PRECISIONS, SHAPES

    steps = []
    for precision in PRECISIONS:
        for b, i, o, g in [*SHAPES, (64, 64, 10, 5)]:  # the step's first layer is SHAPES[0]
            for strategy in ("fused", "chunked"):
                steps.append((b, i, o, g, precision, strategy))
    return steps


def mnist_workload() -> list[tuple]:
    """The KAN layers of ``mnist_table.py``'s widths at batch 64 (training) and the evaluation
    batch, fp32 (its default), under the ``auto`` strategy."""
    widths = [[784, 10], [784, 48, 10], [784, 64, 10], [784, 500, 10], [784, 100, 100, 100, 10]]
    steps = set()
    for w in widths:
        for n_in, n_out in zip(w[:-1], w[1:], strict=True):
            steps.add((64, n_in, n_out, 5, "fp32", "auto"))
    return sorted(steps)


def small_workload() -> list[tuple]:
    """Awkward small shapes, both strategies, every precision: a quick compile check."""
    steps = []
    for precision in ("fp32", "tf32", "bf16", "fp64"):
        for b, i, o, g in [(1, 3, 5, 5), (37, 20, 17, 1), (64, 48, 40, 20), (9, 5, 3, 64)]:
            for strategy in ("fused", "chunked"):
                steps.append((b, i, o, g, precision, strategy))
    return steps


WORKLOADS = {"bench": bench_workload, "mnist": mnist_workload, "small": small_workload}


def parse_step(text: str) -> tuple:
    """``BxIxOxG:precision:strategy[:order]``, e.g. ``37x20x17x1:tf32:fused:3``."""
    parts = text.split(":")
    try:
        b, i, o, g = (int(v) for v in parts[0].split("x"))
        precision, strategy = parts[1], parts[2]
        order = int(parts[3]) if len(parts) > 3 else 3
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"expected BxIxOxG:precision:strategy[:order], got {text!r}"
        ) from None
    if precision not in ("fp32", "tf32", "bf16", "fp64") or strategy not in ("fused", "chunked", "auto"):
        raise argparse.ArgumentTypeError(f"bad precision or strategy in {text!r}")
    return (b, i, o, g, precision, strategy, order)


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option's help shows its default). The script writes no files but
    Triton's cache: it prints what it compiled."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_output.HelpFormatter)
    ap.add_argument(
        "--workload",
        choices=list(WORKLOADS),
        default="small",
        help="bench: bench_layer.py's layers; mnist: mnist_table.py's KANs; small: awkward small shapes",
    )
    ap.add_argument(
        "--steps", nargs="+", type=parse_step, default=None,
        help="layer calls instead of a workload: BxIxOxG:fp32|tf32|bf16|fp64:fused|chunked|auto[:order] "
        "(None: --workload's)",
    )  # fmt: skip
    ap.add_argument("--no-autotune", action="store_true", help="first config only (EFFICIENT_KAN_AUTOTUNE=0)")
    ap.add_argument(
        "--without", nargs="+", choices=("scaler", "bias"), default=[],
        help="layers without spline_scaler and/or bias (the kernels' variants for absent optionals)",
    )  # fmt: skip
    ap.add_argument("--cache-dir", default=None, help="Triton cache to fill (default: a new temporary one)")
    return ap


def main(argv: list[str] | None = None) -> int:
    # Checked here rather than at import so that tests (under the interpreter) can read the parser.
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("compile_only.py compiles for a GPU target: run it without TRITON_INTERPRET")
    args = build_parser().parse_args(argv)
    if args.no_autotune:
        os.environ["EFFICIENT_KAN_AUTOTUNE"] = "0"
    os.environ["TRITON_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(prefix="compile_only_")
    from efficient_kan.kernels._autotune import compile_threads

    steps = args.steps or WORKLOADS[args.workload]()
    print(
        f"compile_only: {len(steps)} layer calls ({'--steps' if args.steps else args.workload}), triton {triton.__version__}, "
        f"{compile_threads()} compile threads, cache {os.environ['TRITON_CACHE_DIR']}",
        flush=True,
    )
    start = time.perf_counter()
    with compile_only() as record:
        for step in steps:
            t = time.perf_counter()
            before = record.compiled
            try:
                layer_step(*step, scaler="scaler" not in args.without, bias="bias" not in args.without)
            except Exception as e:  # a compile error outside the autotuner (one config) lands here
                record.failures.append(f"{step}: {type(e).__name__}: {str(e)[-300:]}")
            print(
                f"  {'x'.join(map(str, step[:4])):>18s} {step[4]:5s} {step[5]:8s} "
                f"{record.compiled - before:3d} kernels {time.perf_counter() - t:6.1f} s",
                flush=True,
            )
    print(
        f"compiled {record.compiled} kernels in {time.perf_counter() - start:.1f} s; {len(record.failures)} failures"
    )
    for failure in record.failures:
        print("  FAILED", failure)
    return 1 if record.failures else 0


if __name__ == "__main__":
    sys.exit(main())
