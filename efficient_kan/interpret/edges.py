"""Edge functions of a ``KANLinear`` and importance scores computed from data.

Every edge ``(o, i)`` of a layer carries one function of one variable::

    phi[o, i](t) = base_weight[o, i] * act(t) + spline_scaler[o, i] * sum_j B_j(t) spline_weight[o, i, j]

so that ``y[..., o] = sum_i phi[o, i](x[..., i]) + bias[o]``. The bias belongs to no edge: it is the
output node's constant (the symbolic formulas add it to the node's sum).

Importance of an edge on a batch ``x`` is ``mean_b |phi[o, i](x[b, i])|`` (the KAN paper's L1 of an
activation). It is computed in chunks over the batch and the outputs, so no ``(batch, out, in)``
tensor larger than ``max_elements`` exists at any time: a 784 -> 64 layer on 60,000 images runs in a
few MB. Node scores follow pykan: a hidden node's incoming score is the largest score of the edges
into it, its outgoing score the largest of the edges out of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..bspline import bspline_basis
from ..layer import KAN, KANLinear
from ..reference import scaled_spline_weight

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "attribution_scores",
    "edge_function",
    "edge_values",
    "layer_edge_scores",
    "edge_scores",
    "layer_inputs",
    "node_scores",
]

#: Largest number of elements of any ``(batch_chunk, out_chunk, in)`` intermediate (16 MiB in fp32).
DEFAULT_MAX_ELEMENTS = 1 << 22


def _check_layer(layer: nn.Module) -> KANLinear:
    if not isinstance(layer, KANLinear):
        raise TypeError(f"expected a KANLinear, got {type(layer).__name__}")
    return layer


def _check_model(model: nn.Module) -> KAN:
    if not isinstance(model, KAN):
        raise TypeError(f"expected a KAN, got {type(model).__name__}")
    return model


def _as_rows(layer: KANLinear, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[-1] != layer.in_features:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected input of shape (*, {layer.in_features}), got {shape}")
    return x.reshape(-1, layer.in_features).to(device=layer.grid.device, dtype=layer.base_weight.dtype)


def _phi(layer: KANLinear, x: torch.Tensor, outs: slice) -> torch.Tensor:
    """``phi[o, i](x[b, i])`` for rows ``x (B, I)`` and outputs ``outs``: shape ``(B, len(outs), I)``."""
    act = layer.base_activation(x)  # (B, I)
    bases = bspline_basis(x, layer.grid, layer.spline_order)  # (B, I, C)
    scaler = None if layer.spline_scaler is None else layer.spline_scaler[outs]
    weight = scaled_spline_weight(layer.spline_weight[outs], scaler)  # (Oc, I, C)
    # Contracted per input feature as a batched (B, C) @ (C, Oc): no (B, Oc, I, C) tensor.
    spline = torch.einsum("bic,oic->boi", bases, weight)
    return act.unsqueeze(1) * layer.base_weight[outs].unsqueeze(0) + spline


def _chunks(layer: KANLinear, n_rows: int, max_elements: int) -> tuple[int, int]:
    """(batch_chunk, out_chunk) so that ``batch_chunk * max(out_chunk, C) * in <= max_elements``."""
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1, got {max_elements}")
    n_in, n_out = layer.in_features, layer.out_features
    width = layer.grid_size + layer.spline_order
    out_chunk = min(n_out, max(1, max_elements // (16 * n_in)))
    batch_chunk = max(1, min(n_rows, max_elements // (n_in * max(out_chunk, width))))
    return batch_chunk, out_chunk


def _iter_phi(
    layer: KANLinear, x: torch.Tensor, max_elements: int
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    batch_chunk, out_chunk = _chunks(layer, x.shape[0], max_elements)
    for b0 in range(0, x.shape[0], batch_chunk):
        rows = slice(b0, b0 + batch_chunk)
        for o0 in range(0, layer.out_features, out_chunk):
            outs = slice(o0, o0 + out_chunk)
            yield rows, outs, _phi(layer, x[rows], outs)


def edge_values(layer: KANLinear, x: torch.Tensor) -> torch.Tensor:
    """All edge activations ``phi[o, i](x[b, i])`` as a ``(batch, out, in)`` tensor.

    This is the full tensor, meant for small layers and small batches (plots, tests); use
    :func:`layer_edge_scores` for importance on real data. Differentiable in ``x`` and the weights.
    """
    layer = _check_layer(layer)
    rows = _as_rows(layer, x)
    return _phi(layer, rows, slice(None))


def edge_function(layer: KANLinear, o: int, i: int, t: torch.Tensor) -> torch.Tensor:
    """The function of one edge, ``phi[o, i](t)``, on a 1-D tensor of points ``t``.

    Only feature ``i``'s bases are evaluated, so this is cheap even on a 784-wide layer.
    """
    layer = _check_layer(layer)
    if not (0 <= o < layer.out_features and 0 <= i < layer.in_features):
        raise IndexError(
            f"edge (o={o}, i={i}) out of range for a layer {layer.in_features} -> {layer.out_features}"
        )
    t = torch.as_tensor(t, device=layer.grid.device, dtype=layer.base_weight.dtype).reshape(-1, 1)
    bases = bspline_basis(t, layer.grid[i : i + 1], layer.spline_order)[:, 0]  # (N, C)
    weight = layer.spline_weight[o, i]
    if layer.spline_scaler is not None:
        weight = weight * layer.spline_scaler[o, i]
    return layer.base_weight[o, i] * layer.base_activation(t[:, 0]) + bases @ weight


def layer_edge_scores(
    layer: KANLinear,
    x: torch.Tensor,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    differentiable: bool = False,
) -> torch.Tensor:
    """Importance of every edge: ``mean_b |phi[o, i](x[b, i])|``, shape ``(out, in)``.

    ``x`` is the layer's input, ``(*, in_features)``. Computed over chunks of the batch and of the
    outputs with at most ``max_elements`` elements per intermediate. ``differentiable=True`` keeps
    the autograd graph (the sample-based regulariser of :func:`~efficient_kan.interpret.fit` uses it);
    by default it runs under ``no_grad``.
    """
    layer = _check_layer(layer)
    rows = _as_rows(layer, x)
    if rows.shape[0] == 0:
        raise ValueError("layer_edge_scores needs at least one sample")
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        sums: dict[int, torch.Tensor] = {}  # out-chunk start -> (Oc, I) running sum
        for _, outs, phi in _iter_phi(layer, rows, max_elements):
            part = phi.abs().sum(0)
            sums[outs.start] = part if outs.start not in sums else sums[outs.start] + part
        return torch.cat([sums[k] for k in sorted(sums)], dim=0) / rows.shape[0]


@torch.no_grad()
def layer_inputs(model: KAN, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every layer and the model's output: ``[x, h_1, ..., h_L]`` (no grad)."""
    model = _check_model(model)
    acts = [x.reshape(-1, model.layers[0].in_features)]
    for layer in model.layers:
        acts.append(layer(acts[-1]))
    return acts


def edge_scores(
    model: KAN, x: torch.Tensor, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> list[torch.Tensor]:
    """:func:`layer_edge_scores` of every layer of ``model`` on model input ``x``: a list of ``(out, in)``."""
    acts = layer_inputs(model, x)
    return [
        layer_edge_scores(layer, a, max_elements=max_elements)
        for layer, a in zip(model.layers, acts[:-1], strict=True)
    ]


def node_scores(
    model: KAN,
    x: torch.Tensor | None = None,
    *,
    scores: list[torch.Tensor] | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Incoming and outgoing scores of every node, from data ``x`` or precomputed edge ``scores``.

    Returns ``(incoming, outgoing)``, two lists over the ``L + 1`` node layers (inputs, hidden
    layers, outputs): ``incoming[l][i] = max_k scores[l-1][i, k]`` (``None`` for the inputs) and
    ``outgoing[l][i] = max_j scores[l][j, i]`` (``None`` for the outputs). pykan prunes a hidden
    node when either of them is under the threshold.
    """
    model = _check_model(model)
    if scores is None:
        if x is None:
            raise ValueError("node_scores needs data x or precomputed edge scores")
        scores = edge_scores(model, x, max_elements=max_elements)
    if len(scores) != len(model.layers):
        raise ValueError(f"expected {len(model.layers)} score matrices, got {len(scores)}")
    incoming: list[torch.Tensor | None] = [None] + [s.amax(dim=1) for s in scores]
    outgoing: list[torch.Tensor | None] = [s.amax(dim=0) for s in scores] + [None]
    return incoming, outgoing


@torch.no_grad()
def _layer_edge_std(layer: KANLinear, x: torch.Tensor, max_elements: int) -> torch.Tensor:
    """Standard deviation over the batch of every edge's activation, ``(out, in)`` (unbiased)."""
    rows = _as_rows(layer, x)
    n = rows.shape[0]
    if n < 2:
        raise ValueError("attribution scores need at least two samples")
    total = torch.zeros(layer.out_features, layer.in_features, dtype=torch.float64, device=rows.device)
    total_sq = torch.zeros_like(total)
    for _, outs, phi in _iter_phi(layer, rows, max_elements):
        phi = phi.double()
        total[outs] += phi.sum(0)
        total_sq[outs] += (phi * phi).sum(0)
    var = (total_sq - total * total / n) / (n - 1)
    return var.clamp_min(0.0).sqrt().to(layer.base_weight.dtype)


@torch.no_grad()
def attribution_scores(
    model: KAN, x: torch.Tensor, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """pykan 0.2's attribution scores of every edge and node on model input ``x``.

    Importance flows back from the outputs (each output node scores 1 for itself): an edge
    ``(o, i)`` gets its node's score times its share of the node's spread, ``std(phi[o, i]) /
    (std(node o) + 1e-4)``, and a node the sum of the scores of its outgoing edges. Averaged over
    the outputs. Unlike ``mean |phi|`` (:func:`edge_scores`), a small edge feeding a steep
    function downstream scores high. Returns ``(edges, nodes)``: ``edges[l]`` of shape
    ``(out, in)`` per layer, ``nodes[l]`` per node layer (inputs first, outputs last).
    """
    model = _check_model(model)
    acts = layer_inputs(model, x)
    n_out = model.layers[-1].out_features
    dtype, device = model.layers[-1].base_weight.dtype, acts[-1].device
    node = torch.eye(n_out, dtype=dtype, device=device)  # (outputs, nodes of the current layer)
    edges: list[torch.Tensor] = []
    nodes: list[torch.Tensor] = [node.mean(0)]
    for l in reversed(range(len(model.layers))):
        edge_std = _layer_edge_std(model.layers[l], acts[l], max_elements)  # (O, I)
        node_std = acts[l + 1].std(dim=0)  # (O,): the bias does not change it
        per_output = edge_std.unsqueeze(0) * (node / (node_std + 1e-4)).unsqueeze(-1)  # (K, O, I)
        node = per_output.sum(dim=1)  # (K, I)
        edges.append(per_output.mean(0))
        nodes.append(node.mean(0))
    return edges[::-1], nodes[::-1]
