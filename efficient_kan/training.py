"""Training and evaluation for the MNIST examples: the logic behind ``train_mnist.py``.

``run(TrainConfig(...))`` trains a ``KAN`` or an MLP classifier on MNIST-like data held as whole
tensors on the device (see :mod:`efficient_kan.data`) and returns a :class:`RunResult`: test
accuracy, parameter count, throughput, peak memory and the per-epoch history, as a JSON-ready dict.

Under ``torchrun`` (``WORLD_SIZE > 1``) it trains with ``DistributedDataParallel`` (NCCL on CUDA,
gloo on CPU): every rank draws the same per-epoch permutation and takes its own equal shard, so
every rank runs the same number of steps. ``update_grid`` is the one operation DDP does not keep in
step (it rewrites a buffer and a parameter from data, outside autograd); :func:`update_grid_synced`
gathers the batch from all ranks, updates every rank on the same samples and then broadcasts rank
0's parameters and buffers, so all ranks hold bit-identical models afterwards. At the end of a
distributed run :func:`ranks_identical` checks exactly that.

``tqdm`` is optional: progress bars are drawn only where it is installed and stderr is a terminal;
the one line per epoch is printed either way (unless ``quiet``). Nothing here needs
``torchvision`` unless a dataset has to be downloaded.
"""

from __future__ import annotations

import datetime as _dt
import gc
import inspect
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data import DATASETS, ImageData, load_dataset
from .layer import KAN

__all__ = [
    "CHECKPOINT_FORMAT",
    "ConfigError",
    "DistContext",
    "RunResult",
    "TrainConfig",
    "build_model",
    "count_parameters",
    "device_description",
    "evaluate",
    "make_mlp",
    "peak_memory_mib",
    "reset_peak_memory",
    "ranks_identical",
    "run",
    "setup_distributed",
    "update_grid_synced",
]

CHECKPOINT_FORMAT = "efficient_kan.train_mnist/1"
MODELS = ("kan", "mlp")
AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
# Config fields a checkpoint must agree on to be resumed (the model's shape).
_ARCH_FIELDS = ("model", "widths", "grid_size", "spline_order")


class ConfigError(ValueError):
    """A configuration, device or checkpoint problem, reported to CLI users as one line."""


@dataclass
class TrainConfig:
    """Everything one training run needs; the defaults are those of ``python train_mnist.py``."""

    model: str = "kan"
    widths: tuple[int, ...] = (784, 64, 10)
    grid_size: int = 5
    spline_order: int = 3
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    gamma: float = 0.8
    seed: int = 0
    dataset: str = "auto"
    data_dir: str = "data"
    download: bool = True
    train_limit: int | None = None
    test_limit: int | None = None
    device: str = "auto"
    amp: str = "none"
    compile: bool = False
    update_grid_every: int = 0
    save: str | None = None
    resume: bool = False
    json: str | None = None
    quiet: bool = False
    eval_batch_size: int = 1000
    threads: int | None = None
    command: str = ""

    def validate(self) -> None:
        """Raise :class:`ConfigError` with a one-line reason for an unusable configuration."""
        if self.model not in MODELS:
            raise ConfigError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        widths = tuple(self.widths)
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ConfigError(f"--widths needs at least two positive sizes, got {widths}")
        if widths[0] != 784 or widths[-1] != 10:
            raise ConfigError(
                f"--widths must start with 784 (28x28 pixels) and end with 10 (classes), got "
                f"{','.join(map(str, widths))}"
            )
        for name in ("epochs", "batch_size", "grid_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("spline_order", "update_grid_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("train_limit", "test_limit", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"--gamma must lie in (0, 1], got {self.gamma}")
        if self.update_grid_every and self.model != "kan":
            raise ConfigError("--update-grid-every needs --model kan (an MLP has no grid)")
        if self.resume and not self.save:
            raise ConfigError("--resume needs --save PATH (the checkpoint to resume from and keep writing)")


# ------------------------------------------------------------------------------------------ models
def make_mlp(widths: Sequence[int]) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear`` with the given widths (``[784, 10]``: one linear layer)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=False)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def build_model(model: str, widths: Sequence[int], *, grid_size: int = 5, spline_order: int = 3) -> nn.Module:
    """``KAN(widths, grid_size=..., spline_order=...)`` or :func:`make_mlp` (``model="mlp"``)."""
    if model == "kan":
        return KAN(list(widths), grid_size=grid_size, spline_order=spline_order)
    if model == "mlp":
        return make_mlp(widths)
    raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (the grid buffers are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------ distributed
@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_type: str) -> DistContext:
    """Join the ``torchrun`` job described by the environment (NCCL on CUDA, gloo on CPU).

    Without ``WORLD_SIZE > 1`` this is a single process and nothing is initialised. If a process
    group already exists (a caller set it up), it is used as is.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistContext()
    if not dist.is_initialized():
        # torch.distributed.nn.functional binds ``group=group.WORLD`` as default arguments when it
        # is first imported, and DistributedDataParallel imports it (through torch._dynamo) on
        # construction. Imported after the group exists, those defaults keep the group alive
        # past destroy_process_group(), with gloo's threads running into interpreter exit, where
        # they can abort the process. Imported now, the defaults are None.
        import torch.distributed.nn  # noqa: F401

        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def _model_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def broadcast_model(model: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``model`` (in place)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for t in _model_tensors(model):
            dist.broadcast(t.data, src=src)


@torch.no_grad()
def update_grid_synced(model: nn.Module, x: torch.Tensor, ctx: DistContext) -> None:
    """``model(x, update_grid=True)`` that leaves every rank with identical grids and weights.

    ``model`` is the plain ``KAN`` (not the DDP or compiled wrapper). Under DDP each rank holds a
    different batch: the batches are all-gathered (equal shapes, since every rank runs the same
    batch sizes), every rank updates on the same concatenation, and rank 0's parameters and buffers
    are then broadcast so that the ranks agree bit for bit even where a solver is not
    deterministic across processes.
    """
    if ctx.enabled:
        parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
        dist.all_gather(parts, x.contiguous())
        x = torch.cat(parts)
    was_training = model.training
    model.train()
    model(x.float(), update_grid=True)
    model.train(was_training)
    broadcast_model(model, ctx)


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's switch for "do not broadcast buffers every forward", across torch versions."""
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    )


def ranks_identical(model: nn.Module, ctx: DistContext) -> bool | None:
    """Whether every rank holds bit-identical parameters and buffers (``None`` for one process)."""
    if not ctx.enabled:
        return None
    with torch.no_grad():
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in _model_tensors(model)])
        gathered = [torch.empty_like(flat) for _ in range(ctx.world_size)]
        dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def _all_reduce(values: Sequence[float], device: torch.device, ctx: DistContext, op=None) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if ctx.enabled:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()


# ------------------------------------------------------------------------------------ measurements
def device_description(device: torch.device) -> str:
    """GPU name, or CPU model (from /proc/cpuinfo) and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        fields = dict(line.split(":", 1) for line in info.splitlines()[:30] if ":" in line and line.strip())
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        name = fields.get("model name", name)
        if "cpu family" in fields and "model" in fields:
            name += f" (family {fields['cpu family']}, model {fields['model']})"
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_memory(device: torch.device) -> float:
    """Start a fresh peak-memory window; returns the memory in use now, in MiB.

    CUDA: ``reset_peak_memory_stats`` (then ``memory_allocated``). CPU on Linux: resets the process's
    peak RSS (``VmHWM``, via ``/proc/self/clear_refs``) to its current RSS, so the peak that follows
    is the training's, not that of loading and decompressing the data.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    now = _proc_status_kib("VmRSS")
    return now / 2**10 if now is not None else peak_memory_mib(device)[0]


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures.

    CUDA: ``max_memory_allocated``. CPU: the process's peak resident set size since
    :func:`reset_peak_memory` (``VmHWM``), or without ``/proc`` the lifetime peak (``ru_maxrss``).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm / 2**10, "process_peak_rss"
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process_lifetime_peak_rss"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------- training
@dataclass
class RunResult:
    """What :func:`run` returns: ``results`` (JSON-ready) and the trained plain model."""

    results: dict[str, Any]
    model: nn.Module = field(repr=False)


def _autocast(device: torch.device, amp: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


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
    total_loss, total_correct, n = _all_reduce(
        [loss_sum.item(), float(correct.item()), float(len(y))], x.device, ctx
    )
    if n == 0:
        return float("nan"), float("nan")
    return total_loss / n, total_correct / n


def _resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was asked for but no CUDA device is available (try --device cpu)"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def _shard(n: int, epoch: int, seed: int, ctx: DistContext) -> torch.Tensor:
    """This rank's sample order for ``epoch``: one seeded permutation, split evenly over ranks."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    per_rank = n // ctx.world_size
    return perm[ctx.rank * per_rank : (ctx.rank + 1) * per_rank]


def _load_checkpoint(path: Path, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - unreadable file: one line, not a traceback
        first = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(f"cannot read checkpoint {path}: {type(err).__name__}: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a train_mnist.py checkpoint")
    saved = ckpt["config"]
    for name in _ARCH_FIELDS:
        ours = list(getattr(cfg, name)) if name == "widths" else getattr(cfg, name)
        theirs = list(saved[name]) if name == "widths" else saved[name]
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


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr, or ``None``: when disabled, without tqdm, or when stderr is no terminal.

    Redirected to a file, a bar's redraws pile up as lines of bars; the per-epoch summary line
    says what is needed there.
    """
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


def run(
    cfg: TrainConfig,
    *,
    data: ImageData | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train and evaluate as ``cfg`` says; see the module docstring. Prints only on rank 0.

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
    if cfg.amp == "fp16" and _resolve_device(cfg).type != "cuda":
        raise ConfigError("--amp fp16 needs CUDA (on CPU use --amp bf16)")
    base_device = _resolve_device(cfg)
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
    device = torch.device("cuda", ctx.local_rank) if base_device.type == "cuda" else base_device
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {ctx.rank} wants cuda:{device.index} but only {torch.cuda.device_count()} GPUs are visible; "
                "use at most one process per GPU (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(device)
    say = log if ctx.is_main else (lambda _msg: None)
    verbose = ctx.is_main and not cfg.quiet

    # ---------------------------------------------------------------- data (rank 0 downloads first)
    if data is None:
        if ctx.enabled and not ctx.is_main:
            dist.barrier()
        data = load_dataset(cfg.dataset, cfg.data_dir, device="cpu", download=cfg.download, log=say)
        if ctx.enabled and ctx.is_main:
            dist.barrier()
    data = data.subset(cfg.train_limit, cfg.test_limit).to(device)
    n_train = len(data.y_train)
    if n_train < ctx.world_size:
        raise ConfigError(f"{n_train} training samples cannot be split over {ctx.world_size} ranks")

    # ---------------------------------------------------------------- model, optimiser, checkpoint
    torch.manual_seed(cfg.seed)
    raw = build_model(cfg.model, cfg.widths, grid_size=cfg.grid_size, spline_order=cfg.spline_order)
    raw.to(device)
    params = count_parameters(raw)
    optimizer = torch.optim.AdamW(raw.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    start_epoch, global_step, history = 0, 0, []
    save_path = Path(cfg.save) if cfg.save else None
    if cfg.resume and save_path is not None and save_path.exists():
        ckpt = _load_checkpoint(save_path, cfg, device)
        raw.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, global_step, history = ckpt["epoch"], ckpt["global_step"], list(ckpt["history"])
        if start_epoch >= cfg.epochs:
            say(
                f"{save_path} already holds {start_epoch} epochs (--epochs {cfg.epochs}): nothing left "
                "to train; evaluating the checkpoint"
            )
        else:
            say(f"resumed from {save_path} after epoch {start_epoch}/{cfg.epochs}")
    elif cfg.resume:
        say(f"no checkpoint at {save_path} yet; starting from scratch")

    model: nn.Module = raw
    if ctx.enabled:
        # The grids (the only buffers) are kept in step by update_grid_synced, not per forward.
        model = nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None, **_no_buffer_sync()
        )
    if cfg.compile:
        model = torch.compile(model)

    say(
        f"{cfg.model.upper()}({','.join(map(str, cfg.widths))}) "
        f"{params:,} parameters on {device_description(device)}"
        f"{f' x {ctx.world_size} ranks' if ctx.enabled else ''}; {data.describe()}"
    )
    x_test_shard = data.x_test[ctx.rank :: ctx.world_size]
    y_test_shard = data.y_test[ctx.rank :: ctx.world_size]
    mem_before = reset_peak_memory(device)  # data, model and (CPU) the libraries already resident

    # ------------------------------------------------------------------------------- epochs
    steps_per_epoch = math.ceil((n_train // ctx.world_size) / cfg.batch_size)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = _shard(n_train, epoch, cfg.seed, ctx).to(device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", verbose)
        _sync(device)
        t0 = time.perf_counter()
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            if (
                cfg.update_grid_every
                and global_step % cfg.update_grid_every == 0
                and len(yb) * ctx.world_size >= 2
            ):
                update_grid_synced(raw, xb, ctx)
            with _autocast(device, cfg.amp):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            global_step += 1
            loss_sum += loss.detach().double() * len(yb)
            correct += (logits.detach().argmax(dim=1) == yb).sum()
            seen += len(yb)
            if bar is not None:
                bar.update(1)
                if step % 25 == 0 or step == steps_per_epoch - 1:
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.2%}")
        _sync(device)
        train_time = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        epoch_lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        train_loss, train_correct, train_seen = _all_reduce(
            [loss_sum.item(), float(correct.item()), float(seen)], device, ctx
        )
        test_loss, test_acc = evaluate(
            model, x_test_shard, y_test_shard, batch_size=cfg.eval_batch_size, amp=cfg.amp, ctx=ctx
        )
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss / train_seen,
            "train_accuracy": train_correct / train_seen,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "lr": epoch_lr,
            "train_time_s": train_time,
            "train_samples": int(train_seen),
            "steps": steps_per_epoch,
        }
        history.append(record)
        if verbose:
            say(
                f"epoch {epoch + 1:>{len(str(cfg.epochs))}}/{cfg.epochs}  "
                f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.2%}  "
                f"test loss {test_loss:.4f} acc {test_acc:.2%}  "
                f"{train_time:.1f}s {train_seen / train_time:,.0f} samples/s"
            )
        if save_path is not None and ctx.is_main:
            _save_checkpoint(
                save_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "config": asdict(cfg) | {"widths": list(cfg.widths)},
                    "epoch": epoch + 1,
                    "global_step": global_step,
                    "model": raw.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": history,
                },
            )
        if ctx.enabled:
            dist.barrier()

    # ------------------------------------------------------------------------------- results
    test_loss, test_acc = evaluate(
        model, x_test_shard, y_test_shard, batch_size=cfg.eval_batch_size, amp=cfg.amp, ctx=ctx
    )
    identical = ranks_identical(raw, ctx)
    mem, mem_kind = peak_memory_mib(device)
    (mem,) = _all_reduce([mem], device, ctx, op=dist.ReduceOp.MAX)
    epochs_trained = max(cfg.epochs - start_epoch, 0)
    results = _summarise(cfg, data, params, history, test_loss, test_acc, device, ctx, mem, mem_kind)
    results["epochs_trained"] = epochs_trained
    if not epochs_trained:
        # The history's timings are those of the run that wrote the checkpoint: reporting them as
        # this run's throughput would present old measurements as new ones.
        for key in _THROUGHPUT_KEYS:
            results[key] = None
    results["memory_before_training_mib"] = mem_before
    results["ranks_identical"] = identical
    if ctx.is_main:
        if epochs_trained:
            done = (
                f"{_fmt(results['train_samples_per_s'], ',.0f')} train samples/s | "
                f"peak memory {mem:,.1f} MiB ({'CUDA max allocated' if device.type == 'cuda' else 'peak RSS'})"
            )
        else:
            done = f"nothing trained in this run (the checkpoint holds epoch {start_epoch}/{cfg.epochs})"
        say(f"test accuracy {test_acc:.2%} (loss {test_loss:.4f}) | {params:,} parameters | {done}")
        if identical is False:
            say("warning: the ranks' models differ at the end of training")
        if cfg.json:
            import json

            path = Path(cfg.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2) + "\n")
    return RunResult(results=results, model=raw)


# What _summarise derives from the epochs' timings.
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


def _summarise(
    cfg: TrainConfig,
    data: ImageData,
    params: int,
    history: list[dict[str, Any]],
    test_loss: float,
    test_acc: float,
    device: torch.device,
    ctx: DistContext,
    mem: float,
    mem_kind: str,
) -> dict[str, Any]:
    """The JSON-ready results; throughput over all epochs and over epochs after the first."""

    def rates(records: list[dict[str, Any]]) -> tuple[float | None, float | None, float | None]:
        t = sum(r["train_time_s"] for r in records)
        if not records or t <= 0:
            return None, None, None
        return (
            sum(r["train_samples"] for r in records) / t,
            sum(r["steps"] for r in records) / t,
            t / len(records),
        )

    samples_s, steps_s, s_epoch = rates(history)
    steady = history[1:] if len(history) > 1 else history
    steady_samples_s, steady_steps_s, steady_s_epoch = rates(steady)
    return {
        "model": cfg.model,
        "widths": list(cfg.widths),
        "grid_size": cfg.grid_size if cfg.model == "kan" else None,
        "spline_order": cfg.spline_order if cfg.model == "kan" else None,
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
        "test_loss": test_loss,
        "test_accuracy": test_acc,
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
