"""The knot grid stays valid: in every precision the module is cast to, through every path that
writes it (update_grid, reset_parameters, casts, to_empty, load_state_dict), and on both paths of
the forward; plus the size of update_grid's refit change and the compiled basis search."""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from efficient_kan import KAN, KANLinear
from efficient_kan.bspline import bspline_basis, check_grid, uniform_grid

from .utils import assert_close

LOW = [torch.bfloat16, torch.float16]


def _narrow(n: int, i: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    """Samples spread 0.02 around 3: bfloat16's spacing there is 0.0156, so its knots merge."""
    gen = torch.Generator().manual_seed(seed)
    return (3 + 0.02 * torch.randn(n, i, generator=gen, dtype=torch.float64)).to(dtype)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = module.state_dict()
    assert set(now) == set(before)
    for key, value in before.items():
        assert now[key].dtype == value.dtype and torch.equal(now[key], value), key


# ---------------------------------------------------------------- casts keep the knots in fp32+
@pytest.mark.parametrize(
    "cast,param_dtype,grid_dtype",
    [
        (lambda m: m.to(torch.bfloat16), torch.bfloat16, torch.float32),
        (lambda m: m.to(dtype=torch.float16), torch.float16, torch.float32),
        (lambda m: m.half(), torch.float16, torch.float32),
        (lambda m: m.bfloat16(), torch.bfloat16, torch.float32),
        (lambda m: m.double(), torch.float64, torch.float64),
        (lambda m: m.double().half(), torch.float16, torch.float32),
        (lambda m: m.half().float(), torch.float32, torch.float32),
        (lambda m: m.to("cpu", torch.bfloat16), torch.bfloat16, torch.float32),
    ],
    ids=["to-bf16", "to-fp16", "half", "bfloat16", "double", "double-half", "half-float", "to-cpu-bf16"],
)
def test_casts_keep_knots_at_least_float32(cast, param_dtype, grid_dtype):
    torch.manual_seed(0)
    layer = KANLinear(4, 3)
    layer.update_grid(torch.randn(64, 4))
    knots = layer.grid.clone()
    model = cast(KAN.from_layers([layer]))  # through a container, as .to reaches real models
    cast_layer = model.layers[0]
    assert cast_layer.base_weight.dtype == param_dtype and cast_layer.spline_weight.dtype == param_dtype
    assert cast_layer.grid.dtype == grid_dtype
    assert torch.equal(cast_layer.grid.double(), knots.double())  # float32 knots survive unrounded


def test_constructor_with_low_precision_dtype_makes_float32_knots():
    for dtype in LOW:
        layer = KANLinear(3, 2, dtype=dtype)
        assert layer.base_weight.dtype == dtype and layer.grid.dtype == torch.float32
        assert torch.equal(layer.grid, uniform_grid(3, 5, 3))
    # A float64 layer keeps efficient-kan's knots: computed in the default dtype, then widened.
    layer64 = KANLinear(3, 2, dtype=torch.float64)
    assert layer64.grid.dtype == torch.float64 and torch.equal(layer64.grid, uniform_grid(3, 5, 3).double())


@pytest.mark.parametrize("dtype", LOW)
def test_update_grid_after_low_precision_cast_keeps_knots_valid(dtype):
    """The reported failure: after .to(bfloat16), update_grid on narrowly spread inputs stored
    knots that were not strictly increasing. Now they are float32 and valid, and the refit keeps
    the function as well as it does in float32."""
    torch.manual_seed(0)
    layer = KANLinear(5, 4).to(dtype)
    ref = copy.deepcopy(layer).float()  # the same (rounded) weights in a float32 layer
    x = _narrow(512, 5, dtype)
    layer.update_grid(x)
    ref.update_grid(x)
    assert layer.grid.dtype == torch.float32
    check_grid(layer.grid)
    assert torch.equal(layer.grid, ref.grid)
    assert torch.equal(layer.spline_weight, ref.spline_weight.to(dtype))


def test_update_grid_raises_when_knots_merge_in_the_grid_dtype():
    """float64 samples spread below float32's resolution give knots distinct in float64 that a
    float32 grid would store merged: update_grid raises instead and changes nothing."""
    layer = KANLinear(3, 2, grid_eps=0.0)
    before = _snapshot(layer)
    gen = torch.Generator().manual_seed(0)
    x = 3 + 1e-9 * torch.randn(200, 3, generator=gen, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"invalid grid in torch.float32.*strictly increasing"):
        layer.update_grid(x)
    _assert_unchanged(layer, before)
    # The same samples are fine for a float64 layer.
    layer64 = KANLinear(3, 2, grid_eps=0.0, dtype=torch.float64)
    layer64.update_grid(x)
    check_grid(layer64.grid)


def test_cast_that_would_merge_knots_raises_and_changes_nothing():
    """A float64 grid whose knots float32 cannot tell apart is not silently rounded by .float()
    (or .half(), whose knots would be float32 too)."""
    layer = KANLinear(3, 2, grid_eps=0.0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    layer.update_grid(3 + 1e-9 * torch.randn(200, 3, generator=gen, dtype=torch.float64))
    before = _snapshot(layer)
    for cast in (lambda m: m.float(), lambda m: m.half(), lambda m: m.to(torch.bfloat16)):
        with pytest.raises(ValueError, match="casting the knots from torch.float64 to torch.float32"):
            cast(layer)
        _assert_unchanged(layer, before)


def test_reset_parameters_rejects_a_range_too_narrow_for_the_dtype():
    """(1000, 1000.0001) in 5 steps: knots 2e-5 apart, where float32's spacing is 6e-5. The
    knots are computed in the default dtype (as efficient-kan's), whatever the layer's dtype."""
    for dtype in (None, torch.bfloat16, torch.float64):
        with pytest.raises(ValueError, match=r"grid_range \(1000.0, 1000.0001\).*float32"):
            KANLinear(3, 2, grid_range=(1000.0, 1000.0001), dtype=dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        layer = KANLinear(3, 2, grid_range=(1000.0, 1000.0001))
    finally:
        torch.set_default_dtype(previous)
    assert layer.grid.dtype == torch.float64
    check_grid(layer.grid)


def test_meta_init_to_empty_reset_matches_a_direct_build():
    """FSDP-style: build on the meta device, materialise with to_empty, then reset_parameters."""
    torch.manual_seed(0)
    direct = KANLinear(4, 3, dtype=torch.bfloat16)
    meta = KANLinear(4, 3, device="meta", dtype=torch.bfloat16)
    assert meta.grid.is_meta and meta.grid.dtype == torch.float32
    meta.to_empty(device="cpu")
    assert meta.grid.dtype == torch.float32 and meta.base_weight.dtype == torch.bfloat16
    torch.manual_seed(0)
    meta.reset_parameters()
    _assert_unchanged(meta, _snapshot(direct))
    x = torch.randn(5, 4, dtype=torch.bfloat16)
    assert_close(meta(x), direct(x), atol=0, rtol=0)


# ---------------------------------------------------------------- state dicts, both ways
def _roundtrip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dicts_load_between_float32_and_low_precision_modules():
    torch.manual_seed(0)
    src = KANLinear(4, 3)
    src.update_grid(_narrow(256, 4))
    knots = src.grid.clone()
    for dtype in LOW:
        # float32 checkpoint -> bf16/fp16 module: the knots arrive unrounded.
        low = KANLinear(4, 3, dtype=dtype)
        low.load_state_dict(_roundtrip(src.state_dict()))
        assert low.grid.dtype == torch.float32 and torch.equal(low.grid, knots)
        assert low.spline_weight.dtype == dtype
        # ... and back: a bf16/fp16 module's checkpoint carries float32 knots.
        back = KANLinear(4, 3)
        back.load_state_dict(_roundtrip(low.state_dict()))
        assert torch.equal(back.grid, knots)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("assign", [False, True])
def test_low_precision_grid_checkpoint_loads_as_float32(dtype, assign):
    """Checkpoints written before knots were kept in float32 have bf16/fp16 grids; valid ones
    load (upcast, also with assign=True) into float32 and low-precision modules alike."""
    torch.manual_seed(0)
    old = {k: v.to(dtype) for k, v in KANLinear(4, 3).state_dict().items()}
    for module_dtype in (torch.float32, dtype):
        layer = KANLinear(4, 3, dtype=module_dtype)
        layer.load_state_dict(old, assign=assign)
        assert layer.grid.dtype == torch.float32
        assert torch.equal(layer.grid, old["grid"].float())
        assert layer(torch.randn(2, 4, dtype=layer.base_weight.dtype)).shape == (2, 3)
    assert old["grid"].dtype == dtype  # the caller's dict is untouched


@pytest.mark.parametrize("assign", [False, True])
def test_checkpoint_with_merged_knots_is_refused_and_changes_nothing(assign):
    """What the old bf16 update_grid saved: knots not strictly increasing. Loading it raises and
    leaves the layer as it was (its other tensors included)."""
    torch.manual_seed(0)
    layer = KANLinear(4, 3, bias=False)
    before = _snapshot(layer)
    bad = {k: torch.randn_like(v) for k, v in layer.state_dict().items()}
    grid = uniform_grid(4, 5, 3)
    grid[2, 6] = grid[2, 5]
    bad["grid"] = grid.to(torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"grid: grid knots must be strictly increasing"):
        layer.load_state_dict(bad, assign=assign)
    _assert_unchanged(layer, before)
    # Inside a model, the error names the layer's key.
    model = KAN([4, 3])
    with pytest.raises(RuntimeError, match=r"layers\.0\.grid"):
        model.load_state_dict({f"layers.0.{k}": v for k, v in bad.items()})


def test_a_low_precision_grid_assigned_directly_is_refused_by_the_forward():
    layer = KANLinear(3, 2)
    layer.grid = layer.grid.to(torch.bfloat16)
    with pytest.raises(TypeError, match="knots must be float32 or float64"):
        layer(torch.randn(4, 3))


# ---------------------------------------------------------------- the forward with fp32 knots
def _with_knots_near_3(layer: KANLinear) -> KANLinear:
    """Knots moved onto narrow data around 3 (where bf16 would merge them), then sizeable random
    splines: the refit of the initial splines, which are zero out there, would leave none."""
    layer.update_grid(_narrow(256, layer.in_features).to(layer.grid.device))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        w = torch.randn(layer.spline_weight.shape, generator=gen)
        layer.spline_weight.copy_(w.to(layer.spline_weight.device))
    return layer


def _fp64_twin(layer: KANLinear) -> KANLinear:
    """The same layer in float64: every parameter and knot upcast exactly."""
    return copy.deepcopy(layer).double()


@pytest.mark.parametrize("dtype", LOW)
def test_torch_path_low_precision_module_with_float32_knots(dtype):
    """A bf16/fp16 module computes its bases from the float32 knots (in float32) and agrees with
    the float64 evaluation of its own weights to the rounding of its dtype."""
    torch.manual_seed(0)
    layer = _with_knots_near_3(KANLinear(6, 5).to(dtype))
    layer.backend = "torch"
    x = _narrow(33, 6, dtype, seed=1).requires_grad_()
    y = layer(x)
    assert y.dtype == dtype
    twin = _fp64_twin(layer)
    x64 = x.detach().double().requires_grad_()
    y64 = twin(x64)
    assert_close(y, y64, atol=2e-2 * y64.abs().max().item(), rtol=0, name="y")
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y.backward(g.to(dtype))
    y64.backward(g)
    assert x.grad.dtype == dtype and layer.spline_weight.grad.dtype == dtype
    for name, a, e in [("x", x.grad, x64.grad)] + [
        (n, p.grad, q.grad) for (n, p), q in zip(layer.named_parameters(), twin.parameters(), strict=True)
    ]:
        assert_close(a, e, atol=3e-2 * e.abs().max().item(), rtol=0, name=name)


@pytest.fixture(params=["fused", "chunked"])
def triton_strategy(request):
    from efficient_kan import use

    chunk = {} if torch.cuda.is_available() else {"chunk_bytes": 6000}
    with use(strategy=request.param, **chunk):
        yield request.param


@pytest.mark.parametrize("dtype", LOW)
def test_triton_path_low_precision_module_with_float32_knots(dtype, triton_strategy):
    """The kernels take float32 knots with bf16/fp16 x and weights (knot arithmetic in float32).
    Three-way bound against the float64 evaluation: no worse than twice the PyTorch path's error
    in the same dtype."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    layer = _with_knots_near_3(KANLinear(7, 5).to(device=device, dtype=dtype))
    assert layer.grid.dtype == torch.float32
    x = _narrow(13, 7, dtype, seed=1).to(device)
    twin = _fp64_twin(layer)
    x64 = x.double().requires_grad_()
    y_ref = twin(x64)
    g = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device)
    y_ref.backward(g)
    names = ["y", "x", "spline_weight", "spline_scaler", "base_weight", "bias"]
    refs = [y_ref, x64.grad] + [getattr(twin, n).grad for n in names[2:]]
    results = {}
    for backend in ("triton", "torch"):
        layer.backend = backend
        layer.zero_grad()
        xb = x.clone().requires_grad_()
        y = layer(xb)
        y.backward(g.to(dtype))
        results[backend] = [y, xb.grad] + [getattr(layer, n).grad.clone() for n in names[2:]]
    for name, a, p, r in zip(names, results["triton"], results["torch"], refs, strict=True):
        assert a.dtype == p.dtype == dtype, name
        err = (a.double() - r).abs()
        bound = 2 * (p.double() - r).abs() + 1e-2 * r.abs().max()
        assert bool((err <= bound).all()), f"{name}: max excess {(err - bound).max().item():.3e}"


# ---------------------------------------------------------------- update_grid's change, measured
def test_update_grid_logit_change_on_mnist_subset_is_bounded():
    """What ``update_grid`` keeps is a least-squares refit, so the logits move a little. Measured
    for KAN([784, 64, 10]) at initialisation (seed 0) on the first 512 training digits of the
    bundled subset: max |change| 1.821e-3 in float32 and float64 (logits up to 0.596), the figure
    README.md and the docstring give. The bound leaves ~35% for BLAS/LAPACK differences."""
    from efficient_kan.data import load_bundled

    x = load_bundled().x_train[:512]
    torch.manual_seed(0)
    base = KAN([784, 64, 10])
    for dtype in (torch.float32, torch.float64):
        model = copy.deepcopy(base).to(dtype)
        with torch.no_grad():
            before = model(x.to(dtype))
            after = model(x.to(dtype), update_grid=True)
        change = (after - before).abs().max().item()
        assert 1e-3 < change < 2.5e-3, f"{dtype}: max |logit change| {change:.3e}"
        assert before.abs().max().item() < 1.0


# ---------------------------------------------------------------- the compiled span search
def test_compiled_basis_has_no_searchsorted_and_matches_eager():
    """Under torch.compile the span is a count of knots <= x (inductor's CPU backend runs
    searchsorted as an eager fallback, fed a non-contiguous copy). Same bases bit for bit, at
    knots, at both ends, outside and for NaN."""
    torch.manual_seed(0)
    grid = torch.sort(uniform_grid(6, 4, 3) + 0.05 * torch.rand(6, 11), dim=1).values
    x = torch.rand(40, 6) * 3 - 1.5
    x[0, 0] = float("nan")
    x[1, 1], x[2, 2], x[3, 3] = grid[1, 0], grid[2, -1], grid[3, 5]
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm.print_readable(print_output=False))
        return gm.forward

    compiled = torch.compile(lambda t: bspline_basis(t, grid, 3), backend=backend, fullgraph=True)
    y = compiled(x)
    assert graphs and not any("searchsorted" in code for code in graphs)
    assert torch.equal(torch.isnan(y), torch.isnan(bspline_basis(x, grid, 3)))
    assert_close(y, bspline_basis(x, grid, 3), atol=0, rtol=0)


_INDUCTOR_SCRIPT = r"""
import warnings
import torch
from efficient_kan import KAN

warnings.simplefilter("always")
torch.manual_seed(0)
model = KAN([8, 6, 3])
for layer in model.layers:
    layer.backend = "torch"
compiled = torch.compile(model, backend="inductor")
x = torch.randn(16, 8, requires_grad=True)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    compiled(x).square().sum().backward()
for w in caught:
    print("WARNING:", w.message)
"""


@pytest.mark.slow
def test_inductor_compile_gives_searchsorted_no_non_contiguous_input():
    """``--compile`` on CPU: no "non-contiguous" warning from searchsorted (inductor, ~80 s on
    the 2-core build machine). In a fresh process: the C++ warning is printed once per process,
    and sometimes straight to stderr rather than through Python's warnings."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _INDUCTOR_SCRIPT], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "non-contiguous" not in output, output[-3000:]
