"""kernels/_autotune.py: parallel compiles of autotuning candidates (the parts that need no GPU;
tools/compile_only.py drives the real compiles: tests/test_compile_only.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import triton
from efficient_kan.kernels import _autotune

from efficient_kan import Settings, use


@pytest.mark.parametrize(("raw", "want"), [("3", 3), (" 1 ", 1)])
def test_compile_threads_from_environment(raw, want):
    with use(
        **{"compile_threads": Settings.from_env({"EFFICIENT_KAN_COMPILE_THREADS": raw}).compile_threads}
    ):
        assert _autotune.compile_threads() == want


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_compile_threads_rejects_bad_values(raw):
    with pytest.raises(ValueError, match="EFFICIENT_KAN_COMPILE_THREADS"):
        Settings.from_env({"EFFICIENT_KAN_COMPILE_THREADS": raw})


def test_compile_threads_default_is_bounded():
    assert 1 <= Settings.from_env({}).compile_threads <= 16


class _RecordingKernel:
    """Stands in for a JITFunction: records warm-up runs and the threads they ran on."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def run(self, *args, grid, warmup, **kwargs):
        with self.lock:
            self.calls.append((args, grid, warmup, kwargs))
            self.threads.add(threading.current_thread().name)
        if kwargs.get("BLOCK") == self.fail_on:
            raise RuntimeError("this config does not compile")


class _Device0:
    def get_current_device(self) -> int:
        return 0


@pytest.fixture
def two_threads(monkeypatch):
    from triton.runtime import driver

    pool = ThreadPoolExecutor(2, thread_name_prefix="efficient_kan-compile")
    monkeypatch.setattr(_autotune, "compile_threads", lambda: 2)
    monkeypatch.setattr(_autotune, "_executor", lambda: pool)
    monkeypatch.setattr(driver, "_active", _Device0())
    yield
    pool.shutdown()


def test_precompile_warms_every_config_in_the_pool(two_threads):
    if not _autotune._threads_supported():
        pytest.skip("this triton compiles one config at a time")
    kernel = _RecordingKernel(fail_on=32)  # a failing config is left to the autotuner, not raised
    configs = [triton.Config({"BLOCK": b}, num_warps=4) for b in (16, 32, 64)]
    grid = (1,)
    n = _autotune.precompile_configs(kernel, ("x", 7), {"grid": grid, "warmup": False, "K": 3}, configs)
    assert n == 3
    assert sorted(c[3]["BLOCK"] for c in kernel.calls) == [16, 32, 64]
    for args, got_grid, warmup, kwargs in kernel.calls:
        assert args == ("x", 7) and got_grid is grid and warmup is True  # compile, never launch
        assert kwargs["K"] == 3 and kwargs["num_warps"] == 4
    assert all(name.startswith("efficient_kan-compile") for name in kernel.threads)


def test_precompile_skips_single_config_and_one_thread(two_threads, monkeypatch):
    kernel = _RecordingKernel()
    one = [triton.Config({"BLOCK": 16})]
    assert _autotune.precompile_configs(kernel, (), {"grid": (1,)}, one) == 0
    monkeypatch.setattr(_autotune, "compile_threads", lambda: 1)
    two = [triton.Config({"BLOCK": 16}), triton.Config({"BLOCK": 32})]
    assert _autotune.precompile_configs(kernel, (), {"grid": (1,)}, two) == 0
    assert kernel.calls == []


def test_parallel_compile_autotune_hooks_prune_only_with_several_configs():
    def kernel(x, BLOCK):  # only decorated, never launched
        pass

    jitted = triton.jit(kernel)
    several = _autotune.parallel_compile_autotune(
        [triton.Config({"BLOCK": 16}), triton.Config({"BLOCK": 32})], key=[]
    )(jitted)
    single = _autotune.parallel_compile_autotune([triton.Config({"BLOCK": 16})], key=[])(jitted)
    assert "prune_configs" in vars(several)
    assert "prune_configs" not in vars(single)
