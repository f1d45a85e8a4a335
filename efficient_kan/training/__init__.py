"""One training engine for ``train_mnist.py`` and the vision runs (README.md, Quick start).

``run(TrainConfig(...))`` trains a KAN/MLP stack, a small CNN or a small ViT (``--kan`` choosing
which linears are KAN layers) on data held as whole tensors, under ``torchrun`` too, and returns
test accuracy, parameters, throughput, peak memory and the per-epoch history.
"""

from .config import (
    AMP_MODES,
    ARCHS,
    DEVICES,
    KAN_PLACES,
    MODELS,
    ConfigError,
    TrainConfig,
    build_parser,
    config_from_args,
)
from .distributed import DistContext, broadcast_model, ranks_identical, setup_distributed, update_grid_synced
from .loop import CHECKPOINT_FORMAT, RunResult, evaluate, run
from .measure import device_description, peak_memory_mib, reset_peak_memory
from .models import (
    SmallCNN,
    build_from_config,
    build_model,
    build_vision_model,
    count_parameters,
    make_mlp,
    small_vit,
)

__all__ = [
    "AMP_MODES",
    "ARCHS",
    "CHECKPOINT_FORMAT",
    "DEVICES",
    "KAN_PLACES",
    "MODELS",
    "ConfigError",
    "DistContext",
    "RunResult",
    "SmallCNN",
    "TrainConfig",
    "broadcast_model",
    "build_from_config",
    "build_model",
    "build_parser",
    "build_vision_model",
    "config_from_args",
    "count_parameters",
    "device_description",
    "evaluate",
    "make_mlp",
    "peak_memory_mib",
    "ranks_identical",
    "reset_peak_memory",
    "run",
    "setup_distributed",
    "small_vit",
    "update_grid_synced",
]
