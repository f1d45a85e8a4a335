"""Symbolic formulas from a trained ``KAN``: fit every edge to ``c * f(a * t + b) + d``.

How a symbolic edge is represented: a side table ``model.symbolic_edges`` (a plain attribute,
not part of the state dict) maps ``(layer, i, o)`` to a :class:`SymbolicEdge` with the chosen
function and its constants. The numeric layers are left untouched, so the model keeps computing
its spline function; :func:`symbolic_forward` evaluates the network with the fixed edges replaced
by their formulas (unfixed edges stay numeric), :func:`refine_symbolic` refits all constants
(``a, b, c, d`` of every edge and the output biases) jointly on data with LBFGS, and
:func:`symbolic_formula` composes the sympy expressions of the outputs in ``x_1 .. x_n``.
A layer's ``bias[o]`` (if any) is the constant of output node ``o``: it is added to that node's sum.

Functions are chosen as in pykan: for each candidate ``f`` a grid search over ``(a, b)`` with
``(c, d)`` by linear regression, then a least-squares polish of all four; the pick minimises
``(1 - weight_simple) * log2(max(1 - R^2, r2_tolerance)) + weight_simple * complexity(f)``.
sympy is imported lazily (``pip install efficient-kan[interpret]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..layer import KAN
from .edges import _check_model, edge_function, layer_inputs

__all__ = [
    "SYMBOLIC_LIB",
    "SymbolicEdge",
    "auto_symbolic",
    "fit_edge",
    "fix_symbolic",
    "refine_symbolic",
    "round_formula",
    "suggest_symbolic",
    "symbolic_formula",
    "symbolic_forward",
]

INTERPRET_EXTRA_HINT = "install the interpret extra: pip install efficient-kan[interpret]"


def _sympy():
    try:
        import sympy
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"symbolic formulas need sympy; {INTERPRET_EXTRA_HINT}") from err
    return sympy


def _sp(name: str) -> Callable[[Any], Any]:
    """A sympy function by name, resolved at call time (sympy stays a lazy import)."""
    return lambda z: getattr(_sympy(), name)(z)


#: name -> (torch function, sympy function, complexity). Extend by passing a dict to ``lib``.
SYMBOLIC_LIB: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[Any], Any], int]] = {
    "x": (lambda t: t, lambda z: z, 1),
    "x^2": (lambda t: t**2, lambda z: z**2, 2),
    "x^3": (lambda t: t**3, lambda z: z**3, 3),
    "x^4": (lambda t: t**4, lambda z: z**4, 3),
    "1/x": (lambda t: 1 / t, lambda z: 1 / z, 2),
    "sqrt": (torch.sqrt, _sp("sqrt"), 2),
    "exp": (torch.exp, _sp("exp"), 2),
    "log": (torch.log, _sp("log"), 2),
    "sin": (torch.sin, _sp("sin"), 2),
    "cos": (torch.cos, _sp("cos"), 2),
    "tan": (torch.tan, _sp("tan"), 3),
    "tanh": (torch.tanh, _sp("tanh"), 3),
    "abs": (torch.abs, _sp("Abs"), 3),
    "sigmoid": (torch.sigmoid, lambda z: 1 / (1 + _sympy().exp(-z)), 4),
    "gaussian": (lambda t: torch.exp(-(t**2)), lambda z: _sympy().exp(-(z**2)), 3),
    "arctan": (torch.atan, _sp("atan"), 4),
    "0": (lambda t: torch.zeros_like(t), lambda z: 0, 0),
}

LibSpec = Iterable[str] | Mapping[str, tuple]


@dataclass
class SymbolicEdge:
    """One edge's formula ``c * f(a * t + b) + d`` and how well it fitted (``r2`` on its samples)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    sympy_fn: Callable[[Any], Any]
    complexity: int
    a: float
    b: float
    c: float
    d: float
    r2: float

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return self.c * self.fn(self.a * t + self.b) + self.d

    def expr(self, z: Any) -> Any:
        """The sympy expression of this edge applied to ``z``."""
        if self.name == "0":
            return _sympy().Float(self.d)
        return self.c * self.sympy_fn(self.a * z + self.b) + self.d


def _resolve_lib(lib: LibSpec | None) -> dict[str, tuple]:
    if lib is None:
        return dict(SYMBOLIC_LIB)
    if isinstance(lib, Mapping):
        out = {}
        for name, spec in lib.items():
            spec = tuple(spec)
            if len(spec) == 2:
                spec = (*spec, 2)
            if len(spec) != 3 or not callable(spec[0]) or not callable(spec[1]):
                raise ValueError(
                    f"lib[{name!r}] must be (torch_fn, sympy_fn) or (torch_fn, sympy_fn, complexity)"
                )
            out[name] = spec
        return out
    if isinstance(lib, str):
        raise TypeError("lib must be a list of names or a dict, not a string")
    out = {}
    for name in lib:
        if name not in SYMBOLIC_LIB:
            raise KeyError(f"unknown symbolic function {name!r}; known: {sorted(SYMBOLIC_LIB)}")
        out[name] = SYMBOLIC_LIB[name]
    return out


def _r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    sst = ((y - y.mean()) ** 2).sum()
    if float(sst) == 0.0:
        return 1.0 if bool(torch.allclose(pred, y)) else 0.0
    return float(1 - ((pred - y) ** 2).sum() / sst)


def fit_edge(
    t: torch.Tensor,
    y: torch.Tensor,
    name: str,
    spec: tuple,
    *,
    a_range: tuple[float, float] = (-10.0, 10.0),
    b_range: tuple[float, float] = (-10.0, 10.0),
    grid_number: int = 101,
    polish: bool = True,
) -> SymbolicEdge:
    """Fit ``y ~ c * f(a * t + b) + d`` on samples ``(t, y)``; returns the edge with its R^2.

    ``(a, b)`` on a ``grid_number x grid_number`` grid (``c, d`` by linear regression for each),
    then all four polished by least squares (scipy), kept only where that improves the fit.
    """
    fn, sympy_fn, complexity = spec
    t = t.detach().double().flatten()
    y = y.detach().double().flatten()
    if t.numel() != y.numel() or t.numel() < 2:
        raise ValueError("fit_edge needs at least two (t, y) samples of equal count")

    def make(a: float, b: float, c: float, d: float, r2: float) -> SymbolicEdge:
        return SymbolicEdge(name, fn, sympy_fn, int(complexity), a, b, c, d, r2)

    if name == "0":
        return make(0.0, 0.0, 0.0, float(y.mean()), 0.0)
    if name == "x":  # affine: a, b are redundant with c, d
        design = torch.stack([t, torch.ones_like(t)], dim=1)
        c, d = torch.linalg.lstsq(design, y.unsqueeze(1)).solution.flatten().tolist()
        return make(1.0, 0.0, c, d, _r2(c * t + d, y))

    a_grid = torch.linspace(*a_range, grid_number, dtype=torch.float64)
    b_grid = torch.linspace(*b_range, grid_number, dtype=torch.float64)
    aa, bb = torch.meshgrid(a_grid, b_grid, indexing="ij")
    aa, bb = aa.reshape(-1, 1), bb.reshape(-1, 1)
    with torch.no_grad():
        u = fn(aa * t + bb)  # (grid^2, N)
        valid = torch.isfinite(u).all(dim=1) & (u.abs().amax(dim=1) < 1e12)
        u = torch.where(valid.unsqueeze(1), u, torch.zeros_like(u))
        uc = u - u.mean(dim=1, keepdim=True)
        yc = y - y.mean()
        cov = uc @ yc
        var_u = (uc**2).sum(dim=1)
        var_y = (yc**2).sum()
        r2 = torch.where(
            valid & (var_u > 1e-12 * var_u.amax().clamp_min(1e-300)),
            cov**2 / (var_u * var_y).clamp_min(1e-300),
            torch.full_like(cov, -1.0),
        )
    best = int(torch.argmax(r2))
    if float(r2[best]) < 0:
        return make(0.0, 0.0, 0.0, float(y.mean()), 0.0)
    a, b = float(aa[best]), float(bb[best])
    c = float(cov[best] / var_u[best])
    d = float(y.mean() - c * u[best].mean())
    edge = make(a, b, c, d, _r2(c * fn(a * t + b) + d, y))
    if polish:
        edge = _polish(edge, t, y)
    return edge


def _polish(edge: SymbolicEdge, t: torch.Tensor, y: torch.Tensor) -> SymbolicEdge:
    try:
        from scipy.optimize import least_squares
    except ImportError as err:  # pragma: no cover
        raise ImportError(f"fitting symbolic edges needs scipy; {INTERPRET_EXTRA_HINT}") from err
    import numpy as np

    def residual(p: np.ndarray) -> np.ndarray:
        a, b, c, d = (float(v) for v in p)
        r = (c * edge.fn(a * t + b) + d - y).numpy()
        return np.where(np.isfinite(r), r, 1e6)

    try:
        sol = least_squares(residual, np.array([edge.a, edge.b, edge.c, edge.d]), method="lm", max_nfev=400)
    except (ValueError, FloatingPointError):
        return edge
    a, b, c, d = (float(v) for v in sol.x)
    with torch.no_grad():
        pred = c * edge.fn(a * t + b) + d
    if not bool(torch.isfinite(pred).all()):
        return edge
    r2 = _r2(pred, y)
    if r2 <= edge.r2:
        return edge
    return SymbolicEdge(edge.name, edge.fn, edge.sympy_fn, edge.complexity, a, b, c, d, r2)


def _edge_samples(model: KAN, layer: int, i: int, acts: list[torch.Tensor] | None, n: int) -> torch.Tensor:
    """Points of layer ``layer``'s input ``i``: data samples if given, else its grid's interior."""
    lay = model.layers[layer]
    if acts is not None:
        t = acts[layer][:, i].detach()
        if t.numel() > n:
            idx = torch.linspace(0, t.numel() - 1, n).round().long()
            t = torch.sort(t).values[idx]
        return t
    k = lay.spline_order
    lo, hi = float(lay.grid[i, k]), float(lay.grid[i, -k - 1])
    return torch.linspace(lo, hi, n, dtype=lay.base_weight.dtype, device=lay.grid.device)


def _check_edge(model: KAN, layer: int, i: int, o: int) -> None:
    if not 0 <= layer < len(model.layers):
        raise IndexError(f"layer {layer} out of range for a KAN with {len(model.layers)} layers")
    lay = model.layers[layer]
    if not (0 <= i < lay.in_features and 0 <= o < lay.out_features):
        raise IndexError(
            f"edge (i={i}, o={o}) out of range for layer {layer} ({lay.in_features} -> {lay.out_features})"
        )


def _table(model: KAN) -> dict[tuple[int, int, int], SymbolicEdge]:
    table = getattr(model, "symbolic_edges", None)
    if table is None:
        table = {}
        model.symbolic_edges = table
    return table


def _score(edge: SymbolicEdge, weight_simple: float, r2_tolerance: float) -> float:
    misfit = max(1.0 - edge.r2, r2_tolerance)
    return (1 - weight_simple) * math.log2(misfit) + weight_simple * edge.complexity


def _best_edge(
    t: torch.Tensor,
    y: torch.Tensor,
    lib: dict[str, tuple],
    weight_simple: float,
    r2_tolerance: float,
    **fit_kwargs,
) -> SymbolicEdge:
    fits = [fit_edge(t, y, name, spec, **fit_kwargs) for name, spec in lib.items()]
    # min() keeps the first of equal scores: ties go to the earlier library entry.
    return min(fits, key=lambda e: _score(e, weight_simple, r2_tolerance))


@torch.no_grad()
def fix_symbolic(
    model: KAN,
    layer: int,
    i: int,
    o: int,
    name: str,
    *,
    x: torch.Tensor | None = None,
    lib: LibSpec | None = None,
    n_samples: int = 200,
    **fit_kwargs,
) -> SymbolicEdge:
    """Fix edge ``(layer, i -> o)`` to the function ``name`` (fitting ``a, b, c, d``); returns it.

    The edge is sampled on layer inputs computed from model input ``x`` (if given) or on its grid's
    interior. ``lib`` supplies ``name`` if it is not in :data:`SYMBOLIC_LIB`.
    """
    model = _check_model(model)
    _check_edge(model, layer, i, o)
    table = _resolve_lib(lib) if lib is not None else dict(SYMBOLIC_LIB)
    if name not in table:
        raise KeyError(f"unknown symbolic function {name!r}; known: {sorted(table)}")
    acts = layer_inputs(model, x) if x is not None else None
    t = _edge_samples(model, layer, i, acts, n_samples)
    y = edge_function(model.layers[layer], o, i, t)
    edge = fit_edge(t, y, name, table[name], **fit_kwargs)
    _table(model)[(layer, i, o)] = edge
    return edge


@torch.no_grad()
def auto_symbolic(
    model: KAN,
    lib: LibSpec | None = None,
    *,
    x: torch.Tensor | None = None,
    weight_simple: float = 0.8,
    r2_tolerance: float = 1e-4,
    r2_threshold: float = 0.0,
    n_samples: int = 200,
    overwrite: bool = False,
    verbose: bool = False,
    **fit_kwargs,
) -> dict[tuple[int, int, int], SymbolicEdge]:
    """Choose a library function for every edge not fixed yet; returns the side table.

    Candidates come from ``lib`` (names from :data:`SYMBOLIC_LIB` or a dict name ->
    ``(torch_fn, sympy_fn[, complexity])``; default all of :data:`SYMBOLIC_LIB`). Each edge is
    sampled as in :func:`fix_symbolic`. The pick minimises ``(1 - weight_simple) *
    log2(max(1 - R^2, r2_tolerance)) + weight_simple * complexity`` (pykan's rule with a noise
    floor: fits better than ``r2_tolerance`` count as exact, so the simpler function wins, then the
    earlier library entry; without it, ``c * sin(a * t + b)`` with tiny ``a`` and huge ``c`` beats
    ``t^2`` on a learned, slightly noisy parabola). If the pick's R^2 is below ``r2_threshold`` the
    edge is set to the constant ``"0"`` fit. Edges fixed by hand are kept unless ``overwrite``.
    """
    model = _check_model(model)
    library = _resolve_lib(lib)
    if not library:
        raise ValueError("the symbolic library is empty")
    acts = layer_inputs(model, x) if x is not None else None
    table = _table(model)
    for l, lay in enumerate(model.layers):
        for i in range(lay.in_features):
            t = _edge_samples(model, l, i, acts, n_samples)
            for o in range(lay.out_features):
                if (l, i, o) in table and not overwrite:
                    continue
                y = edge_function(lay, o, i, t)
                edge = _best_edge(t, y, library, weight_simple, r2_tolerance, **fit_kwargs)
                if edge.r2 < r2_threshold:
                    edge = fit_edge(t, y, "0", SYMBOLIC_LIB["0"])
                table[(l, i, o)] = edge
                if verbose:
                    print(f"layer {l}, edge {i} -> {o}: {edge.name}, r2={edge.r2:.6f}")
    return table


def _require_all(model: KAN) -> dict[tuple[int, int, int], SymbolicEdge]:
    table = getattr(model, "symbolic_edges", None) or {}
    missing = [
        (l, i, o)
        for l, lay in enumerate(model.layers)
        for i in range(lay.in_features)
        for o in range(lay.out_features)
        if (l, i, o) not in table
    ]
    if missing:
        raise ValueError(
            f"{len(missing)} edges have no symbolic fit (first: {missing[:5]}); run auto_symbolic "
            "or fix_symbolic first"
        )
    return table


def _forward(
    model: KAN,
    x: torch.Tensor,
    params: dict[tuple[int, int, int], torch.Tensor] | None,
    biases: list[torch.Tensor | None] | None,
) -> torch.Tensor:
    table = getattr(model, "symbolic_edges", None) or {}
    h = x.reshape(-1, model.layers[0].in_features)
    for l, lay in enumerate(model.layers):
        cols = []
        for o in range(lay.out_features):
            total = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
            for i in range(lay.in_features):
                edge = table.get((l, i, o))
                if edge is None:
                    total = total + edge_function(lay, o, i, h[:, i]).to(h.dtype)
                elif params is not None:
                    a, b, c, d = params[(l, i, o)]
                    total = total + c * edge.fn(a * h[:, i] + b) + d
                else:
                    total = total + edge(h[:, i])
            bias = lay.bias if biases is None else biases[l]
            if bias is not None:
                total = total + bias[o].to(h.dtype)
            cols.append(total)
        h = torch.stack(cols, dim=1)
    return h


def symbolic_forward(model: KAN, x: torch.Tensor) -> torch.Tensor:
    """The network with fixed edges replaced by their formulas (others numeric): ``(N, out)``."""
    model = _check_model(model)
    return _forward(model, x, None, None)


def refine_symbolic(
    model: KAN,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 200,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Refit every edge's ``a, b, c, d`` and the layers' biases jointly on ``(x, y)``, in float64.

    Needs every edge fixed. With the default squared error this is a Levenberg-Marquardt
    least-squares fit (scipy; on exact data it reaches machine precision); with a ``loss_fn``
    (e.g. cross-entropy) it is LBFGS with ``steps`` iterations. Of a ``"0"`` edge only the constant
    ``d`` is free. The side table and the layers' ``bias`` are updated only where the loss improved
    and stayed finite. Returns the final loss (mean squared error by default).
    """
    model = _check_model(model)
    table = _require_all(model)
    x = x.detach().double()
    y = y.detach()
    if y.is_floating_point():  # integer class labels stay integers (cross-entropy)
        y = y.double()
    packed = _JointParameters.of(model, table)

    def loss_of(vec: torch.Tensor) -> torch.Tensor:
        pred = _forward(model, x, *packed.unpack(model, vec))
        return torch.nn.functional.mse_loss(pred, y) if loss_fn is None else loss_fn(pred, y)

    vec0 = packed.full0[packed.free_mask].clone()
    with torch.no_grad():
        start = float(loss_of(vec0))
    if steps <= 0 or vec0.numel() == 0:
        return start
    if loss_fn is None:

        def residual(vec: torch.Tensor) -> torch.Tensor:
            return (_forward(model, x, *packed.unpack(model, vec)) - y).flatten()

        vec = _least_squares(residual, vec0, y.numel(), steps)
    else:
        vec = _lbfgs(loss_of, vec0, steps)
    with torch.no_grad():
        final = float(loss_of(vec))
        if not math.isfinite(final) or final > start:
            return start
        params, biases = packed.unpack(model, vec)
        for k in packed.keys:
            a, b, c, d = (float(v) for v in params[k])
            e = table[k]
            table[k] = SymbolicEdge(e.name, e.fn, e.sympy_fn, e.complexity, a, b, c, d, e.r2)
        for lay, bias in zip(model.layers, biases, strict=True):
            if bias is not None:
                lay.bias.copy_(bias.to(lay.bias.dtype))
    return final


@dataclass
class _JointParameters:
    """Every edge's ``a, b, c, d`` then every layer bias, as one float64 vector ``full0``, and which
    of its entries ``refine_symbolic`` may change (of a ``"0"`` edge only ``d``)."""

    keys: list[tuple[int, int, int]]
    free_mask: torch.Tensor
    full0: torch.Tensor

    @classmethod
    def of(cls, model: KAN, table: dict[tuple[int, int, int], SymbolicEdge]) -> _JointParameters:
        keys = sorted(table)
        init = [
            torch.tensor([table[k].a, table[k].b, table[k].c, table[k].d], dtype=torch.float64) for k in keys
        ]
        free_mask = torch.cat(
            [torch.tensor([table[k].name != "0"] * 3 + [True]) for k in keys]
            + [torch.ones(lay.out_features, dtype=torch.bool) for lay in model.layers if lay.bias is not None]
        )
        full0 = torch.cat(init + [lay.bias.detach().double() for lay in model.layers if lay.bias is not None])
        return cls(keys, free_mask, full0)

    def unpack(self, model: KAN, vec: torch.Tensor) -> tuple[dict, list]:
        """The per-edge parameters and per-layer biases with the free entries set to ``vec``."""
        full = self.full0.clone()
        full = (
            full.masked_scatter(self.free_mask, vec)
            if vec.requires_grad
            else full.index_put((self.free_mask,), vec)
        )
        params = {k: full[4 * j : 4 * j + 4] for j, k in enumerate(self.keys)}
        offset, biases = 4 * len(self.keys), []
        for lay in model.layers:
            if lay.bias is None:
                biases.append(None)
            else:
                biases.append(full[offset : offset + lay.out_features])
                offset += lay.out_features
        return params, biases


def _least_squares(
    residual: Callable[[torch.Tensor], torch.Tensor], vec0: torch.Tensor, n_residuals: int, steps: int
) -> torch.Tensor:
    """Minimises ``|residual(vec)|^2`` from ``vec0`` with scipy (Levenberg-Marquardt where there
    are at least as many residuals as unknowns); non-finite residuals count as 1e6."""
    try:
        from scipy.optimize import least_squares
    except ImportError as err:  # pragma: no cover
        raise ImportError(f"refine_symbolic needs scipy; {INTERPRET_EXTRA_HINT}") from err
    import numpy as np

    def residual_np(v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            r = residual(torch.as_tensor(v)).numpy()
        return np.where(np.isfinite(r), r, 1e6)

    method = "lm" if n_residuals >= vec0.numel() else "trf"
    sol = least_squares(
        residual_np,
        vec0.numpy(),
        method=method,
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        max_nfev=100 * steps,
    )
    return torch.as_tensor(sol.x, dtype=torch.float64)


def _lbfgs(loss_of: Callable[[torch.Tensor], torch.Tensor], vec0: torch.Tensor, steps: int) -> torch.Tensor:
    """Minimises ``loss_of(vec)`` from ``vec0`` with LBFGS (``steps`` iterations at most)."""
    vec = vec0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [vec],
        lr=1.0,
        history_size=20,
        max_iter=steps,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_of(vec)
        loss.backward()
        return loss

    opt.step(closure)
    return vec.detach()


def symbolic_formula(
    model: KAN, var_names: Sequence[str] | None = None, *, digits: int | None = None
) -> list[Any]:
    """Sympy expressions of the outputs in ``x_1 .. x_n`` (or ``var_names``), one per output.

    Every edge must have a symbolic fit. Evaluate with
    ``sympy.lambdify(sympy.symbols("x_1:%d" % (n + 1)), expr)``. ``digits`` gathers and rounds
    the constants to that many significant digits (:func:`round_formula`).
    """
    sympy = _sympy()
    model = _check_model(model)
    table = _require_all(model)
    n_in = model.layers[0].in_features
    names = list(var_names) if var_names is not None else [f"x_{i + 1}" for i in range(n_in)]
    if len(names) != n_in:
        raise ValueError(f"expected {n_in} variable names, got {len(names)}")
    nodes: list[Any] = [sympy.Symbol(n) for n in names]
    for l, lay in enumerate(model.layers):
        nxt = []
        for o in range(lay.out_features):
            total = sympy.Integer(0)
            for i in range(lay.in_features):
                total = total + table[(l, i, o)].expr(nodes[i])
            if lay.bias is not None:
                total = total + float(lay.bias[o].detach())
            nxt.append(total)
        nodes = nxt
    if digits is not None:
        nodes = [round_formula(e, digits) for e in nodes]
    return nodes


def round_formula(expr: Any, digits: int = 4) -> Any:
    """``expr`` with its constants gathered, then rounded to ``digits`` significant digits.

    Rounding each constant of a composed formula on its own does not give the function back to
    the printed precision: ``0.0363668*(5.2438161*x)**2`` is ``1.0000*x**2``, but its constants
    rounded separately make ``0.0364*27.4975*x**2 = 1.0009*x**2``. So the constants are first
    gathered exactly: a positive factor of a sum under a power or ``Abs`` is moved out,
    ``c*(a*x + b)**n = c*a**n*(x + b/a)**n`` (``a > 0``; any ``n``, so also ``sqrt`` and ``1/x``),
    and sympy multiplies it into the coefficient outside (and distributes numbers over sums). Then
    every float is rounded to ``digits`` significant digits, and a term of a sum whose coefficient
    is below half a unit in the last printed digit of the sum's largest coefficient is dropped
    (it is below the printed precision where the terms' variable parts are of comparable size, as
    on a KAN's grid; typically the ~1e-16 residue of a fit, as in ``sin(3.14159*x + 1e-17)``).
    Each printed constant is then within half a unit in its last digit of the gathered one.
    """
    sympy = _sympy()
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits must be an integer >= 1 (significant digits), got {digits!r}")
    expr = _gather_constants(sympy.sympify(expr))
    for _ in range(3):  # sympy can combine rounded constants into new ones (0.5*s + 0.3*s): again
        new = _round_constants(expr, digits)
        if new == expr:
            break
        expr = new
    return expr


def _coefficient(term: Any) -> float:
    """The numeric factor of a term of a sum (the number itself for a number term)."""
    return abs(float(term.as_coeff_Mul()[0]))


def _gather_constants(expr: Any) -> Any:
    """``expr`` with the largest positive coefficient of every sum under a power or ``Abs`` moved out.

    Bottom-up, so that sympy's own evaluation (a number times a sum is distributed, numbers in a
    product are multiplied, ``exp(u + b) = exp(b)*exp(u)``) combines what was moved out with the
    coefficient outside. Exact up to the float arithmetic of the division.
    """
    sympy = _sympy()
    if not expr.args:
        return expr
    expr = expr.func(*(_gather_constants(arg) for arg in expr.args))
    if isinstance(expr, sympy.Pow) and expr.base.is_Add:
        inner, exponent = expr.base, expr.exp
    elif isinstance(expr, sympy.Abs) and expr.args[0].is_Add:
        inner, exponent = expr.args[0], sympy.Integer(1)
    else:
        return expr
    # The scale of the variable terms (not the constant one): (5.24*x + 3)**2 -> 27.5*(x + 0.572)**2.
    scale = max((_coefficient(t) for t in inner.args if not t.is_Number), default=0.0)
    if scale == 0.0 or scale == 1.0 or not math.isfinite(scale):
        return expr
    k = sympy.Float(scale)
    unit = sympy.Add(*(_divide_term(t, k) for t in inner.args))
    # (k*u)**n = k**n * u**n and |k*u| = k*|u| hold for every u because k > 0.
    return k**exponent * (sympy.Abs(unit) if isinstance(expr, sympy.Abs) else unit**exponent)


def _divide_term(term: Any, k: Any) -> Any:
    """``term / k``, with a coefficient of exactly ``+-k`` made ``+-1`` (``x``, not ``1.0*x``)."""
    coeff, rest = term.as_coeff_Mul()
    if float(coeff) == float(k):
        return rest
    if float(coeff) == -float(k):
        return -rest
    return term / k


def _round_constants(expr: Any, digits: int) -> Any:
    """Floats of ``expr`` rounded to ``digits`` significant digits; negligible terms of sums dropped."""
    sympy = _sympy()
    if expr.is_Float:
        return sympy.Float(float(f"{float(expr):.{digits}g}"))
    if not expr.args:  # symbols and exact numbers (integer and rational exponents) stay
        return expr
    if expr.is_Add:
        # Half a unit in the last printed digit of the largest coefficient is at least this.
        floor = 0.5 * 10.0**-digits * max(_coefficient(t) for t in expr.args)
        kept = [t for t in expr.args if _coefficient(t) >= floor]
        return sympy.Add(*(_round_constants(t, digits) for t in kept))
    return expr.func(*(_round_constants(arg, digits) for arg in expr.args))


@torch.no_grad()
def suggest_symbolic(
    model: KAN,
    layer: int,
    i: int,
    o: int,
    lib: LibSpec | None = None,
    *,
    x: torch.Tensor | None = None,
    topk: int | None = 5,
    weight_simple: float = 0.8,
    r2_tolerance: float = 1e-4,
    n_samples: int = 200,
    **fit_kwargs,
) -> list[tuple[SymbolicEdge, float]]:
    """The library functions that best fit edge ``(layer, i -> o)``, best first; fixes nothing.

    Every candidate of ``lib`` is fitted as in :func:`auto_symbolic` (same sampling, same score:
    ``(1 - weight_simple) * log2(max(1 - R^2, r2_tolerance)) + weight_simple * complexity``, lower
    is better). Returns ``[(edge, score), ...]`` for the ``topk`` best (all if ``topk`` is None);
    :func:`auto_symbolic` would pick the first. To use one: ``fix_symbolic(model, layer, i, o, name)``.
    """
    model = _check_model(model)
    _check_edge(model, layer, i, o)
    library = _resolve_lib(lib)
    if not library:
        raise ValueError("the symbolic library is empty")
    if topk is not None and topk < 1:
        raise ValueError(f"topk must be >= 1 or None, got {topk}")
    acts = layer_inputs(model, x) if x is not None else None
    t = _edge_samples(model, layer, i, acts, n_samples)
    y = edge_function(model.layers[layer], o, i, t)
    fits = [fit_edge(t, y, name, spec, **fit_kwargs) for name, spec in library.items()]
    ranked = sorted(
        ((edge, _score(edge, weight_simple, r2_tolerance)) for edge in fits), key=lambda pair: pair[1]
    )  # sorted() is stable: ties keep library order, as auto_symbolic's min() does
    return ranked if topk is None else ranked[:topk]
