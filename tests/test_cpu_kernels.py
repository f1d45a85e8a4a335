"""The eager CPU path's C kernels (efficient_kan/cpu_kernels.{c,py}): each against the PyTorch
formulas on fresh random inputs, and how they are built, cached and refused."""

from __future__ import annotations

import warnings

import pytest
import torch

from efficient_kan import cpu_kernels, kan_linear, use
from efficient_kan.bspline import _dense, _local_bases, bspline_basis_derivative, uniform_grid
from efficient_kan.eager import _knot_info, eager_path_applies
from efficient_kan.reference import kan_linear_reference

from .utils import assert_close

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None, reason="no C compiler here")


def _grid(n_in: int, grid_size: int, order: int, uniform: bool, dtype: torch.dtype) -> torch.Tensor:
    grid = uniform_grid(n_in, grid_size, order, (-1.2, 0.8), dtype=torch.float64)
    if not uniform:  # strictly increasing, every feature its own knots
        gen = torch.Generator().manual_seed(1)
        steps = torch.rand(n_in, grid.shape[1], generator=gen, dtype=torch.float64) + 0.2
        grid = steps.cumsum(1) / steps.sum(1, keepdim=True) * 2.5 - 1.4
    return grid.to(dtype)


def _inputs(grid: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Inside, at knots, at both ends, outside, and non-finite."""
    gen = torch.Generator().manual_seed(seed)
    g = grid.double()
    lo, hi = g[:, 0], g[:, -1]
    x = lo + (torch.rand(n, grid.shape[0], generator=gen, dtype=torch.float64) * 1.4 - 0.2) * (hi - lo)
    x[0], x[1], x[2] = g[:, 0], g[:, -1], g[:, g.shape[1] // 2]
    x[3, 0], x[3, -1] = float("nan"), float("inf")
    x[4, 0] = float("-inf")
    return x.to(grid.dtype)


CASES = [
    (1, 1),
    (3, 2),
    (5, 3),
    (4, 5),
    (2, 0),
    (3, 7),
    (20, 3),
    (30, 3),
]  # nb 2..33, in and off the specialised list


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("uniform", [True, False], ids=["uniform", "general"])
@pytest.mark.parametrize("grid_size,order", CASES, ids=str)
def test_bases_and_their_derivatives_match_de_boor(grid_size, order, uniform, dtype):
    n_in, n = 5, 23
    grid = _grid(n_in, grid_size, order, uniform, dtype)
    x = _inputs(grid, n)
    knots = _knot_info(KERNELS, grid, order, dtype)
    assert knots.uniform == (uniform and 1 <= order <= 5)
    nb = grid.shape[1] - 1 - order
    # Written into a column block of a wider matrix, as the eager path does.
    out = torch.full((n, n_in * nb + 3), 7.0, dtype=dtype)
    KERNELS.expand(x, knots, out[:, 1 : 1 + n_in * nb])
    index, values, _ = _local_bases(x.double(), grid.double(), order, False)
    expected = _dense(index, values, nb).reshape(n, n_in * nb)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert_close(out[:, 1 : 1 + n_in * nb].double(), expected, atol=tol, rtol=tol)
    assert (out[:, 0] == 7).all() and (out[:, 1 + n_in * nb :] == 7).all()  # nothing outside the block

    finite = x[5:]  # the derivative where it is defined
    g = torch.randn(finite.shape[0], n_in * nb, dtype=dtype)
    dx = torch.randn(finite.shape[0], n_in, dtype=dtype)
    start = dx.clone()
    KERNELS.expand_grad(finite, knots, g, dx)
    deriv = bspline_basis_derivative(finite.double(), grid.double(), order)
    expected_dx = start.double() + (g.double().view(-1, n_in, nb) * deriv).sum(-1)
    # t, the position within a knot interval, is resolved to eps * (its index) and the derivative
    # moves by ~B'' = 1/h^2 per unit of x: the float32 error grows with the number of knots / h.
    inv_h = grid_size / 2.0
    tol_d = 1e-11 if dtype == torch.float64 else 8 * torch.finfo(dtype).eps * grid.shape[1] * inv_h
    assert_close(dx.double(), expected_dx, atol=tol_d, rtol=tol_d)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("scaler", [True, False])
@pytest.mark.parametrize("nb", [8, 6, 33])
def test_pack_and_its_gradients_on_a_column_block(nb, scaler, dtype):
    n_out, n_in, start, stop = 4, 9, 2, 7
    width = stop - start
    gen = torch.Generator().manual_seed(2)
    sw = torch.randn(n_out, n_in, nb, generator=gen, dtype=dtype)
    sc = torch.randn(n_out, n_in, generator=gen, dtype=dtype) if scaler else None
    bw = torch.randn(n_out, n_in, generator=gen, dtype=dtype)
    blk = lambda t: None if t is None else t[:, start:stop]
    packed = torch.empty(n_out, width * (nb + 1), dtype=dtype)
    KERNELS.pack(blk(sw), blk(sc), blk(bw), packed)
    scaled = blk(sw) * (blk(sc).unsqueeze(-1) if scaler else 1)
    assert_close(packed, torch.cat([scaled.reshape(n_out, -1), blk(bw)], 1), atol=0, rtol=0)

    d = torch.randn(n_out, width * (nb + 1), generator=gen, dtype=dtype)
    dsw, dsc, dbw = torch.zeros_like(sw), torch.zeros(n_out, n_in, dtype=dtype), torch.zeros_like(bw)
    KERNELS.pack_grads(d, blk(sw), blk(sc), blk(dsw), blk(dsc) if scaler else None, blk(dbw))
    d_spline = d[:, : width * nb].view(n_out, width, nb)
    assert_close(dsw[:, start:stop], d_spline * (blk(sc).unsqueeze(-1) if scaler else 1), atol=0, rtol=0)
    assert_close(dbw[:, start:stop], d[:, width * nb :], atol=0, rtol=0)
    if scaler:
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert_close(dsc[:, start:stop], (d_spline * blk(sw)).sum(-1), atol=tol, rtol=tol)
    untouched = torch.ones(n_in, dtype=torch.bool)
    untouched[start:stop] = False
    assert (
        (dsw[:, untouched] == 0).all() and (dsc[:, untouched] == 0).all() and (dbw[:, untouched] == 0).all()
    )
    # Outputs that are not wanted are not written.
    KERNELS.pack_grads(d, blk(sw), blk(sc), None, None, None)


# --------------------------------------------------------------------------------- build and load
@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """No kernels loaded yet in this process, and a cache of this test's own."""
    monkeypatch.setattr(cpu_kernels, "_loaded", None)
    monkeypatch.setattr(cpu_kernels, "_failure", None)
    monkeypatch.setenv("EFFICIENT_KAN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_build_is_cached_by_source(fresh_state, tmp_path):
    first = cpu_kernels._build()
    assert first.parent == fresh_state and first.is_file()
    mtime = first.stat().st_mtime_ns
    assert cpu_kernels._build() == first and first.stat().st_mtime_ns == mtime  # not rebuilt
    changed = tmp_path / "cpu_kernels.c"
    changed.write_text(cpu_kernels.SOURCE.read_text() + "\n/* changed */\n")
    assert cpu_kernels._build(changed) != first  # another source, another library
    assert not [p for p in fresh_state.iterdir() if p.is_dir()]  # no build folders left behind


def _layer_args(dtype=torch.float64):
    torch.manual_seed(0)
    grid = uniform_grid(6, 5, 3, dtype=dtype)
    return (
        grid,
        torch.randn(4, 6, dtype=dtype),
        torch.randn(4, 6, 8, dtype=dtype),
        torch.randn(4, 6, dtype=dtype),
        torch.randn(4, dtype=dtype),
    )


def test_without_a_compiler_auto_warns_once_and_takes_the_reference_path(fresh_state, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-efficient-kan")
    args = _layer_args()
    x = torch.rand(5, 6, dtype=torch.float64) * 2 - 1
    with pytest.warns(RuntimeWarning, match="no C compiler.*no-such-compiler-efficient-kan"):
        assert not eager_path_applies(x, args[0], args[1:], "silu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not per call
        y = kan_linear(x, *args)
    assert_close(y, kan_linear_reference(x, *args), atol=0, rtol=0)
    assert "unavailable" in cpu_kernels.status()


def test_on_raises_what_is_missing_and_off_never_builds(fresh_state, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-efficient-kan")
    args = _layer_args()
    x = torch.rand(5, 6, dtype=torch.float64)
    with use(cpu_kernels="on"), pytest.raises(cpu_kernels.CpuKernelsUnavailable, match="no C compiler"):
        kan_linear(x, *args)

    def no_build(*_a, **_k):
        raise AssertionError("built under cpu_kernels='off'")

    monkeypatch.setattr(cpu_kernels, "_failure", None)
    monkeypatch.setattr(cpu_kernels, "_build", no_build)
    with use(cpu_kernels="off"):
        assert not eager_path_applies(x, args[0], args[1:], "silu")
        assert_close(kan_linear(x, *args), kan_linear_reference(x, *args), atol=0, rtol=0)
        assert cpu_kernels.status() == "off (settings)"


def test_a_failing_compiler_is_reported_with_its_command(fresh_state, monkeypatch):
    monkeypatch.setenv("CC", "false")  # exists, always fails
    with pytest.raises(cpu_kernels.CpuKernelsUnavailable, match=r"compiler failed:\n\$ false "):
        cpu_kernels._build()


def test_settings_refuse_an_unknown_mode(monkeypatch):
    from efficient_kan.settings import Settings

    monkeypatch.setenv("EFFICIENT_KAN_CPU_KERNELS", "fast")
    with pytest.raises(ValueError, match="EFFICIENT_KAN_CPU_KERNELS.*'fast'"):
        Settings.from_env()
    monkeypatch.setenv("EFFICIENT_KAN_CPU_KERNELS", "off")
    assert Settings.from_env().cpu_kernels == "off"


def test_rows_in_several_threads_equal_one_thread(monkeypatch):
    x = torch.rand(64, 512, dtype=torch.float64)
    grid = uniform_grid(512, 5, 3, dtype=torch.float64)
    knots = _knot_info(KERNELS, grid, 3, torch.float64)
    results = []
    for threads, min_work in ((1, 1 << 40), (2, 1), (3, 1)):
        monkeypatch.setattr(cpu_kernels, "_MIN_PARALLEL_WORK", min_work)
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        out = torch.empty(64, 512 * 8, dtype=torch.float64)
        KERNELS.expand(x, knots, out)
        dx = torch.zeros(64, 512, dtype=torch.float64)
        KERNELS.expand_grad(x, knots, out, dx)
        results.append((out, dx))
    for out, dx in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(dx, results[0][1])


def test_the_library_shares_torchs_openmp_runtime():
    """Its libgomp.so.1 is the one torch loaded (one thread pool, no second runtime)."""
    from pathlib import Path

    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("reads /proc/self/maps")
    libs = {line.split()[-1] for line in maps.read_text().splitlines() if "libgomp" in line}
    assert len(libs) <= 1, libs


def test_a_compiler_without_openmp_builds_the_same_kernels(fresh_state, tmp_path, monkeypatch):
    """Compilers that refuse -fopenmp (Apple clang) get a one-thread library, same results."""
    cc = tmp_path / "cc-without-openmp"
    cc.write_text(
        '#!/bin/sh\ncase " $* " in *" -fopenmp "*) echo "no OpenMP" >&2; exit 1;; esac\nexec cc "$@"\n'
    )
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    kernels = cpu_kernels.CpuKernels(cpu_kernels._build())
    grid = _grid(7, 5, 3, True, torch.float64)
    x = _inputs(grid, 11)
    knots = _knot_info(kernels, grid, 3, torch.float64)
    a, b = torch.empty(11, 7 * 8, dtype=torch.float64), torch.empty(11, 7 * 8, dtype=torch.float64)
    kernels.expand(x, knots, a)
    KERNELS.expand(x, knots, b)
    assert torch.equal(a, b)


@pytest.mark.parametrize("scaler,bias", [(True, True), (False, False)])
@pytest.mark.parametrize("nb", [8, 33])
def test_product_without_packing_equals_the_packed_product(nb, scaler, bias):
    gen = torch.Generator().manual_seed(3)
    n_out, width = 5, 300  # more than one chunk of products per row
    sw = torch.randn(n_out, width, nb, generator=gen, dtype=torch.float64)
    sc = torch.randn(n_out, width, generator=gen, dtype=torch.float64) if scaler else None
    bw = torch.randn(n_out, width, generator=gen, dtype=torch.float64)
    b = torch.randn(n_out, generator=gen, dtype=torch.float64) if bias else None
    e = torch.randn(2, width * (nb + 1), generator=gen, dtype=torch.float64)
    packed = torch.empty(n_out, width * (nb + 1), dtype=torch.float64)
    KERNELS.pack(sw, sc, bw, packed)
    expected = e @ packed.t() + (0 if b is None else b)
    y = torch.empty(2, n_out, dtype=torch.float64)
    KERNELS.product_unpacked(e, sw, sc, bw, b, y)
    assert_close(y, expected, atol=1e-11, rtol=1e-11)
