"""The Triton path (efficient_kan.triton_backend + kernels/) against the PyTorch reference.

On CPU the kernels run under ``TRITON_INTERPRET=1`` (tests/conftest.py sets it), so shapes stay
small (every grid is a handful of programs; the interpreter costs ~1 ms per op per program).
Every test runs twice, once per Triton strategy (fused kernels; chunked expansion + cuBLAS).
The interpreter's ``tl.dot`` is numpy matmul: fp64 runs in fp64, which lets most cases check the
maths to ~1e-12; fp32 cases use the fp32 tolerance (1e-5 relative). bf16 and fp16 autocast run here
too, against flash-attention's three-way bound: the interpreter's own bf16 ``tl.dot`` and fp32 ->
bf16 casts are wrong, so under it the kernels feed ``tl.dot`` the bf16-rounded values in fp32 and
round like a GPU (``kernels/_basis.py``: ``_dot_operand``, ``_cast``). TF32, large shapes and the
64-bit-offset case need a GPU (``@pytest.mark.gpu``).

Every case compares the forward AND every gradient (x, base_weight, spline_weight, spline_scaler,
bias) on random inputs that cover the whole grid plus points outside it.
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl
from efficient_kan.kernels._basis import _INTERPRET, _cast, _dot_operand

from efficient_kan import KANLinear, Settings, configure, kan_linear, settings, use
from efficient_kan.bspline import uniform_grid
from efficient_kan.reference import kan_linear_reference
from efficient_kan.testing import FP32_IEEE_GPU_TOL, TF32_TOL, TOL, three_way_excess
from efficient_kan.triton_backend import _input_precision, kan_linear_triton

from .utils import assert_close


@pytest.fixture(autouse=True, params=["fused", "chunked"])
def strategy(request):
    """Every test runs on both Triton strategies. On CPU the chunk budget is a few KiB, so the
    chunked strategy splits even these small cases into several chunks."""
    chunk = {} if torch.cuda.is_available() else {"chunk_bytes": 6000}
    with use(strategy=request.param, **chunk):
        yield request.param


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_case(
    n, i, o, g, k, *, scaler=True, bias=True, dtype=torch.float64, nonuniform=True, seed=0, device=None
):
    """Random layer tensors; a non-uniform grid perturbs and re-sorts each feature's knots."""
    gen = torch.Generator().manual_seed(seed)
    device = device or _device()
    grid = uniform_grid(i, g, k, dtype=torch.float32)
    if nonuniform:
        h = 2.0 / g
        grid = torch.sort(grid + 0.45 * h * torch.rand(grid.shape, generator=gen), dim=1).values
    x = 1.3 * torch.randn(n, i, generator=gen, dtype=dtype)  # some points fall outside the grid

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device).requires_grad_()

    params = {
        "base_weight": rnd(o, i),
        "spline_weight": rnd(o, i, g + k),
        "spline_scaler": rnd(o, i) if scaler else None,
        "bias": rnd(o) if bias else None,
    }
    return x.to(device).requires_grad_(), grid.to(device), params


def compare(x, grid, params, k, act="silu", tol=None, grad_out=None):
    """Forward and all gradients of the Triton path against the reference, on the same inputs."""
    tol = tol or TOL[x.dtype]
    names = ["x"] + [n for n, p in params.items() if p is not None]
    inputs = [x] + [p for p in params.values() if p is not None]
    args = (grid, params["base_weight"], params["spline_weight"], params["spline_scaler"], params["bias"])
    y_ref = kan_linear_reference(x, *args, spline_order=k, base_activation=act)
    y = kan_linear_triton(x, *args, spline_order=k, base_activation=act)
    assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
    assert_close(y, y_ref, **tol, name="y")
    if grad_out is None:
        grad_out = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(1), dtype=y_ref.dtype)
        grad_out = grad_out.to(y_ref.device)
    g_ref = torch.autograd.grad(y_ref, inputs, grad_out)
    g = torch.autograd.grad(y, inputs, grad_out)
    for name, a, e in zip(names, g, g_ref, strict=True):
        assert a.dtype == e.dtype, name
        assert_close(a, e, **tol, name=f"d{name}")


# ------------------------------------------------------------------ shapes and configurations
@pytest.mark.parametrize(
    "n,i,o,g,k,scaler,bias,act",
    [
        (37, 20, 19, 5, 3, True, True, "silu"),  # several programs on every axis, ragged edges
        (1, 1, 1, 1, 0, False, False, "identity"),  # one row, one feature, one output, order 0
        (6, 3, 5, 3, 1, True, False, "silu"),
        (9, 2, 17, 20, 5, False, True, "silu"),  # wide basis (P = 32)
        (5, 17, 3, 5, 3, False, False, "identity"),
        (4, 2, 3, 64, 3, True, True, "silu"),  # grid_size 64: P = 128
    ],
)
def test_matches_reference_fp64(n, i, o, g, k, scaler, bias, act):
    x, grid, params = make_case(n, i, o, g, k, scaler=scaler, bias=bias)
    compare(x, grid, params, k, act)


@pytest.mark.parametrize("g", [1, 3, 5, 20])
@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_grid_sizes_and_orders(g, k):
    x, grid, params = make_case(7, 3, 4, g, k, seed=g * 10 + k, nonuniform=(g + k) % 2 == 0)
    compare(x, grid, params, k)


@pytest.mark.parametrize("nonuniform", [False, True])
def test_float32(nonuniform):
    x, grid, params = make_case(33, 17, 18, 5, 3, dtype=torch.float32, nonuniform=nonuniform)
    compare(x, grid, params, 3)


@pytest.mark.parametrize(
    "n,i,o,g,k,split,dtype",
    [
        (37, 40, 19, 5, 3, 3, torch.float64),  # slices [0, 16), [16, 32), [32, 40)
        (5, 33, 7, 20, 5, 2, torch.float64),  # wide basis: BLOCK_I < 16
        (9, 20, 6, 5, 1, 4, torch.float32),
    ],
)
def test_forward_split_over_features(monkeypatch, n, i, o, g, k, split, dtype):
    """The fused forward's feature-sliced form (small batches on a GPU), forced on CPU."""
    import importlib

    fwd_module = importlib.import_module("efficient_kan.kernels.fused")
    configure(strategy="fused")  # the strategy fixture restores the settings
    monkeypatch.setattr(fwd_module, "fwd_split_count", lambda *a: split)
    x, grid, params = make_case(n, i, o, g, k, dtype=dtype, seed=split)
    compare(x, grid, params, k)


def test_forward_spline_sub_blocks(monkeypatch, strategy):
    """The forward's spline product in sub-blocks of 2 features (GPU configs with wide output
    tiles use them), widened to 16 expanded columns for narrow bases, with ragged feature counts."""
    from efficient_kan.kernels import _config

    if strategy != "fused":
        pytest.skip("a fused-forward config")
    real = _config._configs

    def configs(kind, p, fp64):
        cfgs = real(kind, p, fp64)
        if kind == "fwd" and p == 0:
            cfgs[0].kwargs["SUB_I"] = 2
        return cfgs

    monkeypatch.setattr(_config, "_configs", configs)
    monkeypatch.setattr(_config, "_TUNED", {})  # wrappers built from the patched list
    x, grid, params = make_case(9, 37, 5, 5, 3)  # P = 8: 2 features per product
    compare(x, grid, params, 3)
    x, grid, params = make_case(6, 21, 4, 3, 1, dtype=torch.float32)  # P = 4: widened to 4
    compare(x, grid, params, 1)


def test_strided_bias():
    x, grid, params = make_case(7, 5, 6, 5, 3)
    params["bias"] = torch.randn(12, dtype=torch.float64, device=x.device, requires_grad=True)[::2]
    compare(x, grid, params, 3)


def test_weight_gradient_split_over_batch(monkeypatch):
    """The fused weight-gradient kernel's batch-sliced form (partials per slice, bias gradient
    included), forced on CPU; slices past the batch contribute zero."""
    import importlib

    bwd_module = importlib.import_module("efficient_kan.kernels.fused")
    configure(strategy="fused")  # the strategy fixture restores the settings
    for split in (2, 5):
        monkeypatch.setattr(bwd_module, "dw_split_count", lambda *a, split=split: split)
        x, grid, params = make_case(150, 6, 5, 5, 3, seed=split)
        compare(x, grid, params, 3)


def test_uniform_grid_exact_knots():
    """Inputs sitting exactly on knots (and on both ends of the grid) take the reference's span."""
    x, grid, params = make_case(1, 4, 3, 4, 3, nonuniform=False)
    knots = grid[0].to(torch.float64)
    x = torch.stack([knots[j : j + 4] for j in range(0, 8)]).detach().requires_grad_()
    compare(x, grid, params, 3)


def test_after_update_grid():
    """A layer whose grid update_grid made non-uniform (and refitted): both backends agree."""
    torch.manual_seed(0)
    layer = KANLinear(6, 5, grid_size=5, spline_order=3, dtype=torch.float64, device=_device())
    data = torch.randn(64, 6, dtype=torch.float64, device=_device()) * 0.7 + 0.2
    layer.update_grid(data)
    assert not torch.allclose(layer.grid[0, 1:] - layer.grid[0, :-1], layer.grid[0, 1:2] - layer.grid[0, 0:1])
    x = torch.randn(11, 6, dtype=torch.float64, device=_device(), requires_grad=True)
    params = {n: getattr(layer, n) for n in ("base_weight", "spline_weight", "spline_scaler", "bias")}
    compare(x, layer.grid, params, 3)
    layer.backend = "triton"
    y = layer(x)
    layer.backend = "torch"
    assert_close(y, layer(x), **TOL[torch.float64], name="layer y")


def test_empty_batch():
    x, grid, params = make_case(0, 5, 4, 5, 3)
    compare(x, grid, params, 3)
    y = kan_linear_triton(x, grid, *params.values(), spline_order=3, base_activation="silu")
    y.sum().backward()
    assert torch.count_nonzero(params["spline_weight"].grad) == 0
    assert torch.count_nonzero(params["bias"].grad) == 0


def test_nan_rows_stay_in_their_row():
    x, grid, params = make_case(6, 4, 5, 5, 3)
    x = x.detach().clone()
    x[2, 1] = float("nan")
    x.requires_grad_()
    args = (grid, *params.values())
    y = kan_linear_triton(x, *args, spline_order=3, base_activation="silu")
    y_ref = kan_linear_reference(x, *args, spline_order=3, base_activation="silu")
    assert torch.isnan(y[2]).all()
    ok = torch.tensor([r != 2 for r in range(6)])
    assert_close(y[ok], y_ref[ok], **TOL[torch.float64], name="y other rows")
    (dx,) = torch.autograd.grad(y.sum(), x)
    (dx_ref,) = torch.autograd.grad(y_ref.sum(), x)
    assert_close(dx[ok], dx_ref[ok], **TOL[torch.float64], name="dx other rows")
    assert torch.isfinite(dx[2, [0, 2, 3]]).all() and torch.isnan(dx[2, 1])


def test_leading_dims_and_non_contiguous_input():
    x, grid, params = make_case(2 * 3 * 5, 8, 6, 5, 3)
    base = x.detach().reshape(2, 3, 5, 8).permute(1, 0, 3, 2)  # (3, 2, 8, 5): features on dim 2
    x_nc = base.transpose(-1, -2).requires_grad_()  # (3, 2, 5, 8), non-contiguous
    assert not x_nc.is_contiguous()
    compare(x_nc, grid, params, 3)
    x_strided = torch.randn(4, 16, dtype=torch.float64, device=x.device)[:, ::2].requires_grad_()
    compare(x_strided, grid, params, 3)


def test_inputs_without_grad_and_frozen_weights():
    x, grid, params = make_case(5, 3, 4, 5, 3)
    params["base_weight"].requires_grad_(False)
    x = x.detach()
    y = kan_linear_triton(x, grid, *params.values(), spline_order=3, base_activation="silu")
    y.square().sum().backward()
    ref = {n: p.grad.clone() for n, p in params.items() if p is not None and p.requires_grad}
    for p in params.values():
        if p is not None:
            p.grad = None
    kan_linear_reference(x, grid, *params.values(), spline_order=3).square().sum().backward()
    for n, gr in ref.items():
        assert_close(gr, params[n].grad, **TOL[torch.float64], name=n)
    assert params["base_weight"].grad is None


def test_only_bias_trainable():
    """The bias gradient without weight gradients (the weight-gradient kernel, which also sums
    the bias gradient, does not run then)."""
    x, grid, params = make_case(9, 3, 4, 5, 3)
    for name in ("base_weight", "spline_weight", "spline_scaler"):
        params[name].requires_grad_(False)
    gy = torch.randn(9, 4, dtype=torch.float64, device=x.device)
    y = kan_linear_triton(x.detach(), grid, *params.values(), spline_order=3, base_activation="silu")
    (db,) = torch.autograd.grad(y, [params["bias"]], gy)
    assert_close(db, gy.sum(0), **TOL[torch.float64], name="dbias")


# ------------------------------------------------------------------ API, dispatch, policy
def test_dispatch_and_errors():
    x, grid, params = make_case(3, 4, 2, 5, 3)
    args = (x, grid, *params.values())
    y = kan_linear(*args, spline_order=3, backend="triton")
    assert_close(y, kan_linear(*args, spline_order=3, backend="torch"), **TOL[torch.float64])
    with pytest.raises(ValueError, match="silu"):
        kan_linear(*args, spline_order=3, base_activation=torch.tanh, backend="triton")
    with pytest.raises(ValueError, match="grid"):
        kan_linear(*args, spline_order=2, base_activation="silu", backend="triton")


def test_choose_strategy_and_settings():
    from efficient_kan import triton_backend as tb

    with use(strategy="auto"):
        assert tb.choose_strategy(64, 784, 64) == "fused"  # launch-bound: fewest launches
        assert tb.choose_strategy(4096, 1024, 1024) == "chunked"
        assert tb.choose_strategy(64, 8, 8, torch.float64) == "chunked"  # fp64 products in cuBLAS
    with pytest.raises(ValueError, match="must be one of"):
        configure(strategy="fast")
    for bad in (0, -5, "16MiB", 1.5):
        with pytest.raises(ValueError, match="must be a positive integer"):
            configure(chunk_bytes=bad)
    assert settings().chunk_bytes > 0  # a refused change leaves the settings as they were
    # Environment values are validated when read, with the variable's name in the message.
    for name, value, message in [
        ("EFFICIENT_KAN_STRATEGY", "fast", "EFFICIENT_KAN_STRATEGY\\) must be one of"),
        ("EFFICIENT_KAN_CHUNK_BYTES", "16MiB", "EFFICIENT_KAN_CHUNK_BYTES.*must be a positive integer"),
        ("EFFICIENT_KAN_BACKEND", "cuda", "EFFICIENT_KAN_BACKEND\\) must be one of"),
        ("EFFICIENT_KAN_COMPILE_THREADS", "two", "EFFICIENT_KAN_COMPILE_THREADS.*positive integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            Settings.from_env({name: value})
    env = Settings.from_env({"EFFICIENT_KAN_STRATEGY": "chunked", "EFFICIENT_KAN_AUTOTUNE": "0"})
    assert (env.strategy, env.autotune) == ("chunked", False)
    with use(strategy="chunked"):
        assert tb.choose_strategy(1, 1, 1) == "chunked"


def test_settings_context_restores_after_errors_and_is_printable():
    before = settings()
    with pytest.raises(RuntimeError), use(strategy="chunked", chunk_bytes=1234):
        assert settings().strategy == "chunked" and settings().chunk_bytes == 1234
        raise RuntimeError
    assert settings() == before
    with pytest.raises(ValueError, match="interpret"):
        configure(interpret=False)
    text = before.describe()
    assert "strategy = " in text and "chunk_bytes = " in text and "backend = " in text


def test_global_backend_setting_reaches_layers_on_auto():
    layer = KANLinear(3, 2)
    x = torch.randn(4, 3)
    calls = []
    from efficient_kan import triton_backend

    real = triton_backend.KANLinearFunction.apply
    with use(backend="triton"), pytest.MonkeyPatch.context() as m:
        m.setattr(triton_backend.KANLinearFunction, "apply", lambda *a: calls.append(1) or real(*a))
        layer(x)
    assert calls == [1]
    layer.backend = "torch"  # a layer's own choice wins over the global one
    with use(backend="triton"), pytest.MonkeyPatch.context() as m:
        m.setattr(triton_backend.KANLinearFunction, "apply", lambda *a: calls.append(1) or real(*a))
        layer(x)
    assert calls == [1]


def test_fp32_matmul_precision_policy():
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert _input_precision(torch.float32) == "ieee"
        torch.set_float32_matmul_precision("high")
        assert _input_precision(torch.float32) == "tf32"
        assert _input_precision(torch.bfloat16) == "ieee"
    finally:
        torch.set_float32_matmul_precision(old)


@pytest.mark.skipif(
    not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="PyTorch without the fp32_precision API"
)
def test_fp32_precision_new_api():
    """Set through ``torch.backends.cuda.matmul.fp32_precision`` (where reading the legacy getters
    raises): still honoured."""
    matmul = torch.backends.cuda.matmul
    old = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"
        assert _input_precision(torch.float32) == "tf32"
        matmul.fp32_precision = "ieee"
        assert _input_precision(torch.float32) == "ieee"
    finally:
        matmul.fp32_precision = old
        torch.set_float32_matmul_precision("highest")


def test_torch_compile_fullgraph():
    """The custom op traces with fullgraph=True (no graph break) and gives the same values and grads."""
    torch._dynamo.reset()
    model = torch.nn.Sequential(
        KANLinear(5, 4, dtype=torch.float64, device=_device()),
        KANLinear(4, 3, dtype=torch.float64, device=_device(), bias=False),
    )
    for layer in model:
        layer.backend = "triton"
    x = torch.randn(6, 5, dtype=torch.float64, device=_device(), requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    (dx,) = torch.autograd.grad(y.sum(), x)
    for layer in model:
        layer.backend = "torch"
    y_ref = model(x)
    (dx_ref,) = torch.autograd.grad(y_ref.sum(), x)
    assert_close(y, y_ref, **TOL[torch.float64], name="y")
    assert_close(dx, dx_ref, **TOL[torch.float64], name="dx")


def test_custom_op_registration():
    """torch.library's own consistency checks (fake impl, autograd registration, schema)."""
    x, grid, params = make_case(4, 3, 2, 3, 2)
    args = (
        x,
        grid,
        params["base_weight"],
        params["spline_weight"],
        params["spline_scaler"],
        params["bias"],
        2,
        1,
    )
    torch.library.opcheck(
        torch.ops.efficient_kan.kan_linear.default,
        args,
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )
    # The backward op, with every combination of needed gradients (unneeded ones come back empty).
    grad_y = torch.randn(4, 2, dtype=x.dtype, device=x.device)
    for need in [(True, True, True), (True, False, False), (False, True, False), (False, False, True)]:
        torch.library.opcheck(
            torch.ops.efficient_kan.kan_linear_backward.default,
            (grad_y, x.detach(), grid, *(t.detach() for t in args[2:5]), 2, 1, *need),
            test_utils=("test_schema", "test_faketensor"),
        )


def test_autotune_keys_name_kernel_arguments(strategy):
    """Triton's autotuner silently skips a key that is not an argument name; a typo would let
    launches that compile differently share one tuned config."""
    import importlib

    fused = importlib.import_module("efficient_kan.kernels.fused")
    if strategy != "fused":
        pytest.skip("the chunked kernels are not autotuned")
    for key, kernel in (
        (fused._FWD_KEY, fused._kan_fwd_kernel),
        (fused._DX_KEY, fused._kan_bwd_dx_kernel),
        (fused._DW_KEY, fused._kan_bwd_dw_kernel),
    ):
        missing = set(key) - set(kernel.arg_names)
        assert not missing, (kernel.fn.__name__, missing)


# The kernel arguments that carry each optional tensor: its pointer, its strides, its gradient's pointer.
_OPTIONAL_ARGS = {
    "spline_scaler": ("sc_ptr", "stride_sco", "stride_sci", "dsc_ptr"),
    "bias": ("b_ptr", "stride_b", "db_ptr"),
}
_KERNELS = {
    "fused": ("_kan_fwd_kernel", "_kan_bwd_dx_kernel", "_kan_bwd_dw_kernel"),
    "chunked": ("_kan_expand_kernel", "_kan_dx_reduce_kernel", "_kan_pack_kernel", "_kan_unpack_kernel"),
}


@pytest.mark.parametrize("absent", [("spline_scaler",), ("bias",), ("spline_scaler", "bias")])
def test_absent_optionals_reach_the_kernels_as_none(strategy, monkeypatch, absent):
    """Without ``spline_scaler`` or ``bias``, every kernel is launched with None for that tensor's
    pointer, strides and gradient pointer (Triton compiles a None argument as a constexpr), never
    with a stand-in tensor or zero strides; with the tensor, they are real. Results match the
    reference either way."""
    import importlib

    module = importlib.import_module(f"efficient_kan.kernels.{strategy}")
    launches = []
    for name in _KERNELS[strategy]:
        kernel = getattr(module, name)

        def spy(*args, _kernel=kernel, _name=name, _run=kernel.run, **kwargs):
            launches.append((_name, {**dict(zip(_kernel.arg_names, args, strict=False)), **kwargs}))
            return _run(*args, **kwargs)

        monkeypatch.setattr(kernel, "run", spy)
    x, grid, params = make_case(
        9, 5, 4, 3, 3, scaler="spline_scaler" not in absent, bias="bias" not in absent
    )
    compare(x, grid, params, 3)
    assert {name for name, _ in launches} == set(_KERNELS[strategy])  # forward and every gradient
    checked = 0
    for name, args in launches:
        for tensor, arg_names in _OPTIONAL_ARGS.items():
            for arg in arg_names:
                if arg in args:
                    checked += 1
                    if tensor in absent:
                        assert args[arg] is None, (
                            f"{name}: {arg} is a {type(args[arg]).__name__} for an absent {tensor}"
                        )
                    else:
                        assert args[arg] is not None, f"{name}: {arg} is None with a {tensor}"
    assert checked > 0


def _three_way(dev, dtype, n, i, o, g=5, k=3):
    """flash-attention's bound: |x - x_ref| <= 2 |x_pt - x_ref| + atol, for y and every gradient,
    with x_ref the fp32 reference and x_pt the PyTorch path under the same autocast; atol is one
    unit in the last place of ``dtype`` at the largest reference value (the slack for the output's
    own rounding, which may land one step from the PyTorch path's).

    Both are evaluated at ``x`` rounded to ``dtype``: under autocast the Triton path casts ``x``
    like ``nn.Linear``'s input and evaluates the bases there, while the PyTorch path evaluates them
    at the fp32 ``x``. In bf16 that rounding of ``x`` alone moves ``dx`` by ~1e-2 of its largest
    value at the first case below, which is larger than the products' rounding being checked.
    """
    x, grid, params = make_case(n, i, o, g, k, dtype=torch.float32, device=dev)
    x = x.detach().to(dtype).to(torch.float32).requires_grad_()  # what the Triton path multiplies
    args = (grid, *params.values())
    inputs = [x] + [p for p in params.values() if p is not None]
    g_out = torch.randn(n, o, generator=torch.Generator().manual_seed(2)).to(dev)
    y_ref = kan_linear_reference(x, *args, spline_order=k)
    g_ref = torch.autograd.grad(y_ref, inputs, g_out)
    with torch.autocast(dev, dtype=dtype):
        y_pt = kan_linear_reference(x, *args, spline_order=k)
        y = kan_linear_triton(x, *args, spline_order=k, base_activation="silu")
    assert y.dtype == y_pt.dtype == dtype
    g_pt = torch.autograd.grad(y_pt, inputs, g_out.to(dtype))
    g = torch.autograd.grad(y, inputs, g_out.to(dtype))
    names = ["y", "x", "base_weight", "spline_weight", "spline_scaler", "bias"]
    for name, a, p, r in zip(names, (y, *g), (y_pt, *g_pt), (y_ref, *g_ref), strict=True):
        assert a.dtype == p.dtype, name
        excess = three_way_excess(a, p, r, dtype)
        assert excess <= 0, f"{name}: max excess {excess:.3e}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    "n,i,o,g,k",
    [
        (21, 18, 17, 5, 3),  # P = 8: tl.dot for both branches, ragged edges
        (9, 2, 17, 20, 5),  # P = 32: feature blocks under 16, the base branch a broadcast-and-sum
        (4, 2, 3, 64, 3),  # P = 128: the 3-D select form of the basis tile
    ],
)
def test_autocast_three_way_bound_small(dtype, n, i, o, g, k):
    """bf16 and fp16 autocast on this device, forward and every gradient (on CPU under the
    interpreter, with its bf16 workaround)."""
    _three_way(_device(), dtype, n, i, o, g, k)


@triton.jit
def _bf16_operands_kernel(a_ptr, b_ptr, c_ptr, s_ptr, r_ptr, N: tl.constexpr):
    """``c = a @ b`` through the kernels' bf16 operand helper; ``r = s`` cast to bf16 by theirs."""
    rows = tl.arange(0, N)[:, None] * N + tl.arange(0, N)[None, :]
    a = _dot_operand(tl.load(a_ptr + rows), tl.bfloat16)
    b = _dot_operand(tl.load(b_ptr + rows), tl.bfloat16)
    tl.store(c_ptr + rows, tl.dot(a, b, out_dtype=tl.float32))
    tl.store(r_ptr + rows, _cast(tl.load(s_ptr + rows), tl.bfloat16))


def test_bf16_operands_round_like_a_gpu(strategy):
    """The kernels' bf16 operands are the values a GPU multiplies: each rounded to nearest (ties to
    even, carry into the exponent, overflow to inf, NaN kept: ``torch``'s cast), and ``tl.dot`` of
    them is their exact product summed in fp32. Under the interpreter that takes the workaround in
    ``kernels/_basis.py`` (its own casts truncate and its bf16 ``tl.dot`` multiplies the raw bit
    patterns, ~1e10 off); on a GPU the plain casts and the tensor cores do it."""
    from efficient_kan.kernels._config import interpreting

    if strategy != "fused":
        pytest.skip("a kernel helper, not a strategy")
    assert _INTERPRET.value is interpreting()
    dev = _device()
    gen = torch.Generator().manual_seed(0)
    a, b, s = torch.randn(3, 16, 16, generator=gen).unbind()
    special = [1.9999, 3.9999, 1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3.4e38, float("inf"), float("nan")]
    a.view(-1)[:5] = s.view(-1)[:5] = torch.tensor(special[:5])
    s.view(-1)[5:8] = torch.tensor(special[5:])
    a, b, s = a.to(dev), b.to(dev), s.to(dev)
    c = torch.empty(16, 16, device=dev)
    r = torch.empty(16, 16, dtype=torch.bfloat16, device=dev)
    _bf16_operands_kernel[(1,)](a, b, c, s, r, N=16)
    expected = s.to(torch.bfloat16)
    assert torch.equal(r.isnan(), expected.isnan()) and torch.isnan(r[0, 7]), r[0]
    assert torch.equal(r.nan_to_num(0.0), expected.nan_to_num(0.0)), (r[0], expected[0])
    exact = a.to(torch.bfloat16).double() @ b.to(torch.bfloat16).double()
    assert_close(c, exact, atol=1e-5, rtol=1e-6, name="dot")


# ------------------------------------------------------------------ GPU only
gpu = pytest.mark.gpu


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_three_way_bound(dtype):
    _three_way("cuda", dtype, 300, 96, 80)


@gpu
def test_tf32_and_ieee_fp32():
    x, grid, params = make_case(256, 128, 96, 5, 3, dtype=torch.float32, device="cuda")
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        compare(x, grid, params, 3, tol=FP32_IEEE_GPU_TOL)
        torch.set_float32_matmul_precision("high")  # tf32: ~1e-3 relative per product
        compare(x, grid, params, 3, tol=TF32_TOL)
    finally:
        torch.set_float32_matmul_precision(old)


@gpu
def test_gpu_fp64_and_configs():
    for n, i, o, g, k in [(1000, 64, 48, 5, 3), (77, 33, 130, 20, 5), (513, 5, 7, 1, 0)]:
        x, grid, params = make_case(n, i, o, g, k, device="cuda")
        compare(x, grid, params, k)


@gpu
def test_64bit_offsets():
    """batch * in_features > 2^31: offsets must be 64-bit (~12 GiB: x, its grad, y, dy in bf16)."""
    free, _ = torch.cuda.mem_get_info()
    n, i = 2**31 // 8 + 64, 8
    if free < 24 * 2**30:
        pytest.skip("needs ~24 GiB of free GPU memory")
    x = torch.randn(n, i, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grid = uniform_grid(i, 5, 3, device="cuda")
    bw = torch.randn(4, i, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    sw = torch.randn(4, i, 8, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = kan_linear_triton(x, grid, bw, sw, None, None, spline_order=3, base_activation="silu")
    y.backward(torch.ones_like(y))  # dX rows past 2^31 / in elements; dW reduces over all of them
    tail = slice(n - 1000, n)
    x_t = x[tail].detach().float().requires_grad_()
    y_ref = kan_linear_reference(x_t, grid, bw.detach().float(), sw.detach().float(), spline_order=3)
    y_ref.sum().backward()
    assert_close(y[tail].float(), y_ref, atol=5e-2, rtol=2e-2, name="tail rows")
    assert_close(x.grad[tail].float(), x_t.grad, atol=5e-2, rtol=2e-2, name="tail rows of dx")
    assert torch.isfinite(bw.grad).all() and torch.isfinite(sw.grad).all()


@gpu
def test_auto_dispatch_uses_triton_on_cuda(monkeypatch):
    from efficient_kan import triton_backend

    calls = []
    real = triton_backend.KANLinearFunction.apply
    monkeypatch.setattr(triton_backend.KANLinearFunction, "apply", lambda *a: calls.append(1) or real(*a))
    layer = KANLinear(32, 16, device="cuda")
    assert layer.backend == "auto"
    layer(torch.randn(8, 32, device="cuda")).sum().backward()
    assert calls, "backend='auto' did not take the Triton path on CUDA"


@gpu
def test_torch_compile_inductor_autocast_cuda():
    """fullgraph=True with inductor under bf16 autocast: same values as the eager Triton path."""
    torch._dynamo.reset()
    model = torch.nn.Sequential(KANLinear(64, 48, device="cuda"), KANLinear(48, 10, device="cuda"))
    x = torch.randn(128, 64, device="cuda")
    compiled = torch.compile(model, fullgraph=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y_c = compiled(x)
        y_e = model(x)
    assert y_c.dtype == y_e.dtype == torch.bfloat16
    assert_close(y_c.float(), y_e.float(), atol=1e-2, rtol=1e-2, name="compiled vs eager")
    y_c.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ------------------------------------------------------------------ GPU compiler, without a GPU
_AOT_SCRIPT = """
import sys
import triton
from efficient_kan.kernels import _config, chunked
from efficient_kan.kernels.fused import _kan_bwd_dw_kernel, _kan_bwd_dx_kernel, _kan_fwd_kernel

sys.path.insert(0, sys.argv[2])  # tools/: kernel_resources.compile_one builds the signature
from kernel_resources import compile_one

consts0 = dict(ACT=1, HAS_SCALER=True, HAS_BIAS=True, BIAS_GRAD=True, CDT=triton.language.float32)
if sys.argv[1] == "fused":
    kernels = []
    # Every form of the basis tile: joined lanes (P = 8, 32) and the 3-D broadcast (P = 128).
    for k, g in ((3, 5), (3, 20), (5, 64)):
        nb, nk = g + k, g + 2 * k + 1
        p = _config.next_pow2(nb)
        for kind, fn in (("fwd", _kan_fwd_kernel), ("dx", _kan_bwd_dx_kernel), ("dw", _kan_bwd_dw_kernel)):
            cfg = _config._configs_gpu(kind, p if p >= 32 else 0, False)[0]
            extra = dict(K=k, NK=nk, NB=nb, P=p, LOG_NK=(nk - 1).bit_length(), PRECISION="ieee", **cfg.kwargs)
            kernels.append((f"{kind} G{g}K{k}", fn, extra, cfg.num_warps, cfg.num_stages))
    # Every forward config for narrow bases (P = 1, 4): sub-blocks must keep 16 columns per product.
    for k, g in ((0, 1), (1, 3)):
        nb, nk = g + k, g + 2 * k + 1
        for cfg in _config._configs_gpu("fwd", 0, False):
            extra = dict(K=k, NK=nk, NB=nb, P=_config.next_pow2(nb), LOG_NK=max(1, (nk - 1).bit_length()),
                         PRECISION="ieee", **cfg.kwargs)  # fmt: skip
            kernels.append((f"fwd G{g}K{k} {cfg.kwargs}", _kan_fwd_kernel, extra, cfg.num_warps, cfg.num_stages))
else:
    wi, wo = chunked._weight_blocks()
    kernels = [
        ("pack", chunked._kan_pack_kernel, dict(K=3, NK=12, NB=8, P=16, BLOCK_I=wi, BLOCK_O=wo), 4, 1),
        ("unpack", chunked._kan_unpack_kernel, dict(K=3, NK=12, NB=8, P=16, BLOCK_I=wi, BLOCK_O=wo), 4, 1),
    ]
    for k, g in ((3, 5), (3, 20), (5, 64)):
        nb, nk = g + k, g + 2 * k + 1
        p = _config.next_pow2(nb + 1)
        bm, bi, warps = chunked._tile_blocks(p)
        tile = dict(K=k, NK=nk, NB=nb, P=p, LOG_NK=(nk - 1).bit_length(), BLOCK_M=bm, BLOCK_I=bi)
        kernels.append((f"expand G{g}K{k}", chunked._kan_expand_kernel, tile, warps, 1))
        kernels.append((f"dx_reduce G{g}K{k}", chunked._kan_dx_reduce_kernel, tile, warps, 1))
for kind, fn, extra, num_warps, num_stages in kernels:
    # Generic compile (no launch specialization): the worst case for registers and shared memory.
    r = compile_one(fn, {**consts0, **extra}, num_warps, num_stages, "bf16")
    print(kind, r)
    assert r["shared_from_triton"] <= 227 * 1024, (kind, r)
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90(strategy):
    """Ahead-of-time compile of each strategy's kernels (default config, bf16; the fused ones at
    grid 5, 20 and 64, one per form of the basis tile) for sm_90, with no GPU: Triton frontend to
    cubin with the bundled ptxas, in a subprocess without TRITON_INTERPRET.

    The interpreter runs kernels as Python and accepts code the GPU compiler rejects; this catches
    that, and checks the default configs fit the H100's 227 KiB of shared memory.
    """
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _AOT_SCRIPT, strategy, os.path.join(root, "tools")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_every_gpu_config_keeps_the_block_size_rules():
    """Every autotuning candidate of the fused kernels keeps ``check_block_sizes`` (what the
    kernels' ``tl.static_assert``s demand), and a config that breaks a rule is refused by name."""
    from efficient_kan.kernels import _config

    for kind in ("fwd", "dx", "dw"):
        for p in (0, 32, 64, 128):
            for fp64 in (False, True):
                for cfg in _config._configs_gpu(kind, p, fp64):
                    _config.check_block_sizes(kind, p, cfg.kwargs)
    with pytest.raises(ValueError, match="must divide BLOCK_I"):
        _config.check_block_sizes("fwd", 0, {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_I": 16, "SUB_I": 3})
    with pytest.raises(ValueError, match=r"BLOCK_I \* P must be >= 16"):
        _config.check_block_sizes("dw", 0, {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_I": 8})
