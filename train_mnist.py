#!/usr/bin/env python
"""Train a KAN, an MLP, or a small CNN / ViT with KAN layers on MNIST-like data; report accuracy,
size, speed and memory.

    python train_mnist.py                                  # KAN([784, 64, 10]), 10 epochs, MNIST
    python train_mnist.py --model mlp --widths 784,256,10
    python train_mnist.py --arch vit --kan mlp-blocks --dataset fashion-mnist --epochs 5
    torchrun --nproc_per_node 2 train_mnist.py ...         # DistributedDataParallel

The flags are the fields of efficient_kan.training.TrainConfig; the logic lives in that package.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from efficient_kan.data import DatasetUnavailable
from efficient_kan.training import ConfigError, TrainConfig, run
from efficient_kan.training import build_parser as _build_parser
from efficient_kan.training import config_from_args as _config_from_args

DESCRIPTION = (
    "Train a KAN or an MLP (--arch mlp), or a small CNN / ViT whose --kan linears are KAN layers, on "
    "MNIST / Fashion-MNIST / CIFAR-10 and report test accuracy, parameter count, throughput and peak "
    "memory. Multi-process: torchrun --nproc_per_node N train_mnist.py ... (DDP; NCCL on CUDA, gloo on CPU)."
)


def build_parser():
    """The command-line interface (also used by the tests and the benchmarks)."""
    return _build_parser("train_mnist.py", DESCRIPTION)


def config_from_args(args, argv: Sequence[str]) -> TrainConfig:
    """The :class:`TrainConfig` for parsed ``args`` (``argv`` is recorded as the command)."""
    return _config_from_args(args, argv, "train_mnist.py")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, print, and return the results dict."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return run(config_from_args(args, argv)).results
    except (ConfigError, DatasetUnavailable) as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None


if __name__ == "__main__":
    main()
