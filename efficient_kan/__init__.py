"""efficient_kan: Kolmogorov-Arnold (B-spline) layers for PyTorch that drop in for ``nn.Linear``.

``KANLinear`` is the layer, ``KAN`` a stack of them, ``kanify`` converts a model's linears
(``calibrate``/``update_grids`` place any model's knots on its activations, ``regularization_loss``
sums its layers' terms), and ``kan_linear`` is the functional form (fused Triton kernels on CUDA, PyTorch elsewhere).
"""


def _check_kernels_importable() -> None:
    """Fail at import, with the fix, when ``efficient_kan.kernels`` is not this copy's kernels.

    The Triton kernels live in the repository's top-level ``kernels/``; an install maps them to
    ``efficient_kan.kernels`` (copied into the package, or through the editable install's finder).
    A source checkout that is imported without being installed has no such mapping, so the kernels
    would be missing (an ImportError deep inside the first CUDA call) or, worse, silently taken from
    another checkout's editable install. Both are caught here, before anything runs.
    """
    import importlib.util
    from pathlib import Path

    package = Path(__file__).resolve().parent
    if (package / "kernels").is_dir():
        return  # an installed copy: kernels/ sits inside the package
    checkout = package.parent
    spec = importlib.util.find_spec(__name__ + ".kernels")
    origin = Path(spec.origin).resolve().parent if spec is not None and spec.origin else None
    if origin == checkout / "kernels":
        return
    where = "cannot be found" if origin is None else f"resolves to {origin}, another copy"
    raise ImportError(
        f"efficient_kan is imported from the source checkout {checkout}, but efficient_kan.kernels "
        f"{where}: a checkout runs through its editable install, which maps {checkout / 'kernels'} "
        f"to efficient_kan.kernels. Run `pip install -e {checkout}` (in the checkout: `pip install -e .`)."
    )


_check_kernels_importable()

from .bspline import bspline_basis, uniform_grid  # noqa: E402
from .convert import KanifyResult, kanify  # noqa: E402
from .eager import frozen_weights  # noqa: E402
from .functional import kan_linear  # noqa: E402
from .layer import KAN, KANLinear  # noqa: E402
from .models import calibrate, regularization_loss, update_grids  # noqa: E402
from .reference import kan_linear_reference  # noqa: E402
from .settings import Settings, configure, settings, use  # noqa: E402

__all__ = [
    "KAN",
    "KANLinear",
    "KanifyResult",
    "Settings",
    "bspline_basis",
    "calibrate",
    "configure",
    "frozen_weights",
    "kan_linear",
    "kan_linear_reference",
    "kanify",
    "regularization_loss",
    "settings",
    "uniform_grid",
    "update_grids",
    "use",
]
__version__ = "0.1.0"
