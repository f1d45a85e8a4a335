"""Pruning: a smaller ``KAN`` without the hidden nodes that carry (almost) nothing.

pykan's node rule: hidden node ``i`` between layers ``l-1`` and ``l`` is kept when both its incoming
score (the largest ``mean |phi|`` of the edges into it) and its outgoing score (the largest of the
edges out of it) exceed ``threshold``. The kept rows and columns of every weight, and the kept rows
of every grid, are copied into new layers of the same configuration. What a removed node sent on is
dropped, so the pruned model equals the original up to those (small) contributions.
"""

from __future__ import annotations

import copy

import torch

from ..layer import KAN, KANLinear
from .edges import DEFAULT_MAX_ELEMENTS, _check_model, node_scores

__all__ = ["prune", "slice_layer"]


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
    return new


def prune(
    model: KAN,
    x: torch.Tensor,
    threshold: float = 1e-2,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> KAN:
    """A new ``KAN`` without the hidden nodes whose importance on data ``x`` is under ``threshold``.

    Scores are :func:`~efficient_kan.interpret.node_scores` on ``x`` (the model's input). Inputs and
    outputs are always kept; a hidden layer keeps at least its most important node. The original
    model is not modified; the new one has ``kept_nodes``: for every node layer, the indices of the
    original nodes it keeps. Symbolic fits are not carried over (run ``auto_symbolic`` after).
    """
    model = _check_model(model)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    incoming, outgoing = node_scores(model, x, max_elements=max_elements)
    device = model.layers[0].grid.device
    kept = [torch.arange(model.layers[0].in_features, device=device)]
    for l in range(1, len(model.layers)):
        score_in, score_out = incoming[l], outgoing[l]
        keep = (score_in > threshold) & (score_out > threshold)
        if not bool(keep.any()):
            keep = torch.zeros_like(keep)
            keep[torch.argmax(torch.minimum(score_in, score_out))] = True
        kept.append(torch.nonzero(keep).flatten())
    kept.append(torch.arange(model.layers[-1].out_features, device=device))

    new = KAN.from_layers(slice_layer(layer, kept[l], kept[l + 1]) for l, layer in enumerate(model.layers))
    new.kept_nodes = [k.tolist() for k in kept]
    new.train(model.training)
    return new
