"""C kernels for the eager CPU path (``cpu_kernels.c``), built on first use and called through ctypes.

The eager path's elementwise work (the bases placed into the expanded input, their derivatives in
backward, the spline weight times its scaler and that product's gradients) runs as a few dozen
small PyTorch ops otherwise, which at MNIST-sized layers cost several times the matrix products.
In C each is one pass over its data.

Built with the system C compiler (``$CC``, else ``cc``; ``-O3 -march=native -fopenmp``) on the
first eager CPU call, in about 3 seconds, into a cache directory (``$EFFICIENT_KAN_CACHE_DIR``, else
``$XDG_CACHE_HOME/efficient_kan`` or ``~/.cache/efficient_kan``) keyed by the source, compiler and
CPU, so later processes load it at once. Triton and ``torch.compile`` need the same compiler. Its
OpenMP loops run in torch's own intra-op threads: the library's ``libgomp.so.1`` resolves to the
one torch has loaded.
``settings().cpu_kernels`` decides: ``"auto"`` uses them when they build (else the PyTorch
reference path, same function, slower, with one warning saying why), ``"on"`` raises if they do
not build, ``"off"`` never builds them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from .settings import settings

__all__ = ["CpuKernelsUnavailable", "CpuKernels", "load", "status"]

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ("-O3", "-fPIC", "-shared", "-std=c99", "-fno-math-errno")
# Orders with a closed-form (uniform knots) kernel; the general kernels take up to MAX_K.
UNIFORM_ORDERS = range(1, 6)
MAX_K = 16


class CpuKernelsUnavailable(RuntimeError):
    """The C kernels could not be built or loaded (the message says why)."""


_P, _L = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "kan_expand_uniform": ([_P, _L, _L, _L, _P, _P, _L, _L, _P, _P, _L, _L], ctypes.c_int),
    "kan_expand_grad_uniform": ([_P, _L, _L, _L, _P, _P, _L, _L, _P, _P, _L, _P, _L, _L], ctypes.c_int),
    "kan_expand_general": ([_P, _L, _L, _L, _P, _L, _L, _P, _L, _L], ctypes.c_int),
    "kan_expand_grad_general": ([_P, _L, _L, _L, _P, _L, _L, _P, _L, _P, _L, _L], ctypes.c_int),
    "kan_pack": ([_P, _L, _P, _L, _P, _L, _L, _L, _L, _P, _L], None),
    "kan_product_unpacked": ([_P, _L, _L, _P, _L, _P, _L, _P, _L, _P, _L, _L, _L, _P, _L, _L], None),
    "kan_pack_grads": ([_P, _P, _L, _P, _L, _L, _L, _L, _P, _L, _P, _L, _P, _L, _L], None),
}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _stride(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.stride(0)


# A call runs its rows in torch's intra-op threads (the same OpenMP runtime: the library links the
# libgomp torch has loaded) when it has at least this many elements; below, one thread.
_MIN_PARALLEL_WORK = 1 << 15


def _threads(work: int) -> int:
    return torch.get_num_threads() if work >= _MIN_PARALLEL_WORK else 1


class CpuKernels:
    """The loaded library, one method per C function (see ``cpu_kernels.c`` for the layouts).

    Tensors are CPU, all in one dtype (float32 or float64), 2-D or 3-D with unit stride in their
    last dimension and rows of their full width (column blocks of contiguous matrices are fine);
    the callers in ``eager.py`` guarantee it. For a block of ``width`` features with ``nb`` bases
    each, a row of the expanded input is ``[bases (width * nb) | activations (width)]`` and a row
    of the packed weight ``[spline_weight * spline_scaler (width * nb) | base_weight (width)]``.
    Large calls run their rows in ``torch.get_num_threads()`` threads.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = ctypes.CDLL(str(path))
        self._fns: dict[tuple[str, torch.dtype], ctypes._CFuncPtr] = {}
        for name, (argtypes, restype) in _SIGNATURES.items():
            for dtype, suffix in _SUFFIX.items():
                fn = getattr(lib, f"{name}_{suffix}")
                fn.argtypes, fn.restype = argtypes, restype
                self._fns[name, dtype] = fn

    def _bases_call(self, op: str, x: torch.Tensor, knots: KnotInfo, work: int, *tail: object) -> None:
        """``kan_<op>_{uniform,general}`` on ``x``, with ``tail`` the arguments after the knots'."""
        if knots.uniform:
            fn = self._fns[f"kan_{op}_uniform", x.dtype]
            grid_args = (_ptr(knots.inv_h), _ptr(knots.shift), knots.n_knots, knots.order, _ptr(knots.coef))
        else:
            fn = self._fns[f"kan_{op}_general", x.dtype]
            grid_args = (_ptr(knots.knots), knots.n_knots, knots.order)
        if fn(x.data_ptr(), x.stride(0), *x.shape, *grid_args, *tail, _threads(work)):
            # The callers check the order first.
            raise ValueError(f"kan_{op}: spline order {knots.order} out of the kernels' range")

    def expand(self, x: torch.Tensor, knots: KnotInfo, out: torch.Tensor) -> None:
        """``out`` ``(N, width * nb)``: each feature's ``nb`` bases at ``x`` (``(N, width)``)."""
        self._bases_call("expand", x, knots, out.numel(), out.data_ptr(), out.stride(0))

    def expand_grad(self, x: torch.Tensor, knots: KnotInfo, g: torch.Tensor, dx: torch.Tensor) -> None:
        """``dx += sum over lanes of g[:, lane] * dB_lane/dx`` for ``g`` ``(N, width * nb)`` laid
        out as :meth:`expand`'s output."""
        self._bases_call(
            "expand_grad", x, knots, g.numel(), g.data_ptr(), g.stride(0), dx.data_ptr(), dx.stride(0)
        )

    def pack(self, sw: torch.Tensor, sc: torch.Tensor | None, bw: torch.Tensor, out: torch.Tensor) -> None:
        """``out`` ``(O, width * (nb + 1))``, contiguous: per output, ``sw * sc[..., None]`` (``sw``
        where ``sc`` is None) then ``bw``; ``sw`` is ``(O, width, nb)``."""
        self._fns["kan_pack", sw.dtype](
            sw.data_ptr(), sw.stride(0), _ptr(sc), _stride(sc), bw.data_ptr(), bw.stride(0), *sw.shape,
            out.data_ptr(), _threads(out.numel()),
        )  # fmt: skip

    def pack_grads(
        self,
        d: torch.Tensor,
        sw: torch.Tensor,
        sc: torch.Tensor | None,
        dsw: torch.Tensor | None,
        dsc: torch.Tensor | None,
        dbw: torch.Tensor | None,
    ) -> None:
        """The gradients of ``sw``, ``sc`` and ``bw`` from ``d``, the packed weight's (contiguous,
        as :meth:`pack` lays it out); an output that is None is not computed."""
        self._fns["kan_pack_grads", sw.dtype](
            d.data_ptr(), sw.data_ptr(), sw.stride(0), _ptr(sc), _stride(sc), *sw.shape,
            _ptr(dsw), _stride(dsw), _ptr(dsc), _stride(dsc), _ptr(dbw), _stride(dbw), _threads(d.numel()),
        )  # fmt: skip

    def product_unpacked(
        self,
        e: torch.Tensor,
        sw: torch.Tensor,
        sc: torch.Tensor | None,
        bw: torch.Tensor,
        bias: torch.Tensor | None,
        y: torch.Tensor,
    ) -> None:
        """``y`` ``(N, O)`` = the layer on the rows ``e`` of the expanded input (all features, one
        block), straight from the unpacked weights (``sw`` ``(O, width, nb)``): for a row or two
        whose weights outgrow the cache (see ``eager.py``)."""
        n_out, width, nb = sw.shape
        self._fns["kan_product_unpacked", sw.dtype](
            e.data_ptr(), e.stride(0), e.shape[0], sw.data_ptr(), sw.stride(0), _ptr(sc), _stride(sc),
            bw.data_ptr(), bw.stride(0), _ptr(bias), n_out, width, nb, y.data_ptr(), y.stride(0),
            _threads(sw.numel()),
        )  # fmt: skip


class KnotInfo:
    """What the basis kernels need of a grid, in the compute dtype: ``inv_h``, ``shift`` and the
    closed form's coefficients on uniform knots, else the contiguous knots themselves."""

    __slots__ = ("uniform", "order", "n_knots", "inv_h", "shift", "coef", "knots")

    def __init__(self, grid, order, dtype, fit, coef) -> None:
        self.order, self.n_knots = order, grid.shape[1]
        self.uniform = fit is not None and order in UNIFORM_ORDERS
        self.inv_h = self.shift = self.coef = self.knots = None
        if self.uniform:
            self.inv_h, self.shift = fit
            self.coef = coef
        else:
            self.knots = grid.detach().to(dtype).contiguous()

    def block(self, start: int, stop: int) -> KnotInfo:
        """The same for input features ``start:stop`` (views, no copies)."""
        sub = object.__new__(KnotInfo)
        sub.uniform, sub.order, sub.n_knots = self.uniform, self.order, self.n_knots
        sub.coef = self.coef
        sub.inv_h = None if self.inv_h is None else self.inv_h[start:stop]
        sub.shift = None if self.shift is None else self.shift[start:stop]
        sub.knots = None if self.knots is None else self.knots[start:stop]
        return sub


# ------------------------------------------------------------------------------------------ build
def _compiler() -> list[str]:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags (Linux), else its name."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    if env := os.environ.get("EFFICIENT_KAN_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "efficient_kan"


def _build(source: Path = SOURCE) -> Path:
    """Compile ``source`` (once per source, compiler and CPU) and return the shared library's path."""
    cc = _compiler()
    if shutil.which(cc[0]) is None:
        raise CpuKernelsUnavailable(
            f"no C compiler: {cc[0]!r} not found (set CC, or install gcc/clang; Triton and "
            "torch.compile need one too)"
        )
    code = source.read_bytes()
    key = hashlib.sha256(b"\0".join([code, " ".join(cc + list(FLAGS)).encode(), _cpu_signature().encode()]))
    target_dir = _cache_dir()
    target = target_dir / f"cpu_kernels-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        tmp_dir = tempfile.mkdtemp(dir=target_dir)
    except OSError:  # a read-only home: build where the process may write, for this process
        tmp_dir = tempfile.mkdtemp()
        target = Path(tmp_dir) / target.name
    errors = []
    # Some compilers take no -march=native or -fopenmp (Apple clang): each is dropped in turn.
    for arch in (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], []):
        out = Path(tmp_dir) / "build.so"
        cmd = [*cc, *FLAGS, *arch, str(source), "-o", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            errors.append(f"$ {shlex.join(cmd)}\ntimed out after 600 s")
            continue
        if proc.returncode == 0:
            os.replace(out, target)  # atomic: concurrent builders each write a whole file
            shutil.rmtree(tmp_dir, ignore_errors=True)
            return target
        errors.append(f"$ {shlex.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise CpuKernelsUnavailable("the C compiler failed:\n" + "\n".join(errors))


_lock = threading.Lock()
_loaded: CpuKernels | None = None
_failure: str | None = None


def load() -> CpuKernels | None:
    """The kernels, built if needed; None when ``settings().cpu_kernels`` is ``"off"``, or is
    ``"auto"`` and they cannot be built (warned once). Raises :class:`CpuKernelsUnavailable`
    under ``"on"`` when they cannot."""
    mode = settings().cpu_kernels
    if mode == "off":
        return None
    global _loaded, _failure
    if _loaded is None and _failure is None:
        with _lock:
            if _loaded is None and _failure is None:
                try:
                    _loaded = CpuKernels(_build())
                except (CpuKernelsUnavailable, OSError) as err:
                    _failure = str(err)
                    if mode == "auto":
                        warnings.warn(
                            "efficient_kan: the C kernels of the CPU path are unavailable, so eager "
                            "CPU calls take the PyTorch reference path (same results, slower). "
                            f"Why: {err}",
                            RuntimeWarning,
                            stacklevel=3,
                        )
    if _loaded is None and mode == "on":
        raise CpuKernelsUnavailable(f"settings().cpu_kernels is 'on' but: {_failure}")
    return _loaded


def status() -> str:
    """One line for ``efficient-kan check``/``bench`` headers: whether the kernels are in use."""
    mode = settings().cpu_kernels
    if mode == "off":
        return "off (settings)"
    try:
        kernels = load()
    except CpuKernelsUnavailable as err:
        return f"unavailable: {err}"
    return f"built ({kernels.path})" if kernels is not None else f"unavailable: {_failure}"
