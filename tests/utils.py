"""Shared test helpers."""

from __future__ import annotations

import torch


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, *, atol: float = 1e-6, rtol: float = 1e-6, name: str = ""
) -> None:
    """``torch.testing.assert_close`` that also says where the largest difference is and how big."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if actual.numel() == 0:
        return
    a, e = actual.detach().double(), expected.detach().to(actual.device).double()
    both_nan = torch.isnan(a) & torch.isnan(e)
    diff = torch.where(both_nan, torch.zeros_like(a), (a - e).abs())
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    bound = atol + rtol * e.abs().nan_to_num(0.0)
    bad = diff > bound
    if bad.any():
        worst = torch.argmax(torch.where(bad, diff - bound, torch.full_like(diff, -1.0)))
        idx = tuple(int(i) for i in torch.unravel_index(worst, diff.shape))
        raise AssertionError(
            f"{name or 'tensor'}: {int(bad.sum())}/{diff.numel()} elements differ beyond atol={atol}, rtol={rtol}; "
            f"worst at {idx}: got {a[idx].item()!r}, expected {e[idx].item()!r} (|diff| {diff[idx].item():.3e}); "
            f"max |diff| {diff.max().item():.3e}"
        )
