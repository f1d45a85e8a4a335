"""Datasets for the training engine and benchmarks, loaded as whole tensors (see :mod:`.mnist`)."""

from .mnist import (
    DATASETS,
    STATS,
    DatasetUnavailable,
    ImageData,
    bundled_path,
    find_idx_files,
    load_bundled,
    load_cifar10,
    load_dataset,
    load_idx_dataset,
    read_idx,
)

__all__ = [
    "DATASETS",
    "STATS",
    "DatasetUnavailable",
    "ImageData",
    "bundled_path",
    "find_idx_files",
    "load_bundled",
    "load_cifar10",
    "load_dataset",
    "load_idx_dataset",
    "read_idx",
]
