"""What a run reports about where it ran: device name, peak memory, synchronised timing."""

from __future__ import annotations

import gc
import os
import platform
import resource
import sys
from pathlib import Path

import torch

__all__ = ["device_description", "peak_memory_mib", "reset_peak_memory", "sync"]


def device_description(device: torch.device) -> str:
    """GPU name, or CPU model (from /proc/cpuinfo) and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        fields = dict(line.split(":", 1) for line in info.splitlines()[:30] if ":" in line and line.strip())
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        name = fields.get("model name", name)
        if "cpu family" in fields and "model" in fields:
            name += f" (family {fields['cpu family']}, model {fields['model']})"
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_memory(device: torch.device) -> float:
    """Start a fresh peak-memory window; returns the memory in use now, in MiB.

    CUDA: ``reset_peak_memory_stats`` (then ``memory_allocated``). CPU on Linux: resets the process's
    peak RSS (``VmHWM``, via ``/proc/self/clear_refs``) to its current RSS, so the peak that follows
    is the training's, not that of loading and decompressing the data.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    now = _proc_status_kib("VmRSS")
    return now / 2**10 if now is not None else peak_memory_mib(device)[0]


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures.

    CUDA: ``max_memory_allocated``. CPU: the process's peak resident set size since
    :func:`reset_peak_memory` (``VmHWM``), or without ``/proc`` the lifetime peak (``ru_maxrss``).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm / 2**10, "process_peak_rss"
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process_lifetime_peak_rss"


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock times cover it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
