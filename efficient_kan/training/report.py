"""The end of a run: the JSON-ready results, the summary line, the ``--json`` file."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..data import ImageData
from .config import TrainConfig
from .distributed import DistContext, all_reduce, ranks_identical
from .measure import device_description, peak_memory_mib

__all__ = ["RunOutcome", "finish", "summarise"]


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run reports: its configuration and data, its model's parameter count, the
    per-epoch records, the final test ``(loss, accuracy)``, and where it ran."""

    cfg: TrainConfig
    data: ImageData
    params: int
    history: list[dict[str, Any]]
    test: tuple[float, float]
    device: torch.device
    ctx: DistContext


def finish(
    outcome: RunOutcome,
    raw: nn.Module,
    mem_before: float,
    say: Callable[[str], None],
    *,
    epochs_trained: int,
) -> dict[str, Any]:
    """Gather the results on every rank; rank 0 prints the summary and writes ``--json``.

    With no epoch trained in this run (a resumed, finished checkpoint) the throughput fields are
    None: the history's timings are those of the run that wrote the checkpoint."""
    cfg, history, test, device, ctx = outcome.cfg, outcome.history, outcome.test, outcome.device, outcome.ctx
    params = outcome.params
    identical = ranks_identical(raw, ctx)
    mem, mem_kind = peak_memory_mib(device)
    (mem,) = all_reduce([mem], device, ctx, op=dist.ReduceOp.MAX)
    results = summarise(outcome, mem, mem_kind)
    results["epochs_trained"] = epochs_trained
    if not epochs_trained:
        for key in _THROUGHPUT_KEYS:
            results[key] = None
    results["memory_before_training_mib"] = mem_before
    results["ranks_identical"] = identical
    if not ctx.is_main:
        return results
    if epochs_trained:
        done = (
            f"{_fmt(results['train_samples_per_s'], ',.0f')} train samples/s | "
            f"peak memory {mem:,.1f} MiB ({'CUDA max allocated' if device.type == 'cuda' else 'peak RSS'})"
        )
    else:
        done = f"nothing trained in this run (the checkpoint holds epoch {len(history)}/{cfg.epochs})"
    say(f"test accuracy {test[1]:.2%} (loss {test[0]:.4f}) | {params:,} parameters | {done}")
    if identical is False:
        say("warning: the ranks' models differ at the end of training")
    if cfg.json:
        path = Path(cfg.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
    return results


# What summarise derives from the epochs' timings.
_THROUGHPUT_KEYS = (
    "train_samples_per_s",
    "train_steps_per_s",
    "s_per_epoch",
    "steady_train_samples_per_s",
    "steady_train_steps_per_s",
    "steady_s_per_epoch",
)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _rates(records: list[dict[str, Any]]) -> tuple[float | None, float | None, float | None]:
    """Samples/s, steps/s and seconds per epoch over ``records`` (``None`` without timing)."""
    t = sum(r["train_time_s"] for r in records)
    if not records or t <= 0:
        return None, None, None
    return (
        sum(r["train_samples"] for r in records) / t,
        sum(r["steps"] for r in records) / t,
        t / len(records),
    )


def summarise(outcome: RunOutcome, mem: float, mem_kind: str) -> dict[str, Any]:
    """The JSON-ready results; throughput over all epochs and over epochs after the first."""
    cfg, data, params, history, test = (
        outcome.cfg,
        outcome.data,
        outcome.params,
        outcome.history,
        outcome.test,
    )
    device, ctx = outcome.device, outcome.ctx
    samples_s, steps_s, s_epoch = _rates(history)
    steady_samples_s, steady_steps_s, steady_s_epoch = _rates(history[1:] if len(history) > 1 else history)
    return {
        "arch": cfg.arch,
        "kan": cfg.kan if cfg.arch != "mlp" else None,
        "hidden": cfg.hidden,
        "model": cfg.model if cfg.arch == "mlp" else None,
        "widths": list(cfg.widths) if cfg.arch == "mlp" else None,
        "grid_size": cfg.grid_size if cfg.is_kan else None,
        "spline_order": cfg.spline_order if cfg.is_kan else None,
        "params": params,
        "dataset": data.name,
        "data_source": data.source,
        "n_train": len(data.y_train),
        "n_test": len(data.y_test),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "gamma": cfg.gamma,
        "seed": cfg.seed,
        "amp": cfg.amp,
        "compile": cfg.compile,
        "update_grid_every": cfg.update_grid_every,
        "test_loss": test[0],
        "test_accuracy": test[1],
        "train_samples_per_s": samples_s,
        "train_steps_per_s": steps_s,
        "s_per_epoch": s_epoch,
        "steady_train_samples_per_s": steady_samples_s,
        "steady_train_steps_per_s": steady_steps_s,
        "steady_s_per_epoch": steady_s_epoch,
        "peak_memory_mib": mem,
        "memory_kind": mem_kind,
        "device": device.type,
        "device_name": device_description(device),
        "world_size": ctx.world_size,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        # Other work on the machine skews CPU timings: the 1-minute load average at the end.
        "cpu_threads": torch.get_num_threads(),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": cfg.command,
        "history": history,
    }
