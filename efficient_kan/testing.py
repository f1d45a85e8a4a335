"""The tolerances and comparisons that the tests and ``efficient-kan check`` share (one place).

- :data:`TOL`: the Triton path against the PyTorch reference in the same dtype (fp64: the maths to
  ~1e-12; fp32 at the interpreter's small shapes).
- :data:`FP32_IEEE_GPU_TOL` and :data:`TF32_TOL`: fp32 inputs on a GPU, with IEEE products
  (``set_float32_matmul_precision("highest")``) and with TF32 (``"high"``, ~1e-3 relative per
  product), at a few hundred rows and features.
- :func:`three_way_excess`: flash-attention's bound for bf16/fp16 autocast, ``|x - x_ref| <= 2 *
  |x_pt - x_ref| + atol``, with ``x_ref`` the fp32 reference, ``x_pt`` the PyTorch path under the
  same autocast and ``atol`` one unit in the last place of the low-precision dtype at
  ``max|x_ref|`` (the output's own rounding may land one step from the PyTorch path's). Both paths
  are evaluated at ``x`` rounded to that dtype, as the Triton path casts its input like
  ``nn.Linear`` does under autocast.
"""

from __future__ import annotations

import torch

__all__ = [
    "FP32_IEEE_GPU_TOL",
    "TF32_TOL",
    "TOL",
    "mismatch",
    "three_way_excess",
]

TOL: dict[torch.dtype, dict[str, float]] = {
    torch.float64: dict(atol=1e-12, rtol=1e-10),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
}
FP32_IEEE_GPU_TOL: dict[str, float] = dict(atol=1e-4, rtol=1e-5)
TF32_TOL: dict[str, float] = dict(atol=5e-2, rtol=5e-3)


def mismatch(
    actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float, name: str = "tensor"
) -> str | None:
    """``None`` when ``|actual - expected| <= atol + rtol * |expected|`` everywhere (NaN matching
    NaN), else one line saying how many elements differ, where the worst is and by how much."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual.shape != expected.shape:
        return f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if actual.numel() == 0:
        return None
    a, e = actual.detach().double(), expected.detach().to(actual.device).double()
    both_nan = torch.isnan(a) & torch.isnan(e)
    diff = torch.where(both_nan, torch.zeros_like(a), (a - e).abs())
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    bound = atol + rtol * e.abs().nan_to_num(0.0)
    bad = diff > bound
    if not bad.any():
        return None
    worst = torch.argmax(torch.where(bad, diff - bound, torch.full_like(diff, -1.0)))
    idx = tuple(int(i) for i in torch.unravel_index(worst, diff.shape))
    return (
        f"{name}: {int(bad.sum())}/{diff.numel()} elements differ beyond atol={atol}, rtol={rtol}; "
        f"worst at {idx}: got {a[idx].item()!r}, expected {e[idx].item()!r} (|diff| {diff[idx].item():.3e}); "
        f"max |diff| {diff.max().item():.3e}"
    )


def three_way_excess(
    actual: torch.Tensor, pytorch: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype
) -> float:
    """The largest ``|actual - reference| - (2 * |pytorch - reference| + atol)``: at most 0 when the
    low-precision result is within flash-attention's bound (see the module docstring). ``dtype``
    is the autocast dtype (a gradient may come back in fp32 while it was computed in ``dtype``)."""
    r = reference.detach().float()
    err = (actual.detach().float() - r).abs()
    ulp = torch.finfo(dtype).eps
    bound = 2 * (pytorch.detach().float() - r).abs() + ulp * r.abs().max()
    return float((err - bound).max()) if err.numel() else 0.0
