"""Autotuning whose candidate configs are compiled in parallel threads before they are timed.

Triton's autotuner compiles each candidate of a new key one after another in the launching thread;
its compiler releases the GIL in its heavy passes and runs ptxas as a subprocess, so threads compile
concurrently. :func:`parallel_compile_autotune` wraps ``triton.autotune``: on a new key it first
compiles every candidate in a shared thread pool (compile, no launch), then times them as usual.
Results are identical; only the first call per shape gets faster. ``EFFICIENT_KAN_COMPILE_THREADS``
sets the pool size (default: the CPU count, at most 16; ``1`` compiles one config at a time).

Threads are used only with a Triton that compiles in threads itself (``AsyncCompileMode``, 3.4 and
later). A config that fails to compile in a thread is not cached, so the autotuner compiles it
again and handles the failure its own way (out of resources: skipped; any other error raises).
"""

from __future__ import annotations

import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor

import torch
import triton

from efficient_kan.settings import settings

__all__ = ["compile_threads", "parallel_compile_autotune", "precompile_configs"]


def compile_threads() -> int:
    """Threads that compile autotuning candidates (``efficient_kan.settings().compile_threads``;
    the pool is sized when it is first used)."""
    return settings().compile_threads


@functools.cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=compile_threads(), thread_name_prefix="efficient_kan-compile")


def _threads_supported() -> bool:
    return getattr(triton, "AsyncCompileMode", None) is not None


def _on_device(device: int):
    """The caller's CUDA device in a pool thread (a new thread starts on device 0, and Triton
    keeps compiled kernels per device)."""
    return torch.cuda.device(device) if torch.cuda.is_available() else contextlib.nullcontext()


def precompile_configs(fn, args: tuple, kwargs: dict, configs: list) -> int:
    """Compile ``fn`` (a ``JITFunction``) for each of ``configs`` with the launch arguments ``args``
    / ``kwargs`` (as the autotuner receives them: ``grid`` and ``warmup`` included), in the shared
    thread pool, and wait for them. Nothing is launched. Returns the number of configs submitted
    (0 when parallel compiles are off or unsupported)."""
    if len(configs) < 2 or compile_threads() < 2 or not _threads_supported():
        return 0
    from triton.runtime import driver

    device = driver.active.get_current_device()
    grid = kwargs.get("grid")
    launch = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}

    def compile_one(config) -> None:
        try:
            with _on_device(device):
                fn.run(*args, grid=grid, warmup=True, **launch, **config.all_kwargs())
        except Exception:  # not cached: the autotuner compiles it again and reports or skips it
            pass

    list(_executor().map(compile_one, configs))
    return len(configs)


def _prune_then_precompile(tuner, prune_configs, kwargs: dict) -> list:
    """The autotuner's ``prune_configs`` (called once per new key, just before timing), followed
    by the parallel compile of what it returns. ``tuner.nargs`` holds the positional arguments
    by name at that point (both triton 3.6 and 3.8 set it first thing in ``run``)."""
    configs = prune_configs(kwargs)
    nargs = getattr(tuner, "nargs", None)
    if nargs:
        precompile_configs(tuner.fn, tuple(nargs.values()), kwargs, configs)
    return configs


def parallel_compile_autotune(configs: list, key: list[str]):
    """``triton.autotune(configs=configs, key=key)`` whose new keys compile their candidates in
    parallel first (see the module docstring). Use as a decorator or call on a kernel."""

    def decorate(kernel):
        tuner = triton.autotune(configs=configs, key=key)(kernel)
        if len(configs) > 1:
            # An instance attribute, so the autotuner's own run() calls it where it calls
            # prune_configs; Triton's Autotuner class itself is left alone.
            tuner.prune_configs = functools.partial(_prune_then_precompile, tuner, tuner.prune_configs)
        return tuner

    return decorate
