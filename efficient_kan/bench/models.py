"""Whole-model benchmarking for ``efficient-kan bench``: build a model from a spec, make its
variants (original, converted by ``kanify`` whole or by preset, a parameter-matched MLP) and
measure each one's parameters, throughput and peak memory."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from ..convert import kanify
from ..layer import KAN, KANLinear
from .records import Record
from .timing import peak_memory_mib, time_fn

__all__ = [
    "PRESETS",
    "Variant",
    "build",
    "matched_mlp_widths",
    "measure_variant",
    "mlp",
    "mlp_params",
    "variants",
]

PRESETS = ("head", "mlp-blocks")


def mlp(widths: Sequence[int]) -> nn.Sequential:
    """``nn.Linear`` layers of ``widths`` with ReLU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mlp_params(widths: Sequence[int]) -> int:
    """Parameters (weights and biases) of :func:`mlp` of ``widths``, without building it."""
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))


def matched_mlp_widths(widths: Sequence[int], target: int) -> list[int]:
    """MLP widths with ``widths``' input/output and hidden widths scaled so its parameters are
    closest to ``target`` (the hidden layers keep their proportions; ``[784, 10]`` gets one)."""
    template = list(widths[1:-1]) or [1]
    best: tuple[int, list[int]] | None = None
    for first in range(1, 1_000_000):
        hidden = [max(1, round(first * t / template[0])) for t in template]
        candidate = [widths[0], *hidden, widths[-1]]
        gap = abs(mlp_params(candidate) - target)
        if best is None or gap < best[0]:
            best = (gap, candidate)
        if mlp_params(candidate) > target:
            break
    assert best is not None
    return best[1]


def _widths(text: str) -> list[int]:
    try:
        widths = [int(v) for v in text.split(",")]
    except ValueError:
        widths = []
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"expected at least two positive widths like 784,64,10, got {text!r}")
    return widths


def build(spec: str) -> tuple[nn.Module, tuple[int, ...] | None, list[int] | None]:
    """The model of ``spec`` and its natural input shape (without batch) where it has one.

    ``mlp:784,64,10`` and ``kan:784,64,10`` (the widths; input ``(784,)``), ``module:factory`` (a
    callable returning the model), or a torchvision model name (``resnet18``, ``vit_b_16``,
    ``swin_t``, ...; random weights). Returns ``(model, input_shape or None, widths or None)``.
    """
    kind, _, rest = spec.partition(":")
    if kind in ("mlp", "kan") and rest:
        widths = _widths(rest)
        return (mlp(widths) if kind == "mlp" else KAN(widths)), (widths[0],), widths
    if rest:
        try:
            module = importlib.import_module(kind)
        except ImportError as e:
            raise ValueError(f"cannot import {kind!r} for model {spec!r}: {e}") from None
        factory = getattr(module, rest, None)
        if not callable(factory):
            raise ValueError(f"{kind!r} has no callable {rest!r} (model {spec!r})")
        try:
            model = factory()
        except Exception as e:  # the user's code: say which call failed, in one line
            raise ValueError(f"{spec}() raised {type(e).__name__}: {e}") from None
        if not isinstance(model, nn.Module):
            raise ValueError(f"{spec} returned {type(model).__name__}, not an nn.Module")
        return model, None, None
    try:
        import torchvision
    except ImportError:
        raise ValueError(
            f"{spec!r} is not mlp:/kan:/module:factory, and torchvision (for model names) is not installed"
        ) from None
    names = torchvision.models.list_models(module=torchvision.models)
    if spec not in names:
        raise ValueError(f"unknown model {spec!r}: torchvision has {', '.join(sorted(names))}")
    return torchvision.models.get_model(spec, weights=None), None, None


def _preset_filter(name: str, model: nn.Module) -> Callable[[nn.Module, str], bool]:
    """The ``kanify`` filter of a preset, for ``model``.

    - ``"head"``: the last ``nn.Linear`` in module order (a classifier's output layer).
    - ``"mlp-blocks"``: every other ``nn.Linear`` whose parent holds two or more ``nn.Linear``
      children (the feed-forward blocks of transformers, e.g. ViT's ``MLPBlock``, Swin's MLP, and
      the hidden layers of a plain MLP).
    """
    linears = [fqn for fqn, m in model.named_modules() if isinstance(m, nn.Linear)]
    head = linears[-1] if linears else None
    if name == "head":
        return lambda _m, fqn: fqn == head
    if name == "mlp-blocks":
        counts: dict[str, int] = {}
        for fqn in linears:
            parent = fqn.rpartition(".")[0]
            counts[parent] = counts.get(parent, 0) + 1
        return lambda _m, fqn: fqn != head and counts.get(fqn.rpartition(".")[0], 0) >= 2
    raise ValueError(f"unknown preset {name!r}: {', '.join(PRESETS)}")


@dataclass
class Variant:
    """One model to measure: ``name``, the module, and the qualified names of its converted layers."""

    name: str
    model: nn.Module
    converted: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def converted_params(self) -> int:
        return sum(
            p.numel() for m in self.model.modules() if isinstance(m, KANLinear) for p in m.parameters()
        )


VARIANTS = ("original", "kanify", "kanify:head", "kanify:mlp-blocks", "mlp-matched")


def variants(spec: str, wanted: Sequence[str] = VARIANTS) -> tuple[list[Variant], list[str], tuple | None]:
    """The variants of ``spec`` named in ``wanted`` (see :data:`VARIANTS`) and notes on those left
    out (a preset that converts nothing or the same layers as an earlier variant; a matched MLP
    where the model is not an MLP/KAN spec). Also returns the model's natural input shape."""
    base, input_shape, widths = build(spec)
    out: list[Variant] = []
    notes: list[str] = []
    seen: dict[tuple[str, ...], str] = {}
    for name in wanted:
        if name == "original":
            out.append(Variant("original", base))
            continue
        if name.startswith("kanify"):
            model = copy.deepcopy(base)
            preset = name.partition(":")[2]
            filt = _preset_filter(preset, model) if preset else None
            converted = kanify(model, filter=filt)
            if not converted:
                notes.append(f"{name}: no nn.Linear layer of this model matches; not measured")
                continue
            key = tuple(sorted(converted))
            if key in seen:
                notes.append(f"{name}: converts the same layers as {seen[key]}; not measured again")
                continue
            seen[key] = name
            out.append(Variant(name, model, converted))
            continue
        if name == "mlp-matched":
            if widths is None:
                notes.append("mlp-matched: defined only for mlp:/kan: specs; not measured")
                continue
            kan_model = base if isinstance(base, KAN) else copy.deepcopy(base)
            if not isinstance(base, KAN):
                kanify(kan_model)
            target = sum(p.numel() for p in kan_model.parameters())
            matched = matched_mlp_widths(widths, target)
            out.append(Variant(name, mlp(matched), note=f"MLP {'-'.join(map(str, matched))}, ~KAN params"))
            continue
        raise ValueError(f"unknown variant {name!r}: {', '.join(VARIANTS)}")
    return out, notes, input_shape


def _precision_ctx(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return nullcontext()


def measure_variant(
    variant: Variant,
    inputs: torch.Tensor,
    precision: str,
    env: dict,
    *,
    benchmark: str,
    compiled: bool = False,
    min_run_time: float = 1.0,
    warmup: int = 2,
    backward: bool = True,
) -> list[Record]:
    """Throughput (samples/s at the 80/50/20 % time quantiles) of the forward (``eval``, no grad) and
    forward+backward (``train``, ``out.float().sum()``), peak memory of forward+backward, and the
    parameter counts of ``variant`` on ``inputs`` (batch first), as records."""
    device = inputs.device
    model = variant.model.to(device)
    run = torch.compile(model) if compiled else model
    batch = inputs.shape[0]
    provider = variant.name + (" compiled" if compiled else "")
    common = dict(
        benchmark=benchmark, provider=provider, shape="x".join(map(str, inputs.shape)), dtype=precision
    )
    records = [
        Record.of(env, **common, metric="params", value=variant.params, extra={"note": variant.note}),
        Record.of(env, **common, metric="params converted", value=variant.converted_params,
                  extra={"converted": variant.converted}),
    ]  # fmt: skip

    def forward() -> None:
        with torch.no_grad(), _precision_ctx(precision, device):
            run(inputs)

    def train_step() -> None:
        with _precision_ctx(precision, device):
            out = run(inputs)
        out.float().sum().backward()

    steps = [("fwd", forward, None)]
    if backward:
        steps.append(("fwd+bwd", train_step, list(model.parameters())))
    for mode, fn, grads in steps:
        model.train(mode != "fwd")
        t = time_fn(fn, device, min_run_time=min_run_time, warmup=warmup, grad_to_none=grads)
        low, mid, high = t.per_second(batch)
        records.append(
            Record.of(env, **common, metric=f"{mode} samples/s", p20=low, p50=mid, p80=high, unit="samples/s",
                      extra={"timer": t.method, "ms": [t.p20, t.p50, t.p80]})
        )  # fmt: skip
    if backward:
        model.zero_grad(set_to_none=True)
        mib, kind = peak_memory_mib(train_step, device)
        model.zero_grad(set_to_none=True)
        records.append(Record.of(env, **common, metric="fwd+bwd peak MiB", value=mib, unit="MiB",
                                 extra={"memory": kind}))  # fmt: skip
    model.eval()
    return records
