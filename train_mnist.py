#!/usr/bin/env python
"""Train a KAN (or an MLP) on MNIST-like data and report accuracy, size, speed and memory.

    python train_mnist.py                                  # KAN([784, 64, 10]), 10 epochs, MNIST
    python train_mnist.py --model mlp --widths 784,256,10
    python train_mnist.py --dataset fashion-mnist --epochs 5 --json results.json
    torchrun --nproc_per_node 2 train_mnist.py ...         # DistributedDataParallel

MNIST is read from --data-dir (or downloaded there with torchvision). Offline, the default
dataset falls back to the 5,000-digit MNIST subset shipped in the package, with one line saying so;
a dataset named with --dataset never falls back. The logic lives in efficient_kan.training.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from efficient_kan.data import DatasetUnavailable
from efficient_kan.training import AMP_MODES, DEVICES, MODELS, ConfigError, TrainConfig, run


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 784,64,10, got {text!r}"
        ) from None
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"expected at least two positive sizes like 784,64,10, got {text!r}")
    return widths


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


class _OneLineParser(argparse.ArgumentParser):
    """Bad flags: one line (``train_mnist.py: error: ...``) and exit status 2, no usage dump."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the uninformative ``None`` / ``False`` ones."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (also used by the tests and the benchmark)."""
    p = _OneLineParser(
        prog="train_mnist.py",
        description="Train a KAN or an MLP on MNIST / Fashion-MNIST and report test accuracy, "
        "parameter count, throughput and peak memory. Multi-process: torchrun --nproc_per_node N "
        "train_mnist.py ... (DDP; NCCL on CUDA, gloo on CPU).",
        formatter_class=_Formatter,
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=MODELS, default="kan", help="KAN (B-spline layers) or ReLU MLP")
    m.add_argument("--widths", type=_widths, default="784,64,10", help="layer widths, 784,...,10")
    m.add_argument("--grid-size", type=_int_at_least(1), default=5, help="KAN grid intervals G")
    m.add_argument("--spline-order", type=_int_at_least(0), default=3, help="KAN B-spline order K")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=_int_at_least(1), default=10, help="training epochs")
    t.add_argument(
        "--batch-size", type=_int_at_least(1), default=64, help="samples per step (per rank under DDP)"
    )
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="AdamW learning rate")
    t.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    t.add_argument("--gamma", type=_positive_float, default=0.8, help="ExponentialLR decay per epoch")
    t.add_argument("--seed", type=int, default=0, help="model initialisation and shuffling")
    t.add_argument(
        "--update-grid-every",
        type=_int_at_least(0),
        default=0,
        metavar="N",
        help="KAN: update_grid on the current batch every N steps (all ranks' batches under DDP); 0 = never",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        choices=("mnist", "fashion-mnist", "mnist-5k"),
        default=None,
        help="default: MNIST, or offline the bundled 5,000-digit MNIST subset (mnist-5k); "
        "a dataset named here never falls back",
    )
    d.add_argument(
        "--data-dir",
        default="data",
        help="IDX files here (or DIR/MNIST/raw, DIR/FashionMNIST/raw; Fashion-MNIST also in "
        "/usr/share/datasets/fashion-mnist); downloads go here",
    )
    d.add_argument("--offline", action="store_true", help="never try to download")
    d.add_argument(
        "--train-limit", type=_int_at_least(1), default=None, metavar="N", help="use N train samples"
    )
    d.add_argument(
        "--test-limit", type=_int_at_least(1), default=None, metavar="N", help="use N test samples"
    )
    r = p.add_argument_group("runtime")
    r.add_argument("--device", choices=DEVICES, default="auto", help="auto = CUDA if available")
    r.add_argument("--amp", choices=AMP_MODES, default="none", help="autocast dtype (fp16 needs CUDA)")
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    r.add_argument(
        "--threads", type=_int_at_least(1), default=None, help="CPU threads (torch.set_num_threads)"
    )
    o = p.add_argument_group("output")
    o.add_argument("--save", metavar="PATH", default=None, help="write a checkpoint here after every epoch")
    o.add_argument("--resume", action="store_true", help="continue from the --save checkpoint if it exists")
    o.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON")
    o.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return p


def config_from_args(args: argparse.Namespace, argv: Sequence[str]) -> TrainConfig:
    """The :class:`TrainConfig` for parsed ``args`` (``argv`` is recorded as the command)."""
    return TrainConfig(
        model=args.model,
        widths=tuple(args.widths),
        grid_size=args.grid_size,
        spline_order=args.spline_order,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        gamma=args.gamma,
        seed=args.seed,
        dataset=args.dataset or "auto",
        data_dir=args.data_dir,
        download=not args.offline,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        update_grid_every=args.update_grid_every,
        save=args.save,
        resume=args.resume,
        json=args.json,
        quiet=args.quiet,
        threads=args.threads,
        command=shlex.join(["python", "train_mnist.py", *argv]),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, print, and return the results dict."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(config_from_args(args, argv)).results
    except (ConfigError, DatasetUnavailable) as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None


if __name__ == "__main__":
    main()
