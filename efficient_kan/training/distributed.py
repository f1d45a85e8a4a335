"""Multi-process training under ``torchrun``: process group, ``update_grid`` kept in step, checks.

Every rank draws the same per-epoch permutation and takes an equal shard (see ``loop._shard``).
``update_grid`` rewrites a buffer and a parameter from data outside autograd, so DDP does not keep
it in step: :func:`update_grid_synced` does, and :func:`ranks_identical` checks it at the end.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistContext",
    "all_reduce",
    "broadcast_model",
    "no_buffer_sync",
    "ranks_identical",
    "setup_distributed",
    "update_grid_synced",
]


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
    """Every parameter and buffer: what must agree across ranks."""
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


def no_buffer_sync() -> dict[str, bool]:
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


def all_reduce(values: Sequence[float], device: torch.device, ctx: DistContext, op=None) -> list[float]:
    """``values`` reduced over all ranks (``SUM`` unless ``op`` says otherwise), as floats."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if ctx.enabled:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()
