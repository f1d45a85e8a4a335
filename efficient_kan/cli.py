"""``efficient-kan``: the user-facing commands.

- ``efficient-kan check``: are the fused kernels right on this machine? Prints the device, driver,
  versions and settings; checks the Triton path against the PyTorch path (forward and every
  gradient) over shapes, grids, orders, precisions (fp64, fp32 IEEE, TF32, bf16/fp16 autocast) and
  both strategies with the tolerances the tests use (:mod:`efficient_kan.testing`); times a few
  layer sizes against ``nn.Linear`` and the dense-product floor; ends with PASS or FAIL (exit 0 or 1)
  and a block to paste into a bug report. Without CUDA it runs the kernels in Triton's interpreter
  at small shapes.
- ``efficient-kan bench MODEL``: parameters, throughput and peak memory of a model before and after
  conversion (see ``efficient-kan bench --help``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange

__all__ = ["main"]


def _use_interpreter_without_cuda() -> None:
    """Without CUDA the Triton kernels can only run in the interpreter, and TRITON_INTERPRET is
    read when triton is imported: set it before anything imports triton."""
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET"):
        return
    if "triton" in sys.modules:
        raise RuntimeError(
            "no CUDA device, and triton was imported before TRITON_INTERPRET=1 was set: run "
            "`TRITON_INTERPRET=1 efficient-kan check` (or call it before importing triton)"
        )
    os.environ["TRITON_INTERPRET"] = "1"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


# ------------------------------------------------------------------------------------------- check
@dataclass
class _Outcome:
    name: str
    problems: list[str]
    seconds: float


# (batch, in, out, grid_size, spline_order, non-uniform grid, precisions). Every precision runs on
# both strategies. The GPU cases are the GPU tests' sizes; the CPU ones stay at a handful of
# interpreter programs each.
_GPU_CASES = [
    (300, 96, 80, 5, 3, False, ("fp64", "fp32", "tf32", "bf16", "fp16")),
    (77, 33, 130, 20, 5, True, ("fp64", "fp32", "bf16")),
    (513, 5, 7, 1, 0, True, ("fp32", "tf32", "fp16")),
]
_CPU_CASES = [
    (37, 20, 19, 5, 3, False, ("fp64", "fp32", "tf32", "bf16", "fp16")),
    (9, 2, 17, 20, 5, True, ("fp64", "fp32", "bf16")),
    (6, 3, 5, 1, 0, True, ("fp64", "fp16")),
]
_QUICK_CASES = [(9, 5, 7, 5, 3, True, ("fp64", "fp32", "bf16", "fp16"))]
# Layer sizes timed (batch, in, out, grid_size): the MNIST layer and the kernel work's target.
_GPU_TIMED = [(64, 784, 64, 5), (1024, 784, 512, 5), (4096, 1024, 1024, 5)]
_CPU_TIMED = [(64, 784, 64, 5)]


def _case(n, i, o, g, k, nonuniform, dtype, device, seed=0):
    """Random layer tensors (as the kernel tests make them): points inside and outside the grid."""
    from .bspline import uniform_grid

    gen = torch.Generator().manual_seed(seed)
    grid = uniform_grid(i, g, k, dtype=torch.float32)
    if nonuniform:
        grid = torch.sort(grid + 0.45 * (2.0 / g) * torch.rand(grid.shape, generator=gen), dim=1).values
    x = 1.3 * torch.randn(n, i, generator=gen, dtype=dtype)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device).requires_grad_()

    params = [rnd(o, i), rnd(o, i, g + k), rnd(o, i), rnd(o)]
    return x.to(device).requires_grad_(), grid.to(device), params


def _check_one(case, precision: str, device: torch.device) -> list[str]:
    """Problems (empty: none) of the Triton path against the PyTorch path for one case."""
    from . import testing
    from . import triton_backend as tb
    from .reference import kan_linear_reference

    n, i, o, g, k, nonuniform, _ = case
    dtype = torch.float64 if precision == "fp64" else torch.float32
    x, grid, params = _case(n, i, o, g, k, nonuniform, dtype, device)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if low is not None:  # both paths at the x the Triton path multiplies (cast like nn.Linear's)
        x = x.detach().to(low).to(dtype).requires_grad_()
    inputs = [x, *params]
    names = ["y", "dx", "dbase_weight", "dspline_weight", "dspline_scaler", "dbias"]
    g_out = torch.randn(n, o, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
        y_ref = kan_linear_reference(x, grid, *params, spline_order=k)
        g_ref = torch.autograd.grad(y_ref, inputs, g_out)
        if low is not None:
            with torch.autocast(device.type, dtype=low):
                y_pt = kan_linear_reference(x, grid, *params, spline_order=k)
                y = tb.kan_linear_triton(x, grid, *params, spline_order=k, base_activation="silu")
            if y.dtype != y_pt.dtype:
                return [f"output dtype {y.dtype}, the PyTorch path gives {y_pt.dtype}"]
            g_pt = torch.autograd.grad(y_pt, inputs, g_out.to(low))
            g = torch.autograd.grad(y, inputs, g_out.to(low))
            problems = []
            for name, a, p, r in zip(names, (y, *g), (y_pt, *g_pt), (y_ref, *g_ref), strict=True):
                excess = testing.three_way_excess(a, p, r, low)
                if not excess <= 0:
                    problems.append(f"{name}: beyond |x - x_ref| <= 2 |x_pt - x_ref| + atol by {excess:.3e}")
            return problems
        y = tb.kan_linear_triton(x, grid, *params, spline_order=k, base_activation="silu")
        g = torch.autograd.grad(y, inputs, g_out)
    finally:
        torch.set_float32_matmul_precision(previous)
    if precision == "fp64":
        tol = testing.TOL[torch.float64]
    elif precision == "tf32":
        tol = testing.TF32_TOL
    else:
        tol = testing.FP32_IEEE_GPU_TOL if device.type == "cuda" else testing.TOL[torch.float32]
    found = [
        testing.mismatch(a, e, **tol, name=name)
        for name, a, e in zip(names, (y, *g), (y_ref, *g_ref), strict=True)
    ]
    return [p for p in found if p]


def _floor_and_linear(n, i, o, g, k, device):
    """Calls for ``nn.Linear(i, o)`` and the floor (one dense product over the expanded width with
    the expanded input in memory), forward and backward."""
    import torch.nn.functional as F

    from .bspline import bspline_basis, uniform_grid

    x = torch.randn(n, i, device=device, requires_grad=True)
    w, b = (
        torch.randn(o, i, device=device, requires_grad=True),
        torch.randn(o, device=device, requires_grad=True),
    )
    with torch.no_grad():
        xs = torch.randn(n, i, device=device)
        bases = bspline_basis(xs, uniform_grid(i, g, k, device=device), k)
        a = torch.cat([rearrange(bases, "n i c -> n (i c)"), F.silu(xs)], 1)  # the expanded input
    a.requires_grad_()
    wf = torch.randn(o, a.shape[1], device=device, requires_grad=True)
    return (lambda: F.linear(x, w, b), [x, w, b]), (lambda: F.linear(a, wf), [a, wf])


def _time_layers(sizes, device: torch.device, precision: str, min_run_time: float) -> list[str]:
    """Lines of a table: KANLinear (the path ``auto`` picks) against nn.Linear and the floor."""
    from .bench import markdown_table, time_fn
    from .layer import KANLinear

    rows = []
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else None
    for n, i, o, g in sizes:
        layer = KANLinear(i, o, grid_size=g).to(device)
        x = (torch.rand(n, i, device=device) * 2 - 1).requires_grad_()
        kan = (lambda layer=layer, x=x: layer(x), [x, *layer.parameters()])
        linear, floor = _floor_and_linear(n, i, o, g, 3, device)
        ms = {}
        for name, (fn, params) in (("KANLinear", kan), ("nn.Linear", linear), ("floor", floor)):

            def step(fn=fn):
                if ctx is None:
                    y = fn()
                else:
                    with ctx():
                        y = fn()
                y.float().sum().backward()

            ms[name] = time_fn(step, device, min_run_time=min_run_time, grad_to_none=params, warmup=2)
        k = ms["KANLinear"]
        rows.append([
            f"{n}x{i}x{o}x{g}", f"{k.p50:.3f} [{k.p20:.3f}, {k.p80:.3f}]", f"{ms['nn.Linear'].p50:.3f}",
            f"{ms['floor'].p50:.3f}", f"{k.p50 / ms['floor'].p50:.2f}x", f"{k.p50 / ms['nn.Linear'].p50:.2f}x",
        ])  # fmt: skip
    header = ["batch x in x out x G", "KANLinear ms [p20, p80]", "nn.Linear ms", "floor ms", "KAN/floor",
              "KAN/nn.Linear"]  # fmt: skip
    return markdown_table(header, rows).splitlines()


def _header_lines(device: torch.device) -> list[str]:
    from . import __version__, cpu_kernels, settings
    from .bench import environment

    env = environment(device)
    lines = [f"device: {env['device']}"]
    if device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        lines.append(
            f"driver: {env['versions'].get('driver')}; CUDA {torch.version.cuda}; sm_{cap[0]}{cap[1]}"
        )
    else:
        lines.append(
            "no CUDA device: the Triton kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1)"
        )
    lines.append(
        f"versions: efficient_kan {__version__}, torch {torch.__version__}, triton {env['versions']['triton']}, "
        f"Python {platform.python_version()}; commit {env['commit'] or '-'}"
    )
    lines.append("settings:")
    lines += ["  " + line for line in settings().describe().splitlines()]
    lines.append(f"CPU path's C kernels: {cpu_kernels.status()}")
    return lines


def _check(args: argparse.Namespace) -> int:
    _use_interpreter_without_cuda()
    from . import use

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    command = shlex.join(["efficient-kan", *args.argv])
    header = _header_lines(device)
    print("efficient-kan check: the Triton path against the PyTorch path on this machine")
    print("\n".join(header), flush=True)
    cases = _QUICK_CASES if args.quick else (_GPU_CASES if device.type == "cuda" else _CPU_CASES)
    # First config only: correctness does not need tuning, and tuning every case costs minutes.
    # On CPU a small chunk budget makes the chunked strategy split even these small cases.
    extra = {} if device.type == "cuda" else {"chunk_bytes": 6000}
    outcomes: list[_Outcome] = []
    print("\nchecks (forward and every gradient; tolerances of efficient_kan.testing):", flush=True)
    for case in cases:
        n, i, o, g, k, nonuniform, precisions = case
        for precision in precisions:
            for strategy in ("fused", "chunked"):
                name = f"{n}x{i}x{o} G={g} K={k} {'non-uniform' if nonuniform else 'uniform'} {precision} {strategy}"
                t0 = time.perf_counter()
                try:
                    with use(strategy=strategy, autotune=False, **extra):
                        problems = _check_one(case, precision, device)
                except Exception as e:  # a crash is a failed check, reported with the others
                    problems = [f"raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"]
                outcomes.append(_Outcome(name, problems, time.perf_counter() - t0))
                status = "ok  " if not problems else "FAIL"
                print(f"  {status} {name} ({outcomes[-1].seconds:.1f} s)", flush=True)
                for p in problems:
                    print(f"       {p}", flush=True)
    failed = [o for o in outcomes if o.problems]
    timing: list[str] = []
    if not args.no_timing:
        precision = "bf16" if device.type == "cuda" else "fp32"
        sizes = _GPU_TIMED if device.type == "cuda" else _CPU_TIMED
        what = (
            "bf16 autocast"
            if device.type == "cuda"
            else f"fp32, PyTorch path, {torch.get_num_threads()} threads"
        )
        print(f"\nforward+backward time per call ({what}; efficient_kan.bench.time_fn):", flush=True)
        try:
            timing = _time_layers(sizes, device, precision, args.min_run_time)
        except Exception as e:  # timing is information, not a check: say it failed and go on
            timing = [f"timing failed: {type(e).__name__}: {e}"]
        print("\n".join(timing), flush=True)
    verdict = "PASS" if not failed else "FAIL"
    summary = f"{verdict}: {len(outcomes) - len(failed)} of {len(outcomes)} checks passed"
    print(f"\n{summary}")
    print("\n---- paste this into a bug report " + "-" * 40)
    print(f"efficient-kan check: {summary}")
    print(f"command: {command}")
    print("\n".join(header))
    for o in failed:
        print(f"failed: {o.name}")
        for p in o.problems:
            print(f"  {p}")
    print("\n".join(timing))
    print("-" * 74, flush=True)
    return 0 if not failed else 1


# ------------------------------------------------------------------------------------------- bench
def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 3,224,224, got {text!r}")
    return dims


@dataclass(frozen=True)
class _BenchPlan:
    """What one ``efficient-kan bench`` run measures: resolved from the command line once."""

    device: torch.device
    precisions: list[str]
    variants: list
    notes: list[str]
    input_shape: tuple[int, ...]
    command: str


def _bench_plan(args: argparse.Namespace) -> _BenchPlan:
    """Resolve device, precisions, variants and input shape; ``ValueError`` says what is wrong."""
    from .bench.models import variants

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but no CUDA device is available")
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if device.type == "cpu":
        _use_interpreter_without_cuda()  # nothing should run Triton on CPU, but never uninterpreted
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precision or (["bf16", "fp32"] if device.type == "cuda" else ["fp32"])
    found, notes, natural = variants(args.model, args.variants)
    input_shape = args.input or natural
    if input_shape is None:
        raise ValueError(f"{args.model} needs --input (the shape of one sample, e.g. 3,224,224)")
    command = shlex.join(["efficient-kan", *args.argv])
    return _BenchPlan(device, precisions, found, notes, tuple(input_shape), command)


def _bench_measure(args: argparse.Namespace, plan: _BenchPlan, env: dict) -> list:
    """Every variant x precision (x compiled) measured on one fixed random batch."""
    from .bench.models import measure_variant

    torch.manual_seed(0)
    inputs = torch.randn(args.batch, *plan.input_shape, device=plan.device)
    min_run_time = 0.05 if args.quick else args.min_run_time
    warmup = 1 if args.quick else 2
    records = []
    benchmark = f"bench {args.model}"
    for variant in plan.variants:
        for precision in plan.precisions:
            for compiled in (False, True) if args.compile else (False,):
                records += measure_variant(
                    variant, inputs, precision, env, benchmark=benchmark, compiled=compiled,
                    min_run_time=min_run_time, warmup=warmup, backward=not args.no_backward,
                )  # fmt: skip
    return records


def _bench_rows(records: list) -> list[list[str]]:
    """One table row per (variant, precision): parameters, throughputs and peak memory."""
    from .bench import format_quantiles

    by = {(r.provider, r.dtype, r.metric): r for r in records}
    rows = []
    for r in records:
        if r.metric != "params":
            continue
        conv = by[(r.provider, r.dtype, "params converted")].p50
        base = by[(r.provider, r.dtype, "params")].extra.get("note", "")
        rows.append([
            r.provider + (f" ({base})" if base else ""), f"{int(r.p50):,}", f"{int(conv):,}", r.dtype,
            format_quantiles(by.get((r.provider, r.dtype, "fwd samples/s")), 1),
            format_quantiles(by.get((r.provider, r.dtype, "fwd+bwd samples/s")), 1),
            format_quantiles(by.get((r.provider, r.dtype, "fwd+bwd peak MiB")), 1),
        ])  # fmt: skip
    return rows


def _bench_print(args: argparse.Namespace, plan: _BenchPlan, env: dict, records: list) -> None:
    """The header (device, versions, command, what is measured) and the markdown table."""
    from .bench import markdown_table

    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    mem = (
        "CUDA max_memory_allocated growth"
        if plan.device.type == "cuda"
        else "process peak RSS growth (VmHWM)"
    )
    print(
        f"efficient-kan bench {args.model}: batch {args.batch}, input {','.join(map(str, plan.input_shape))}"
    )
    print(f"device: {env['device']}")
    print(f"versions: {versions}; commit {env['commit'] or '-'}")
    print(f"command: {plan.command}")
    print(f"date: {env['date']}")
    print(
        "samples/s: median [p20, p80] of batch / time per call (CPU: torch.utils.benchmark; CUDA: "
        f"triton.testing.do_bench); fwd in eval mode without grad; peak MiB: {mem} during one forward+backward; "
        "precision fp32 or bf16 (autocast)"
    )
    header = [
        "variant",
        "params",
        "params in KANLinear layers",
        "precision",
        "fwd samples/s",
        "fwd+bwd samples/s",
        "peak MiB",
    ]
    print(markdown_table(header, _bench_rows(records), align="lrrlrrr"))
    for note in plan.notes:
        print(f"note: {note}")


def _bench_plot(args: argparse.Namespace, plan: _BenchPlan, env: dict, records: list) -> None:
    """One bar panel per throughput metric, one series per precision, written to ``--plot``."""
    from .bench import plot

    panels = []
    for metric in ("fwd samples/s", "fwd+bwd samples/s"):
        series = {}
        for precision in plan.precisions:
            mine = [r for r in records if r.metric == metric and r.dtype == precision and r.ok]
            if mine:
                series[precision] = {
                    "x": [r.provider for r in mine], "y": [r.p50 for r in mine],
                    "yerr": [[r.p50 - r.p20 for r in mine], [r.p80 - r.p50 for r in mine]],
                }  # fmt: skip
        if series:
            panels.append({"series": series, "kind": "bar", "ylabel": "samples/s", "title": metric})
    title = f"{args.model}, batch {args.batch}; {env['device']}; {plan.command}"
    if panels and plot(Path(args.plot), panels, title=title):
        print(f"wrote {args.plot}")


def _bench(args: argparse.Namespace) -> int:
    """``efficient-kan bench``: plan, measure, print the table, write the requested files."""
    from .bench import environment, write_csv, write_json

    try:
        plan = _bench_plan(args)
    except ValueError as e:
        print(f"efficient-kan bench: {e}", file=sys.stderr)
        return 2
    env = environment(plan.device, plan.command)
    records = _bench_measure(args, plan, env)
    _bench_print(args, plan, env, records)
    if args.json:
        write_json(records, Path(args.json), meta={"notes": plan.notes})
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(records, Path(args.csv))
        print(f"wrote {args.csv}")
    if args.plot:
        _bench_plot(args, plan, env, records)
    return 0


# -------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The command line: ``check`` and ``bench`` (every option's help shows its default)."""
    from .bench.models import VARIANTS

    parser = argparse.ArgumentParser(prog="efficient-kan", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check", formatter_class=_Formatter, help="check the Triton kernels against the PyTorch path here",
        description="Check the Triton kernels against the PyTorch path on this machine; exit 0 on PASS, 1 on FAIL.",
    )  # fmt: skip
    check.add_argument("--quick", action="store_true", help="one small case per precision (fp64, fp32, fp16)")
    check.add_argument("--no-timing", action="store_true", help="skip the layer timings")
    check.add_argument("--min-run-time", type=float, default=0.2, help="seconds of timed calls per timing")
    bench = sub.add_parser(
        "bench", formatter_class=_Formatter, help="throughput and parameters of a model, before and after kanify",
        description=(
            "Parameters, throughput and peak memory of a model and its converted variants.\n\n"
            "MODEL: a torchvision name (resnet18, vit_b_16, swin_t, ...; random weights), module:factory "
            "(a callable returning your model), or mlp:784,64,10 / kan:784,64,10.\n\nVariants: original; "
            "kanify (every nn.Linear); kanify:head (the last nn.Linear); kanify:mlp-blocks (the other "
            "linears whose parent holds two or more, e.g. transformer MLP blocks); mlp-matched (for mlp:/kan: "
            "specs, an MLP with about the KAN's parameters)."
        ),
    )  # fmt: skip
    bench.add_argument("model", help="the model (see above)")
    bench.add_argument(
        "--input",
        type=_shape,
        default=None,
        help="shape of one sample, e.g. 3,224,224 (None: mlp:/kan: widths[0])",
    )
    bench.add_argument("--batch", type=int, default=8, help="batch size")
    bench.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when available"
    )
    bench.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=None,
                       help="fp32, or bf16 autocast (None: bf16 and fp32 on CUDA, fp32 on CPU)")  # fmt: skip
    bench.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="variants to measure"
    )
    bench.add_argument(
        "--compile", action="store_true", help="also measure under torch.compile (minutes on CPU)"
    )
    bench.add_argument(
        "--no-backward", action="store_true", help="forward only (no forward+backward, no memory)"
    )
    bench.add_argument("--threads", type=int, default=None, help="CPU threads (None: torch's default)")
    bench.add_argument(
        "--min-run-time", type=float, default=1.0, help="seconds of timed calls per measurement"
    )
    bench.add_argument(
        "--quick", action="store_true", help="0.05 s per measurement, one warm-up call (tests)"
    )
    bench.add_argument("--json", metavar="PATH", default=None, help="write the records as JSON")
    bench.add_argument("--csv", metavar="PATH", default=None, help="write the records as CSV")
    bench.add_argument("--plot", metavar="PATH", default=None, help="write a PNG of the throughputs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``efficient-kan`` and ``python -m efficient_kan``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.command == "check":
        return _check(args)
    if args.batch < 1:
        print("efficient-kan bench: --batch must be at least 1", file=sys.stderr)
        return 2
    return _bench(args)
