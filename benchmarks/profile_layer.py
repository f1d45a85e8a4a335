#!/usr/bin/env python
"""Where the time goes: a ``torch.profiler`` trace of one KAN layer's forward+backward per provider.

``bench_layer.py`` says how far each provider is from the floor; this says why. For every provider
named, after a warm-up (autotuning and compiles happen there), ``--iters`` forward+backward
iterations run under the profiler; the kernel table (device time per kernel name, summed and per
call) is printed and written to ``profile_<shape>_<precision>.txt``, with a Chrome trace per
provider beside it (``chrome://tracing`` or https://ui.perfetto.dev), in a new folder
``bench-out/profile_layer-<UTC time>/`` (git-ignored) printed at the end, or in ``--out DIR``. The
traces are large and not meant for the repository, so there is no ``--publish``.

    python benchmarks/profile_layer.py                           # 4096x1024x1024x5, bf16
    python benchmarks/profile_layer.py --shape 64x784x64x5 --precision tf32
    python benchmarks/profile_layer.py --smoke --out /tmp/p        # CPU check, interpreter

Providers are ``bench_layer.py``'s (``fused``, ``chunked``, ``torch``, ``nn.Linear``, ``floor``).
Without CUDA, ``--smoke`` profiles one tiny shape on CPU under ``TRITON_INTERPRET=1`` (checks the
script; its numbers mean nothing); otherwise the script says a GPU is needed and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import torch

if "--smoke" in sys.argv and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

from torch.profiler import ProfilerActivity, profile  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # for _output
import _output  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_layer", HERE / "bench_layer.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def profile_provider(provider: str, shape, precision: str, dev: torch.device, iters: int, trace: Path):
    """Profiles ``iters`` forward+backward calls; returns the profiler's kernel table as text."""
    batch, n_in, n_out, g = shape
    previous = bench.configure(strategy=provider) if provider in bench.TRITON_PROVIDERS else None
    try:
        call, params = bench.make_provider(provider, batch, n_in, n_out, g, dev)
        gy = torch.randn(batch, n_out, device=dev)

        def step():
            with bench.precision_ctx(precision, dev):
                y = call()
                for p in params:
                    p.grad = None
                y.backward(gy.to(y.dtype))

        for _ in range(3):  # warm-up: autotuning, compiles, allocator
            step()
        bench._sync(dev)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(iters):
                step()
            bench._sync(dev)
        prof.export_chrome_trace(str(trace))
        sort = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
        return prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60)
    finally:
        if previous is not None:
            bench.configure(strategy=previous.strategy)
        torch.set_float32_matmul_precision("highest")


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option's help shows its default)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_output.HelpFormatter)
    ap.add_argument("--shape", default="4096x1024x1024x5", help="batch x in x out x grid")
    ap.add_argument(
        "--precision",
        default="bf16",
        choices=bench.PRECISIONS,
        help="fp32: IEEE; tf32: matmul precision 'high'; bf16: autocast",
    )
    ap.add_argument(
        "--providers",
        nargs="+",
        default=["fused", "chunked", "floor"],
        choices=bench.PROVIDERS,
        help="implementations to profile (bench_layer.py's)",
    )
    ap.add_argument("--iters", type=int, default=10, help="profiled forward+backward calls")
    _output.add_out_arguments(
        ap, "profile_layer", publish=False, existing="files of the same shape and precision are replaced"
    )
    ap.add_argument("--smoke", action="store_true", help="CPU: one tiny shape under the interpreter")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        shape = tuple(int(v) for v in args.shape.split("x"))
        if len(shape) != 4 or min(shape) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--shape must be four positive integers batch x in x out x grid, got {args.shape!r}")
    if args.iters < 1:
        ap.error("--iters must be at least 1")

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        where = torch.cuda.get_device_name(dev)
    elif args.smoke:
        dev, shape, args.iters = torch.device("cpu"), (8, 16, 8, 5), 1
        where = "CPU (smoke, interpreter; numbers meaningless)"
    else:
        print("profile_layer: needs a CUDA GPU (or --smoke to check the script on CPU); nothing profiled.")
        return 0

    out, _ = _output.resolve_out(args, "profile_layer")
    key = f"{bench.shape_key(shape)}_{args.precision}"
    from efficient_kan.bench import environment

    env = environment(
        dev, ["python", "benchmarks/profile_layer.py", *(sys.argv[1:] if argv is None else argv)]
    )
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    report = [
        f"profile_layer {key} on {where}; {versions}; commit {env['commit'] or '-'}; {env['date']}; "
        f"{args.iters} forward+backward calls per provider; command: {env['command']}",
    ]
    for provider in args.providers:
        trace = out / f"profile_{key}_{provider}.json"
        try:
            table = profile_provider(provider, shape, args.precision, dev, args.iters, trace)
        except Exception as e:  # recorded, not fatal: the other providers still get profiled
            table = f"failed: {type(e).__name__}: {e}"
        report += ["", f"== {provider} (trace: {trace.name})", table]
        print(report[-2], flush=True)
        print(table, flush=True)
    (out / f"profile_{key}.txt").write_text("\n".join(report) + "\n")
    print(f"wrote {out / f'profile_{key}.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
