"""CPU speed of the PyTorch path: one layer against its floor and its peers, training, inference.

    python benchmarks/bench_cpu_layer.py              # writes bench-out/bench_cpu_layer-<time>/
    python benchmarks/bench_cpu_layer.py --publish    # writes benchmarks/results/cpu_layer_<cpu>.*

Providers, all float32, each layer's input needing a gradient in forward+backward (a layer inside a
network), timed interleaved (one call of each provider per round; the median over rounds), so that
their ratios come from the same minutes of a shared machine:

- ``ours``: ``KANLinear`` on the PyTorch path (its eager fast case, efficient_kan/eager.py, with
  its C kernels, efficient_kan/cpu_kernels.c; the header says whether they were built);
- ``reference``: the same layer through ``kan_linear_reference`` (the general, transform-ready
  path; what the CPU ran before the fast case);
- ``cox-de-boor``: the dense textbook recursion over every basis, autograd through it;
- ``inkan``: ``inkan.KANLayer`` (PyPI, uniform cubic splines, no scaler, ``torch.compile``d
  basis) when installed (``pip install -e ".[bench]"``);
- ``floor``: ``nn.Linear(in * (grid + order + 1), out, bias=False)`` on an already-expanded input,
  the product every B-spline layer must at least do.

Also: training steps/s of KAN [784, 64, 10] at batch 64 (AdamW, one thread) for ours, the
reference path, inkan's network and the MLP of the same widths; and ``torch.inference_mode``
forward at batch 1 and 8 against the floor, also with ``efficient_kan.frozen_weights`` (weights
packed once, not per call). Timing: ``efficient_kan.bench.time_interleaved`` (one
call of each provider per round, so that their ratios come from the same minutes; with one thread the
clock is the thread's CPU time, on a loaded machine wall time mostly measures the scheduler; with
more threads wall time). Results: ``efficient_kan.bench`` records (JSON) and a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _output  # noqa: E402

from efficient_kan import KAN, KANLinear, cpu_kernels, frozen_weights  # noqa: E402
from efficient_kan.bench import Record, environment, time_interleaved, write_records  # noqa: E402
from efficient_kan.reference import kan_linear_reference  # noqa: E402

try:
    import inkan
except ImportError:  # optional: the `bench` extra
    inkan = None

# (batch, in, out, grid_size); spline_order 3.
ROWS = [(64, 784, 64, 5), (256, 1024, 1024, 5), (1024, 784, 512, 5), (256, 512, 512, 20)]
SMOKE_ROWS = [(8, 12, 6, 5)]
INFERENCE = [(784, 64, 5), (1024, 1024, 5)]
SMOKE_INFERENCE = [(12, 6, 5)]


def dense_cox_de_boor(x: torch.Tensor, grid: torch.Tensor, k: int) -> torch.Tensor:
    x = x.unsqueeze(-1)
    bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)
    for p in range(1, k + 1):
        bases = (x - grid[:, : -(p + 1)]) / (grid[:, p:-1] - grid[:, : -(p + 1)]) * bases[..., :-1] + (
            grid[:, p + 1 :] - x
        ) / (grid[:, p + 1 :] - grid[:, 1:(-p)]) * bases[..., 1:]
    return bases


def _args(layer: KANLinear):
    return (layer.grid, layer.base_weight, layer.spline_weight, layer.spline_scaler, layer.bias)


def providers(batch: int, n_in: int, n_out: int, grid_size: int) -> dict:
    """name -> (forward function of x, parameters, input)."""
    torch.manual_seed(0)
    layer = KANLinear(n_in, n_out, grid_size=grid_size, bias=False)  # the floor and inkan have none
    layer.backend = "torch"
    x = torch.rand(batch, n_in) * 2 - 1
    width = n_in * (grid_size + layer.spline_order + 1)
    floor = nn.Linear(width, n_out, bias=False)

    def cox(v):
        bases = dense_cox_de_boor(v, layer.grid, layer.spline_order)
        scaled = layer.spline_weight * layer.spline_scaler.unsqueeze(-1)
        return F.linear(F.silu(v), layer.base_weight) + F.linear(
            bases.reshape(v.shape[0], -1), scaled.reshape(n_out, -1)
        )

    out = {
        "ours": (layer, list(layer.parameters()), x),
        "reference": (lambda v: kan_linear_reference(v, *_args(layer)), list(layer.parameters()), x),
        "cox-de-boor": (cox, list(layer.parameters()), x),
        "floor": (floor, list(floor.parameters()), torch.rand(batch, width)),
    }
    with torch.no_grad():
        torch.testing.assert_close(layer(x), out["reference"][0](x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(layer(x), cox(x), atol=1e-4, rtol=1e-4)
    if inkan is not None:
        peer = inkan.KANLayer(n_in, n_out, grid_size=grid_size)
        out["inkan"] = (peer, list(peer.parameters()), x)
    return out


def _fwd_bwd(fn, params, x):
    x = x.clone().requires_grad_()

    def step():
        for p in params:
            p.grad = None
        x.grad = None
        fn(x).sum().backward()

    return step


def _shape(batch: int, n_in: int, n_out: int, grid_size: int) -> str:
    return f"{batch}, {n_in} -> {n_out}, G{grid_size}"


def _records(env: dict, timings: dict, *, shape: str, metric: str, extra: dict, rate: float = 0.0) -> list:
    """One record per provider: ms per call, or with ``rate`` items per second."""
    out = []
    for provider, t in timings.items():
        values = dict(p20=t.p20, p50=t.p50, p80=t.p80, unit="ms")
        if rate:
            low, mid, high = t.per_second(rate)
            values = dict(p20=low, p50=mid, p80=high, unit="per s")
        out.append(
            Record.of(env, benchmark="bench_cpu_layer", provider=provider, shape=shape, dtype="float32",
                      metric=metric, **values, extra={**extra, "method": t.method, "rounds": t.samples})
        )  # fmt: skip
    return out


def bench_rows(env: dict, rows, rounds_scale: float) -> list[Record]:
    records = []
    for batch, n_in, n_out, grid_size in rows:
        provs = providers(batch, n_in, n_out, grid_size)
        rounds = max(5, int(rounds_scale * 4e7 / (batch * n_in * n_out)))
        with torch.no_grad():
            fwd = time_interleaved({k: (lambda f=f, x=x: f(x)) for k, (f, _, x) in provs.items()}, rounds)
        full = time_interleaved({k: _fwd_bwd(*v) for k, v in provs.items()}, rounds)
        threads = torch.get_num_threads()
        for mode, res in (("forward", fwd), ("forward+backward", full)):
            extra = {"threads": threads, "mode": mode}
            shape = _shape(batch, n_in, n_out, grid_size)
            records += _records(env, res, shape=shape, metric=f"{mode} ({threads}t)", extra=extra)
            print(f"[{threads}t] {shape} {mode}: " + _line(res, "floor"), flush=True)
    return records


def _line(res: dict, floor: str) -> str:
    parts = " ".join(f"{k}={t.p50:.3f}" for k, t in res.items())
    return f"{parts} | ours/{floor} {res['ours'].p50 / res[floor].p50:.2f}"


def bench_training(env: dict, steps: int, widths=(784, 64, 10), batch: int = 64) -> list[Record]:
    torch.manual_seed(0)
    x, labels = torch.rand(batch, widths[0]) * 2 - 1, torch.randint(0, widths[-1], (batch,))
    kan = KAN(list(widths))
    for layer in kan.layers:
        layer.backend = "torch"
    reference = KAN(list(widths))

    class Ref(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, v):
            for layer in self.model.layers:
                v = kan_linear_reference(v, *_args(layer))
            return v

    mlp = nn.Sequential(
        *[m for a, b in zip(widths[:-1], widths[1:], strict=True) for m in (nn.Linear(a, b), nn.ReLU())][:-1]
    )
    models = {"ours": kan, "reference": Ref(reference), "mlp": mlp}
    if inkan is not None:
        models["inkan"] = nn.Sequential(
            *[inkan.KANLayer(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )

    def stepper(model):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), labels).backward()
            opt.step()

        return step

    per_step = time_interleaved({k: stepper(m) for k, m in models.items()}, steps)
    print("training steps/s: " + " ".join(f"{k}={1e3 / t.p50:.1f}" for k, t in per_step.items()), flush=True)
    shape = f"KAN {list(widths)}, batch {batch}"
    return _records(
        env, per_step, shape=shape, metric="training steps/s (1t)", extra={"threads": 1}, rate=1.0
    )


def bench_inference(env: dict, rounds: int, rows=INFERENCE) -> list[Record]:
    records = []
    for n_in, n_out, grid_size in rows:
        for batch in (1, 8):
            provs = providers(batch, n_in, n_out, grid_size)
            # The same layer with its weights packed once (efficient_kan.frozen_weights): a copy,
            # so that "ours" still packs per call.
            frozen = copy.deepcopy(provs["ours"][0])
            provs["ours, frozen weights"] = (frozen, list(frozen.parameters()), provs["ours"][2])
            with torch.inference_mode(), frozen_weights(frozen):
                res = time_interleaved({k: (lambda f=f, x=x: f(x)) for k, (f, _, x) in provs.items()}, rounds)
            shape = _shape(batch, n_in, n_out, grid_size)
            records += _records(env, res, shape=shape, metric="inference_mode (1t)", extra={"threads": 1})
            print(f"inference {shape}: " + _line(res, "floor"), flush=True)
    return records


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _cell(found: dict, key: tuple, digits: int = 2) -> str:
    r = found.get(key)
    return "-" if r is None else f"{r.p50:.{digits}f}"


def _ratio(found: dict, a: tuple, b: tuple) -> str:
    ra, rb = found.get(a), found.get(b)
    return "-" if ra is None or rb is None else f"{ra.p50 / rb.p50:.2f}"


def _markdown(records: list[Record]) -> str:
    """The three tables (layer rows, training, inference) from the records."""
    found = {(r.provider, r.shape, r.metric): r for r in records}
    layer = [r for r in records if r.extra.get("mode") and r.provider == "ours"]
    lines = [
        "| threads | batch, in -> out, grid | mode | ours | reference | cox-de-boor | inkan | floor "
        "| ours / floor | ours / inkan |",
        "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in layer:
        key = lambda p, r=r: (p, r.shape, r.metric)  # noqa: E731
        cells = " | ".join(
            _cell(found, key(p)) for p in ("ours", "reference", "cox-de-boor", "inkan", "floor")
        )
        lines.append(
            f"| {r.extra['threads']} | {r.shape} | {r.extra['mode']} | {cells} | "
            f"{_ratio(found, key('ours'), key('floor'))} | {_ratio(found, key('ours'), key('inkan'))} |"
        )
    training = [r for r in records if r.metric.startswith("training")]
    if training:
        names = [r.provider for r in training]
        rate = {r.provider: r.p50 for r in training}
        lines += ["", f"Training {training[0].shape}, AdamW, one thread (steps/s, median of rounds):", ""]
        lines += ["| " + " | ".join(names) + " | ours / reference |", "|" + "--:|" * (len(names) + 1)]
        lines.append(
            "| "
            + " | ".join(f"{rate[n]:.1f}" for n in names)
            + f" | {rate['ours'] / rate['reference']:.2f} |"
        )
    inference = [r for r in records if r.metric.startswith("inference") and r.provider == "ours"]
    if inference:
        lines += ["", "Inference (`torch.inference_mode`), one thread (ms):", ""]
        lines += [
            "| batch, in -> out, grid | ours | ours, frozen weights | reference | floor | ours / floor "
            "| frozen / floor |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        frozen = "ours, frozen weights"
        for r in inference:
            key = lambda p, r=r: (p, r.shape, r.metric)  # noqa: E731
            cells = " | ".join(_cell(found, key(p), 3) for p in ("ours", frozen, "reference", "floor"))
            lines.append(
                f"| {r.shape} | {cells} | {_ratio(found, key('ours'), key('floor'))} | "
                f"{_ratio(found, key(frozen), key('floor'))} |"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=_output.HelpFormatter
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to measure")
    parser.add_argument("--rounds-scale", type=float, default=1.0, help="multiplies the rounds per row")
    parser.add_argument("--train-steps", type=int, default=200, help="interleaved training steps per model")
    parser.add_argument("--smoke", action="store_true", help="one tiny row, few rounds (checks the script)")
    _output.add_out_arguments(
        parser, "bench_cpu_layer", publish=True, existing="its files there are replaced"
    )
    return parser


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    out, _ = _output.resolve_out(args, "bench_cpu_layer")
    rows_spec = SMOKE_ROWS if args.smoke else ROWS
    load = lambda: " ".join(f"{v:.1f}" for v in os.getloadavg())  # noqa: E731
    load_start = load()
    command = ["python", "benchmarks/bench_cpu_layer.py", *(argv if argv is not None else sys.argv[1:])]
    env = environment("cpu", command)
    env["device"] = f"CPU: {_cpu_name()} ({os.cpu_count()} cores)"
    env["versions"]["inkan"] = getattr(inkan, "__version__", "not installed")
    records = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        records += bench_rows(env, rows_spec, 0.02 if args.smoke else args.rounds_scale)
    torch.set_num_threads(1)
    widths, batch = ((12, 6, 3), 8) if args.smoke else ((784, 64, 10), 64)
    records += bench_training(env, 3 if args.smoke else args.train_steps, widths, batch)
    records += bench_inference(env, 3, SMOKE_INFERENCE) if args.smoke else bench_inference(env, 200)
    notes = [
        f"- Load average (1, 5, 15 min) at start {load_start}, at end {load()}.",
        "- float32, spline_order 3; milliseconds per call, median over interleaved rounds "
        "(`efficient_kan.bench.time_interleaved`); 1 thread: thread CPU time, more: wall time.",
        "- `floor`: `nn.Linear(in * (grid + 4), out, bias=False)` on an already-expanded input.",
        f"- The CPU path's C kernels: {cpu_kernels.status()}.",
    ]
    stem = "cpu_layer_" + "".join(c if c.isalnum() else "-" for c in _cpu_name().lower()).strip("-")[:40]
    paths = write_records(
        records, out, stem, title="PyTorch path on CPU: one KAN layer against the floor and its peers",
        formats=("json", "md"), notes=notes, table=_markdown(records),
    )  # fmt: skip
    print(f"wrote {paths['md']} and {paths['json'].name}")
    return out


if __name__ == "__main__":
    main()
