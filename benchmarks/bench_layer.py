#!/usr/bin/env python
"""One KAN layer on the GPU: the fused Triton path against the PyTorch path, nn.Linear and the floor.

Providers, for each shape ``(batch, in, out, grid_size)`` (spline order 3):

- ``fused``: ``kan_linear_triton`` with ``use(strategy="fused")`` (the fused kernels; no
  basis in memory);
- ``chunked``: ``kan_linear_triton`` with ``use(strategy="chunked")`` (Triton expands the
  input in slices of at most ``EFFICIENT_KAN_CHUNK_BYTES``, cuBLAS multiplies them);
- ``torch``: ``kan_linear_reference`` (materialises the basis);
- ``nn.Linear``: ``F.linear`` with an ``(out, in)`` weight and bias;
- ``floor``: one dense product over the expanded width ``in * (grid_size + spline_order + 1)`` with
  the expanded input already in memory (its gradient included in forward+backward).

Precisions: ``fp32`` (IEEE, ``set_float32_matmul_precision("highest")``), ``tf32`` ("high"),
``bf16`` (``torch.autocast`` bf16, fp32 parameters). Modes: ``fwd`` (under ``no_grad``) and
``fwd+bwd``. Time: median and 20/80 % quantiles from ``efficient_kan.bench.time_fn``
(``triton.testing.do_bench`` on CUDA). Memory: peak
``max_memory_allocated`` during one iteration minus what was allocated before it (outputs and
gradients included). Also one ``KAN([784, 64, 10])`` training step (forward, backward, Adam) at
batch 64 against an MLP of the same widths, eagerly and replayed from a CUDA graph.

Writes ``bench_layer_<gpu>.json``, ``.csv`` and ``.md`` (records of ``efficient_kan.bench``: gpu name,
versions, commit, date, command with every number) into
a new folder ``bench-out/bench_layer-<UTC time>/`` (git-ignored), printed at the end; ``--out DIR``
names another folder and ``--publish`` the committed ``benchmarks/results/``. Results are merged
into an existing JSON in that folder by key, so a run can be split over calls (``--precisions``,
``--shapes``; ``--skip-done`` with the same ``--out`` continues one). The first call per shape
autotunes and compiles (minutes; the Triton cache keeps them); ``EFFICIENT_KAN_AUTOTUNE=0`` uses the
first config only.

Without CUDA this prints that GPU numbers need a GPU and exits 0; ``--smoke`` then runs one tiny
shape under ``TRITON_INTERPRET=1`` to check the script itself (timings meaningless).

Examples::

    python benchmarks/bench_layer.py --publish        # everything (GPU), committed
    python benchmarks/bench_layer.py --precisions bf16 --shapes 4096x1024x1024x5
    python benchmarks/bench_layer.py --smoke          # CPU check of the script
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

# TRITON_INTERPRET must be set before triton is imported (smoke mode on CPU only).
if "--smoke" in sys.argv and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

# This checkout's efficient_kan: its import stops, saying so, unless it is installed (-e).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from efficient_kan import KAN  # noqa: E402
from efficient_kan.bench import (  # noqa: E402
    Record,
    environment,
    format_quantiles,
    load_records,
    markdown_table,
    merge_records,
    peak_memory_mib,
    time_fn,
    write_records,
)
from efficient_kan.bspline import bspline_basis, uniform_grid  # noqa: E402
from efficient_kan.reference import kan_linear_reference  # noqa: E402
from efficient_kan.settings import configure, use  # noqa: E402
from efficient_kan.triton_backend import choose_strategy, kan_linear_triton  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for _output
import _output  # noqa: E402

SHAPES = [  # (batch, in, out, grid_size)
    (64, 784, 64, 5),
    (1024, 784, 512, 5),
    (4096, 1024, 1024, 5),
    (16384, 1024, 1024, 5),
    (4096, 512, 512, 20),
    (65536, 64, 64, 5),
]
# The kernel work's four target shapes (the large ones; the first two are MNIST-sized and
# launch-bound): what the one-run GPU plan (tools/gpu_session.sh plan) measures.
TARGET_SHAPES = SHAPES[2:]
PRECISIONS = ("fp32", "tf32", "bf16")
MODES = ("fwd", "fwd+bwd")
PROVIDERS = ("fused", "chunked", "torch", "nn.Linear", "floor")
TRITON_PROVIDERS = ("fused", "chunked")
K = 3


# ------------------------------------------------------------------------------- measurement
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# Seconds of timed calls per measurement; --smoke lowers it (the interpreter is slow and its
# times meaningless).
TIMING = {"min_run_time": 0.25, "warmup": 3}


def precision_ctx(precision: str, dev: torch.device, cache_enabled: bool = True):
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    if precision == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return nullcontext()


# ------------------------------------------------------------------------------- providers
def make_provider(name: str, batch: int, n_in: int, n_out: int, g: int, dev: torch.device):
    """Returns ``(call, params)``: ``call()`` runs the forward and returns the output."""
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dev)

    if name in (*TRITON_PROVIDERS, "torch"):
        grid = uniform_grid(n_in, g, K, device=dev)
        x = rnd(batch, n_in).requires_grad_()
        params = [
            rnd(n_out, n_in, scale=n_in**-0.5).requires_grad_(),  # base_weight
            rnd(n_out, n_in, g + K, scale=0.1).requires_grad_(),  # spline_weight
            rnd(n_out, n_in, scale=n_in**-0.5).requires_grad_(),  # spline_scaler
            rnd(n_out).requires_grad_(),  # bias
        ]
        fn = kan_linear_reference if name == "torch" else kan_linear_triton
        return (lambda: fn(x, grid, *params, spline_order=K, base_activation="silu")), [x, *params]
    if name == "nn.Linear":
        x = rnd(batch, n_in).requires_grad_()
        w, b = rnd(n_out, n_in, scale=n_in**-0.5).requires_grad_(), rnd(n_out).requires_grad_()
        return (lambda: F.linear(x, w, b)), [x, w, b]
    # floor: the expanded input [B(x) | silu(x)] is already in memory.
    width = n_in * (g + K + 1)
    x = rnd(batch, n_in)
    with torch.no_grad():
        bases = bspline_basis(x, uniform_grid(n_in, g, K, device=dev), K).reshape(batch, -1)
        a = torch.cat([bases, F.silu(x)], dim=1).contiguous().requires_grad_()
    del bases
    w = rnd(n_out, width, scale=width**-0.5).requires_grad_()
    return (lambda: F.linear(a, w)), [a, w]


def rel_error_vs_reference(call, params, gy: torch.Tensor, precision: str, dev: torch.device) -> float:
    """Largest relative error (Frobenius norm) of the output and every gradient of a Triton
    provider against the fp64 PyTorch reference on the same (random, non-zero) inputs."""
    x, bw, sw, sc, b = params
    with precision_ctx(precision, dev):
        y = call()
    got = [y.detach().double(), *(t.double() for t in torch.autograd.grad(y, params, gy.to(y.dtype)))]
    grid = uniform_grid(x.shape[1], sw.shape[2] - K, K, device=dev)
    ref_params = [t.detach().double().requires_grad_() for t in params]
    y_ref = kan_linear_reference(ref_params[0], grid, *ref_params[1:], spline_order=K, base_activation="silu")
    want = [y_ref.detach(), *torch.autograd.grad(y_ref, ref_params, gy.double())]
    return max(float((a - e).norm() / e.norm().clamp_min(1e-30)) for a, e in zip(got, want, strict=True))


def timing_record(env: dict, common: dict, metric: str, timing) -> Record:
    """A time record (ms: median and 20/80 % quantiles) of one ``time_fn`` result, naming its timer."""
    return Record.of(
        env, **common, metric=metric, p20=timing.p20, p50=timing.p50, p80=timing.p80, unit="ms",
        extra={"timer": timing.method},
    )  # fmt: skip


def memory_record(env: dict, common: dict, metric: str, mib: float, mem_kind: str) -> Record:
    """A peak-memory record (MiB) of one ``peak_memory_mib`` result, naming how it was measured."""
    return Record.of(env, **common, metric=metric, value=mib, unit="MiB", extra={"memory": mem_kind})


def measure(provider: str, shape, precision: str, mode: str, dev: torch.device, env: dict) -> list[Record]:
    """Time (ms), peak extra memory (MiB) and, for the Triton providers' fwd+bwd, the error against
    fp64 (checked before timing) of one provider at one shape, precision and mode, as records."""
    batch, n_in, n_out, g = shape
    previous = configure(strategy=provider) if provider in TRITON_PROVIDERS else None
    try:
        call, params = make_provider(provider, batch, n_in, n_out, g, dev)
        gy = torch.randn(batch, n_out, device=dev)
        rel_err = None
        if provider in TRITON_PROVIDERS and mode == "fwd+bwd" and batch * n_in * (g + K) <= 2**27:
            # Correct first: the same call against the fp64 reference before it is timed.
            rel_err = rel_error_vs_reference(call, params, gy, precision, dev)

        def step():
            with precision_ctx(precision, dev):
                if mode == "fwd":
                    with torch.no_grad():
                        call()
                else:
                    y = call()
                    y.backward(gy.to(y.dtype))

        grads = params if mode == "fwd+bwd" else None
        timing = time_fn(step, dev, grad_to_none=grads, **TIMING)
        for p in params:
            p.grad = None
        mib, mem_kind = peak_memory_mib(step, dev)
    finally:
        if previous is not None:
            configure(strategy=previous.strategy)
    common = dict(benchmark="bench_layer", provider=provider, shape=shape_key(shape), dtype=precision)
    records = [
        timing_record(env, common, f"{mode} ms", timing),
        memory_record(env, common, f"{mode} MiB", mib, mem_kind),
    ]
    if rel_err is not None:
        records.append(Record.of(env, **common, metric=f"{mode} rel_err", value=rel_err))
    return records


TRAINING_KINDS = ("triton", "torch", "mlp", "triton+graph", "mlp+graph")


def training_step_name(kind: str) -> str:
    model = "MLP 784-64-10" if kind.startswith("mlp") else f"KAN([784,64,10]) {kind.split('+')[0]}"
    return model + (", CUDA graph" if kind.endswith("+graph") else "")


def measure_training_step(kind: str, dev: torch.device, precision: str, env: dict) -> list[Record]:
    """One optimiser step at batch 64 for KAN([784, 64, 10]) (triton / torch backends) or the MLP.

    ``+graph`` kinds capture the whole step (forward, backward, Adam with ``capturable=True``) in a
    CUDA graph after three warm-up steps on a side stream (autotuning and the optimiser state happen
    there) and time its replay: what a launch-bound model gets once Python and launch costs are
    taken out. No memory figure for those (a replay allocates nothing).
    """
    graphed = kind.endswith("+graph")
    if graphed and dev.type != "cuda":
        raise RuntimeError("CUDA graphs need a CUDA device")
    torch.manual_seed(0)
    if kind.startswith("mlp"):
        model = nn.Sequential(nn.Linear(784, 64), nn.SiLU(), nn.Linear(64, 10)).to(dev)
    else:
        model = KAN([784, 64, 10]).to(dev)
        for layer in model.modules():
            if hasattr(layer, "backend"):
                layer.backend = kind.split("+")[0]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=graphed)
    x = torch.rand(64, 784, device=dev)
    target = torch.randint(0, 10, (64,), device=dev)

    def step():
        # Autocast's weight-cast cache must be off under graph capture (PyTorch's CUDA graph notes).
        with precision_ctx(precision, dev, cache_enabled=not graphed):
            loss = F.cross_entropy(model(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    common = dict(
        benchmark="bench_layer", provider=training_step_name(kind), shape="batch 64", dtype=precision
    )
    if not graphed:
        timing = time_fn(step, dev, **TIMING)
        mib, mem_kind = peak_memory_mib(step, dev)
        return [
            timing_record(env, common, "step ms", timing),
            memory_record(env, common, "step MiB", mib, mem_kind),
        ]
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    timing = time_fn(graph.replay, dev, **TIMING)
    return [timing_record(env, common, "step ms", timing)]


# ------------------------------------------------------------------------------- reporting
def choose_strategy_for(shape) -> str:
    """The strategy ``auto`` picks for a (batch, in, out, grid) shape with no override set."""
    with use(strategy="auto"):
        return choose_strategy(shape[0], shape[1], shape[2])


def shape_key(shape) -> str:
    return "x".join(str(v) for v in shape)


NOTES = (
    "Time: median ms [20 %, 80 %] per iteration (efficient_kan.bench.time_fn: triton.testing.do_bench "
    "on CUDA). Memory: peak extra MiB (max_memory_allocated during one iteration minus the allocation "
    "before it). floor = one dense product over the expanded width in*(G+K+1), expanded input in memory.",
    "",
    "fused / chunked: the two Triton strategies (efficient_kan.use(strategy=...)); 'auto' is the one "
    "`choose_strategy` picks for the shape; 'best' is the faster of the two. err: largest "
    "relative error (Frobenius) of the output and every gradient against the fp64 reference, "
    "checked before timing (fwd+bwd rows).",
)


def layer_table(records: list[Record], shapes) -> str:
    """The layer table (one row per shape, precision and mode; providers side by side) and the
    training-step table, from records."""
    by_key = {r.key(): r for r in records if r.benchmark == "bench_layer"}

    def rec(provider, shape, precision, metric):
        return by_key.get(("bench_layer", provider, shape, precision, metric))

    header = ["batch x in x out x G", "precision", "mode", *PROVIDERS, "auto", "best/floor", "best/nn.Linear",
              "err fused", "err chunked", *(f"MiB {p}" for p in PROVIDERS)]  # fmt: skip
    rows = []
    for shape in shapes:
        key = shape_key(shape)
        for precision in PRECISIONS:
            for mode in MODES:
                t = {p: rec(p, key, precision, f"{mode} ms") for p in PROVIDERS}
                if not any(t.values()):
                    continue

                def ms(p, t=t):
                    return t[p].p50 if t[p] is not None and t[p].ok else None

                timed = [p for p in TRITON_PROVIDERS if ms(p) is not None]
                best = min(timed, key=ms) if timed else None

                def ratio(b, best=best):
                    return f"{ms(best) / ms(b):.2f}x ({best})" if best and ms(b) else "-"

                def single(p, metric, fmt, key=key, precision=precision, mode=mode):
                    r = rec(p, key, precision, f"{mode} {metric}")
                    return format(r.p50, fmt) if r is not None and r.ok else "-"

                rows.append([
                    key, precision, mode,
                    *(format_quantiles(t[p]) for p in PROVIDERS),
                    choose_strategy_for(shape), ratio("floor"), ratio("nn.Linear"),
                    single("fused", "rel_err", ".1e"), single("chunked", "rel_err", ".1e"),
                    *(single(p, "MiB", ".1f") for p in PROVIDERS),
                ])  # fmt: skip
    text = markdown_table(header, rows)
    steps = [r for r in records if r.shape == "batch 64" and r.metric == "step ms"]
    if steps:
        mem = {(r.provider, r.dtype): r for r in records if r.metric == "step MiB"}
        text += "\n\n## Training step, batch 64 (forward, backward, Adam)\n\n" + markdown_table(
            ["model", "precision", "median ms [20 %, 80 %]", "MiB"],
            [
                [r.provider, r.dtype, format_quantiles(r),
                 f"{mem[r.provider, r.dtype].p50:.1f}" if (r.provider, r.dtype) in mem else "-"]
                for r in sorted(steps, key=lambda r: (r.provider, r.dtype))
            ],
        )  # fmt: skip
    return text


def write_results(out: Path, stem: str, records: list[Record], shapes, where: str) -> dict[str, Path]:
    """``<stem>.json``/``.csv``/``.md`` of the records (one schema: efficient_kan.bench)."""
    return write_records(
        records, out, stem, title=f"bench_layer: one KAN layer (spline order {K}) on {where}",
        notes=NOTES, table=layer_table(records, shapes),
    )  # fmt: skip


def error_record(
    env: dict, provider: str, shape: str, precision: str, metric: str, e: BaseException
) -> Record:
    """A failed measurement: kept in the results with its error (one failure must not lose the run)."""
    if isinstance(e, torch.cuda.OutOfMemoryError):  # the torch path at big batches
        text = f"OOM: {str(e).splitlines()[0][:80]}"
    else:
        text = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return Record.of(env, benchmark="bench_layer", provider=provider, shape=shape, dtype=precision,
                     metric=metric, error=text)  # fmt: skip


def describe(records: list[Record]) -> str:
    """One printed line for a measurement's records."""
    by_metric = {r.metric.split()[-1]: r for r in records}
    t = by_metric.get("ms")
    if t is None or not t.ok:
        return (t or records[0]).error or "-"
    text = f"{t.p50:.3f} ms"
    if "MiB" in by_metric:
        text += f", {by_metric['MiB'].p50:.1f} MiB"
    if "rel_err" in by_metric:
        text += f", err {by_metric['rel_err'].p50:.1e}"
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option's help shows its default)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_output.HelpFormatter)
    ap.add_argument(
        "--precisions",
        nargs="+",
        default=list(PRECISIONS),
        choices=PRECISIONS,
        help="fp32: IEEE; tf32: matmul precision 'high'; bf16: autocast",
    )
    ap.add_argument(
        "--modes",
        nargs="+",
        default=list(MODES),
        choices=MODES,
        help="fwd under no_grad, or forward and backward",
    )
    ap.add_argument(
        "--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS, help="implementations to time"
    )
    ap.add_argument(
        "--shapes",
        nargs="+",
        default=None,
        help="batch x in x out x grid, e.g. 4096x1024x1024x5, or 'targets' for the four target shapes "
        + " ".join(shape_key(s) for s in TARGET_SHAPES)
        + " (None: the built-in list, "
        + " ".join(shape_key(s) for s in SHAPES)
        + ")",
    )
    ap.add_argument("--no-training", action="store_true", help="skip the KAN([784, 64, 10]) training step")
    ap.add_argument("--training-only", action="store_true", help="only the training step, no layer table")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="start no new measurement after this long (None: no limit)",
    )
    ap.add_argument(
        "--skip-done", action="store_true", help="skip keys already measured in the JSON of the output folder"
    )
    _output.add_out_arguments(
        ap, "bench_layer", publish=True, existing="new results merge into its JSON there by key"
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CPU: one tiny shape under the interpreter, to check the script (never published)",
    )
    return ap


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, str]:
    """The options, checked for combinations that measure nothing, and the command line to record."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.training_only and args.no_training:
        ap.error("--training-only and --no-training leave nothing to measure")
    if args.smoke and args.publish:
        ap.error("--smoke measures nothing worth keeping: it is never published (use --out DIR)")
    command = shlex.join(["python", "benchmarks/bench_layer.py", *(sys.argv[1:] if argv is None else argv)])
    return args, command


def run_smoke(args: argparse.Namespace, command: str) -> int:
    """CPU check of the script itself: one tiny shape per provider and mode, one training step."""
    print("--smoke: one tiny shape on CPU (TRITON_INTERPRET=1) to check the script; timings are meaningless.")
    dev = torch.device("cpu")
    env = environment(dev, command)
    TIMING.update(min_run_time=0.01, warmup=1)
    shape = (8, 16, 8, 5)
    records: list[Record] = []
    for provider in PROVIDERS:
        for mode in MODES:
            new = measure(provider, shape, "fp32", mode, dev, env)
            records += new
            print(f"  {provider:10s} {mode:8s} {describe(new)}")
    new = measure_training_step("torch", dev, "fp32", env)
    records += new
    print(f"  KAN([784,64,10]) torch step {describe(new)}")
    out, _ = _output.resolve_out(args, "bench_layer")
    paths = write_results(out, "bench_layer_smoke", records, [shape], "CPU (smoke, interpreter)")
    print(f"  wrote {paths['md']}")
    return 0


def planned_shapes(args: argparse.Namespace) -> tuple[list, list]:
    """The shapes to measure (``--shapes``, ``targets``, none with ``--training-only``) and the
    shapes the table shows (the default ones first, then any others measured)."""
    shapes = SHAPES
    if args.shapes == ["targets"]:
        shapes = TARGET_SHAPES
    elif args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    if args.training_only:
        shapes = []
    return shapes, list(dict.fromkeys([*SHAPES, *shapes]))


def measure_layers(args, shapes, dev, env, records, done, write) -> tuple[list[Record], bool]:
    """Every shape x precision x mode x provider not already done, written after each precision;
    a failure is recorded, not fatal. Returns the records and whether ``--max-minutes`` stopped it."""
    start = time.perf_counter()
    stopped = False
    for shape in shapes:
        for precision in args.precisions:
            for mode in args.modes:
                for provider in args.providers:
                    metric = f"{mode} ms"
                    if (
                        args.skip_done
                        and ("bench_layer", provider, shape_key(shape), precision, metric) in done
                    ):
                        continue
                    if args.max_minutes and time.perf_counter() - start > 60 * args.max_minutes:
                        stopped = True
                        break
                    try:
                        new = measure(provider, shape, precision, mode, dev, env)
                    except Exception as e:  # recorded, not fatal: one failure must not lose the run
                        new = [error_record(env, provider, shape_key(shape), precision, metric, e)]
                    torch.cuda.empty_cache()
                    records = merge_records(records, new)
                    print(
                        f"{shape_key(shape):>22s} {precision:5s} {mode:8s} {provider:10s} {describe(new)}",
                        flush=True,
                    )
                write(records)
    return records, stopped


def measure_training(args, dev, env, records, done) -> list[Record]:
    """One training step of each kind per precision not already done; a failure is recorded."""
    for precision in args.precisions:
        for kind in TRAINING_KINDS:
            name = training_step_name(kind)
            if args.skip_done and ("bench_layer", name, "batch 64", precision, "step ms") in done:
                continue
            try:
                new = measure_training_step(kind, dev, precision, env)
            except Exception as e:  # recorded, not fatal
                new = [error_record(env, name, "batch 64", precision, "step ms", e)]
            records = merge_records(records, new)
            print(f"training step {name:28s} {precision:5s} {describe(new)}", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    """Measure on the GPU (or ``--smoke`` on CPU), merging into the JSON already in the output folder."""
    args, command = parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_layer: GPU numbers need a CUDA GPU; none here, nothing measured.")
        return run_smoke(args, command) if args.smoke else 0

    dev = torch.device("cuda")
    gpu_name = torch.cuda.get_device_name(dev)
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    out, fresh = _output.resolve_out(args, "bench_layer")
    stem = f"bench_layer_{slug}"
    json_path = out / f"{stem}.json"
    records = load_records(json_path) if json_path.exists() else []
    env = environment(dev, command)
    env["versions"]["autotune"] = os.environ.get("EFFICIENT_KAN_AUTOTUNE", "1")
    done = {r.key() for r in records if r.ok}
    shapes, shown = planned_shapes(args)

    def write(records: list[Record]) -> dict[str, Path]:
        return write_results(out, stem, records, shown, gpu_name)

    records, stopped = measure_layers(args, shapes, dev, env, records, done, write)
    if stopped:
        # A new default folder holds no measurements: continuing needs the folder just written.
        again = f"--skip-done --out {shlex.quote(str(out))}" if fresh else "--skip-done"
        print(f"stopped after --max-minutes {args.max_minutes}; rerun with {again} to continue", flush=True)
    if not args.no_training and not stopped:
        records = measure_training(args, dev, env, records, done)
    torch.set_float32_matmul_precision("highest")
    paths = write(records)
    print(f"wrote {paths['md'].name}, {paths['json'].name} and {paths['csv'].name} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
