#!/usr/bin/env python
"""KAN versus MLP on MNIST-like data: accuracy, parameters, throughput and memory, side by side.

For each width list (default: the five of the issue) it trains, with train_mnist.py's training:

- ``KAN(widths)``,
- an MLP of the same widths (ReLU between ``nn.Linear`` layers),
- an MLP with about the KAN's parameter count (its hidden widths scaled up; ``[784, 10]`` gets one
  hidden layer),

over several seeds, and writes ``mnist_<dataset>_<device>.md`` and ``.json`` plus a PNG
(accuracy vs parameters, throughput vs parameters) into a new folder ``bench-out/mnist_table-<UTC
time>/`` (git-ignored; ``--out DIR`` names another, ``--publish`` the committed
``benchmarks/results/``), printed at the end. Every run's full result (history, command, device,
versions) is in the JSON, and the script reuses finished runs from the JSON in its output folder:
to continue after ``--max-minutes`` stopped it (e.g. under a 10-minute job limit), rerun the same
command with ``--out`` set to the folder it printed (with ``--out`` or ``--publish``, the same
command as it is).

Examples::

    # CPU trial, smallest rows, bundled subset (a few minutes on 2 cores)
    python benchmarks/mnist_table.py --dataset mnist-5k --rows 784,10 784,48,10 --threads 1
    # GPU, everything, 10 epochs x 3 seeds, for the committed tables; repeat until it says "complete"
    python benchmarks/mnist_table.py --dataset fashion-mnist --max-minutes 8 --publish
    python benchmarks/mnist_table.py --dataset mnist-5k --max-minutes 8 --publish

A machine without a package registry has no /usr/share/datasets/fashion-mnist: copy the four files
into the (git-ignored) ``data/fashion-mnist/`` first, where ``--data-dir data`` finds them
(``mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/``),
and take that folder along.

Each run is a fresh ``train_mnist.py`` process on CPU (peak RSS is per process) and in-process on
CUDA (peak ``max_memory_allocated`` is reset per run); ``--isolate`` overrides.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # This checkout's efficient_kan: its import stops, saying so, unless it is installed (-e).
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from efficient_kan.bench import markdown_table, plot  # noqa: E402
from efficient_kan.bench.models import matched_mlp_widths, mlp_params  # noqa: E402, F401
from efficient_kan.training import build_model, count_parameters, device_description  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for _output
import _output  # noqa: E402
from _tables import gap_verdict, run_train_mnist_process, seed_stats  # noqa: E402

DEFAULT_ROWS = ("784,10", "784,48,10", "784,64,10", "784,500,10", "784,100,100,100,10")
# Run settings that must agree for a stored run to be reused.
_KEY_FIELDS = (
    "model",
    "widths",
    "dataset",
    "epochs",
    "batch_size",
    "lr",
    "seed",
    "amp",
    "compile",
    "grid_size",
    "spline_order",
    "train_limit",
    "test_limit",
    "threads",
)


def plan(rows: Sequence[Sequence[int]], grid_size: int, spline_order: int) -> list[dict[str, Any]]:
    """The configurations: per row a KAN, a same-width MLP and a same-parameter MLP."""
    configs = []
    for widths in rows:
        kan_params = count_parameters(
            build_model("kan", widths, grid_size=grid_size, spline_order=spline_order)
        )
        matched = matched_mlp_widths(widths, kan_params)
        name = "-".join(map(str, widths))
        configs += [
            {"label": f"KAN {name}", "kind": "KAN", "row": name, "model": "kan", "widths": list(widths)},
            {
                "label": f"MLP {name}",
                "kind": "MLP, same widths",
                "row": name,
                "model": "mlp",
                "widths": list(widths),
            },
            {
                "label": f"MLP {'-'.join(map(str, matched))}",
                "kind": "MLP, ~KAN params",
                "row": name,
                "model": "mlp",
                "widths": matched,
            },
        ]
    return configs


def _key(record: dict[str, Any]) -> tuple:
    return tuple(json.dumps(record.get(f)) for f in _KEY_FIELDS)


def _train_argv(cfg: dict[str, Any], seed: int, args: argparse.Namespace) -> list[str]:
    argv = ["--model", cfg["model"], "--widths", ",".join(map(str, cfg["widths"]))]
    if cfg["model"] == "kan":
        argv += ["--grid-size", str(args.grid_size), "--spline-order", str(args.spline_order)]
    argv += ["--dataset", args.dataset, "--data-dir", args.data_dir, "--epochs", str(args.epochs)]
    argv += ["--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(seed)]
    argv += ["--device", args.device, "--amp", args.amp, "--quiet"]
    if args.compile:
        argv.append("--compile")
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.train_limit:
        argv += ["--train-limit", str(args.train_limit)]
    if args.test_limit:
        argv += ["--test-limit", str(args.test_limit)]
    return argv


def _run_one(argv: list[str], isolate: bool, data) -> dict[str, Any]:
    if isolate:
        return run_train_mnist_process(argv)
    import train_mnist
    from efficient_kan.training import run

    parsed = train_mnist.build_parser().parse_args(argv)
    cfg = train_mnist.config_from_args(parsed, argv)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return run(cfg, data=data, log=lambda _line: None).results


def summarise(configs: list[dict[str, Any]], runs: list[dict[str, Any]], seeds: Sequence[int]) -> list[dict]:
    """One table row per configuration: means and spreads over the finished seeds."""
    rows = []
    for cfg in configs:
        mine = [
            r
            for r in runs
            if r["model"] == cfg["model"] and r["widths"] == cfg["widths"] and r["seed"] in seeds
        ]
        acc_mean, acc_std = seed_stats([100 * r["test_accuracy"] for r in mine])
        steps_mean, steps_std = seed_stats([r["steady_train_steps_per_s"] for r in mine])
        samples_mean, _ = seed_stats([r["steady_train_samples_per_s"] for r in mine])
        epoch_mean, _ = seed_stats([r["steady_s_per_epoch"] for r in mine])
        mem_mean, _ = seed_stats([r["peak_memory_mib"] for r in mine])
        delta_mean, _ = seed_stats(
            [
                r["peak_memory_mib"] - r["memory_before_training_mib"]
                for r in mine
                if "memory_before_training_mib" in r
            ]
        )
        rows.append(
            cfg
            | {
                "params": mine[0]["params"] if mine else None,
                "n_seeds": len(mine),
                "acc_mean": acc_mean,
                "acc_std": acc_std,
                "steps_per_s": steps_mean,
                "steps_per_s_std": steps_std,
                "samples_per_s": samples_mean,
                "s_per_epoch": epoch_mean,
                "peak_memory_mib": mem_mean,
                "training_memory_mib": delta_mean,
                "memory_kind": mine[0]["memory_kind"] if mine else None,
            }
        )
    return rows


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """Plain statements read off the table (per width list: KAN against both MLPs)."""
    lines = []
    by_row: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_row.setdefault(r["row"], {})[r["kind"]] = r
    for name, group in by_row.items():
        kan, same, matched = (group.get(k) for k in ("KAN", "MLP, same widths", "MLP, ~KAN params"))
        if not kan or not kan["n_seeds"]:
            continue
        parts = [f"{name}: KAN {kan['acc_mean']:.2f}% with {kan['params']:,} params"]
        for other, what in (
            (same, "same-width MLP"),
            (matched, f"~same-params MLP ({other_label(matched)})"),
        ):
            if not other or not other["n_seeds"]:
                continue
            diff, verdict = gap_verdict(kan, other)
            speed = other["steps_per_s"] / kan["steps_per_s"] if kan["steps_per_s"] else math.nan
            parts.append(
                f"{what} {other['acc_mean']:.2f}% with {other['params']:,} params "
                f"({diff:+.2f} points for KAN: {verdict}; the MLP trains {speed:.1f}x as many steps/s)"
            )
        lines.append("; ".join(parts) + ".")
    return lines


def other_label(row: dict | None) -> str:
    return row["label"].removeprefix("MLP ") if row else ""


def write_markdown(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]], note: str | None) -> None:
    mem_what = (
        "the training process's peak RSS from the first step on (Linux VmHWM, reset after data loading; "
        "it includes the ~0.6 GiB of resident Python/torch libraries and the data)"
        if meta["device"] == "cpu"
        else "CUDA max_memory_allocated from the first step on (includes the data held on the GPU)"
    )
    lines = [
        f"# KAN vs MLP on {meta['dataset_description']} ({meta['device_name']})",
        "",
        f"- Command: `{meta['command']}`",
        f"- Device: {meta['device_name']}; torch {meta['torch_version']}, Python {meta['python_version']}; "
        f"{meta['date']}",
        f"- Training (every run): {meta['settings']}",
        f"- Seeds: {', '.join(map(str, meta['seeds']))}. Accuracy: mean +- sample std over seeds, on "
        f"{meta['n_test']:,} test samples. Steps/s and s/epoch: mean over seeds of the epochs after the first "
        f"(the first includes warm-up). Memory: {mem_what}, mean over seeds; '+train' is that peak minus the "
        f"same measure just before the first step (data and model already loaded).",
    ]
    if meta.get("loadavg"):
        lines.append(
            f"- Machine load (1-min load average at the end of each run): {meta['loadavg']}; "
            "other jobs shared this machine, so CPU timings are indicative only."
        )
    if meta.get("incomplete"):
        lines.append(f"- INCOMPLETE: {meta['incomplete']}")
    table = []
    for r in rows:
        widths = "-".join(map(str, r["widths"]))
        if not r["n_seeds"]:
            table.append([r["kind"], widths, "", "not run", "", "", "", "", 0, ""])
            continue
        flags = f"--model {r['model']} --widths {','.join(map(str, r['widths']))}"
        table.append([
            r["kind"], widths, f"{r['params']:,}", f"{r['acc_mean']:.2f} +- {r['acc_std']:.2f}",
            f"{r['steps_per_s']:,.1f}", f"{r['s_per_epoch']:.2f}", f"{r['peak_memory_mib']:,.0f}",
            f"{r['training_memory_mib']:,.0f}", r["n_seeds"], f"`{flags}`",
        ])  # fmt: skip
    header = ["model", "widths", "params", "test acc %", "train steps/s", "s/epoch", "peak MiB", "+train MiB",
              "seeds", "flags"]  # fmt: skip
    lines += ["", markdown_table(header, table, align="llrrrrrrrl")]
    lines += ["", "## What it shows", ""]
    lines += [f"- {line}" for line in findings(rows)] or ["- (no finished runs)"]
    if note:
        lines += ["", note.strip()]
    lines += [
        "",
        f"Plot: `{meta['plot']}`. Raw runs (per-epoch history, exact train_mnist.py command, versions): "
        f"`{meta['json']}`.",
        "",
    ]
    path.write_text("\n".join(lines))


def write_plot(path: Path, rows: list[dict[str, Any]], title: str) -> bool:
    """Accuracy vs parameters and throughput vs parameters, per kind of model (one PNG)."""
    acc, speed = {}, {}
    for kind in ("KAN", "MLP, same widths", "MLP, ~KAN params"):
        mine = sorted((r for r in rows if r["kind"] == kind and r["n_seeds"]), key=lambda r: r["params"])
        if not mine:
            continue
        params = [r["params"] for r in mine]
        acc[kind] = {
            "x": params,
            "y": [r["acc_mean"] for r in mine],
            "yerr": [r["acc_std"] for r in mine],
            "labels": ["-".join(map(str, r["widths"])) for r in mine],
        }
        speed[kind] = {"x": params, "y": [r["samples_per_s"] for r in mine]}
    panels = [
        {"series": acc, "xlabel": "parameters", "ylabel": "test accuracy (%)", "title": "accuracy vs parameters",
         "logx": True},
        {"series": speed, "xlabel": "parameters", "ylabel": "train samples/s", "title": "throughput vs parameters",
         "logx": True, "logy": True},
    ]  # fmt: skip
    return plot(path, panels, title=title, figsize=(11, 4.6))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _rows(values: Sequence[str]) -> list[list[int]]:
    rows = []
    for text in values:
        try:
            widths = [int(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad row {text!r}: expected widths like 784,64,10") from None
        if len(widths) < 2 or widths[0] != 784 or widths[-1] != 10:
            raise argparse.ArgumentTypeError(f"bad row {text!r}: widths go from 784 to 10")
        rows.append(widths)
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option's help shows its default)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_output.HelpFormatter)
    p.add_argument(
        "--dataset",
        choices=("mnist", "fashion-mnist", "mnist-5k"),
        default="mnist-5k",
        help="data set (mnist-5k: the 5,000-digit subset bundled with the package)",
    )
    p.add_argument("--data-dir", default="data", help="folder where MNIST / Fashion-MNIST are looked for")
    p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), help="width lists, e.g. 784,10 784,64,10")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--epochs", type=int, default=10, help="epochs per run")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--grid-size", type=int, default=5, help="KAN grid intervals per feature")
    p.add_argument("--spline-order", type=int, default=3, help="KAN B-spline order")
    p.add_argument(
        "--train-limit", type=int, default=None, help="use only this many training samples (None: all)"
    )
    p.add_argument("--test-limit", type=int, default=None, help="use only this many test samples (None: all)")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when available"
    )
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast dtype")
    p.add_argument("--compile", action="store_true", help="torch.compile the models")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per run (None: torch's default)")
    p.add_argument(
        "--isolate",
        choices=("auto", "process", "none"),
        default="auto",
        help="a process per run (auto: on CPU, where peak RSS is per process)",
    )
    p.add_argument(
        "--max-minutes", type=float, default=None, help="start no new run after this long (None: no limit)"
    )
    _output.add_out_arguments(
        p, "mnist_table", publish=True, existing="finished runs in its JSON there are reused"
    )
    p.add_argument("--tag", default=None, help="file-name tag for the device (None: cpu or the GPU name)")
    p.add_argument("--note", default=None, help="hand-written text appended under the findings")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    args = p.parse_args(argv)
    try:
        rows = _rows(args.rows)
        seeds = [int(s) for s in args.seeds.split(",")]
    except (argparse.ArgumentTypeError, ValueError) as err:
        p.error(str(err))

    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available")
    isolate = {"auto": device.type == "cpu", "process": True, "none": False}[args.isolate]
    tag = args.tag or ("cpu" if device.type == "cpu" else _slug(torch.cuda.get_device_name(0)))
    out_dir, fresh = _output.resolve_out(args, "mnist_table")
    stem = out_dir / f"mnist_{args.dataset}_{tag}"
    json_path, md_path, png_path = (
        stem.with_suffix(".json"),
        stem.with_suffix(".md"),
        stem.with_suffix(".png"),
    )
    # The command that reproduces the numbers (a --note changes only the text, so it is left out).
    shown = [a for i, a in enumerate(argv) if a != "--note" and (i == 0 or argv[i - 1] != "--note")]
    command = shlex.join(
        ["python", "benchmarks/mnist_table.py", *(a for a in shown if not a.startswith("--note="))]
    )

    configs = plan(rows, args.grid_size, args.spline_order)
    runs: list[dict[str, Any]] = []
    if json_path.exists():
        runs = json.loads(json_path.read_text()).get("runs", [])
    done = {_key(r) for r in runs}

    data = None
    if not isolate:
        from efficient_kan.data import load_dataset

        data = load_dataset(args.dataset, args.data_dir, download=True)
    start = time.perf_counter()
    todo = [(cfg, seed) for seed in seeds for cfg in configs]
    for i, (cfg, seed) in enumerate(todo):
        argv_run = _train_argv(cfg, seed, args)
        probe = _probe(cfg, seed, args)
        if _key(probe) in done:
            continue
        if args.max_minutes is not None and time.perf_counter() - start > 60 * args.max_minutes:
            break
        t0 = time.perf_counter()
        result = _run_one(argv_run, isolate, data)
        result |= {k: probe[k] for k in ("train_limit", "test_limit", "threads")}
        runs = [r for r in runs if _key(r) != _key(probe)] + [result]
        done.add(_key(probe))
        print(
            f"[{i + 1}/{len(todo)}] {cfg['label']} seed {seed}: {100 * result['test_accuracy']:.2f}% "
            f"{result['steady_train_steps_per_s']:.1f} steps/s ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
        _write_all(args, configs, runs, seeds, device, command, json_path, md_path, png_path, skipped=None)
    missing = sum(1 for cfg in configs for s in seeds if _key_for(cfg, s, args) not in done)
    _write_all(
        args, configs, runs, seeds, device, command, json_path, md_path, png_path, skipped=missing or None
    )
    if not missing:
        print(f"complete: {md_path} (all files in {out_dir})")
    else:
        # A new default folder holds no runs; only the folder just written lets a rerun continue.
        again = ["python", "benchmarks/mnist_table.py", *argv] + (["--out", str(out_dir)] if fresh else [])
        print(f"{missing} runs still to do; continue with: {shlex.join(again)}\nso far: {md_path}")


def _probe(cfg: dict[str, Any], seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The run settings of ``cfg`` at ``seed``, in the fields a stored run is matched on."""
    kan = cfg["model"] == "kan"
    return {
        "model": cfg["model"], "widths": cfg["widths"], "dataset": args.dataset, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "seed": seed, "amp": args.amp, "compile": args.compile,
        "grid_size": args.grid_size if kan else None, "spline_order": args.spline_order if kan else None,
        "train_limit": args.train_limit, "test_limit": args.test_limit, "threads": args.threads,
    }  # fmt: skip


def _key_for(cfg: dict[str, Any], seed: int, args: argparse.Namespace) -> tuple:
    return _key(_probe(cfg, seed, args))


def _write_all(args, configs, runs, seeds, device, command, json_path, md_path, png_path, skipped) -> None:
    wanted = {_key_for(cfg, s, args) for cfg in configs for s in seeds}
    current = [r for r in runs if _key(r) in wanted]
    table = summarise(configs, current, seeds)
    first = current[0] if current else {}
    settings = (
        f"{args.epochs} epochs, batch {args.batch_size}, AdamW lr {args.lr} weight decay 1e-4, ExponentialLR "
        f"gamma 0.8, KAN grid_size {args.grid_size} spline_order {args.spline_order}, amp {args.amp}, "
        f"compile {args.compile}, CPU threads {args.threads or 'default'}"
    )
    if first:
        settings += f"; {first['n_train']:,} train / {first['n_test']:,} test samples ({first['dataset']})"
    meta = {
        "command": command,
        "dataset": args.dataset,
        "dataset_description": {
            "mnist-5k": "the bundled 5,000-digit MNIST subset",
            "mnist": "MNIST",
            "fashion-mnist": "Fashion-MNIST",
        }[args.dataset],
        "device": device.type,
        "device_name": first.get("device_name") or device_description(device),
        "torch_version": torch.__version__,
        "python_version": sys.version.split()[0],
        "date": (
            f"runs between {min(r['date'] for r in current)} and {max(r['date'] for r in current)}"
            if current
            else time.strftime("%Y-%m-%dT%H:%M:%S%z")
        ),
        "settings": settings,
        "seeds": list(seeds),
        "n_test": first.get("n_test", 0),
        "loadavg": ", ".join(sorted({f"{r['loadavg_1m']:.1f}" for r in current if r.get("loadavg_1m") is not None}, key=float)),
        "incomplete": f"{skipped} runs not done yet" if skipped else None,
        "plot": png_path.name,
        "json": json_path.name,
    }  # fmt: skip
    json_path.write_text(json.dumps({"meta": meta, "table": table, "runs": runs}, indent=1) + "\n")
    plotted = write_plot(
        png_path, table, f"{meta['dataset_description']} - {meta['device_name']} - {settings}"
    )
    if not plotted:
        meta["plot"] = "(not made: no matplotlib)"
    write_markdown(md_path, meta, table, args.note)


if __name__ == "__main__":
    main()
