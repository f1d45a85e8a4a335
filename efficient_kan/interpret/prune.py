"""Pruning: a smaller ``KAN`` without the hidden nodes that carry (almost) nothing.

pykan's node rule: hidden node ``i`` between layers ``l-1`` and ``l`` is kept when both its incoming
score (the largest ``mean |phi|`` of the edges into it) and its outgoing score (the largest of the
edges out of it) exceed ``threshold``. The kept rows and columns of every weight, and the kept rows
of every grid, are copied into new layers of the same configuration. What a removed node sent on is
dropped, so the pruned model equals the original up to those (small) contributions.

Edges can be removed too (:func:`prune_edges`, pykan's edge rule): their weights are set to zero and
a boolean ``edge_mask (out, in)`` attribute of the layer remembers them, so that
:func:`~efficient_kan.interpret.fit` keeps them at zero (it zeroes their gradients) and
:func:`slice_layer` carries the mask into pruned layers.
"""

from __future__ import annotations

import copy

import torch

from ..layer import KAN, KANLinear
from .edges import DEFAULT_MAX_ELEMENTS, _check_model, attribution_scores, edge_scores, node_scores

__all__ = ["mask_pruned_gradients", "prune", "prune_edges", "set_edge_mask", "slice_layer"]


def slice_layer(layer: KANLinear, in_idx: torch.Tensor, out_idx: torch.Tensor) -> KANLinear:
    """A ``KANLinear`` with inputs ``in_idx`` and outputs ``out_idx`` of ``layer`` (same config)."""
    in_idx = torch.as_tensor(in_idx, dtype=torch.long, device=layer.grid.device)
    out_idx = torch.as_tensor(out_idx, dtype=torch.long, device=layer.grid.device)
    if in_idx.numel() == 0 or out_idx.numel() == 0:
        raise ValueError("slice_layer needs at least one input and one output")
    new = KANLinear(
        int(in_idx.numel()),
        int(out_idx.numel()),
        bias=layer.bias is not None,
        grid_size=layer.grid_size,
        spline_order=layer.spline_order,
        grid_range=layer.grid_range,
        scale_noise=layer.scale_noise,
        scale_base=layer.scale_base,
        scale_spline=layer.scale_spline,
        enable_standalone_scale_spline=layer.spline_scaler is not None,
        base_activation=copy.deepcopy(layer.base_activation),
        grid_eps=layer.grid_eps,
        device=layer.grid.device,
        dtype=layer.base_weight.dtype,
    )
    new.backend = layer.backend
    with torch.no_grad():
        new.grid.copy_(layer.grid[in_idx])
        new.base_weight.copy_(layer.base_weight[out_idx][:, in_idx])
        new.spline_weight.copy_(layer.spline_weight[out_idx][:, in_idx])
        if layer.spline_scaler is not None:
            new.spline_scaler.copy_(layer.spline_scaler[out_idx][:, in_idx])
        if layer.bias is not None:
            new.bias.copy_(layer.bias[out_idx])
    mask = getattr(layer, "edge_mask", None)
    if mask is not None:
        set_edge_mask(new, mask[out_idx][:, in_idx])
    return new


def prune(
    model: KAN,
    x: torch.Tensor,
    threshold: float = 1e-2,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    method: str = "forward",
) -> KAN:
    """A new ``KAN`` without the hidden nodes whose importance on data ``x`` is under ``threshold``.

    Scores are :func:`~efficient_kan.interpret.node_scores` on ``x`` (the model's input) with
    ``method="forward"`` (the rule above), or with ``method="attribution"`` pykan 0.2's
    :func:`~efficient_kan.interpret.attribution_scores` (a node is kept when its score exceeds
    ``threshold``). Inputs and
    outputs are always kept; a hidden layer keeps at least its most important node. The original
    model is not modified; the new one has ``kept_nodes``: for every node layer, the indices of the
    original nodes it keeps. Symbolic fits are not carried over (run ``auto_symbolic`` after).
    """
    model = _check_model(model)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if method == "forward":
        incoming, outgoing = node_scores(model, x, max_elements=max_elements)
        scores = [None] + [torch.minimum(incoming[l], outgoing[l]) for l in range(1, len(model.layers))]
    elif method == "attribution":
        scores = attribution_scores(model, x, max_elements=max_elements)[1]
    else:
        raise ValueError(f"method must be 'forward' or 'attribution', got {method!r}")
    device = model.layers[0].grid.device
    kept = [torch.arange(model.layers[0].in_features, device=device)]
    for l in range(1, len(model.layers)):
        keep = scores[l] > threshold
        if not bool(keep.any()):
            keep = torch.zeros_like(keep)
            keep[torch.argmax(scores[l])] = True
        kept.append(torch.nonzero(keep).flatten())
    kept.append(torch.arange(model.layers[-1].out_features, device=device))

    new = KAN.from_layers(slice_layer(layer, kept[l], kept[l + 1]) for l, layer in enumerate(model.layers))
    new.kept_nodes = [k.tolist() for k in kept]
    new.train(model.training)
    return new


@torch.no_grad()
def set_edge_mask(layer: KANLinear, mask: torch.Tensor) -> None:
    """Remove the edges of ``layer`` where ``mask (out, in)`` is False: zero their weights, and keep
    ``mask`` as the layer's ``edge_mask`` so that :func:`~efficient_kan.interpret.fit` keeps them zero.

    An edge removed once stays removed: the new mask is combined with an existing one.
    """
    mask = torch.as_tensor(mask, dtype=torch.bool, device=layer.base_weight.device)
    if mask.shape != (layer.out_features, layer.in_features):
        raise ValueError(
            f"edge mask must have shape ({layer.out_features}, {layer.in_features}), got {tuple(mask.shape)}"
        )
    old = getattr(layer, "edge_mask", None)
    if old is not None:
        mask = mask & old.to(mask.device)
    layer.base_weight.masked_fill_(~mask, 0.0)
    layer.spline_weight.masked_fill_(~mask.unsqueeze(-1), 0.0)
    layer.edge_mask = mask


def mask_pruned_gradients(model: KAN) -> None:
    """Zero the gradients of removed edges (layers with an ``edge_mask``), before an optimiser step.

    With zero gradients there, LBFGS and Adam steps leave those weights at zero, and grid updates
    refit a zero spline to zero, so a removed edge stays the zero function during training.
    """
    for layer in model.layers:
        mask = getattr(layer, "edge_mask", None)
        if mask is None:
            continue
        if layer.base_weight.grad is not None:
            layer.base_weight.grad.masked_fill_(~mask, 0.0)
        if layer.spline_weight.grad is not None:
            layer.spline_weight.grad.masked_fill_(~mask.unsqueeze(-1), 0.0)


def prune_edges(
    model: KAN,
    x: torch.Tensor,
    threshold: float = 3e-2,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    method: str = "attribution",
) -> list[torch.Tensor]:
    """Remove, in place, the edges whose importance on data ``x`` is not above ``threshold``.

    Importance is pykan 0.2's :func:`~efficient_kan.interpret.attribution_scores` (default;
    ``method="forward"``: :func:`~efficient_kan.interpret.edge_scores`, ``mean |phi|``, which can
    drop a small edge that a steep function downstream amplifies). Every removed edge becomes the
    zero function and stays so in :func:`~efficient_kan.interpret.fit` (see
    :func:`set_edge_mask`). Returns every layer's mask of kept edges, ``(out, in)``.
    """
    model = _check_model(model)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if method == "forward":
        scores = edge_scores(model, x, max_elements=max_elements)
    elif method == "attribution":
        scores = attribution_scores(model, x, max_elements=max_elements)[0]
    else:
        raise ValueError(f"method must be 'forward' or 'attribution', got {method!r}")
    for layer, score in zip(model.layers, scores, strict=True):
        set_edge_mask(layer, score > threshold)
    return [layer.edge_mask.clone() for layer in model.layers]
