"""MNIST-like datasets (and CIFAR-10) as whole tensors: flattened, normalised images and labels.

Files are found on disk (several layouts), else downloaded with torchvision; ``"auto"`` falls back
to the bundled 5,000-digit subset. See README.md (Quick start) and :func:`load_dataset`.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

__all__ = [
    "DATASETS",
    "DatasetUnavailable",
    "ImageData",
    "STATS",
    "bundled_path",
    "find_idx_files",
    "load_bundled",
    "load_cifar10",
    "load_dataset",
    "load_idx_dataset",
    "read_idx",
]

#: Names accepted by :func:`load_dataset`. ``"auto"`` is MNIST, falling back to ``"mnist-5k"``.
DATASETS = ("auto", "mnist", "fashion-mnist", "mnist-5k", "cifar10")

#: (mean, std) of the training pixels in [0, 1], as used by the usual examples.
STATS: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "mnist-5k": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
}

#: Where Debian's ``apt-get install dataset-fashion-mnist`` puts the four ``*.gz`` files.
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_PRETTY = {
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "mnist-5k": "the bundled MNIST subset",
    "cifar10": "CIFAR-10",
}
_BUNDLED_TEST_EVERY = 5  # per class, every 5th digit is a test digit: 400 train / 100 test per class


class DatasetUnavailable(RuntimeError):
    """The dataset's files are neither on disk nor downloadable; the message says how to get them."""


@dataclass(frozen=True)
class ImageData:
    """A train/test split held as whole tensors.

    Attributes:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"mnist-5k"``.
        source: where the data came from (a folder, ``"download"`` or the bundled file).
        x_train, x_test: ``(N, C*H*W)`` float32, normalised with ``mean``/``std``.
        y_train, y_test: ``(N,)`` int64 class labels in ``0..9``.
        image_shape: ``(C, H, W)`` of one flattened row (``(1, 28, 28)`` for the MNIST family).
    """

    name: str
    source: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float
    image_shape: tuple[int, int, int] = (1, 28, 28)

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device | str) -> ImageData:
        """The same data on ``device`` (one copy per tensor, done once)."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def subset(self, train: int | None = None, test: int | None = None, *, seed: int = 0) -> ImageData:
        """At most ``train`` / ``test`` samples of each split, drawn by a fixed permutation.

        A permutation rather than the first rows, because the bundled subset is sorted by label.
        ``None`` keeps a split whole.
        """

        def pick(x: torch.Tensor, y: torch.Tensor, n: int | None, offset: int):
            if n is None or n >= len(y):
                return x, y
            if n < 1:
                raise ValueError(f"a subset needs at least one sample, got {n}")
            gen = torch.Generator().manual_seed(seed + offset)
            idx = torch.randperm(len(y), generator=gen)[:n].to(y.device)
            return x[idx], y[idx]

        x_train, y_train = pick(self.x_train, self.y_train, train, 0)
        x_test, y_test = pick(self.x_test, self.y_test, test, 1)
        return replace(self, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

    def describe(self) -> str:
        return (
            f"{_PRETTY.get(self.name, self.name)}: {len(self.y_train):,} train / "
            f"{len(self.y_test):,} test samples from {self.source}"
        )


# ---------------------------------------------------------------------------------------- IDX files
def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file (``.gz`` or not) of unsigned bytes into a ``uint8`` tensor of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DatasetUnavailable(f"cannot read {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetUnavailable(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(shape)
    if len(raw) - header != count:
        raise DatasetUnavailable(
            f"{path} is truncated or corrupt: header says {count} values, file has {len(raw) - header}"
        )
    # A bytearray: torch.frombuffer warns about read-only buffers (and would share this one).
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


def _candidate_dirs(name: str, data_dir: Path) -> list[Path]:
    dirs = [data_dir, data_dir / _TORCHVISION_FOLDER[name] / "raw", data_dir / name]
    if name == "fashion-mnist":
        dirs.append(SYSTEM_FASHION_MNIST)
    return dirs


def find_idx_files(name: str, data_dir: str | os.PathLike) -> dict[str, Path] | None:
    """The four IDX files of ``name`` in the first folder that has all of them, or ``None``."""
    if name not in _TORCHVISION_FOLDER:
        raise ValueError(f"no IDX files for dataset {name!r}")
    for folder in _candidate_dirs(name, Path(data_dir)):
        found = {}
        for key, stem in _IDX_FILES.items():
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_IDX_FILES):
            return found
    return None


def _normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    x = images.reshape(len(images), -1).to(torch.float32)
    return (x / 255.0 - mean) / std


def load_idx_dataset(name: str, files: dict[str, Path]) -> ImageData:
    """Build an :class:`ImageData` from the four IDX files found by :func:`find_idx_files`."""
    mean, std = STATS[name]
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DatasetUnavailable(
                f"{files[f'{split}_images']} has {n_img} images but its labels file has {n_lab}"
            )
    return ImageData(
        name=name,
        source=str(files["train_images"].parent),
        x_train=_normalise(arrays["train_images"], mean, std),
        y_train=arrays["train_labels"].long(),
        x_test=_normalise(arrays["test_images"], mean, std),
        y_test=arrays["test_labels"].long(),
        mean=mean,
        std=std,
    )


def _download(name: str, data_dir: Path, timeout: float) -> None:
    """Fetch ``name`` with torchvision into ``data_dir/<Folder>/raw``; raises on any failure.

    torchvision's ``urlopen`` has no timeout of its own, so a socket default bounds each attempt.
    Its chatter on stdout is swallowed (the caller says one line either way).
    """
    try:
        import torchvision
    except ImportError as err:
        raise DatasetUnavailable(f"torchvision is not installed ({err})") from None
    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}[name]
    # torchvision creates data_dir/<Folder>/raw before it fetches anything; a failed attempt must
    # not leave those folders behind empty.
    raw = data_dir / _TORCHVISION_FOLDER[name] / "raw"
    new_dirs = [d for d in (raw, *raw.parents) if not d.exists()]  # deepest first
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cls(str(data_dir), train=True, download=True)
    except Exception as err:  # noqa: BLE001 - any failure means "no data": report it in one line
        _remove_empty(new_dirs)
        first_line = str(err).strip().splitlines()
        reason = " ".join(line.strip() for line in first_line[-1:]) or type(err).__name__
        raise DatasetUnavailable(f"download failed ({reason})") from None
    finally:
        socket.setdefaulttimeout(previous)


def _remove_empty(dirs: list[Path]) -> None:
    """Remove those of ``dirs`` (deepest first) that exist and are empty; keep any with files."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # gone already, or holds something: leave it
            pass


def _how_to_provide(name: str, data_dir: Path) -> str:
    stems = ", ".join(f"{s}.gz" for s in _IDX_FILES.values())
    places = ", ".join(str(d) for d in _candidate_dirs(name, data_dir))
    hint = f"put the four IDX files ({stems}) in one of: {places}"
    if name == "fashion-mnist":
        hint = f"run `apt-get install dataset-fashion-mnist`, or {hint}"
    return f"{hint}; or use --dataset mnist-5k (bundled, offline)"


# ---------------------------------------------------------------------------------- bundled subset
def bundled_path() -> Path:
    """Path of the bundled ``mnist_5k.csv.gz`` (5,000 MNIST digits, 500 per class)."""
    return Path(__file__).with_name("mnist_5k.csv.gz")


def load_bundled() -> ImageData:
    """The bundled 5,000-digit MNIST subset with its fixed, stratified 4,000/1,000 split.

    The file is sorted by label, 500 digits per class; within each class every 5th digit (file
    order) is a test digit, so each class gives 400 train and 100 test digits, the same on every
    machine and every version of everything.
    """
    path = bundled_path()
    try:
        with gzip.open(path, "rt") as fh:
            rows = [[int(v) for v in line.split(",")] for line in fh if line.strip()]
        table = torch.tensor(rows, dtype=torch.uint8)
    except (OSError, ValueError, RuntimeError) as err:
        raise DatasetUnavailable(f"cannot read the bundled subset {path}: {err}") from None
    if table.dim() != 2 or table.shape[1] != 785:
        raise DatasetUnavailable(
            f"{path}: expected 785 columns (784 pixels, label), got {tuple(table.shape)}"
        )
    images, labels = table[:, :784], table[:, 784].long()
    rank_in_class = torch.zeros(len(labels), dtype=torch.int64)
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        rank_in_class[members] = torch.arange(len(members))
    is_test = rank_in_class % _BUNDLED_TEST_EVERY == _BUNDLED_TEST_EVERY - 1
    mean, std = STATS["mnist-5k"]
    return ImageData(
        name="mnist-5k",
        source=str(path),
        x_train=_normalise(images[~is_test], mean, std),
        y_train=torch.as_tensor(labels[~is_test]),
        x_test=_normalise(images[is_test], mean, std),
        y_test=torch.as_tensor(labels[is_test]),
        mean=mean,
        std=std,
    )


# ----------------------------------------------------------------------------------------- CIFAR-10
CIFAR10_FOLDER = "cifar-10-batches-py"


def load_cifar10(data_dir: str | os.PathLike) -> ImageData:
    """CIFAR-10 from torchvision's python-pickle files in ``data_dir/cifar-10-batches-py``.

    Never downloads (the archive is 170 MB): the message says where the files must be. Pixels are
    normalised with the mean and standard deviation of this copy's training split.
    """
    data_dir = Path(data_dir)
    if not (data_dir / CIFAR10_FOLDER / "data_batch_1").is_file():
        raise DatasetUnavailable(
            f"CIFAR-10 is not under {data_dir}: put torchvision's {CIFAR10_FOLDER}/ folder (from "
            f"cifar-10-python.tar.gz) in {data_dir}, e.g. once online with "
            f"torchvision.datasets.CIFAR10({str(data_dir)!r}, download=True)"
        )
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as err:
        raise DatasetUnavailable(f"CIFAR-10 needs torchvision, which is not installed ({err})") from None
    try:
        splits = [CIFAR10(str(data_dir), train=train, download=False) for train in (True, False)]
    except Exception as err:  # noqa: BLE001 - unreadable files: one line, not a traceback
        raise DatasetUnavailable(f"cannot read CIFAR-10 under {data_dir}: {err}") from None
    # (N, 32, 32, 3) uint8 -> (N, 3*32*32) channel-first rows, like torchvision's ToTensor.
    rows = [
        torch.as_tensor(d.data).permute(0, 3, 1, 2).reshape(len(d.data), -1).float() / 255 for d in splits
    ]
    mean, std = rows[0].mean().item(), rows[0].std().item()
    return ImageData(
        name="cifar10",
        source=str(data_dir / CIFAR10_FOLDER),
        x_train=(rows[0] - mean) / std,
        y_train=torch.as_tensor(splits[0].targets, dtype=torch.int64),
        x_test=(rows[1] - mean) / std,
        y_test=torch.as_tensor(splits[1].targets, dtype=torch.int64),
        mean=mean,
        std=std,
        image_shape=(3, 32, 32),
    )


# ------------------------------------------------------------------------------------------ entry
def load_dataset(
    name: str = "auto",
    data_dir: str | os.PathLike = "data",
    *,
    device: torch.device | str = "cpu",
    download: bool = True,
    timeout: float = 20.0,
    log: Callable[[str], None] | None = print,
) -> ImageData:
    """Load ``name`` (see :data:`DATASETS`) onto ``device`` as whole tensors.

    Args:
        name: ``"auto"`` (MNIST, or the bundled subset when MNIST is neither on disk nor
            downloadable), ``"mnist"``, ``"fashion-mnist"``, ``"mnist-5k"`` or ``"cifar10"``
            (never downloaded).
        data_dir: where to look for IDX files and where downloads go.
        device: where the tensors end up.
        download: try torchvision's download when the files are not on disk.
        timeout: seconds per network operation of the download.
        log: called with one line after a download or for a fallback (``None``: silent).

    Raises:
        DatasetUnavailable: an explicitly named dataset could not be found or downloaded (the
            message says how to provide the files), or a file is corrupt.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    say = log or (lambda _msg: None)
    if name == "mnist-5k":
        return load_bundled().to(device)
    if name == "cifar10":
        return load_cifar10(data_dir).to(device)

    target = "mnist" if name == "auto" else name
    data_dir = Path(data_dir)
    files = find_idx_files(target, data_dir)
    problem = ""
    if files is None:
        if download:
            try:
                _download(target, data_dir, timeout)
                files = find_idx_files(target, data_dir)
                problem = "" if files is not None else "download finished but the files are missing"
                if files is not None:
                    say(f"downloaded {_PRETTY[target]} to {files['train_images'].parent}")
            except DatasetUnavailable as err:
                problem = str(err)
        else:
            problem = "downloads are disabled"
    if files is not None:
        return load_idx_dataset(target, files).to(device)

    if name == "auto":
        say(
            f"{_PRETTY[target]} unavailable ({problem}); falling back to the bundled 5,000-digit "
            f"MNIST subset ({bundled_path().name}, 4,000 train / 1,000 test)"
        )
        return load_bundled().to(device)
    raise DatasetUnavailable(
        f"{_PRETTY[target]} is not under {data_dir} and {problem}: {_how_to_provide(target, data_dir)}"
    )
