"""CPU speed of the PyTorch path: one layer against its floor and its peers, training, inference.

    PYTHONPATH=. python benchmarks/bench_cpu_layer.py              # writes bench-out/bench_cpu_layer-<time>/
    PYTHONPATH=. python benchmarks/bench_cpu_layer.py --publish    # writes benchmarks/results/cpu_layer_<cpu>.*

Providers, all float32, each layer's input needing a gradient in forward+backward (a layer inside a
network), timed interleaved (one call of each provider per round; the median over rounds), so that
their ratios come from the same minutes of a shared machine:

- ``ours``: ``KANLinear`` on the PyTorch path (its eager fast case, efficient_kan/eager.py);
- ``reference``: the same layer through ``kan_linear_reference`` (the general, transform-ready
  path; what the CPU ran before the fast case);
- ``cox-de-boor``: the dense textbook recursion over every basis, autograd through it;
- ``inkan``: ``inkan.KANLayer`` (PyPI, uniform cubic splines, no scaler, ``torch.compile``d
  basis) when installed (``pip install -e ".[bench]"``);
- ``floor``: ``nn.Linear(in * (grid + order + 1), out, bias=False)`` on an already-expanded input,
  the product every B-spline layer must at least do.

Also: training steps/s of KAN [784, 64, 10] at batch 64 (AdamW, one thread) for ours, the
reference path, inkan's network and the MLP of the same widths; and ``torch.inference_mode``
forward at batch 1 and 8 against the floor. With one thread the clock is the thread's CPU time
(``time.thread_time``: on a loaded machine wall time mostly measures the scheduler); with more
threads it is wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _output  # noqa: E402

from efficient_kan import KAN, KANLinear  # noqa: E402
from efficient_kan.reference import kan_linear_reference  # noqa: E402

try:
    import inkan
except ImportError:  # optional: the `bench` extra
    inkan = None

# (batch, in, out, grid_size); spline_order 3.
ROWS = [(64, 784, 64, 5), (256, 1024, 1024, 5), (1024, 784, 512, 5), (256, 512, 512, 20)]
SMOKE_ROWS = [(8, 12, 6, 5)]
INFERENCE = [(784, 64, 5), (1024, 1024, 5)]


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


def _clock():
    return time.thread_time if torch.get_num_threads() == 1 else time.perf_counter


def interleaved(fns: dict, rounds: int) -> dict:
    """Median seconds per call of each function, one call of each per round."""
    clock = _clock()
    times = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (and inkan's compile)
        fn()
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def _fwd_bwd(fn, params, x):
    x = x.clone().requires_grad_()

    def step():
        for p in params:
            p.grad = None
        x.grad = None
        fn(x).sum().backward()

    return step


def bench_rows(rows, rounds_scale: float) -> list[dict]:
    results = []
    for batch, n_in, n_out, grid_size in rows:
        provs = providers(batch, n_in, n_out, grid_size)
        rounds = max(5, int(rounds_scale * 4e7 / (batch * n_in * n_out)))
        with torch.no_grad():
            fwd = interleaved({k: (lambda f=f, x=x: f(x)) for k, (f, _, x) in provs.items()}, rounds)
        full = interleaved({k: _fwd_bwd(*v) for k, v in provs.items()}, rounds)
        for mode, res in (("forward", fwd), ("forward+backward", full)):
            results.append(
                {
                    "batch": batch, "in": n_in, "out": n_out, "grid_size": grid_size, "mode": mode,
                    "threads": torch.get_num_threads(), "rounds": rounds,
                    "ms": {k: v * 1e3 for k, v in res.items()},
                }
            )  # fmt: skip
            print(_row_line(results[-1]), flush=True)
    return results


def _row_line(r: dict) -> str:
    ms = r["ms"]
    parts = " ".join(f"{k}={v:.3f}" for k, v in ms.items())
    return f"[{r['threads']}t] {r['batch']},{r['in']}->{r['out']},G{r['grid_size']} {r['mode']}: {parts} | ours/floor {ms['ours'] / ms['floor']:.2f}"


def bench_training(steps: int, widths=(784, 64, 10), batch: int = 64) -> dict:
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

    per_step = interleaved({k: stepper(m) for k, m in models.items()}, steps)
    out = {k: 1.0 / v for k, v in per_step.items()}
    print("training steps/s: " + " ".join(f"{k}={v:.1f}" for k, v in out.items()), flush=True)
    return out


def bench_inference(rounds: int) -> list[dict]:
    results = []
    for n_in, n_out, grid_size in INFERENCE:
        for batch in (1, 8):
            provs = providers(batch, n_in, n_out, grid_size)
            with torch.inference_mode():
                res = interleaved({k: (lambda f=f, x=x: f(x)) for k, (f, _, x) in provs.items()}, rounds)
            results.append({"batch": batch, "in": n_in, "out": n_out, "grid_size": grid_size,
                            "threads": torch.get_num_threads(), "ms": {k: v * 1e3 for k, v in res.items()}})  # fmt: skip
            print(f"inference {_row_line({**results[-1], 'mode': 'inference_mode'})}", flush=True)
    return results


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _markdown(meta: dict, rows: list[dict], training: dict, inference: list[dict]) -> str:
    lines = [
        "# PyTorch path on CPU: one KAN layer against the floor and its peers",
        "",
        f"- CPU: {meta['cpu']} ({meta['cores']} cores), load average at start {meta['load_start']}, at end {meta['load_end']}",
        f"- torch {meta['torch']}, inkan {meta['inkan']}, Python {meta['python']}; {meta['date']} (UTC)",
        f"- Command: `{meta['command']}`",
        "- float32, spline_order 3; milliseconds, median over interleaved rounds; 1 thread: thread CPU time,",
        "  2 threads: wall time. `floor`: `nn.Linear(in * (grid + 4), out, bias=False)` on an expanded input.",
        "",
        "| threads | batch, in -> out, grid | mode | ours | reference | cox-de-boor | inkan | floor | ours / floor | ours / inkan |",
        "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        ms = r["ms"]
        ink = ms.get("inkan")
        ink_ms = "-" if ink is None else f"{ink:.2f}"
        vs_ink = "-" if ink is None else f"{ms['ours'] / ink:.2f}"
        lines.append(
            f"| {r['threads']} | {r['batch']}, {r['in']} -> {r['out']}, G{r['grid_size']} | {r['mode']} | "
            f"{ms['ours']:.2f} | {ms['reference']:.2f} | {ms['cox-de-boor']:.2f} | {ink_ms} | "
            f"{ms['floor']:.2f} | {ms['ours'] / ms['floor']:.2f} | {vs_ink} |"
        )
    lines += ["", f"Training {meta['training']}, AdamW, one thread (steps/s):", ""]
    lines += ["| " + " | ".join(training) + " | ours / reference |", "|" + "--:|" * (len(training) + 1)]
    lines.append(
        "| "
        + " | ".join(f"{v:.1f}" for v in training.values())
        + f" | {training['ours'] / training['reference']:.2f} |"
    )
    lines += ["", "Inference (`torch.inference_mode`), one thread (ms):", ""]
    lines += ["| batch, in -> out, grid | ours | reference | floor | ours / floor |", "|---|--:|--:|--:|--:|"]
    for r in inference:
        ms = r["ms"]
        lines.append(f"| {r['batch']}, {r['in']} -> {r['out']}, G{r['grid_size']} | {ms['ours']:.3f} | "
                     f"{ms['reference']:.3f} | {ms['floor']:.3f} | {ms['ours'] / ms['floor']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


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
    load = lambda: " ".join(f"{v:.1f}" for v in __import__("os").getloadavg())  # noqa: E731
    meta = {
        "cpu": _cpu_name(), "cores": __import__("os").cpu_count(), "load_start": load(),
        "torch": torch.__version__, "inkan": getattr(inkan, "__version__", "not installed"),
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": "PYTHONPATH=. python benchmarks/bench_cpu_layer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }  # fmt: skip
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows += bench_rows(rows_spec, 0.02 if args.smoke else args.rounds_scale)
    torch.set_num_threads(1)
    widths, batch = ((12, 6, 3), 8) if args.smoke else ((784, 64, 10), 64)
    meta["training"] = f"KAN {list(widths)}, batch {batch}"
    training = bench_training(3 if args.smoke else args.train_steps, widths, batch)
    inference = [] if args.smoke else bench_inference(200)
    meta["load_end"] = load()
    stem = "cpu_layer_" + "".join(c if c.isalnum() else "-" for c in meta["cpu"].lower()).strip("-")[:40]
    (out / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "training": training, "inference": inference}, indent=1)
    )
    (out / f"{stem}.md").write_text(_markdown(meta, rows, training, inference))
    print(f"wrote {out / stem}.md and .json")
    return out


if __name__ == "__main__":
    main()
