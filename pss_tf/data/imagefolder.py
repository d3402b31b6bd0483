"""Image folders: DATA_DIR/{train,val}/<class>/*.{jpg,png,...}, decoded on the fly."""

from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow as tf

from pss_tf.data import preprocessing
from pss_tf.data.splits import SPLITS, DatasetInfo, IndexedSplit
from pss_tf.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def require_dir(name: str, data_dir: str | None) -> str:
    if not data_dir:
        raise ConfigError("data_dir", f"required for dataset {name}")
    if not os.path.isdir(data_dir):
        raise ConfigError("data_dir", f"{data_dir} is not a directory")
    return data_dir


def _list_images(directory: str) -> list[str]:
    with os.scandir(directory) as entries:
        return sorted(
            e.path
            for e in entries
            if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        )


def _class_dirs(split_dir: str) -> list[str]:
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


@functools.lru_cache(maxsize=8)
def _scan_imagefolder_cached(root: str, stamp) -> tuple[tuple[str, ...], dict]:
    del stamp  # Part of the cache key only.
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    classes = tuple(_class_dirs(train_dir))
    if not classes:
        raise ConfigError("data_dir", f"{train_dir} has no class subfolders")
    extra = sorted(set(_class_dirs(val_dir)) - set(classes))
    if extra:
        raise ConfigError(
            "data_dir",
            f"{val_dir} has classes missing from {train_dir}: {', '.join(extra[:5])}"
        )
    splits = {}
    for split, split_dir in (("train", train_dir), ("val", val_dir)):
        paths, labels = [], []
        for label, cls in enumerate(classes):
            class_dir = os.path.join(split_dir, cls)
            if os.path.isdir(class_dir):
                found = _list_images(class_dir)
                paths.extend(found)
                labels.extend([label] * len(found))
        if not paths:
            raise ConfigError(
                "data_dir",
                f"no images ({'|'.join(IMAGE_EXTENSIONS)}) under {split_dir}/<class>/"
            )
        splits[split] = (tuple(paths), np.asarray(labels, np.int32))
    return classes, splits


def _scan_imagefolder(root: str):
    """Lists `root/{train,val}/<class>/*` once; rescans when a class folder changes."""
    for split in SPLITS:
        if not os.path.isdir(os.path.join(root, split)):
            raise ConfigError(
                "data_dir",
                f"{os.path.join(root, split)} is missing "
                "(imagefolder expects data_dir/train/<class>/* and data_dir/val/<class>/*)"
            )
    stamp = []
    for split in SPLITS:
        split_dir = os.path.join(root, split)
        for cls in _class_dirs(split_dir):
            stamp.append(os.stat(os.path.join(split_dir, cls)).st_mtime_ns)
        stamp.append(os.stat(split_dir).st_mtime_ns)
    return _scan_imagefolder_cached(os.path.abspath(root), tuple(stamp))


def imagefolder_classes(data_dir: str) -> tuple[str, ...]:
    """The class names of an image folder, in label order."""
    return _scan_imagefolder(data_dir)[0]


def info(data_dir: str, channels: int | None) -> DatasetInfo:
    classes, splits = _scan_imagefolder(data_dir)
    return DatasetInfo(
        "imagefolder", len(classes), channels or 3, len(splits["train"][0]), len(splits["val"][0])
    )


def split(data_dir: str, split: str, channels: int) -> IndexedSplit:
    paths, labels = _scan_imagefolder(data_dir)[1][split]

    def make_fetch_encoded():
        paths_t = tf.constant(paths)
        labels_t = tf.constant(labels)

        def fetch(index):
            return tf.io.read_file(tf.gather(paths_t, index)), tf.gather(labels_t, index)

        return fetch

    def make_fetch():
        fetch_encoded = make_fetch_encoded()

        def fetch(index):
            data, label = fetch_encoded(index)
            return preprocessing.decode(data, channels), label

        return fetch

    return IndexedSplit(len(paths), channels, make_fetch, labels=labels, make_fetch_encoded=make_fetch_encoded)


# --- TFDS ----------------------------------------------------------------------
