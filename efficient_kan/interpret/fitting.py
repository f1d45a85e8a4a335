"""Training with the KAN paper's sample-based regularisation, and pykan-style datasets.

``fit`` follows the familiar tutorial loop: LBFGS (or Adam) on a dataset dict, grid updates from
the training inputs during the first steps, and the regulariser

    reg = sum_layers  lamb_l1 * sum_{o,i} |phi[o,i]|  +  lamb_entropy * H(|phi| / sum |phi|)

with ``|phi[o,i]| = mean_b |phi[o,i](x[b, i])|`` on the current batch (the layer's
``regularization_loss`` is a weight-based proxy of it; this one is the paper's). The total loss is
``loss_fn(model(x), y) + lamb * reg``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..layer import KAN
from .edges import DEFAULT_MAX_ELEMENTS, _check_model, _phi, layer_edge_scores
from .prune import mask_pruned_gradients

__all__ = ["create_dataset", "fit", "sample_regularization"]

Dataset = dict[str, torch.Tensor]
Metric = Callable[[], float]


def create_dataset(
    f: Callable[[torch.Tensor], torch.Tensor],
    n_var: int = 2,
    ranges: Sequence[float] | Sequence[Sequence[float]] = (-1.0, 1.0),
    train_num: int = 1000,
    test_num: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> Dataset:
    """Samples of ``f`` on a box, as pykan's ``create_dataset``.

    ``f`` maps ``(N, n_var)`` to ``(N,)`` or ``(N, n_out)``. ``ranges`` is one ``(lo, hi)`` for all
    variables or one per variable. Inputs are uniform in the box, drawn from a private generator
    seeded by ``seed`` (the global RNG is untouched). Returns ``train_input``, ``train_label``,
    ``test_input``, ``test_label`` (labels always 2-D).
    """
    if n_var < 1:
        raise ValueError(f"n_var must be >= 1, got {n_var}")
    if train_num < 1 or test_num < 1:
        raise ValueError(f"train_num and test_num must be >= 1, got {train_num}, {test_num}")
    box = torch.as_tensor(ranges, dtype=torch.float64)
    if box.shape == (2,):
        box = box.expand(n_var, 2)
    if box.shape != (n_var, 2) or not bool((box[:, 0] < box[:, 1]).all()):
        raise ValueError(f"ranges must be (lo, hi) or {n_var} such pairs with lo < hi, got {ranges!r}")
    gen = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.get_default_dtype()

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(n, n_var, generator=gen, dtype=torch.float64)
        x = (box[:, 0] + u * (box[:, 1] - box[:, 0])).to(dtype)
        y = f(x)
        if not isinstance(y, torch.Tensor):
            y = torch.as_tensor(y)
        if y.dim() == 1:
            y = y.unsqueeze(1)
        if y.dim() != 2 or y.shape[0] != n:
            raise ValueError(f"f must return (N,) or (N, n_out) for N={n} inputs, got {tuple(y.shape)}")
        return x.to(device), y.to(device)

    train_input, train_label = draw(train_num)
    test_input, test_label = draw(test_num)
    return {
        "train_input": train_input,
        "train_label": train_label,
        "test_input": test_input,
        "test_label": test_label,
    }


def _entropy(vec: torch.Tensor) -> torch.Tensor:
    p = vec / vec.sum().clamp_min(torch.finfo(vec.dtype).tiny)
    return -(p * torch.log2(p + 1e-4)).sum()  # pykan's form: finite gradient at p == 0


def sample_regularization(
    model: KAN, x: torch.Tensor, lamb_l1: float = 1.0, lamb_entropy: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's regulariser on model input ``x``, and the output ``model(x)``, in one pass.

    Returns ``(output, reg)``, both differentiable.
    """
    model = _check_model(model)
    h = x
    reg = torch.zeros((), dtype=model.layers[0].base_weight.dtype, device=x.device)
    for layer in model.layers:
        rows = h.reshape(-1, layer.in_features)
        if rows.shape[0] * layer.out_features * layer.in_features <= DEFAULT_MAX_ELEMENTS:
            # Small enough: one (batch, out, in) tensor gives both the scores and the output.
            phi = _phi(layer, rows, slice(None))
            scores = phi.abs().mean(0)
            h = phi.sum(-1) if layer.bias is None else phi.sum(-1) + layer.bias
        else:
            scores = layer_edge_scores(layer, rows, differentiable=True)
            h = layer(rows)
        reg = reg + lamb_l1 * scores.sum() + lamb_entropy * _entropy(scores.reshape(-1))
    return h, reg


def fit(
    model: KAN,
    dataset: Mapping[str, torch.Tensor],
    opt: str = "LBFGS",
    steps: int = 100,
    lr: float = 1.0,
    lamb: float = 0.0,
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    update_grid: bool = True,
    grid_update_num: int = 10,
    start_grid_update_step: int = -1,
    stop_grid_update_step: int = 50,
    batch: int = -1,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    metrics: Sequence[Metric] | Mapping[str, Metric] | None = None,
    seed: int = 0,
    log: int = 0,
    callback: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` on ``dataset`` (pykan's ``fit`` loop); returns the history.

    Args:
        dataset: ``train_input``, ``train_label``, ``test_input``, ``test_label`` (see
            :func:`create_dataset`).
        opt: ``"LBFGS"`` (strong-Wolfe line search, up to 20 iterations per step, full-batch
            friendly) or ``"Adam"``.
        steps: optimiser steps. lr: learning rate (1.0 suits LBFGS, ~1e-2 Adam).
        lamb: weight of the sample-based regulariser; ``lamb_l1`` / ``lamb_entropy`` weigh its L1
            and entropy parts (see :func:`sample_regularization`).
        update_grid: every ``stop_grid_update_step // grid_update_num`` steps, from step
            ``start_grid_update_step`` until ``stop_grid_update_step``, move every layer's grid to
            the training inputs (``KAN.forward(x, update_grid=True)``); LBFGS restarts after it.
        batch: samples per step (``-1``: all). Test loss is on at most ``batch`` test samples too.
        loss_fn: ``loss_fn(pred, label)``; default mean squared error.
        metrics: zero-argument callables (recorded under their ``__name__``) or a name -> callable
            mapping, evaluated after every step.
        seed: seeds the batch sampling (a private generator). log: print every ``log`` steps.
        callback: called after every step as ``callback(step, history)`` (progress bars).

    Edges removed by :func:`~efficient_kan.interpret.prune_edges` stay zero: their gradients are
    zeroed before every optimiser step.

    Returns:
        ``{"train_loss", "test_loss", "reg", *metrics}``: lists with one value per step
        (``train_loss`` / ``test_loss`` are ``loss_fn`` values without the regulariser).
    """
    model = _check_fit_arguments(model, dataset, opt, steps, lamb)
    loss_fn = loss_fn or F.mse_loss
    named = _named_metrics(metrics)
    x_train, y_train = dataset["train_input"], dataset["train_label"]
    x_test, y_test = dataset["test_input"], dataset["test_label"]
    gen = torch.Generator().manual_seed(seed)
    train_ids, test_ids = _batch_sampler(x_train, batch, gen), _batch_sampler(x_test, batch, gen)
    grid_every = max(1, stop_grid_update_step // max(1, grid_update_num))

    optimizer = _make_optimizer(model, opt, lr)
    history: dict[str, list[float]] = {name: [] for name in ("train_loss", "test_loss", "reg", *named)}

    for step in range(steps):
        train_id, test_id = train_ids(), test_ids()
        if update_grid and step % grid_every == 0 and start_grid_update_step <= step < stop_grid_update_step:
            with torch.no_grad():
                model(x_train[train_id], update_grid=True)
            if opt == "LBFGS" and step > 0:
                optimizer = _make_optimizer(model, opt, lr)
        train_loss, reg = _optimizer_step(
            model, optimizer, x_train[train_id], y_train[train_id], loss_fn, lamb, lamb_l1, lamb_entropy
        )
        with torch.no_grad():
            test_loss = loss_fn(model(x_test[test_id]), y_test[test_id])
        values = {"train_loss": train_loss, "test_loss": test_loss, "reg": reg}
        for name, value in [*values.items(), *((n, metric()) for n, metric in named.items())]:
            history[name].append(float(value))
        if callback is not None:
            callback(step, history)
        _log_and_check(history, step, bool(log) and (step % log == 0 or step == steps - 1))
    return history


def _check_fit_arguments(
    model: KAN, dataset: Mapping[str, torch.Tensor], opt: str, steps: int, lamb: float
) -> KAN:
    """``fit``'s argument checks; returns the checked model."""
    model = _check_model(model)
    if opt not in ("LBFGS", "Adam"):
        raise ValueError(f"opt must be 'LBFGS' or 'Adam', got {opt!r}")
    for key in ("train_input", "train_label", "test_input", "test_label"):
        if key not in dataset:
            raise KeyError(f"dataset lacks {key!r}")
    if steps < 0 or lamb < 0:
        raise ValueError(f"steps and lamb must be >= 0, got {steps}, {lamb}")
    return model


def _named_metrics(metrics: Sequence[Metric] | Mapping[str, Metric] | None) -> dict[str, Metric]:
    """``fit``'s metrics by the name they are recorded under (a callable's ``__name__``)."""
    if metrics is None:
        return {}
    if isinstance(metrics, Mapping):
        return dict(metrics)
    return {getattr(m, "__name__", f"metric_{k}"): m for k, m in enumerate(metrics)}


def _batch_sampler(x: torch.Tensor, batch: int, gen: torch.Generator) -> Callable[[], torch.Tensor]:
    """Draws the indices of a random batch of ``x``'s rows (all of them when ``batch`` is -1 or
    larger than ``x``), on ``x``'s device."""
    n = x.shape[0]
    size = n if batch == -1 or batch > n else batch
    return lambda: torch.randperm(n, generator=gen)[:size].to(x.device)


def _log_and_check(history: dict[str, list[float]], step: int, show: bool) -> None:
    """Prints the step's values when ``show``; raises once the training loss is not finite."""
    if show:
        extra = " ".join(f"{k}={v[-1]:.4g}" for k, v in history.items() if k not in ("train_loss",))
        print(f"step {step:4d}  train_loss={history['train_loss'][-1]:.4g} {extra}")
    if not math.isfinite(history["train_loss"][-1]):
        raise FloatingPointError(f"training diverged at step {step} (non-finite loss)")


def _make_optimizer(model: KAN, opt: str, lr: float) -> torch.optim.Optimizer:
    """A fresh ``opt`` optimiser over the trainable parameters (pykan's LBFGS settings)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if opt == "Adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.LBFGS(
        params,
        lr=lr,
        history_size=10,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-32,
        tolerance_change=1e-32,
    )


def _optimizer_step(
    model: KAN,
    optimizer: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lamb: float,
    lamb_l1: float,
    lamb_entropy: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on the batch; returns the fit loss and the regulariser of its last
    evaluation (LBFGS evaluates the closure several times per step)."""
    record: dict[str, torch.Tensor] = {}

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        if lamb > 0:
            pred, reg = sample_regularization(model, xb, lamb_l1, lamb_entropy)
        else:
            pred, reg = model(xb), torch.zeros(())
        fit_loss = loss_fn(pred, yb)
        loss = fit_loss + lamb * reg
        loss.backward()
        mask_pruned_gradients(model)
        record["train"], record["reg"] = fit_loss.detach(), reg.detach()
        return loss

    optimizer.step(closure)
    return record["train"], record["reg"]
