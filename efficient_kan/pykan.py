"""pykan's API on efficient_kan: replace ``from kan import *`` by ``from efficient_kan.pykan import *``.

The tutorials' code runs unchanged::

    from efficient_kan.pykan import *

    model = KAN(width=[2, 5, 1], grid=5, k=3, seed=0)
    f = lambda x: torch.exp(torch.sin(torch.pi * x[:, [0]]) + x[:, [1]] ** 2)
    dataset = create_dataset(f, n_var=2)
    model.fit(dataset, opt="LBFGS", steps=20, lamb=0.01)
    model.plot()
    model = model.prune()
    model.auto_symbolic(lib=["x", "x^2", "exp", "sin"])
    formula = model.symbolic_formula()[0][0]

``KAN`` here is :class:`efficient_kan.KAN` (the same layers, checkpoints and fast paths) with pykan's
constructor and methods. The methods are thin: training, pruning, symbolic fits and plots are
:mod:`efficient_kan.interpret`'s, grid extension is :meth:`efficient_kan.KANLinear.refine`.

What differs from pykan, on purpose:

- Nothing is written to disk unless asked: no ``./model`` checkpoints (``auto_save`` defaults to
  False, and True is refused), no ``./figures`` from ``plot`` (it returns a matplotlib ``Figure``).
- Datasets may be float64 or integer (numpy's default, ``torch.from_numpy``): inputs are cast to the
  model's dtype, regression labels too; integer class labels stay integer for cross-entropy.
- Every node has a trainable bias (``bias=True``; pykan's node biases are frozen at zero unless
  ``affine_trainable``): the regulariser can then shrink edges without losing the node's constant.
- The regulariser and the plots' opacities use the KAN paper's ``mean |phi|`` of each edge on the
  data (pykan 0.2 normalises it by the input's spread); pruning uses pykan 0.2's attribution
  scores.
- After ``auto_symbolic`` the model computes its formulas (as in pykan), and ``fit`` then refits all
  their constants jointly (a least-squares solve for squared error, LBFGS for another ``loss_fn``)
  instead of pykan's gradient steps.

pykan options that have no counterpart raise ``NotImplementedError`` naming the option; none is
silently ignored. ``from efficient_kan.pykan import *`` also brings ``torch``, ``nn`` and ``np``, as
``from kan import *`` does.
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from . import interpret
from .interpret.symbolic import SymbolicEdge
from .layer import KAN as _KAN
from .layer import KANLinear

try:  # pykan's star import brings numpy as np; numpy is optional for efficient_kan itself
    import numpy as np
except ImportError:  # pragma: no cover - depends on the environment
    np = None

__all__ = [
    "KAN",
    "MultKAN",
    "SYMBOLIC_LIB",
    "add_symbolic",
    "create_dataset",
    "ex_round",
    "nn",
    "torch",
]
if np is not None:
    __all__.append("np")

Dataset = dict[str, torch.Tensor]


def _sympy_fn(name: str) -> Callable[[Any], Any]:
    """A sympy function by name, resolved at call time (sympy stays a lazy import)."""

    def fn(z: Any) -> Any:
        import sympy

        return getattr(sympy, name)(z)

    return fn


def _sympy_power(p: Any) -> Callable[[Any], Any]:
    def fn(z: Any) -> Any:
        import sympy

        return z ** sympy.sympify(p)

    return fn


#: pykan's symbolic library: name -> ``(torch_fn, sympy_fn, complexity)``: efficient_kan's
#: :data:`~efficient_kan.interpret.SYMBOLIC_LIB` plus the names only pykan has (with pykan's
#: complexities). ``auto_symbolic()`` without ``lib`` tries them all, as pykan does.
SYMBOLIC_LIB: dict[str, tuple] = {
    **interpret.SYMBOLIC_LIB,
    "x^5": (lambda t: t**5, lambda z: z**5, 3),
    "1/x^2": (lambda t: 1 / t**2, lambda z: 1 / z**2, 2),
    "1/x^3": (lambda t: 1 / t**3, lambda z: 1 / z**3, 3),
    "1/x^4": (lambda t: 1 / t**4, lambda z: 1 / z**4, 4),
    "1/x^5": (lambda t: 1 / t**5, lambda z: 1 / z**5, 5),
    "x^0.5": (torch.sqrt, _sympy_fn("sqrt"), 2),
    "x^1.5": (lambda t: torch.sqrt(t) ** 3, _sympy_power("3/2"), 4),
    "1/sqrt(x)": (torch.rsqrt, lambda z: 1 / _sympy_fn("sqrt")(z), 2),
    "1/x^0.5": (torch.rsqrt, lambda z: 1 / _sympy_fn("sqrt")(z), 2),
    "sgn": (torch.sign, _sympy_fn("sign"), 3),
    "arcsin": (torch.arcsin, _sympy_fn("asin"), 4),
    "arccos": (torch.arccos, _sympy_fn("acos"), 4),
    "arctanh": (torch.arctanh, _sympy_fn("atanh"), 4),
}


def add_symbolic(name: str, fun: Callable, c: int = 1, fun_singularity: Callable | None = None) -> None:
    """Add ``fun`` (a torch function) to :data:`SYMBOLIC_LIB` as ``name`` with complexity ``c``.

    Its formula shows as the undefined sympy function ``name(...)``, as in pykan.
    """
    if fun_singularity is not None:
        raise NotImplementedError(
            "add_symbolic(fun_singularity=...): singularity-avoiding symbolic functions are not supported"
        )

    def sympy_fn(z: Any) -> Any:
        import sympy

        return sympy.Function(name)(z)

    SYMBOLIC_LIB[name] = (fun, sympy_fn, int(c))


def _library(lib: Iterable[str] | Mapping[str, tuple] | None) -> dict[str, tuple]:
    """``lib`` as interpret's name -> (torch_fn, sympy_fn, complexity), names from SYMBOLIC_LIB."""
    if lib is None:
        names: Iterable[str] = list(SYMBOLIC_LIB)
    elif isinstance(lib, Mapping):
        return {name: tuple(spec)[:3] for name, spec in lib.items()}
    elif isinstance(lib, str):
        raise TypeError("lib must be a list of names, not a string")
    else:
        names = lib
    out = {}
    for name in names:
        if name not in SYMBOLIC_LIB:
            raise KeyError(f"unknown symbolic function {name!r}; known: {sorted(SYMBOLIC_LIB)}")
        out[name] = tuple(SYMBOLIC_LIB[name])[:3]
    return out


def ex_round(ex1: Any, n_digit: int) -> Any:
    """pykan's name for :func:`efficient_kan.interpret.round_formula`: ``ex1`` (a sympy expression)
    with its constants gathered, then rounded to ``n_digit`` significant digits (pykan rounds each
    float to ``n_digit`` decimals on its own, which can misstate a composed formula)."""
    return interpret.round_formula(ex1, n_digit)


def create_dataset(
    f: Callable[[torch.Tensor], torch.Tensor],
    n_var: int = 2,
    f_mode: str = "col",
    ranges: Sequence[float] | Sequence[Sequence[float]] = (-1.0, 1.0),
    train_num: int = 1000,
    test_num: int = 1000,
    normalize_input: bool = False,
    normalize_label: bool = False,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> Dataset:
    """pykan's ``create_dataset``: samples of ``f`` uniform on ``ranges`` (see
    :func:`efficient_kan.interpret.create_dataset`; the global random state is left alone).

    ``f_mode="row"`` passes ``f`` the transposed inputs ``(n_var, N)``. ``normalize_input`` /
    ``normalize_label`` standardise with the training set's mean and standard deviation.
    """
    if f_mode == "col":
        fn = f
    elif f_mode == "row":

        def fn(x: torch.Tensor) -> torch.Tensor:
            return f(x.T)

    else:
        raise ValueError(f"f_mode must be 'col' or 'row', got {f_mode!r}")
    data = interpret.create_dataset(
        fn, n_var=n_var, ranges=ranges, train_num=train_num, test_num=test_num, seed=seed, device=device
    )
    for flag, kind in ((normalize_input, "input"), (normalize_label, "label")):
        if flag:
            mean = data[f"train_{kind}"].mean(dim=0, keepdim=True)
            std = data[f"train_{kind}"].std(dim=0, keepdim=True)
            for split in ("train", "test"):
                data[f"{split}_{kind}"] = (data[f"{split}_{kind}"] - mean) / std
    return data


class _Zero(nn.Module):
    """pykan's ``base_fun='zero'``: no base branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


_BASE_FUNS: dict[str, Callable[[], nn.Module]] = {"silu": nn.SiLU, "identity": nn.Identity, "zero": _Zero}


def _unsupported(option: str, why: str) -> NotImplementedError:
    return NotImplementedError(f"{option} is not supported by efficient_kan.pykan: {why}")


def _refuse_fit_options(
    lamb_coef: float, lamb_coefdiff: float, save_fig: bool, singularity_avoiding: bool, reg_metric: str | None
) -> None:
    """pykan ``fit`` options with no counterpart here raise ``NotImplementedError``, saying why."""
    for option, value, default in (("lamb_coef", lamb_coef, 0.0), ("lamb_coefdiff", lamb_coefdiff, 0.0)):
        if value != default:
            raise _unsupported(f"{option}={value!r}", "no coefficient penalties; use lamb (L1 + entropy)")
    if save_fig:
        raise _unsupported("save_fig=True", "no video frames are written; call model.plot() after fit")
    if singularity_avoiding:
        raise _unsupported("singularity_avoiding=True", "symbolic edges are evaluated as fitted")
    if reg_metric is not None:
        raise _unsupported(
            f"reg_metric={reg_metric!r}",
            "the regulariser is the KAN paper's L1 + entropy of mean |phi| per edge",
        )


def _per_layer(name: str, value: int | Sequence[int], depth: int) -> list[int]:
    if isinstance(value, Sequence):
        if len(value) != depth:
            raise ValueError(f"{name} as a list needs one entry per layer ({depth}), got {len(value)}")
        return [int(v) for v in value]
    return [int(value)] * depth


class _Progress:
    """pykan's one-line progress bar (``| train_loss: ... | test_loss: ... | reg: ... |``)."""

    def __init__(self, steps: int, log: int, display_metrics: Sequence[str] | None) -> None:
        self.steps, self.log, self.names = steps, log, display_metrics
        self.started = False

    def __call__(self, step: int, history: dict[str, list[float]]) -> None:
        if self.log <= 0 or not (step % self.log == 0 or step == self.steps - 1):
            return
        if self.names is None:
            shown = {
                "train_loss": math.sqrt(max(history["train_loss"][-1], 0.0)),
                "test_loss": math.sqrt(max(history["test_loss"][-1], 0.0)),
                "reg": history["reg"][-1],
            }
        else:
            shown = {}
            for name in self.names:
                if name not in history:
                    raise KeyError(f"display_metrics: {name!r} is not recorded (have {sorted(history)})")
                value = history[name][-1]
                shown[name] = math.sqrt(max(value, 0.0)) if name in ("train_loss", "test_loss") else value
        text = "".join(f" {k}: {v:.2e} |" for k, v in shown.items())
        sys.stdout.write(f"\r|{text} {step + 1}/{self.steps}")
        sys.stdout.flush()
        self.started = True

    def close(self) -> None:
        if self.started:
            sys.stdout.write("\n")
            sys.stdout.flush()


class KAN(_KAN):
    """pykan's ``KAN`` (``MultKAN``) constructor and methods over :class:`efficient_kan.KAN`.

    Args (pykan's names and defaults):
        width: neurons per layer, inputs first: ``[2, 5, 1]``. (pykan's ``[n, 0]`` pairs are
            accepted; multiplication nodes ``[n, m]`` with ``m > 0`` are not supported.)
        grid: grid intervals (one int, or one per layer). k: spline order (one or per layer).
        noise_scale: size of the random initial splines (pykan's rule, = ``KANLinear``'s
            ``scale_noise``).
        scale_base_mu, scale_base_sigma: base weights start at ``mu / sqrt(in) + sigma *
            U(-1, 1) / sqrt(in)``; spline scales at ``1 / sqrt(in)``; biases at 0 (pykan's init).
        base_fun: ``'silu'``, ``'identity'``, ``'zero'`` or an ``nn.Module``.
        symbolic_enabled: whether edges fixed by ``fix_symbolic`` / ``auto_symbolic`` compute their
            formulas in ``forward`` (True) or their splines (False).
        grid_eps, grid_range: as in pykan (``update_grid``'s uniform share; initial knot range).
        sp_trainable, sb_trainable: train the spline scales / base weights.
        seed: seeds torch, numpy and Python's ``random`` (pykan does all three).
        save_act: keep a reference to the last input of ``forward`` (``cache_data``): ``plot``,
            ``prune`` and ``auto_symbolic`` look at the data there unless given ``x``.
        auto_save: must stay False (no checkpoint files); ``ckpt_path``, ``first_init``,
            ``state_id`` and ``round`` only matter with it.
        device: where the parameters live.
        bias: (efficient_kan) a trainable constant per node; ``dtype``: parameter dtype
            (default: torch's default dtype, as pykan).

    Refused with ``NotImplementedError``: ``affine_trainable=True``, ``sparse_init=True``,
    multiplication nodes, ``auto_save=True``.
    """

    def __init__(
        self,
        width: Sequence[int | Sequence[int]] | None = None,
        grid: int | Sequence[int] = 3,
        k: int | Sequence[int] = 3,
        mult_arity: int | Sequence = 2,
        noise_scale: float = 0.3,
        scale_base_mu: float = 0.0,
        scale_base_sigma: float = 1.0,
        base_fun: str | nn.Module | type[nn.Module] = "silu",
        symbolic_enabled: bool = True,
        affine_trainable: bool = False,
        grid_eps: float = 0.02,
        grid_range: Sequence[float] = (-1.0, 1.0),
        sp_trainable: bool = True,
        sb_trainable: bool = True,
        seed: int = 1,
        save_act: bool = True,
        sparse_init: bool = False,
        auto_save: bool = False,
        first_init: bool = True,
        ckpt_path: str = "./model",
        state_id: int = 0,
        round: int = 0,
        device: torch.device | str = "cpu",
        *,
        bias: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        widths = self._parse_width(width)
        self._refuse_unsupported(affine_trainable, sparse_init, auto_save)
        activation = self._activation(base_fun)
        depth = len(widths) - 1
        grids, orders = _per_layer("grid", grid, depth), _per_layer("k", k, depth)

        torch.manual_seed(seed)
        random.seed(seed)
        if np is not None:
            np.random.seed(seed)

        dtype = dtype or torch.get_default_dtype()
        layers = [
            KANLinear(
                n_in,
                n_out,
                bias=bias,
                grid_size=g,
                spline_order=order,
                grid_range=tuple(grid_range),
                scale_noise=noise_scale,
                base_activation=copy.deepcopy(activation),
                grid_eps=grid_eps,
                device=device,
                dtype=dtype,
            )
            for n_in, n_out, g, order in zip(widths[:-1], widths[1:], grids, orders, strict=True)
        ]
        self._init_scales(layers, scale_base_mu, scale_base_sigma, sb_trainable, sp_trainable)
        nn.Module.__init__(self)
        self.layers = nn.ModuleList(layers)
        self._set_options(
            symbolic_enabled=symbolic_enabled,
            save_act=save_act,
            device=device,
            base_fun_name=base_fun if isinstance(base_fun, str) else type(activation).__name__,
            ckpt_path=ckpt_path,
        )

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _refuse_unsupported(affine_trainable: bool, sparse_init: bool, auto_save: bool) -> None:
        """pykan options with no counterpart here raise ``NotImplementedError``, saying why."""
        if affine_trainable:
            raise _unsupported(
                "affine_trainable=True",
                "pykan's node/subnode scales and biases are not part of efficient_kan's layers "
                "(each node has one trainable bias, bias=True)",
            )
        if sparse_init:
            raise _unsupported("sparse_init=True", "layers start dense")
        if auto_save:
            raise _unsupported(
                "auto_save=True",
                "checkpoint files are never written implicitly; save with "
                "torch.save(model.state_dict(), path)",
            )

    @staticmethod
    def _activation(base_fun: str | nn.Module | type[nn.Module]) -> nn.Module | type[nn.Module]:
        """The base activation ``base_fun`` names (or is)."""
        if isinstance(base_fun, str):
            if base_fun not in _BASE_FUNS:
                raise ValueError(
                    f"base_fun must be one of {sorted(_BASE_FUNS)} or an nn.Module, got {base_fun!r}"
                )
            return _BASE_FUNS[base_fun]()
        if isinstance(base_fun, nn.Module) or (
            isinstance(base_fun, type) and issubclass(base_fun, nn.Module)
        ):
            return base_fun
        raise TypeError(
            f"base_fun must be 'silu', 'identity', 'zero' or an nn.Module, got {type(base_fun).__name__} "
            "(wrap a plain function in an nn.Module)"
        )

    @staticmethod
    @torch.no_grad()
    def _init_scales(
        layers: Sequence[KANLinear], mu: float, sigma: float, sb_trainable: bool, sp_trainable: bool
    ) -> None:
        """pykan's initialisation of the scales (its KANLayer), drawn from the global generator."""
        for layer in layers:
            n_in = layer.in_features
            u = torch.rand(layer.out_features, n_in, dtype=layer.base_weight.dtype) * 2 - 1
            layer.base_weight.copy_((mu + sigma * u) / math.sqrt(n_in))
            layer.spline_scaler.fill_(1.0 / math.sqrt(n_in))
            if layer.bias is not None:
                layer.bias.zero_()
            layer.base_weight.requires_grad_(sb_trainable)
            layer.spline_scaler.requires_grad_(sp_trainable)

    @staticmethod
    def _parse_width(width: Sequence[int | Sequence[int]] | None) -> list[int]:
        if width is None or len(width) < 2:
            raise ValueError(f"width needs at least two layers of nodes, e.g. [2, 5, 1], got {width!r}")
        widths = []
        for w in width:
            if isinstance(w, Sequence):
                if len(w) != 2 or int(w[1]) != 0:
                    raise _unsupported(
                        f"width entry {list(w)!r}", "multiplication nodes ([n_sum, n_mult] with n_mult > 0)"
                    )
                w = w[0]
            widths.append(int(w))
        return widths

    def _set_options(self, **options: Any) -> None:
        self.symbolic_enabled = bool(options["symbolic_enabled"])
        self.save_act = bool(options["save_act"])
        self.device = options["device"]
        self.base_fun_name = options["base_fun_name"]
        self.ckpt_path = options["ckpt_path"]
        self.cache_data: torch.Tensor | None = None
        # interpret's side table of fixed edges, (layer, i, j) -> SymbolicEdge.
        self.symbolic_edges: dict[tuple[int, int, int], SymbolicEdge] = {}

    def _options(self) -> dict[str, Any]:
        return {
            "symbolic_enabled": self.symbolic_enabled,
            "save_act": self.save_act,
            "device": self.device,
            "base_fun_name": self.base_fun_name,
            "ckpt_path": self.ckpt_path,
        }

    def _wrap(self, model: _KAN) -> KAN:
        """A facade ``KAN`` over ``model``'s layers with this model's options and cached data."""
        new = type(self).from_layers(model.layers)
        new._set_options(**self._options())
        new.cache_data = self.cache_data
        if hasattr(model, "kept_nodes"):
            new.kept_nodes = model.kept_nodes
        new.train(self.training)
        return new

    # ------------------------------------------------------------------ pykan's attributes
    @property
    def width(self) -> list[int]:
        """Nodes per layer, inputs first (plain ints: pykan lists ``[n, 0]`` pairs)."""
        return [self.layers[0].in_features] + [layer.out_features for layer in self.layers]

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def grid(self) -> int | list[int]:
        """Grid intervals: one int if all layers agree, else one per layer."""
        sizes = [layer.grid_size for layer in self.layers]
        return sizes[0] if len(set(sizes)) == 1 else sizes

    @property
    def k(self) -> int | list[int]:
        orders = [layer.spline_order for layer in self.layers]
        return orders[0] if len(set(orders)) == 1 else orders

    @property
    def _dtype(self) -> torch.dtype:
        return self.layers[0].base_weight.dtype

    # ------------------------------------------------------------------ data
    def _as_input(self, x: Any) -> torch.Tensor:
        """``x`` as a tensor of the model's dtype (float64 / integer data are what pykan users have)."""
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if x.dtype != self._dtype:
            if x.is_complex():
                raise TypeError(f"expected real input, got {x.dtype}")
            x = x.to(self._dtype)
        return x

    def _data(self, x: Any, what: str) -> torch.Tensor:
        if x is not None:
            return self._as_input(x)
        if self.cache_data is None:
            hint = "set save_act=True and " if not self.save_act else ""
            raise ValueError(
                f"{what} needs data: pass x=..., or {hint}run model(x) or model.fit(dataset) first"
            )
        return self.cache_data

    def _prepare_dataset(self, dataset: Mapping[str, Any], loss_fn: Callable | None) -> Dataset:
        """The dataset in the model's dtype: inputs always; labels unless they are integer class
        labels for a user-given loss (cross-entropy wants them integer)."""
        out: Dataset = {}
        for split in ("train", "test"):
            for kind in ("input", "label"):
                key = f"{split}_{kind}"
                if key not in dataset:
                    raise KeyError(f"dataset lacks {key!r}")
                value = dataset[key]
                if not isinstance(value, torch.Tensor):
                    value = torch.as_tensor(value)
                if kind == "input":
                    value = self._as_input(value)
                elif value.is_floating_point() or loss_fn is None:
                    # Regression labels (float, or 0/1 integers under the default squared error).
                    value = value.to(self._dtype)
                    if loss_fn is None and value.dim() == 1 and self.layers[-1].out_features == 1:
                        value = value.unsqueeze(1)  # (N,) against (N, 1) would broadcast to (N, N)
                out[key] = value
        return out

    # ------------------------------------------------------------------ forward
    def _symbolic_active(self) -> bool:
        return self.symbolic_enabled and bool(self.symbolic_edges)

    def forward(
        self,
        x: torch.Tensor,
        singularity_avoiding: bool = False,
        y_th: float = 10.0,
        update_grid: bool = False,
    ) -> torch.Tensor:
        """The network on ``x`` (cast to the model's dtype); fixed symbolic edges compute their
        formulas while ``symbolic_enabled``. Keeps ``x`` as ``cache_data`` if ``save_act``."""
        if singularity_avoiding:
            raise _unsupported("singularity_avoiding=True", "symbolic edges are evaluated as fitted")
        x = self._as_input(x)
        if self.save_act:
            self.cache_data = x.detach()
        if self._symbolic_active():
            if update_grid:
                _KAN.forward(self, x, update_grid=True)
            return interpret.symbolic_forward(self, x)
        return super().forward(x, update_grid=update_grid)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        dataset: Mapping[str, Any],
        opt: str = "LBFGS",
        steps: int = 100,
        log: int = 1,
        lamb: float = 0.0,
        lamb_l1: float = 1.0,
        lamb_entropy: float = 2.0,
        lamb_coef: float = 0.0,
        lamb_coefdiff: float = 0.0,
        update_grid: bool = True,
        grid_update_num: int = 10,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        lr: float = 1.0,
        start_grid_update_step: int = -1,
        stop_grid_update_step: int = 50,
        batch: int = -1,
        metrics: Sequence[Callable[[], Any]] | None = None,
        save_fig: bool = False,
        in_vars: Sequence[str] | None = None,
        out_vars: Sequence[str] | None = None,
        beta: float = 3,
        save_fig_freq: int = 1,
        img_folder: str = "./video",
        singularity_avoiding: bool = False,
        y_th: float = 1000.0,
        reg_metric: str | None = None,
        display_metrics: Sequence[str] | None = None,
    ) -> dict[str, list[float]]:
        """pykan's ``fit``: train on ``dataset``; returns ``{"train_loss", "test_loss", "reg", *metrics}``.

        As in pykan, ``train_loss`` and ``test_loss`` hold the square root of ``loss_fn`` (the RMSE
        for the default squared error) per step, ``reg`` the regulariser, and every metric (a
        zero-argument function) its values under its ``__name__``. The training is
        :func:`efficient_kan.interpret.fit` (LBFGS or Adam, grid updates, the paper's L1 + entropy
        regulariser on ``mean |phi|`` weighted by ``lamb``). A progress line is printed every
        ``log`` steps (``log=0``: silent). Float64 / integer data are cast (see the module notes).

        Once every edge is symbolic (``auto_symbolic``), ``fit`` refits all formula constants and
        biases jointly on the training set (:func:`efficient_kan.interpret.refine_symbolic`, up to
        ``steps`` iterations) and the lists hold one value, after that refit.

        Not supported (``NotImplementedError``): ``lamb_coef``, ``lamb_coefdiff``, ``save_fig``,
        ``singularity_avoiding``, ``reg_metric`` (the regulariser is the paper's ``mean |phi|``);
        ``in_vars``, ``out_vars``, ``beta``, ``save_fig_freq``, ``img_folder`` and ``y_th`` only
        matter with those.
        """
        _refuse_fit_options(lamb_coef, lamb_coefdiff, save_fig, singularity_avoiding, reg_metric)
        data = self._prepare_dataset(dataset, loss_fn)
        if self._all_edges_symbolic(lamb):
            return self._fit_symbolic(data, steps, loss_fn, metrics)

        progress = _Progress(steps, log, display_metrics)
        try:
            history = interpret.fit(
                self,
                data,
                opt=opt,
                steps=steps,
                lr=lr,
                lamb=lamb,
                lamb_l1=lamb_l1,
                lamb_entropy=lamb_entropy,
                update_grid=update_grid,
                grid_update_num=grid_update_num,
                start_grid_update_step=start_grid_update_step,
                stop_grid_update_step=stop_grid_update_step,
                batch=batch,
                loss_fn=loss_fn,
                metrics=metrics,
                callback=progress,
            )
        finally:
            progress.close()
        if self.save_act:
            self.cache_data = data["train_input"]
        for key in ("train_loss", "test_loss"):
            history[key] = [math.sqrt(max(v, 0.0)) for v in history[key]]
        return history

    def _all_edges_symbolic(self, lamb: float) -> bool:
        """Whether ``fit`` refits formulas (every edge symbolic) rather than training splines; a
        model with only some edges symbolic, or ``lamb > 0`` on formulas, is refused."""
        table = self.symbolic_edges
        if not (self.symbolic_enabled and table):
            return False
        n_edges = sum(layer.in_features * layer.out_features for layer in self.layers)
        if len(table) < n_edges:
            raise _unsupported(
                "fit with some edges symbolic and others not",
                f"{len(table)} of {n_edges} edges are fixed; fix all (auto_symbolic) to refit the "
                "formula, or unfix_symbolic_all() / symbolic_enabled=False to train the splines",
            )
        if lamb > 0:
            raise ValueError("lamb > 0: every edge is symbolic, there is nothing to regularise")
        return True

    def _fit_symbolic(
        self, data: Dataset, steps: int, loss_fn: Callable | None, metrics: Sequence[Callable] | None
    ) -> dict[str, list[float]]:
        interpret.refine_symbolic(
            self, data["train_input"], data["train_label"], steps=steps, loss_fn=loss_fn
        )
        loss = loss_fn or torch.nn.functional.mse_loss
        with torch.no_grad():
            losses = [
                float(loss(interpret.symbolic_forward(self, data[f"{s}_input"]), data[f"{s}_label"]))
                for s in ("train", "test")
            ]
        history: dict[str, list[float]] = {
            "train_loss": [math.sqrt(max(losses[0], 0.0))],
            "test_loss": [math.sqrt(max(losses[1], 0.0))],
            "reg": [0.0],
        }
        for k, metric in enumerate(metrics or ()):
            history[getattr(metric, "__name__", f"metric_{k}")] = [float(metric())]
        if self.save_act:
            self.cache_data = data["train_input"]
        return history

    def train(self, dataset: bool | Mapping[str, Any] = True, *args: Any, **kwargs: Any) -> Any:
        """``train(True/False)``: ``nn.Module.train`` (``eval()`` calls it). ``train(dataset, ...)``:
        the older pykan tutorials' training call, run by :meth:`fit`.

        Older pykan's extra options: ``small_mag_threshold`` / ``small_reg_factor`` only at their
        defaults (they were identity there), ``sglr_avoid`` as ``singularity_avoiding``, ``device``
        must be the model's.
        """
        if not args and set(kwargs) == {"mode"} and dataset is True:  # train(mode=False)
            dataset = kwargs.pop("mode")
        if isinstance(dataset, bool):
            if args or kwargs:
                raise TypeError("train(mode) takes no other arguments; to train on data pass a dataset dict")
            return super().train(dataset)
        if isinstance(dataset, Mapping):
            return self._legacy_train(dataset, *args, **kwargs)
        raise TypeError(f"train expects a bool (module mode) or a dataset dict, got {type(dataset).__name__}")

    def _legacy_train(
        self,
        dataset: Mapping[str, Any],
        opt: str = "LBFGS",
        steps: int = 100,
        log: int = 1,
        lamb: float = 0.0,
        lamb_l1: float = 1.0,
        lamb_entropy: float = 2.0,
        lamb_coef: float = 0.0,
        lamb_coefdiff: float = 0.0,
        update_grid: bool = True,
        grid_update_num: int = 10,
        loss_fn: Callable | None = None,
        lr: float = 1.0,
        stop_grid_update_step: int = 50,
        batch: int = -1,
        small_mag_threshold: float = 1e-16,
        small_reg_factor: float = 1.0,
        metrics: Sequence[Callable] | None = None,
        sglr_avoid: bool = False,
        save_fig: bool = False,
        in_vars: Sequence[str] | None = None,
        out_vars: Sequence[str] | None = None,
        beta: float = 3,
        save_fig_freq: int = 1,
        img_folder: str = "./video",
        device: torch.device | str | None = None,
    ) -> dict[str, list[float]]:
        if small_mag_threshold != 1e-16 or small_reg_factor != 1.0:
            raise _unsupported(
                "small_mag_threshold / small_reg_factor", "the regulariser has no small-magnitude branch"
            )
        if device is not None:
            model_device = self.layers[0].base_weight.device
            if torch.device(device).type != model_device.type:
                raise ValueError(f"device={device!r} but the model is on {model_device}; move it with .to()")
        return self.fit(
            dataset,
            opt=opt,
            steps=steps,
            log=log,
            lamb=lamb,
            lamb_l1=lamb_l1,
            lamb_entropy=lamb_entropy,
            lamb_coef=lamb_coef,
            lamb_coefdiff=lamb_coefdiff,
            update_grid=update_grid,
            grid_update_num=grid_update_num,
            loss_fn=loss_fn,
            lr=lr,
            stop_grid_update_step=stop_grid_update_step,
            batch=batch,
            metrics=metrics,
            save_fig=save_fig,
            in_vars=in_vars,
            out_vars=out_vars,
            beta=beta,
            save_fig_freq=save_fig_freq,
            img_folder=img_folder,
            singularity_avoiding=sglr_avoid,
        )

    # ------------------------------------------------------------------ grids
    @torch.no_grad()
    def update_grid_from_samples(self, x: torch.Tensor) -> None:
        """Move every layer's knots to the distribution of ``x`` (and of the hidden activations),
        keeping the function (:meth:`efficient_kan.KANLinear.update_grid`)."""
        _KAN.forward(self, self._as_input(x), update_grid=True)

    def update_grid(self, x: torch.Tensor) -> None:
        """Same as :meth:`update_grid_from_samples` (pykan has both names)."""
        self.update_grid_from_samples(x)

    def refine(self, new_grid: int) -> KAN:
        """Grid extension: a copy of this model on ``new_grid`` intervals per edge, same function.

        As pykan's ``refine``, returns a new model (``model = model.refine(10)``) and leaves this one
        unchanged; see :meth:`efficient_kan.KANLinear.refine` for how the splines are refitted.
        Symbolic fits and the cached data carry over.
        """
        new = self.copy()
        _KAN.refine(new, new_grid)
        return new

    def copy(self) -> KAN:
        """A deep copy (sharing ``cache_data``, which is only read)."""
        cache, self.cache_data = self.cache_data, None
        try:
            new = copy.deepcopy(self)
        finally:
            self.cache_data = cache
        new.cache_data = cache
        return new

    def speed(self, compile: bool = False) -> KAN:
        """pykan's fast mode: splines only (``symbolic_enabled=False``), no cached input."""
        if compile:
            raise _unsupported("speed(compile=True)", "use torch.compile(model) yourself")
        self.symbolic_enabled = False
        self.save_act = False
        return self

    # ------------------------------------------------------------------ pruning and plots
    def prune(self, node_th: float = 1e-2, edge_th: float = 3e-2, *, x: torch.Tensor | None = None) -> KAN:
        """A pruned copy: hidden nodes scoring under ``node_th`` removed, then edges under ``edge_th``.

        Scores are pykan 0.2's attribution scores on ``x`` (default: the cached data, e.g. the
        training inputs after ``fit``), :func:`efficient_kan.interpret.attribution_scores`. Nodes go
        with :func:`efficient_kan.interpret.prune`; edges (scored again on the pruned model) with
        :func:`efficient_kan.interpret.prune_edges`: they become zero and stay zero in ``fit``.
        Symbolic fits are not carried over.
        """
        data = self._data(x, "prune")
        pruned = self.prune_node(node_th, x=data)
        pruned.prune_edge(edge_th, x=data)
        return pruned

    def prune_node(self, threshold: float = 1e-2, *, x: torch.Tensor | None = None) -> KAN:
        """A copy without the hidden nodes whose attribution score is under ``threshold``."""
        data = self._data(x, "prune_node")
        return self._wrap(interpret.prune(self, data, threshold=threshold, method="attribution"))

    def prune_edge(self, threshold: float = 3e-2, *, x: torch.Tensor | None = None) -> None:
        """Remove, in place, the edges whose attribution score is under ``threshold``."""
        interpret.prune_edges(self, self._data(x, "prune_edge"), threshold=threshold, method="attribution")

    def remove_edge(self, l: int, i: int, j: int) -> None:
        """Remove edge ``i -> j`` of layer ``l``: it becomes zero and stays zero in ``fit``."""
        layer = self.layers[l]
        mask = torch.ones(layer.out_features, layer.in_features, dtype=torch.bool)
        mask[j, i] = False
        interpret.set_edge_mask(layer, mask)

    def plot(
        self,
        folder: str | os.PathLike | None = None,
        beta: float = 3,
        metric: str | None = None,
        scale: float = 0.5,
        tick: bool = False,
        sample: bool = False,
        in_vars: Sequence[str] | None = None,
        out_vars: Sequence[str] | None = None,
        title: str | None = None,
        varscale: float = 1.0,
        *,
        x: torch.Tensor | None = None,
        path: str | os.PathLike | None = None,
    ) -> Any:
        """Draw the network on the cached data (or ``x``); returns the matplotlib ``Figure``.

        :func:`efficient_kan.interpret.plot` with pykan's opacity ``tanh(beta * score)``; ``scale``
        scales the figure (0.5 is the default size). Nothing is written unless asked: ``path``
        saves the figure there, ``folder`` saves it as ``folder/kan.png``. In a notebook the
        returned figure shows when ``model.plot()`` ends a cell.

        Not supported (``NotImplementedError``): ``metric`` (scores are ``mean |phi|``), ``tick``,
        ``sample``, ``varscale`` other than 1.
        """
        if metric is not None:
            raise _unsupported(f"plot(metric={metric!r})", "edges are scored by mean |phi| on the data")
        for option, value, default in (
            ("tick", tick, False),
            ("sample", sample, False),
            ("varscale", varscale, 1.0),
        ):
            if value != default:
                raise _unsupported(f"plot({option}={value!r})", "not drawn by efficient_kan's plot")
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        data = self._data(x, "plot")
        fig = interpret.plot(self, data, in_vars=in_vars, out_vars=out_vars, title=title, beta=beta)
        fig.set_size_inches(fig.get_size_inches() * (scale / 0.5))
        if folder is not None:
            os.makedirs(folder, exist_ok=True)
            fig.savefig(os.path.join(folder, "kan.png"), dpi=100)
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig

    # ------------------------------------------------------------------ symbolic
    def _symbolic_data(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """Samples for symbolic fits: ``x``, else the cached data, else None (each edge's grid)."""
        if x is not None:
            return self._as_input(x)
        return self.cache_data

    def fix_symbolic(
        self,
        l: int,
        i: int,
        j: int,
        fun_name: str,
        fit_params_bool: bool = True,
        a_range: tuple[float, float] = (-10, 10),
        b_range: tuple[float, float] = (-10, 10),
        verbose: bool = True,
        random: bool = False,
        log_history: bool = True,
        *,
        x: torch.Tensor | None = None,
    ) -> float | None:
        """Fix edge ``i -> j`` of layer ``l`` to ``fun_name`` from :data:`SYMBOLIC_LIB`; returns R^2.

        With ``fit_params_bool`` the constants of ``c * f(a * t + b) + d`` are fitted to the edge on
        the cached data (or ``x``, or the edge's grid); without, they are ``a = c = 1, b = d = 0``
        and None is returned. ``log_history`` is pykan's checkpoint log (nothing to log here).
        """
        if random:
            raise _unsupported("fix_symbolic(random=True)", "constants are fitted or set to (1, 0, 1, 0)")
        if not isinstance(fun_name, str):
            raise TypeError(f"fun_name must be a name from SYMBOLIC_LIB, got {type(fun_name).__name__}")
        lib = _library([fun_name])
        if not fit_params_bool:
            fn, sympy_fn, complexity = lib[fun_name]
            interpret.symbolic._check_edge(self, l, i, j)
            self.symbolic_edges[(l, i, j)] = SymbolicEdge(
                fun_name, fn, sympy_fn, complexity, 1.0, 0.0, 1.0, 0.0, float("nan")
            )
            return None
        edge = interpret.fix_symbolic(
            self, l, i, j, fun_name, x=self._symbolic_data(x), lib=lib, a_range=a_range, b_range=b_range
        )
        if verbose:
            print(f"r2 is {edge.r2}")
        return edge.r2

    def unfix_symbolic(self, l: int, i: int, j: int) -> None:
        """Let edge ``i -> j`` of layer ``l`` compute its spline again."""
        self.symbolic_edges.pop((l, i, j), None)

    def unfix_symbolic_all(self) -> None:
        """Let every edge compute its spline again."""
        self.symbolic_edges.clear()

    def suggest_symbolic(
        self,
        l: int,
        i: int,
        j: int,
        a_range: tuple[float, float] = (-10, 10),
        b_range: tuple[float, float] = (-10, 10),
        lib: Iterable[str] | Mapping[str, tuple] | None = None,
        topk: int = 5,
        verbose: bool = True,
        r2_loss_fun: Callable | None = None,
        c_loss_fun: Callable | None = None,
        weight_simple: float = 0.8,
        *,
        x: torch.Tensor | None = None,
    ) -> tuple[str, Callable, float, int]:
        """The best library functions for edge ``i -> j`` of layer ``l`` (printed as a table if
        ``verbose``); returns ``(best_name, best_fun, best_r2, best_complexity)`` as pykan.

        Scores as :func:`efficient_kan.interpret.suggest_symbolic`; pykan's ``r2_loss_fun`` and
        ``c_loss_fun`` are not supported.
        """
        if r2_loss_fun is not None or c_loss_fun is not None:
            raise _unsupported(
                "r2_loss_fun / c_loss_fun",
                "the score is (1 - weight_simple) * log2(max(1 - R^2, 1e-4)) + weight_simple * complexity",
            )
        ranked = interpret.suggest_symbolic(
            self,
            l,
            i,
            j,
            _library(lib),
            x=self._symbolic_data(x),
            topk=topk,
            weight_simple=weight_simple,
            a_range=a_range,
            b_range=b_range,
        )
        if verbose:
            print(f"{'':>3} {'function':>10} {'fitting r2':>12} {'complexity':>10} {'total loss':>11}")
            for n, (edge, score) in enumerate(ranked):
                print(f"{n:>3} {edge.name:>10} {edge.r2:>12.6f} {edge.complexity:>10d} {score:>11.4f}")
        best = ranked[0][0]
        return best.name, best.fn, best.r2, best.complexity

    def auto_symbolic(
        self,
        a_range: tuple[float, float] = (-10, 10),
        b_range: tuple[float, float] = (-10, 10),
        lib: Iterable[str] | Mapping[str, tuple] | None = None,
        verbose: int = 1,
        weight_simple: float = 0.8,
        r2_threshold: float = 0.0,
        *,
        x: torch.Tensor | None = None,
    ) -> None:
        """Fix every edge to its best library function (default: all of :data:`SYMBOLIC_LIB`).

        Edges are sampled on the cached data (or ``x``; without data, on their grids) and chosen
        by :func:`efficient_kan.interpret.auto_symbolic`. Removed edges become ``'0'``; edges
        fixed before are kept; an edge whose best R^2 is under ``r2_threshold`` stays numeric, as
        in pykan. Afterwards the model computes the formulas (``forward``); ``fit`` refines them.
        """
        data = self._symbolic_data(x)
        table = self.symbolic_edges
        for l, layer in enumerate(self.layers):
            mask = getattr(layer, "edge_mask", None)
            if mask is None:
                continue
            for j, i in torch.nonzero(~mask).tolist():
                if (l, i, j) not in table:
                    interpret.fix_symbolic(self, l, i, j, "0", x=data)
                    if verbose >= 1:
                        print(f"fixing ({l},{i},{j}) with 0")
        before = set(table)
        interpret.auto_symbolic(
            self,
            _library(lib),
            x=data,
            weight_simple=weight_simple,
            a_range=a_range,
            b_range=b_range,
        )
        for key in sorted(set(table) - before):
            edge = table[key]
            l, i, j = key
            if edge.r2 < r2_threshold:
                del table[key]
                print(
                    f"For ({l},{i},{j}) the best fit was {edge.name}, but r^2 = {edge.r2} is below "
                    f"{r2_threshold}; the edge stays numeric"
                )
            elif verbose >= 1:
                print(f"fixing ({l},{i},{j}) with {edge.name}, r2={edge.r2}, c={edge.complexity}")

    def symbolic_formula(
        self,
        var: Sequence[Any] | None = None,
        normalizer: Sequence[Sequence[float]] | None = None,
        output_normalizer: Sequence[Sequence[float]] | None = None,
    ) -> tuple[list[Any], list[Any]]:
        """The outputs as sympy expressions: ``(formulas, variables)``, formulas one per output.

        Every edge must be symbolic (``auto_symbolic``). Variables are ``x_1, x_2, ...`` unless
        ``var`` gives names or sympy symbols. ``normalizer = [means, stds]`` expresses the formula
        in un-normalised inputs (``x -> (x - mean) / std``), ``output_normalizer`` likewise maps
        the outputs back (``y * std + mean``).
        """
        import sympy

        exprs = interpret.symbolic_formula(self)
        n_in = self.layers[0].in_features
        defaults = [sympy.Symbol(f"x_{i + 1}") for i in range(n_in)]
        if var is None:
            variables = defaults
        else:
            if len(var) != n_in:
                raise ValueError(f"expected {n_in} variables, got {len(var)}")
            variables = [v if isinstance(v, sympy.Basic) else sympy.Symbol(str(v)) for v in var]
        inputs = list(variables)
        if normalizer is not None:
            mean, std = normalizer
            inputs = [(v - float(mean[i])) / float(std[i]) for i, v in enumerate(inputs)]
        replace = dict(zip(defaults, inputs, strict=True))
        exprs = [e.xreplace(replace) for e in exprs]
        if output_normalizer is not None:
            mean, std = output_normalizer
            if len(mean) != len(exprs) or len(std) != len(exprs):
                raise ValueError(f"output_normalizer needs {len(exprs)} means and stds")
            exprs = [e * float(std[o]) + float(mean[o]) for o, e in enumerate(exprs)]
        return exprs, variables


#: pykan's class name (``KAN`` is an alias of ``MultKAN`` there).
MultKAN = KAN
