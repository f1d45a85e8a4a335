"""Operations on any model that contains ``KANLinear`` layers (not only ``KAN``).

- :func:`update_grids` (and :func:`calibrate`, its name right after conversion): one forward pass
  that records every layer's input and moves each layer's knots onto it, refitting its splines so
  that its function is kept (up to the least-squares residual; exactly where the splines are zero,
  as right after ``kanify(..., init="linear")``); identical on every rank under
  ``torch.distributed``.
- :func:`regularization_loss`: the sum of the layers' regularisation terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .layer import KANLinear

__all__ = ["calibrate", "kan_layers", "regularization_loss", "update_grids"]


def kan_layers(model: nn.Module) -> list[tuple[str, KANLinear]]:
    """``(qualified name, layer)`` for every ``KANLinear`` in ``model``, each layer once."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, KANLinear)]


def regularization_loss(
    model: nn.Module, regularize_activation: float = 1.0, regularize_entropy: float = 1.0
) -> torch.Tensor:
    """The sum of :meth:`KANLinear.regularization_loss` over every ``KANLinear`` of ``model``
    (a layer shared by several names counts once). Raises ``ValueError`` if there is none."""
    layers = kan_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} contains no KANLinear layer to regularise")
    return sum(layer.regularization_loss(regularize_activation, regularize_entropy) for _, layer in layers)


def _batches(data: Any, max_batches: int | None) -> Iterable[Any]:
    if isinstance(data, torch.Tensor | Mapping):
        yield data
        return
    if isinstance(data, tuple):
        # One (input, target) batch or several batches? Refuse rather than guess.
        raise TypeError(
            "update_grids got a tuple, which could be one (input, target) batch or several batches: "
            "pass the input tensor, or a list (or DataLoader) of batches"
        )
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            f"update_grids expects a tensor, a dict of keyword inputs, or an iterable of batches, "
            f"got {type(data).__name__}"
        ) from None
    for i, batch in enumerate(iterator):
        if max_batches is not None and i >= max_batches:
            return
        yield batch


def _run(model: nn.Module, batch: Any, forward: Callable[[nn.Module, Any], Any] | None) -> None:
    if forward is not None:
        forward(model, batch)
    elif isinstance(batch, torch.Tensor):
        model(batch)
    elif isinstance(batch, Mapping):
        model(**batch)
    elif isinstance(batch, tuple | list) and batch:
        model(batch[0])  # (input, target) as a DataLoader yields it
    else:
        raise TypeError(
            f"update_grids cannot feed a batch of type {type(batch).__name__} to the model; pass "
            f"forward=lambda model, batch: model(...)"
        )


def _gather_rows(x: torch.Tensor, width: int, device: torch.device) -> torch.Tensor:
    """All ranks' rows, concatenated in rank order (ranks may hold different row counts)."""
    world = dist.get_world_size()
    # gloo and nccl both take tensors on the default device of the backend.
    comm_device = device if dist.get_backend() != "gloo" else torch.device("cpu")
    local = x.to(comm_device)
    counts = [torch.zeros(1, dtype=torch.int64, device=comm_device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([local.shape[0]], dtype=torch.int64, device=comm_device))
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    if longest == 0:
        return x.new_empty(0, width)
    padded = local.new_zeros(longest, width)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]).to(device)


def _check_plain(name: str, layer: KANLinear) -> None:
    for pname, param in layer.named_parameters():
        if type(param.data) is not torch.Tensor:
            raise TypeError(
                f"update_grids: {name}.{pname} is a {type(param.data).__name__} (a sharded model, "
                f"e.g. FSDP's fully_shard); run update_grids / calibrate before sharding"
            )


@torch.no_grad()
def update_grids(
    model: nn.Module,
    data: Any,
    *,
    layers: Iterable[str | KANLinear] | None = None,
    margin: float = 0.01,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Move every ``KANLinear``'s knots to its own inputs, refitting its splines to keep its function.

    The model runs once over ``data`` in eval mode without gradients (modes are restored after);
    forward pre-hooks record each layer's inputs (any leading shape, reshaped to ``(-1,
    in_features)``; a shared layer records all its calls); then each layer runs
    :meth:`KANLinear.update_grid` on its own recorded inputs (the same as calling it by hand on
    those inputs). One pass suffices: a grid update keeps the layer's function (up to the refit's
    least-squares residual), so later layers' inputs change only by that residual.

    Under ``torch.distributed`` (initialised, world size > 1) every rank must call this on the same
    model; each layer's inputs are all-gathered (ranks may see different row counts), every rank
    updates on the same rows, and rank 0's new grids and splines are broadcast, so the ranks stay
    identical. Works through a DDP wrapper; FSDP-sharded layers raise (update before sharding).

    Args:
        model: any module containing ``KANLinear`` layers (possibly wrapped, e.g. by DDP).
        data: a tensor (one batch, ``model(data)``), a dict (``model(**data)``), or a list or
            other iterable of batches (a DataLoader): each a tensor, a dict, or a tuple/list whose
            first element is the input (``(input, target)``). A bare tuple is refused as ambiguous.
        layers: only these layers (qualified names or modules); default every ``KANLinear``.
        margin: passed to ``update_grid`` (the uniform part's margin beyond the data).
        forward: ``forward(model, batch)`` to call the model some other way.
        max_batches: stop after this many batches of an iterable.

    All recorded inputs stay in memory until the update (per layer ``rows * in_features``), and
    ``update_grid`` works in float64 on ``in * rows * out`` values: bound the data accordingly.

    Returns ``{name: fraction}``: per layer, the fraction of recorded input values that lay outside
    its previous knots (``x < grid[:, 0]`` or ``x >= grid[:, -1]``, where every basis is zero).
    """
    targets = _target_layers(model, layers)
    records = _record_inputs(model, targets, data, forward, max_batches)
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    inputs = _checked_inputs(targets, records, distributed)
    outside: dict[str, float] = {}
    for name, layer in targets:
        x = inputs[name].to(layer.grid.device)
        grid = layer.grid
        out = (x < grid[:, 0].to(x.dtype)) | (x >= grid[:, -1].to(x.dtype))
        outside[name] = float(out.double().mean())
        try:
            layer.update_grid(x, margin=margin)
        except ValueError as err:
            raise ValueError(f"update_grids: {name}: {err}") from None
        if distributed:
            # The least-squares refit need not be bitwise reproducible across processes.
            for t in (layer.grid, layer.spline_weight):
                _broadcast_from_rank0(t)
    return outside


def _target_layers(model: nn.Module, layers: Iterable[str | KANLinear] | None) -> list[tuple[str, KANLinear]]:
    """``update_grids``' layers by qualified name: ``layers`` (names or modules) or every one."""
    all_layers = kan_layers(model)
    if layers is None:
        targets = all_layers
    else:
        by_name = dict(all_layers)
        by_id = {id(m): n for n, m in all_layers}
        targets = []
        for item in layers:
            if isinstance(item, str):
                if item not in by_name:
                    raise ValueError(f"update_grids: {item!r} is not a KANLinear of the model")
                targets.append((item, by_name[item]))
            elif isinstance(item, KANLinear) and id(item) in by_id:
                targets.append((by_id[id(item)], item))
            else:
                raise ValueError(f"update_grids: {item!r} is not a KANLinear of the model")
    if not targets:
        raise ValueError(f"{type(model).__name__} contains no KANLinear layer to update")
    for name, layer in targets:
        _check_plain(name, layer)
    return targets


def _record_inputs(
    model: nn.Module,
    targets: list[tuple[str, KANLinear]],
    data: Any,
    forward: Callable[[nn.Module, Any], Any] | None,
    max_batches: int | None,
) -> dict[str, list[torch.Tensor]]:
    """Runs ``model`` over ``data`` in eval mode (modes restored after) and returns each target
    layer's inputs, as ``(-1, in_features)`` rows, from forward pre-hooks."""
    records: dict[str, list[torch.Tensor]] = {name: [] for name, _ in targets}

    def recorder(name: str, width: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs.get("x")
            if isinstance(x, torch.Tensor):
                records[name].append(x.detach().reshape(-1, width))

        return hook

    handles = [
        layer.register_forward_pre_hook(recorder(name, layer.in_features), with_kwargs=True)
        for name, layer in targets
    ]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for batch in _batches(data, max_batches):
            _run(model, batch, forward)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return records


def _checked_inputs(
    targets: list[tuple[str, KANLinear]], records: dict[str, list[torch.Tensor]], distributed: bool
) -> dict[str, torch.Tensor]:
    """Each layer's recorded rows in one tensor (gathered over the ranks when ``distributed``),
    all checked before any layer changes, so that an error leaves the model as it was."""
    inputs: dict[str, torch.Tensor] = {}
    for name, layer in targets:
        x = torch.cat(records[name]) if records[name] else layer.grid.new_empty(0, layer.in_features)
        if distributed:
            x = _gather_rows(x, layer.in_features, layer.grid.device)
        inputs[name] = x
    unused = [name for name, x in inputs.items() if x.shape[0] == 0]
    if unused:
        raise ValueError(f"update_grids: these layers got no input while the model ran: {', '.join(unused)}")
    for name, x in inputs.items():
        if x.shape[0] < 2:
            raise ValueError(f"update_grids: {name} got {x.shape[0]} input row(s); update_grid needs 2")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"update_grids: {name} got non-finite inputs; nothing was changed")
    return inputs


def _broadcast_from_rank0(t: torch.Tensor) -> None:
    if dist.get_backend() == "gloo" and t.device.type != "cpu":
        buf = t.detach().cpu()
        dist.broadcast(buf, src=0)
        t.data.copy_(buf)
    else:
        dist.broadcast(t.data, src=0)


def calibrate(model: nn.Module, data: Any, **kwargs) -> dict[str, float]:
    """Place the knots of a freshly converted model's ``KANLinear`` layers on its activations.

    ``kanify`` keeps the default knots on ``[-1, 1]`` (``grid_range``), where real activations
    often are not; outside the knots a layer's spline part is zero, so the splines could not learn
    there. This runs :func:`update_grids` (same arguments) over representative inputs: each layer's
    knots move onto its recorded inputs and its function is kept (exactly for ``init="linear"``,
    whose splines are zero; otherwise up to the least-squares refit). Returns, per layer, the
    fraction of inputs that were outside the knots before.
    """
    return update_grids(model, data, **kwargs)
