"""Datasets for the training engine and benchmarks, loaded as whole tensors (see :mod:`.mnist`).

The public names are those of :mod:`.mnist`, listed once there in its ``__all__``."""

from .mnist import *  # noqa: F403
from .mnist import __all__  # noqa: F401
