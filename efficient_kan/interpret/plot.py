"""Pictures of a trained ``KAN``: the network with its edge functions, and input-importance heatmaps.

``plot`` draws inputs at the bottom and outputs at the top; every drawn edge is a line whose opacity
is its importance (``mean |phi|`` on the data, relative to the layer's largest) and, where few enough
edges are drawn, a small inset with the edge's learned function over the range its input takes on
the data. Wide layers (e.g. 784 MNIST inputs) draw only their ``top_k`` most important edges (or
those above ``threshold``), which keeps the figure readable; for image inputs,
``plot_input_heatmap`` shows how much each pixel matters for each output instead.

matplotlib is imported lazily and only through ``matplotlib.figure.Figure`` (no pyplot, no display):
it works under the Agg backend and in headless jobs. ``pip install efficient-kan[interpret]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from ..layer import KAN
from .edges import DEFAULT_MAX_ELEMENTS, _check_model, edge_function, layer_edge_scores, layer_inputs

__all__ = ["input_importance", "plot", "plot_input_heatmap"]


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib; install the interpret extra: pip install efficient-kan[interpret]"
        ) from err
    return Figure


def _select(scores: torch.Tensor, top_k: int | None, threshold: float | None) -> torch.Tensor:
    """Boolean mask of the edges to draw in one layer (scores relative to the layer's max)."""
    rel = scores / scores.max().clamp_min(torch.finfo(scores.dtype).tiny)
    mask = torch.ones_like(rel, dtype=torch.bool)
    if threshold is not None:
        mask &= rel >= threshold
    if top_k is not None and top_k < rel.numel():
        keep = torch.zeros(rel.numel(), dtype=torch.bool)
        keep[torch.topk(rel.flatten(), top_k).indices] = True
        mask &= keep.reshape(rel.shape)
    return mask


def plot(
    model: KAN,
    x: torch.Tensor,
    path: str | os.PathLike | None = None,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    max_edges: int = 60,
    max_insets: int = 40,
    n_points: int = 64,
    in_vars: Sequence[str] | None = None,
    out_vars: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    beta: float | None = None,
) -> Any:
    """Draw ``model``'s network on data ``x``; returns the matplotlib ``Figure`` (saved if ``path``).

    Args:
        x: model inputs ``(N, in)``: they give edge importance and the ranges the insets show.
        path: where to save; the extension picks the format (``.png``, ``.svg``, ``.pdf``).
        top_k, threshold: draw per layer only the ``top_k`` most important edges and/or those whose
            score is at least ``threshold`` times the layer's largest. Layers with more than
            ``max_edges`` edges and neither set draw their ``max_edges`` most important.
        max_insets: a layer draws function insets only if it draws at most this many edges.
        n_points: points per inset curve. in_vars / out_vars: node labels.
        beta: if given, an edge's opacity is ``tanh(beta * score)`` (pykan's rule, on scores
            relative to the layer's largest) instead of the relative score itself.
    """
    model = _check_model(model)
    acts = layer_inputs(model, x)
    widths = [model.layers[0].in_features] + [lay.out_features for lay in model.layers]
    fig, ax = _network_axes(widths, title, figsize)
    for l, lay in enumerate(model.layers):
        scores = layer_edge_scores(lay, acts[l], max_elements=max_elements).cpu()
        k = top_k
        if k is None and threshold is None and scores.numel() > max_edges:
            k = max_edges
        rel = scores / scores.max().clamp_min(torch.finfo(scores.dtype).tiny)
        drawn = torch.nonzero(_select(scores, k, threshold)).tolist()  # (o, i) pairs
        lo, hi = acts[l].amin(0).cpu(), acts[l].amax(0).cpu()
        for o, i in drawn:
            x0, x1 = _node_x(widths[l], i), _node_x(widths[l + 1], o)
            opacity = rel[o, i] if beta is None else torch.tanh(beta * rel[o, i])
            alpha = float(opacity.clamp(0.05, 1.0))
            ax.plot([x0, x1], [l, l + 1], color="black", alpha=alpha, lw=1.0, zorder=1)
            if len(drawn) <= max_insets:
                t = torch.linspace(float(lo[i]), float(hi[i]), n_points, dtype=lay.base_weight.dtype)
                size = min(0.8 / max(len(drawn), 1), 0.08)
                _draw_inset(fig, ax, lay, (o, i), t, ((x0 + x1) / 2, l + 0.5), size, alpha)
    _draw_nodes(ax, widths, in_vars, out_vars)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _node_x(width: int, j: int) -> float:
    """Horizontal position of node ``j`` of a row of ``width`` nodes (axes coordinates)."""
    return (j + 0.5) / width


def _network_axes(
    widths: Sequence[int], title: str | None, figsize: tuple[float, float] | None
) -> tuple[Any, Any]:
    """The figure and its axes for a network of node rows ``widths``: row ``l`` at height ``l``."""
    n_layers = len(widths) - 1
    fig = _figure_class()(figsize=figsize or (max(4.0, min(16.0, 1.2 * max(widths))), 2.6 * n_layers + 1.0))
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.92 if title else 0.96))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.15, n_layers + 0.15)
    ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig, ax


def _draw_inset(
    fig: Any,
    ax: Any,
    layer: Any,
    edge: tuple[int, int],
    t: torch.Tensor,
    center: tuple[float, float],
    size: float,
    alpha: float,
) -> None:
    """A small axes of side ``size`` (figure fraction) at ``center`` (data coordinates of ``ax``)
    with the function of ``layer``'s edge ``(o, i)`` over the inputs ``t``."""
    with torch.no_grad():
        y = edge_function(layer, *edge, t.to(layer.grid.device)).cpu()
    cx, cy = (ax.transData + fig.transFigure.inverted()).transform(center)
    sub = fig.add_axes((cx - size / 2, cy - size / 2, size, size))
    sub.plot(t.numpy(), y.numpy(), color="tab:blue", lw=1.2, alpha=max(alpha, 0.3))
    sub.set_xticks([])
    sub.set_yticks([])
    for spine in sub.spines.values():
        spine.set_alpha(alpha)


def _draw_nodes(
    ax: Any, widths: Sequence[int], in_vars: Sequence[str] | None, out_vars: Sequence[str] | None
) -> None:
    """Every row of nodes, the inputs (bottom) and outputs (top) labelled when names are given."""
    n_layers = len(widths) - 1
    for l, width in enumerate(widths):
        xs = [_node_x(width, j) for j in range(width)]
        ax.scatter(xs, [l] * width, s=max(4, 60 - width), color="black", zorder=3)
        labels = in_vars if l == 0 else out_vars if l == n_layers else None
        if labels is not None:
            for j, name in enumerate(labels):
                ax.text(xs[j], l - 0.1 if l == 0 else l + 0.08, str(name), ha="center", fontsize=9)


@torch.no_grad()
def input_importance(
    model: KAN, x: torch.Tensor, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> torch.Tensor:
    """Importance of every input for every output, ``(out, in)``, by path attribution.

    Layer by layer: an output's importance flows to each node of the layer below in proportion to
    the scores (``mean |phi|``) of the edges into it, each node passing its share on to its own
    inputs the same way. For one layer this is the edge scores themselves.
    """
    model = _check_model(model)
    acts = layer_inputs(model, x)
    total: torch.Tensor | None = None
    for l in reversed(range(len(model.layers))):
        s = layer_edge_scores(model.layers[l], acts[l], max_elements=max_elements)
        if total is None:
            total = s
        else:
            share = s / s.sum(dim=1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
            total = total @ share
    assert total is not None
    return total


def plot_input_heatmap(
    model: KAN,
    x: torch.Tensor,
    path: str | os.PathLike | None = None,
    *,
    image_shape: tuple[int, int] = (28, 28),
    outputs: Sequence[int] | None = None,
    out_names: Sequence[str] | None = None,
    cols: int = 5,
    cmap: str = "viridis",
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Any:
    """Heatmaps of :func:`input_importance` over the input pixels, one panel per output.

    ``image_shape`` must multiply to the model's input width (28 x 28 for MNIST). Returns the
    ``Figure``; saves it to ``path`` if given.
    """
    Figure = _figure_class()
    model = _check_model(model)
    h, w = image_shape
    if h * w != model.layers[0].in_features:
        raise ValueError(f"image_shape {image_shape} does not match {model.layers[0].in_features} inputs")
    imp = input_importance(model, x, max_elements=max_elements).cpu()
    outs = list(range(imp.shape[0])) if outputs is None else list(outputs)
    n = len(outs)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows))
    for k, o in enumerate(outs):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(imp[o].reshape(h, w).float().numpy(), cmap=cmap)
        ax.set_title(out_names[k] if out_names is not None else f"output {o}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
