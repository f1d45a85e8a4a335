#!/usr/bin/env python
"""KAN layers in small vision models: a CNN and a ViT, MLP vs KAN in the head and in the MLP blocks.

Per architecture (``--arch``, default both) five rows, all trained by train_mnist.py's engine:

- ``MLP``: the plain model (``--kan none``),
- ``KAN head`` and a parameter-matched ``MLP, ~KAN head params`` (``--hidden`` widened),
- ``KAN mlp-blocks`` and a parameter-matched ``MLP, ~KAN mlp-blocks params``,

over several seeds; writes ``vision_<dataset>_<device>.md`` / ``.json`` / ``.png`` into a new folder
``bench-out/vision_table-<UTC time>/`` (``--out DIR`` names another, ``--publish`` the committed
``benchmarks/results/``). Accuracy is mean +- sample std over seeds; samples/s over the epochs after
the first; memory is peak RSS of a process per run on CPU, ``max_memory_allocated`` on CUDA.

Epochs (``EPOCHS``) are the same for every row of an architecture, so its rows compare at equal
training. The committed CPU table (``benchmarks/results/vision_fashion-mnist_cpu.md``) states how
long its runs took. Full CPU table::

    python benchmarks/vision_table.py --dataset fashion-mnist --threads 1 --publish

GPU table (same rows, same epochs, one command)::

    python benchmarks/vision_table.py --dataset fashion-mnist --device cuda --publish
"""

from __future__ import annotations

import argparse
import json
import math
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

from efficient_kan.training import build_vision_model, count_parameters  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for _output
import _output  # noqa: E402
from _tables import gap_verdict, run_train_mnist_process, seed_stats  # noqa: E402

#: Epochs per architecture for the full table: the same for every row of an architecture, so its
#: rows compare at equal training.
EPOCHS = {"cnn": 3, "vit": 1}
KINDS = ("MLP", "KAN head", "MLP, ~KAN head params", "KAN mlp-blocks", "MLP, ~KAN mlp-blocks params")
IMAGE = (1, 28, 28)


def matched_hidden(arch: str, target: int) -> int:
    """The ``--hidden`` width whose plain (MLP) ``arch`` model has about ``target`` parameters.

    Both models' parameter counts are affine in ``hidden`` (one hidden MLP width), so two counts
    give the line.
    """
    p1, p2 = (count_parameters(build_vision_model(arch, IMAGE, hidden=h)) for h in (1, 2))
    return max(1, round(1 + (target - p1) / (p2 - p1)))


def plan(archs: Sequence[str], grid_size: int, spline_order: int) -> list[dict[str, Any]]:
    """The rows: per architecture the five of the module docstring, with their flags."""
    rows = []
    for arch in archs:
        for place in ("none", "head", "mlp-blocks"):
            if place == "none":
                rows.append({"arch": arch, "kind": "MLP", "kan": "none", "hidden": None})
                continue
            kan = build_vision_model(arch, IMAGE, kan=place, grid_size=grid_size, spline_order=spline_order)
            rows.append({"arch": arch, "kind": f"KAN {place}", "kan": place, "hidden": None})
            hidden = matched_hidden(arch, count_parameters(kan))
            rows.append({"arch": arch, "kind": f"MLP, ~KAN {place} params", "kan": "none", "hidden": hidden})
    return rows


def _argv(row: dict[str, Any], seed: int, epochs: int, args: argparse.Namespace) -> list[str]:
    argv = [
        "--arch",
        row["arch"],
        "--kan",
        row["kan"],
        "--dataset",
        args.dataset,
        "--data-dir",
        args.data_dir,
    ]
    argv += ["--epochs", str(epochs), "--batch-size", str(args.batch_size), "--seed", str(seed)]
    argv += ["--grid-size", str(args.grid_size), "--spline-order", str(args.spline_order)]
    argv += ["--device", args.device, "--quiet", "--offline"]
    for flag, value in (("--hidden", row["hidden"]), ("--threads", args.threads)):
        if value is not None:
            argv += [flag, str(value)]
    for flag, value in (("--train-limit", args.train_limit), ("--test-limit", args.test_limit)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def _run(argv: list[str], isolate: bool) -> dict[str, Any]:
    """One train_mnist.py run: a fresh process (peak RSS per run) or in this process."""
    if not isolate:
        import train_mnist

        return train_mnist.main(argv)
    return run_train_mnist_process(argv)


def summarise(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row: params, accuracy mean/std, samples/s, s/epoch and peak memory over its seeds."""
    table = []
    for row in rows:
        mine = [
            r for r in runs if (r["arch"], r["kan"], r["hidden"]) == (row["arch"], row["kan"], row["hidden"])
        ]
        acc, acc_std = seed_stats([100 * r["test_accuracy"] for r in mine])
        table.append(
            row
            | {
                "params": mine[0]["params"] if mine else None,
                "n_seeds": len(mine),
                "acc_mean": acc,
                "acc_std": acc_std,
                "samples_per_s": seed_stats([r["steady_train_samples_per_s"] for r in mine])[0],
                "s_per_epoch": seed_stats([r["steady_s_per_epoch"] for r in mine])[0],
                "peak_memory_mib": seed_stats([r["peak_memory_mib"] for r in mine])[0],
            }
        )
    return table


def findings(table: list[dict[str, Any]]) -> list[str]:
    """Each KAN row against the plain model and its parameter-matched MLP."""
    lines = []
    by = {(r["arch"], r["kind"]): r for r in table if r["n_seeds"]}
    for (arch, kind), kan in by.items():
        if not kind.startswith("KAN"):
            continue
        place = kind.removeprefix("KAN ")
        parts = [f"{arch.upper()}, KAN {place}: {kan['acc_mean']:.2f}% with {kan['params']:,} params"]
        for other_kind in ("MLP", f"MLP, ~KAN {place} params"):
            other = by.get((arch, other_kind))
            if other is None:
                continue
            diff, verdict = gap_verdict(kan, other)
            speed = other["samples_per_s"] / kan["samples_per_s"] if kan["samples_per_s"] else math.nan
            parts.append(
                f"vs {other_kind} ({other['params']:,} params) {other['acc_mean']:.2f}%: {diff:+.2f} points, "
                f"{verdict}; the MLP trains {speed:.2f}x as many samples/s"
            )
        lines.append("; ".join(parts) + ".")
    return lines


def write_markdown(path: Path, meta: dict[str, Any], table: list[dict[str, Any]]) -> None:
    lines = [
        f"# KAN layers in a small CNN and ViT on {meta['dataset']} ({meta['device_name']})",
        "",
        f"- Command: `{meta['command']}`",
        f"- Training: {meta['settings']}; torch {torch.__version__}; {meta['date']}",
        f"- Seeds: {meta['seeds']}. Accuracy: mean +- sample std over seeds. Samples/s and s/epoch: epochs "
        f"after the first. Memory: {meta['memory']}. Load average at the end of runs: {meta['loadavg']}.",
        "",
        "| arch | model | params | test acc % | train samples/s | s/epoch | peak MiB | seeds | flags |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in table:
        flags = f"--arch {r['arch']} --kan {r['kan']}" + (f" --hidden {r['hidden']}" if r["hidden"] else "")
        if not r["n_seeds"]:
            lines.append(f"| {r['arch'].upper()} | {r['kind']} | | not run | | | | 0 | `{flags}` |")
            continue
        lines.append(
            f"| {r['arch'].upper()} | {r['kind']} | {r['params']:,} | {r['acc_mean']:.2f} +- {r['acc_std']:.2f} | "
            f"{r['samples_per_s']:,.0f} | {r['s_per_epoch']:.1f} | {r['peak_memory_mib']:,.0f} | {r['n_seeds']} | "
            f"`{flags}` |"
        )
    lines += ["", "## What it shows", ""] + ([f"- {x}" for x in findings(table)] or ["- (no finished runs)"])
    lines += ["", f"Plot: `{meta['plot']}`. Raw runs: `{meta['json']}`.", ""]
    path.write_text("\n".join(lines))


def write_plot(path: Path, table: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, key, label in (
        (axes[0], "acc_mean", "test accuracy (%)"),
        (axes[1], "samples_per_s", "samples/s"),
    ):
        done = [r for r in table if r["n_seeds"]]
        names = [f"{r['arch'].upper()}\n{r['kind']}" for r in done]
        err = [r["acc_std"] for r in done] if key == "acc_mean" else None
        colors = ["tab:red" if r["kind"].startswith("KAN") else "tab:blue" for r in done]
        ax.bar(range(len(done)), [r[key] for r in done], yerr=err, color=colors, capsize=3)
        ax.set_xticks(range(len(done)), names, fontsize=6, rotation=60, ha="right")
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


class _Help(_output.HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the plan in the epilog kept as written."""


def build_parser() -> argparse.ArgumentParser:
    """The command line; ``--help`` ends with the epochs and the commands of the full tables."""
    plan_text = __doc__[__doc__.index("Epochs (``EPOCHS``)") :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=plan_text, formatter_class=_Help)
    p.add_argument(
        "--dataset", choices=("fashion-mnist", "mnist", "mnist-5k"), default="fashion-mnist", help="data set"
    )
    p.add_argument("--data-dir", default="data", help="where train_mnist.py looks for the files")
    p.add_argument("--arch", nargs="+", choices=("cnn", "vit"), default=["cnn", "vit"], help="architectures")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every run (None: EPOCHS per arch)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--grid-size", type=int, default=5, help="KAN grid intervals")
    p.add_argument("--spline-order", type=int, default=3, help="KAN B-spline order")
    p.add_argument("--train-limit", type=int, default=None, help="train samples (None: all)")
    p.add_argument("--test-limit", type=int, default=None, help="test samples (None: all)")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when available"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads per run (None: torch's default)")
    p.add_argument(
        "--isolate",
        choices=("auto", "process", "none"),
        default="auto",
        help="auto: a process per run on CPU",
    )
    _output.add_out_arguments(p, "vision_table", publish=True, existing="its files there are overwritten")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    tag = "cpu" if not cuda else torch.cuda.get_device_name(0).lower().replace(" ", "-")
    isolate = {"auto": not cuda, "process": True, "none": False}[args.isolate]
    out_dir, _fresh = _output.resolve_out(args, "vision_table")
    stem = out_dir / f"vision_{args.dataset}_{tag}"
    rows = plan(args.arch, args.grid_size, args.spline_order)
    runs: list[dict[str, Any]] = []
    for i, (row, seed) in enumerate((r, s) for s in seeds for r in rows):
        t0 = time.perf_counter()
        epochs = args.epochs or EPOCHS[row["arch"]]
        runs.append(_run(_argv(row, seed, epochs, args), isolate))
        print(f"[{i + 1}/{len(rows) * len(seeds)}] {row['arch']} {row['kind']} seed {seed}: "
              f"{100 * runs[-1]['test_accuracy']:.2f}% ({time.perf_counter() - t0:.0f}s)", flush=True)  # fmt: skip
    table = summarise(rows, runs)
    first = runs[0]
    meta = {
        "command": shlex.join(["python", "benchmarks/vision_table.py", *argv]),
        "dataset": first["dataset"],
        "device_name": first["device_name"],
        "settings": f"epochs {args.epochs or EPOCHS}, batch {args.batch_size}, AdamW lr 1e-3 wd 1e-4, "
        f"ExponentialLR 0.8, KAN G={args.grid_size} K={args.spline_order}, threads {args.threads or 'default'}, "
        f"{first['n_train']:,} train / {first['n_test']:,} test",
        "date": f"runs between {min(r['date'] for r in runs)} and {max(r['date'] for r in runs)}",
        "seeds": ", ".join(map(str, seeds)),
        "memory": "peak RSS of each run's process (includes Python, torch and the data)"
        if isolate and not cuda
        else ("CUDA max_memory_allocated" if cuda else "peak RSS of this one process (runs share it)"),
        "loadavg": ", ".join(f"{r['loadavg_1m']:.1f}" for r in runs if r.get("loadavg_1m") is not None),
        "plot": stem.with_suffix(".png").name,
        "json": stem.with_suffix(".json").name,
    }
    stem.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "table": table, "runs": runs}, indent=1) + "\n"
    )
    write_plot(
        stem.with_suffix(".png"), table, f"{meta['dataset']} - {meta['device_name']} - {meta['settings']}"
    )
    write_markdown(stem.with_suffix(".md"), meta, table)
    print(f"complete: {stem.with_suffix('.md')} (all files in {out_dir})")


if __name__ == "__main__":
    main()
