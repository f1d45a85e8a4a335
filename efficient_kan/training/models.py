"""The models the engine trains: KAN/MLP stacks, a small CNN and a small ViT with KAN layers."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import nn

from ..convert import kanify
from ..layer import KAN
from .config import KAN_PLACES, ConfigError, TrainConfig

__all__ = [
    "SmallCNN",
    "build_from_config",
    "build_model",
    "build_vision_model",
    "count_parameters",
    "make_mlp",
    "small_vit",
]

#: Default hidden widths: the CNN's classifier MLP and the ViT's MLP blocks.
DEFAULT_HIDDEN = {"cnn": 64, "vit": 128}


def make_mlp(widths: Sequence[int]) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear`` with the given widths (``[784, 10]``: one linear layer)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=False)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def build_model(model: str, widths: Sequence[int], *, grid_size: int = 5, spline_order: int = 3) -> nn.Module:
    """``KAN(widths, grid_size=..., spline_order=...)`` or :func:`make_mlp` (``model="mlp"``)."""
    if model == "kan":
        return KAN(list(widths), grid_size=grid_size, spline_order=spline_order)
    if model == "mlp":
        return make_mlp(widths)
    raise ConfigError(f"unknown model {model!r}; choose one of kan, mlp")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (the grid buffers are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class SmallCNN(nn.Module):
    """Two conv blocks, then ``mlp`` (``Linear(512, hidden) -> ReLU``) and ``head`` (``Linear(hidden, 10)``).

    Takes flattened rows (as :class:`~efficient_kan.data.ImageData` holds them) of ``image_shape``.
    The features are pooled to 32 channels x 4 x 4 for any input size, so the classifier (the part
    ``--kan`` converts) has the same shape for 28x28 and 32x32 images. The names ``mlp`` and ``head``
    are those ``kanify``'s presets recognise (a module named ``mlp``; the last linear).
    """

    def __init__(self, image_shape: tuple[int, int, int], hidden: int = 64, num_classes: int = 10):
        super().__init__()
        channels = image_shape[0]
        self.features = nn.Sequential(
            nn.Unflatten(1, image_shape),
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.mlp = nn.Sequential(nn.Linear(32 * 16, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.mlp(self.features(x)))


def small_vit(image_shape: tuple[int, int, int], hidden: int = 128, num_classes: int = 10) -> nn.Module:
    """torchvision's ``VisionTransformer`` sized for small images: 4x4 patches of the image
    (7x7 pixels each at 28x28), 2 layers, 4 heads, width 64, MLP blocks of width ``hidden``.

    Takes flattened rows of ``image_shape``; the patch embedding reads ``image_shape[0]`` channels.
    """
    from torchvision.models.vision_transformer import VisionTransformer

    channels, size, _ = image_shape
    patch = size // 4
    vit = VisionTransformer(
        image_size=size, patch_size=patch, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=hidden,
        num_classes=num_classes,
    )  # fmt: skip
    # torchvision's patch embedding expects RGB; grey images get a one-channel embedding instead.
    vit.conv_proj = nn.Conv2d(channels, 64, kernel_size=patch, stride=patch)
    return nn.Sequential(nn.Unflatten(1, image_shape), vit)


def build_vision_model(
    arch: str,
    image_shape: tuple[int, int, int],
    *,
    kan: str = "none",
    hidden: int | None = None,
    grid_size: int = 5,
    spline_order: int = 3,
) -> nn.Module:
    """A :class:`SmallCNN` (``arch="cnn"``) or :func:`small_vit` with ``kan``'s linears made KAN."""
    hidden = hidden or DEFAULT_HIDDEN[arch]
    if arch == "cnn":
        model = SmallCNN(image_shape, hidden)
    elif arch == "vit":
        model = small_vit(image_shape, hidden)
    else:
        raise ConfigError(f"unknown vision architecture {arch!r}; choose cnn or vit")
    if kan not in KAN_PLACES:
        raise ConfigError(f"unknown --kan {kan!r}; choose one of {', '.join(KAN_PLACES)}")
    if kan != "none":
        with warnings.catch_warnings():
            # kanify warns about every MultiheadAttention.out_proj (attention reads its weight
            # directly, so it stays nn.Linear by design): expected here, so not worth a warning.
            warnings.filterwarnings("ignore", message="kanify left")
            kanify(
                model, filter=None if kan == "all" else kan, grid_size=grid_size, spline_order=spline_order
            )
    return model


def build_from_config(cfg: TrainConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """The model ``cfg`` describes, for data of ``image_shape``."""
    if cfg.arch == "mlp":
        return build_model(cfg.model, cfg.widths, grid_size=cfg.grid_size, spline_order=cfg.spline_order)
    return build_vision_model(
        cfg.arch,
        image_shape,
        kan=cfg.kan,
        hidden=cfg.hidden,
        grid_size=cfg.grid_size,
        spline_order=cfg.spline_order,
    )
