"""The base activations, in one table: how PyTorch computes each, and its code in the kernels.

A layer's base branch is ``act(x) @ base_weight.T``. ``"silu"`` and ``"identity"`` are fused into
the Triton kernels (their ``ACT`` constexpr takes the code below); any other callable, or an
``nn.Module`` that is not one of the modules named here, runs on the PyTorch path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Activation",
    "FUSED",
    "activation_fn",
    "activation_grad_fn",
    "activation_name",
    "kernel_code",
    "spec_of_module",
]

Activation = str | Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _identity_grad(t: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(t)


def _silu_grad(t: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(t)
    return s * (1 + t * (1 - s))


Fn = Callable[[torch.Tensor], torch.Tensor]
# name -> (PyTorch function, its derivative, the kernels' ACT code, the nn.Module class that means it)
_TABLE: dict[str, tuple[Fn, Fn, int, type[nn.Module]]] = {
    "identity": (_identity, _identity_grad, 0, nn.Identity),
    "silu": (F.silu, _silu_grad, 1, nn.SiLU),
}
FUSED: tuple[str, ...] = tuple(_TABLE)


def activation_fn(spec: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """The PyTorch function of a named activation, or the callable itself."""
    if isinstance(spec, str):
        try:
            return _TABLE[spec][0]
        except KeyError:
            raise ValueError(
                f"unknown base_activation {spec!r}: use one of {sorted(_TABLE)} or a callable"
            ) from None
    if callable(spec):
        return spec
    raise TypeError(f"base_activation must be a name or a callable, got {spec!r}")


def activation_grad_fn(name: str) -> Fn:
    """The derivative of a named activation (what the explicit backward and jvp formulas use)."""
    return _TABLE[name][1]


def kernel_code(spec: Activation) -> int | None:
    """The kernels' ``ACT`` code of ``spec``, or None when the kernels do not fuse it."""
    entry = _TABLE.get(spec) if isinstance(spec, str) else None
    return None if entry is None else entry[2]


def activation_name(code: int) -> str:
    """The name of a kernel ``ACT`` code (the inverse of :func:`kernel_code`)."""
    for name, (_, _, c, _) in _TABLE.items():
        if c == code:
            return name
    raise ValueError(f"no fused activation has kernel code {code!r}")


def spec_of_module(module: nn.Module) -> Activation:
    """``"silu"``/``"identity"`` for exactly ``nn.SiLU``/``nn.Identity`` (not subclasses, which
    may compute something else), otherwise the module itself as a callable."""
    for name, (*_, cls) in _TABLE.items():
        if type(module) is cls:
            return name
    return module
