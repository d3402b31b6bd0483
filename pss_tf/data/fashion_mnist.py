"""Fashion-MNIST from its IDX files (Debian's dataset-fashion-mnist), held in memory."""

from __future__ import annotations

import functools
import os

import numpy as np

from pss_tf.data import idx
from pss_tf.data.splits import DatasetInfo, IndexedSplit, check_split, in_memory_split
from pss_tf.errors import ConfigError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FASHION_CLASSES = 10


def _find_idx_file(data_dir: str, stem: str) -> str:
    for candidate in (stem + ".gz", stem):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise ConfigError(
        "data_dir",
        f"Fashion-MNIST file {stem}(.gz) not found in {data_dir} "
        "(install Debian's dataset-fashion-mnist or copy the IDX files there)"
    )


def _files(data_dir: str, split: str) -> tuple[str, str]:
    images_stem, labels_stem = _FASHION_FILES[split]
    return _find_idx_file(data_dir, images_stem), _find_idx_file(data_dir, labels_stem)


def _count(data_dir: str, split: str) -> int:
    images_path, labels_path = _files(data_dir, split)
    try:
        images_shape = idx.read_idx_shape(images_path, ndim=3)
        labels_shape = idx.read_idx_shape(labels_path, ndim=1)
    except ValueError as e:
        raise ConfigError("data_dir", f"{e}") from e
    if images_shape[0] != labels_shape[0]:
        raise ConfigError(
            "data_dir",
            f"{images_path} holds {images_shape[0]} images but "
            f"{labels_path} holds {labels_shape[0]} labels"
        )
    return images_shape[0]


def info(data_dir: str, channels: int | None) -> DatasetInfo:
    if not os.path.isdir(data_dir):
        raise ConfigError("data_dir", f"Fashion-MNIST directory {data_dir} does not exist")
    return DatasetInfo(
        "fashion_mnist",
        _FASHION_CLASSES,
        channels or 1,
        _count(data_dir, "train"),
        _count(data_dir, "val"),
    )


def _file_key(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return path, stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _read_idx_pair(images_key, labels_key) -> tuple[np.ndarray, np.ndarray]:
    """Parses an images/labels file pair once per process (keys include mtimes)."""
    images_path, labels_path = images_key[0], labels_key[0]
    try:
        images = idx.read_idx(images_path, ndim=3)
        labels = idx.read_idx(labels_path, ndim=1)
    except ValueError as e:
        raise ConfigError("data_dir", f"{e}") from e
    if len(images) != len(labels):
        raise ConfigError(
            "data_dir",
            f"{images_path} holds {len(images)} images but {labels_path} "
            f"holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= _FASHION_CLASSES:
        raise ConfigError(
            "data_dir",
            f"{labels_path} has label {labels.max()} >= {_FASHION_CLASSES}"
        )
    return images[..., None], labels.astype(np.int32)


def load_fashion_mnist_arrays(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns a split as numpy arrays: uint8 images (N, 28, 28, 1), int32 labels (N,)."""
    images_path, labels_path = _files(data_dir, check_split(split))
    return _read_idx_pair(_file_key(images_path), _file_key(labels_path))


def split(data_dir: str, split: str, channels: int) -> IndexedSplit:
    images, labels = load_fashion_mnist_arrays(data_dir, split)
    return in_memory_split(images, labels, channels)


# --- image folders ---------------------------------------------------------------
