"""The training engine: data, model and optimiser state, the epoch loop, evaluation, checkpoints."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data import ImageData, load_dataset
from .config import ConfigError, TrainConfig
from .distributed import DistContext, all_reduce, no_buffer_sync, setup_distributed, update_grid_synced
from .measure import device_description, reset_peak_memory, sync
from .models import build_from_config, count_parameters
from .report import RunOutcome, finish

__all__ = ["CHECKPOINT_FORMAT", "RunResult", "evaluate", "run"]

CHECKPOINT_FORMAT = "efficient_kan.train_mnist/1"
# Config fields a checkpoint must agree on to be resumed (the model's shape).
_ARCH_FIELDS = ("arch", "kan", "hidden", "model", "widths", "grid_size", "spline_order")


@dataclass
class RunResult:
    """What :func:`run` returns: ``results`` (JSON-ready) and the trained plain model."""

    results: dict[str, Any]
    model: nn.Module = field(repr=False)


@dataclass
class _State:
    """What one run trains and carries between epochs (and through a checkpoint)."""

    raw: nn.Module  # the plain model: saved, grid-updated, returned
    model: nn.Module  # what the steps call: raw, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    params: int
    start_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _autocast(device: torch.device, amp: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


# ------------------------------------------------------------------------------------------- run
def run(
    cfg: TrainConfig,
    *,
    data: ImageData | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train and evaluate as ``cfg`` says and return the results; prints only on rank 0.

    Under ``torchrun`` (``WORLD_SIZE > 1``) it trains with ``DistributedDataParallel`` (NCCL on
    CUDA, gloo on CPU), see :mod:`.distributed`.

    Args:
        cfg: the configuration (validated here).
        data: preloaded data (any device; moved to the run's device, limits still applied).
        log: where rank 0's lines go.

    Raises:
        ConfigError: bad configuration, missing CUDA, unusable checkpoint.
        efficient_kan.data.DatasetUnavailable: a named dataset that cannot be found or downloaded.
    """
    cfg.validate()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    base_device = _resolve_device(cfg)
    if cfg.amp == "fp16" and base_device.type != "cuda":
        raise ConfigError("--amp fp16 needs CUDA (on CPU use --amp bf16)")
    owns_group = not dist.is_initialized()
    ctx = setup_distributed(base_device.type)
    try:
        return _train(cfg, data, log=log, ctx=ctx, base_device=base_device)
    finally:
        # A process group this run created is destroyed here: left to interpreter exit, gloo's
        # threads can abort the process ("terminate called without an active exception").
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    cfg: TrainConfig,
    data: ImageData | None,
    *,
    log: Callable[[str], None],
    ctx: DistContext,
    base_device: torch.device,
) -> RunResult:
    """The body of :func:`run`, inside its process-group setup and teardown."""
    device = _rank_device(base_device, ctx)
    say = log if ctx.is_main else (lambda _msg: None)
    data = _prepare_data(cfg, data, device, ctx, say)
    state = _build_state(cfg, data, device, ctx, say)
    say(f"{_model_name(cfg)} {state.params:,} parameters on {device_description(device)}"
        f"{f' x {ctx.world_size} ranks' if ctx.enabled else ''}; {data.describe()}")  # fmt: skip
    test_shard = (data.x_test[ctx.rank :: ctx.world_size], data.y_test[ctx.rank :: ctx.world_size])
    mem_before = reset_peak_memory(device)  # data, model and (CPU) the libraries already resident
    for epoch in range(state.start_epoch, cfg.epochs):
        record = _train_epoch(cfg, state, data, epoch, device, ctx)
        record["test_loss"], record["test_accuracy"] = evaluate(
            state.model, *test_shard, batch_size=cfg.eval_batch_size, amp=cfg.amp, ctx=ctx
        )
        state.history.append(record)
        if ctx.is_main and not cfg.quiet:
            say(_epoch_line(record, cfg.epochs))
        if cfg.save and ctx.is_main:
            _save_checkpoint(Path(cfg.save), _checkpoint(cfg, state, epoch + 1))
        if ctx.enabled:
            dist.barrier()
    test_loss, test_acc = evaluate(
        state.model, *test_shard, batch_size=cfg.eval_batch_size, amp=cfg.amp, ctx=ctx
    )
    trained = max(cfg.epochs - state.start_epoch, 0)
    outcome = RunOutcome(cfg, data, state.params, state.history, (test_loss, test_acc), device, ctx)
    results = finish(outcome, state.raw, mem_before, say, epochs_trained=trained)
    return RunResult(results=results, model=state.raw)


def _model_name(cfg: TrainConfig) -> str:
    if cfg.arch == "mlp":
        return f"{cfg.model.upper()}({','.join(map(str, cfg.widths))})"
    return f"{cfg.arch.upper()} (KAN: {cfg.kan})"


# ------------------------------------------------------------------------------------ device, data
def _resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was asked for but no CUDA device is available (try --device cpu)"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def _rank_device(base_device: torch.device, ctx: DistContext) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` on CUDA (made current), else the CPU."""
    if base_device.type != "cuda":
        return base_device
    device = torch.device("cuda", ctx.local_rank)
    if device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"rank {ctx.rank} wants cuda:{device.index} but only {torch.cuda.device_count()} GPUs are visible; "
            "use at most one process per GPU (torchrun --nproc_per_node)"
        )
    torch.cuda.set_device(device)
    return device


def _prepare_data(
    cfg: TrainConfig,
    data: ImageData | None,
    device: torch.device,
    ctx: DistContext,
    say: Callable[[str], None],
) -> ImageData:
    """``data`` (or the configured dataset, rank 0 downloading first), limited, on ``device``."""
    if data is None:
        if ctx.enabled and not ctx.is_main:
            dist.barrier()
        data = load_dataset(cfg.dataset, cfg.data_dir, device="cpu", download=cfg.download, log=say)
        if ctx.enabled and ctx.is_main:
            dist.barrier()
    data = data.subset(cfg.train_limit, cfg.test_limit).to(device)
    if len(data.y_train) < ctx.world_size:
        raise ConfigError(f"{len(data.y_train)} training samples cannot be split over {ctx.world_size} ranks")
    if cfg.arch == "mlp" and data.num_features != cfg.widths[0]:
        raise ConfigError(
            f"--widths starts with {cfg.widths[0]} but {data.name} has {data.num_features} features"
        )
    return data


# ----------------------------------------------------------------------- model, optimiser, checkpoint
def _build_state(
    cfg: TrainConfig, data: ImageData, device: torch.device, ctx: DistContext, say: Callable[[str], None]
) -> _State:
    """Model, AdamW, ExponentialLR and grad scaler, restored from the checkpoint on ``--resume``."""
    torch.manual_seed(cfg.seed)
    raw = build_from_config(cfg, data.image_shape).to(device)
    optimizer = torch.optim.AdamW(raw.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = _State(
        raw=raw,
        model=raw,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"),
        params=count_parameters(raw),
    )
    save_path = Path(cfg.save) if cfg.save else None
    if cfg.resume and save_path is not None and save_path.exists():
        ckpt = _load_checkpoint(save_path, cfg, device)
        for name in ("optimizer", "scheduler", "scaler"):
            getattr(state, name).load_state_dict(ckpt[name])
        raw.load_state_dict(ckpt["model"])
        state.start_epoch, state.global_step = ckpt["epoch"], ckpt["global_step"]
        state.history = list(ckpt["history"])
        if state.start_epoch >= cfg.epochs:
            say(f"{save_path} already holds {state.start_epoch} epochs (--epochs {cfg.epochs}): "
                "nothing left to train; evaluating the checkpoint")  # fmt: skip
        else:
            say(f"resumed from {save_path} after epoch {state.start_epoch}/{cfg.epochs}")
    elif cfg.resume:
        say(f"no checkpoint at {save_path} yet; starting from scratch")
    if ctx.enabled:
        # The grids (the only buffers) are kept in step by update_grid_synced, not per forward.
        state.model = nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync()
        )
    if cfg.compile:
        state.model = torch.compile(state.model)
    return state


def _checkpoint(cfg: TrainConfig, state: _State, epoch: int) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(cfg) | {"widths": list(cfg.widths)},
        "epoch": epoch,
        "global_step": state.global_step,
        "model": state.raw.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "history": state.history,
    }


def _load_checkpoint(path: Path, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - unreadable file: one line, not a traceback
        first = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(f"cannot read checkpoint {path}: {type(err).__name__}: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a train_mnist.py checkpoint")
    saved, defaults = ckpt["config"], TrainConfig()
    for name in _ARCH_FIELDS:
        ours = getattr(cfg, name)
        # Checkpoints written before a field existed hold its default.
        theirs = saved.get(name, getattr(defaults, name))
        if name == "widths":
            ours, theirs = list(ours), list(theirs)
        if ours != theirs:
            raise ConfigError(
                f"checkpoint {path} has {name}={theirs} but this run asks for {name}={ours}; "
                "use the same model flags or another --save path"
            )
    return ckpt


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ epochs
def _shard(n: int, epoch: int, seed: int, ctx: DistContext) -> torch.Tensor:
    """This rank's sample order for ``epoch``: one seeded permutation, split evenly over ranks."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    per_rank = n // ctx.world_size
    return perm[ctx.rank * per_rank : (ctx.rank + 1) * per_rank]


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr, or ``None``: when disabled, without tqdm, or when stderr is no terminal
    (redirected to a file, a bar's redraws pile up as lines; the per-epoch line says what is needed)."""
    if not enabled or not _is_terminal(sys.stderr):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _train_epoch(
    cfg: TrainConfig, state: _State, data: ImageData, epoch: int, device: torch.device, ctx: DistContext
) -> dict[str, Any]:
    """One epoch over this rank's shard; returns the epoch's record (train numbers, all ranks)."""
    n_train = len(data.y_train)
    steps = math.ceil((n_train // ctx.world_size) / cfg.batch_size)
    state.model.train()
    order = _shard(n_train, epoch, cfg.seed, ctx).to(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    bar = _progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", ctx.is_main and not cfg.quiet)
    sync(device)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        xb, yb = data.x_train[idx], data.y_train[idx]
        logits, loss = _step(cfg, state, xb, yb, device, ctx)
        loss_sum += loss.detach().double() * len(yb)
        correct += (logits.detach().argmax(dim=1) == yb).sum()
        seen += len(yb)
        if bar is not None:
            bar.update(1)
            if step % 25 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.2%}")
    sync(device)
    train_time = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    epoch_lr = state.optimizer.param_groups[0]["lr"]
    state.scheduler.step()
    total_loss, total_correct, total_seen = all_reduce(
        [loss_sum.item(), float(correct.item()), float(seen)], device, ctx
    )
    return {
        "epoch": epoch + 1,
        "train_loss": total_loss / total_seen,
        "train_accuracy": total_correct / total_seen,
        "lr": epoch_lr,
        "train_time_s": train_time,
        "train_samples": int(total_seen),
        "steps": steps,
    }


def _step(
    cfg: TrainConfig,
    state: _State,
    xb: torch.Tensor,
    yb: torch.Tensor,
    device: torch.device,
    ctx: DistContext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step (after a synced grid update when one is due); returns logits and loss."""
    if (
        cfg.update_grid_every
        and state.global_step % cfg.update_grid_every == 0
        and len(yb) * ctx.world_size >= 2
    ):
        update_grid_synced(state.raw, xb, ctx)
    with _autocast(device, cfg.amp):
        logits = state.model(xb)
    loss = F.cross_entropy(logits.float(), yb)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.global_step += 1
    return logits, loss


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    rate = record["train_samples"] / record["train_time_s"]
    return (
        f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}  "
        f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.2%}  "
        f"test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.2%}  "
        f"{record['train_time_s']:.1f}s {rate:,.0f} samples/s"
    )


# -------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1000,
    amp: str = "none",
    ctx: DistContext | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction) of ``model`` on ``(x, y)``.

    Under DDP pass each rank's shard and the context: the sums are all-reduced, so every rank gets
    the full-set numbers.
    """
    ctx = ctx or DistContext()
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, len(y), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        with _autocast(x.device, amp):
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").double()
        correct += (logits.argmax(dim=1) == yb).sum()
    model.train(was_training)
    total_loss, total_correct, n = all_reduce(
        [loss_sum.item(), float(correct.item()), float(len(y))], x.device, ctx
    )
    if n == 0:
        return float("nan"), float("nan")
    return total_loss / n, total_correct / n
