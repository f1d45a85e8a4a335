"""Interpretability tools for KANs: edge functions and importance, sample-regularised training,
plots, pruning and symbolic formulas (the pykan workflow, on the fast ``KANLinear``).

Plotting and symbolic formulas need the ``interpret`` extra (``pip install efficient-kan[interpret]``:
matplotlib, sympy, scipy); they are imported only when those functions are called.
"""

from .edges import (
    attribution_scores,
    edge_function,
    edge_scores,
    edge_values,
    layer_edge_scores,
    layer_inputs,
    node_scores,
)
from .fitting import create_dataset, fit, sample_regularization
from .plot import input_importance, plot, plot_input_heatmap
from .prune import mask_pruned_gradients, prune, prune_edges, set_edge_mask, slice_layer
from .symbolic import (
    SYMBOLIC_LIB,
    SymbolicEdge,
    auto_symbolic,
    fit_edge,
    fix_symbolic,
    refine_symbolic,
    round_formula,
    suggest_symbolic,
    symbolic_formula,
    symbolic_forward,
)

__all__ = [
    "SYMBOLIC_LIB",
    "SymbolicEdge",
    "attribution_scores",
    "auto_symbolic",
    "create_dataset",
    "edge_function",
    "edge_scores",
    "edge_values",
    "fit",
    "fit_edge",
    "input_importance",
    "fix_symbolic",
    "layer_edge_scores",
    "layer_inputs",
    "mask_pruned_gradients",
    "node_scores",
    "plot",
    "plot_input_heatmap",
    "prune",
    "prune_edges",
    "refine_symbolic",
    "round_formula",
    "sample_regularization",
    "set_edge_mask",
    "slice_layer",
    "suggest_symbolic",
    "symbolic_formula",
    "symbolic_forward",
]
