"""Shared test helpers."""

from __future__ import annotations

import torch

from efficient_kan.testing import mismatch


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, *, atol: float = 1e-6, rtol: float = 1e-6, name: str = ""
) -> None:
    """``torch.testing.assert_close`` that also says where the largest difference is and how big
    (the comparison is ``efficient_kan.testing.mismatch``, which ``efficient-kan check`` uses too)."""
    problem = mismatch(actual, expected, atol=atol, rtol=rtol, name=name or "tensor")
    if problem is not None:
        raise AssertionError(problem)
