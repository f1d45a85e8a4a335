"""efficient_kan: Kolmogorov-Arnold (B-spline) layers for PyTorch that drop in for ``nn.Linear``.

``KANLinear`` is the layer, ``KAN`` a stack of them, ``kanify`` converts a model's linears
(``calibrate``/``update_grids`` place any model's knots on its activations, ``regularization_loss``
sums its layers' terms), and ``kan_linear`` is the functional form (fused Triton kernels on CUDA, PyTorch elsewhere).
"""

import os as _os

# The Triton kernels live in the repository's top-level kernels/. An installed
# package has them as efficient_kan/kernels (pyproject's package-dir); in a plain source checkout
# (PYTHONPATH=.) they sit beside this folder, so let `efficient_kan.kernels` resolve there too.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "kernels")) and _os.path.isfile(
    _os.path.join(_checkout, "kernels", "__init__.py")
):
    __path__.append(_checkout)

from .bspline import bspline_basis, uniform_grid  # noqa: E402
from .convert import KanifyResult, kanify  # noqa: E402
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
