"""Process-wide settings, in one place: read from the environment once, changed in a ``with``.

>>> import efficient_kan
>>> efficient_kan.settings().strategy
'auto'
>>> with efficient_kan.use(strategy="chunked"):
...     ...  # Triton calls in this block use the chunked strategy

====================  ===============================  =============================================
field                 environment variable             meaning
====================  ===============================  =============================================
``backend``           ``EFFICIENT_KAN_BACKEND``        ``"auto"`` (Triton on CUDA, PyTorch elsewhere),
                                                       ``"triton"`` or ``"torch"``; a layer whose
                                                       ``backend`` is ``"auto"`` follows it
``strategy``          ``EFFICIENT_KAN_STRATEGY``       Triton strategy: ``"auto"`` (by shape),
                                                       ``"fused"`` or ``"chunked"``
``chunk_bytes``       ``EFFICIENT_KAN_CHUNK_BYTES``    the chunked strategy's buffer bound (bytes)
``autotune``          ``EFFICIENT_KAN_AUTOTUNE``       ``0``: each kernel's first config, no tuning
``compile_threads``   ``EFFICIENT_KAN_COMPILE_THREADS`` threads compiling autotuning candidates
``cpu_kernels``       ``EFFICIENT_KAN_CPU_KERNELS``    the eager CPU path's C kernels: ``"auto"`` (built
                                                       on first use; without a C compiler, the PyTorch
                                                       reference path and a warning), ``"on"`` (an
                                                       error if they cannot be built) or ``"off"``
``interpret``         ``TRITON_INTERPRET`` (read only)  kernels run in Triton's CPU interpreter
====================  ===============================  =============================================

This module imports nothing but the standard library, so every layer of the package (the kernels
included) reads the same object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping

__all__ = ["BACKENDS", "CPU_KERNELS", "STRATEGIES", "Settings", "configure", "settings", "use"]

BACKENDS = ("auto", "triton", "torch")
STRATEGIES = ("auto", "fused", "chunked")
CPU_KERNELS = ("auto", "on", "off")
DEFAULT_CHUNK_BYTES = 32 * 2**20


def _default_compile_threads() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def _positive_int(name: str, value: object, source: str) -> int:
    if isinstance(value, bool):
        n = 0
    elif isinstance(value, int):
        n = value
    elif isinstance(value, str):
        try:
            n = int(value.strip())
        except ValueError:
            n = 0
    else:
        n = 0
    if n < 1:
        raise ValueError(f"{name} ({source}) must be a positive integer, got {value!r}")
    return n


@dataclasses.dataclass(frozen=True)
class Settings:
    """The effective configuration; immutable (change it with :func:`use` or :func:`configure`)."""

    backend: str = "auto"
    strategy: str = "auto"
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    autotune: bool = True
    compile_threads: int = dataclasses.field(default_factory=_default_compile_threads)
    cpu_kernels: str = "auto"
    interpret: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"backend (EFFICIENT_KAN_BACKEND) must be one of {BACKENDS}, got {self.backend!r}"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy (EFFICIENT_KAN_STRATEGY) must be one of {STRATEGIES}, got {self.strategy!r}"
            )
        if self.cpu_kernels not in CPU_KERNELS:
            raise ValueError(
                f"cpu_kernels (EFFICIENT_KAN_CPU_KERNELS) must be one of {CPU_KERNELS}, got {self.cpu_kernels!r}"
            )
        object.__setattr__(
            self,
            "chunk_bytes",
            _positive_int("chunk_bytes", self.chunk_bytes, "EFFICIENT_KAN_CHUNK_BYTES (bytes)"),
        )
        object.__setattr__(
            self,
            "compile_threads",
            _positive_int("compile_threads", self.compile_threads, "EFFICIENT_KAN_COMPILE_THREADS"),
        )
        if not isinstance(self.autotune, bool) or not isinstance(self.interpret, bool):
            raise TypeError("autotune and interpret must be bools")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables (unset or empty: the default)."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        values: dict[str, object] = {}
        for field, var in (
            ("backend", "EFFICIENT_KAN_BACKEND"),
            ("strategy", "EFFICIENT_KAN_STRATEGY"),
            ("chunk_bytes", "EFFICIENT_KAN_CHUNK_BYTES"),
            ("compile_threads", "EFFICIENT_KAN_COMPILE_THREADS"),
            ("cpu_kernels", "EFFICIENT_KAN_CPU_KERNELS"),
        ):
            if (raw := get(var)) is not None:
                values[field] = raw
        if (raw := get("EFFICIENT_KAN_AUTOTUNE")) is not None:
            values["autotune"] = raw != "0"
        values["interpret"] = env.get("TRITON_INTERPRET", "0") not in ("", "0")
        return cls(**values)

    def describe(self) -> str:
        """One line per field, for ``efficient-kan check``/``bench`` headers and bug reports."""
        return "\n".join(f"{f.name} = {getattr(self, f.name)!r}" for f in dataclasses.fields(self))


_current: Settings | None = None


def settings() -> Settings:
    """The settings in force (from the environment at the first call, unless changed since)."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def configure(**changes: object) -> Settings:
    """Change settings for the rest of the process; returns the previous settings.

    ``interpret`` cannot be changed: Triton reads ``TRITON_INTERPRET`` once, at import.
    """
    global _current
    if "interpret" in changes:
        raise ValueError("interpret follows TRITON_INTERPRET, which must be set before triton is imported")
    previous = settings()
    _current = dataclasses.replace(previous, **changes)  # validates
    return previous


@contextlib.contextmanager
def use(**changes: object) -> Iterator[Settings]:
    """Change settings inside a ``with`` block (restored on exit, also after an error)."""
    global _current
    previous = configure(**changes)
    try:
        yield _current  # type: ignore[misc]
    finally:
        _current = previous
