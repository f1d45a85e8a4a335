"""Timing and peak memory of a callable: ``triton.testing.do_bench`` on CUDA (CUDA events, the L2
cache flushed between calls), ``torch.utils.benchmark`` on CPU (``blocked_autorange``: blocks of
calls, each block's mean is one sample). Both report the 20/50/80 % quantiles in milliseconds.

:func:`time_interleaved` times several callables against each other in rounds (one call of each
per round), for comparisons on a shared, loaded CPU where what matters is their ratio."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch

__all__ = ["Timing", "peak_memory_mib", "quantiles", "time_fn", "time_interleaved"]


@dataclasses.dataclass(frozen=True)
class Timing:
    """Milliseconds per call: median (``p50``) and the 20 % / 80 % quantiles.

    ``samples`` is how many timed samples the quantiles come from (CPU: blocks of ``per_sample``
    calls each; CUDA: ``None``, ``do_bench`` does not say), ``method`` the timer used.
    """

    p20: float
    p50: float
    p80: float
    method: str
    samples: int | None = None
    per_sample: int | None = None

    def per_second(self, items: float) -> tuple[float, float, float]:
        """``items`` per second at the 20/50/80 % time quantiles (a faster time gives a higher rate, so
        the order is p80-rate, median rate, p20-rate: low, median, high)."""
        return (items / (self.p80 / 1e3), items / (self.p50 / 1e3), items / (self.p20 / 1e3))


def quantiles(values: Sequence[float], qs: Sequence[float] = (0.2, 0.5, 0.8)) -> list[float]:
    """Linear-interpolation quantiles of ``values`` (like ``numpy.quantile``'s default)."""
    if not values:
        raise ValueError("quantiles of no values")
    s = sorted(values)
    out = []
    for q in qs:
        pos = q * (len(s) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        out.append(s[lo] + (s[hi] - s[lo]) * (pos - lo))
    return out


def time_fn(
    fn: Callable[[], object],
    device: torch.device | str,
    *,
    min_run_time: float = 0.2,
    warmup: int = 1,
    grad_to_none: Sequence[torch.Tensor] | None = None,
) -> Timing:
    """Time ``fn()`` on ``device``.

    Args:
        fn: the call to time (forward, or forward and backward).
        device: a CUDA device times with ``triton.testing.do_bench`` (``rep`` = ``min_run_time``);
            anything else with ``torch.utils.benchmark.Timer.blocked_autorange`` at the current
            ``torch.get_num_threads()``.
        min_run_time: seconds of timed calls (at least one block or one call is always timed).
        warmup: untimed calls first (autotuning, compiles and allocator warm-up happen there).
        grad_to_none: tensors whose ``.grad`` is reset before each call, so that a backward does
            not accumulate into them.
    """
    device = torch.device(device)

    def call() -> None:
        if grad_to_none:
            for t in grad_to_none:
                t.grad = None
        fn()

    if device.type == "cuda":
        import triton.testing

        ms = triton.testing.do_bench(
            call,
            warmup=max(1, int(25 * warmup)),  # do_bench's warm-up is in ms
            rep=max(1, int(1e3 * min_run_time)),
            quantiles=[0.2, 0.5, 0.8],
        )
        return Timing(float(ms[0]), float(ms[1]), float(ms[2]), method="triton.testing.do_bench")
    from torch.utils import benchmark

    for _ in range(warmup):
        call()
    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    p20, p50, p80 = quantiles([t * 1e3 for t in m.times])
    return Timing(
        p20,
        p50,
        p80,
        method=f"torch.utils.benchmark blocked_autorange ({torch.get_num_threads()} threads)",
        samples=len(m.times),
        per_sample=m.number_per_run,
    )


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    *,
    warmup: int = 2,
    clock: str = "auto",
) -> dict[str, Timing]:
    """Milliseconds per call of each of ``fns``, timed in ``rounds`` rounds of one call each.

    Why not :func:`time_fn`: ``blocked_autorange`` times one callable for a stretch, then the next;
    on a shared machine whose load changes by the minute, two providers timed minutes apart see
    different machines and their ratio drifts. Here every round calls each callable once (the
    order reversed every other round, so none always runs first after the others warmed or
    evicted the caches), and the quantiles are over rounds, so every provider's samples come from
    the same minutes.

    Args:
        fns: name -> the call to time (it resets what it needs, e.g. gradients, itself).
        rounds: timed rounds (each callable is called once per round).
        warmup: untimed calls of each callable first (allocator, caches, compiles).
        clock: ``"thread"`` (``time.thread_time``: this thread's CPU time, which leaves out the
            time a single-threaded call waits for a core on a loaded machine), ``"wall"``
            (``time.perf_counter``), or ``"auto"``: thread time at one torch thread, wall time at
            more (the other threads' work is not in this thread's CPU time).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if clock == "auto":
        clock = "thread" if torch.get_num_threads() == 1 else "wall"
    if clock not in ("thread", "wall"):
        raise ValueError(f"clock must be 'auto', 'thread' or 'wall', got {clock!r}")
    timer = time.thread_time if clock == "thread" else time.perf_counter
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn = fns[name]
            start = timer()
            fn()
            samples[name].append((timer() - start) * 1e3)
    method = f"interleaved rounds, {clock} clock ({torch.get_num_threads()} threads)"
    return {
        name: Timing(*quantiles(v), method=method, samples=len(v), per_sample=1)
        for name, v in samples.items()
    }


def peak_memory_mib(fn: Callable[[], object], device: torch.device | str) -> tuple[float, str]:
    """Peak memory of one ``fn()`` above what was in use before it, in MiB, and what it measures.

    CUDA: ``max_memory_allocated`` minus ``memory_allocated`` before the call. CPU: the growth of
    the process's peak resident set (Linux ``VmHWM``, reset before the call; elsewhere the lifetime
    peak, so only growth beyond earlier peaks shows).
    """
    from ..training import peak_memory_mib as _peak
    from ..training import reset_peak_memory

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    before = reset_peak_memory(device)
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    peak, kind = _peak(device)
    return max(0.0, peak - before), kind
