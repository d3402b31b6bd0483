"""What every dataset source hands the pipelines: its description and raw splits.

Splits come in two kinds, which the pipeline streams differently:

* `IndexedSplit`: random access by example index (synthetic, Fashion-MNIST,
  image folders). A training run can jump straight to any step.
* `RecordSplit`: TFRecord shards of a prepared TFDS dataset, read in order.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from pss_tf.data import preprocessing

SPLITS = ("train", "val")
BUILTIN_DATASETS = ("synthetic", "fashion_mnist", "imagefolder")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trainer need to know about a dataset before reading it."""

    name: str
    num_classes: int
    channels: int
    num_train: int
    num_val: int

    def num_examples(self, split: str) -> int:
        return self.num_train if check_split(split) == "train" else self.num_val


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Shape of the `synthetic` dataset; `image_size=None` generates at the pipeline's size."""

    num_classes: int = 10
    channels: int = 3
    num_train: int = 1024
    num_val: int = 256
    image_size: int | None = None

    def __post_init__(self):
        for field in ("num_classes", "channels", "num_train", "num_val"):
            if getattr(self, field) < 1:
                value = getattr(self, field)
                raise ValueError(f"synthetic.{field}: must be at least 1, got {value}")
        if self.channels not in (1, 3):
            raise ValueError(f"synthetic.channels: must be 1 or 3, got {self.channels}")


@dataclasses.dataclass(frozen=True)
class IndexedSplit:
    """A split with random access. `make_fetch()` builds `fetch(index) -> (image, label)`.

    Building the fetch function lazily lets each input pipeline place its
    tensors on its own host. `labels`, when the source knows them without
    decoding images, lets held-out sets and subsets be stratified by class.
    `make_fetch_encoded`, for sources of encoded files (image folders), builds
    `fetch(index) -> (encoded bytes, label)`, from which preprocessing decodes
    only the part of a JPEG it reads (`preprocessing.decode_crop_window`,
    `preprocessing.decode_eval_crop`).
    """

    num_examples: int
    channels: int
    make_fetch: Callable[[], Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]]
    labels: np.ndarray | None = None
    make_fetch_encoded: Callable[[], Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]] | None = None


@dataclasses.dataclass(frozen=True)
class RecordSplit:
    """TFRecord shards plus `parse(serialized) -> (image, label)`; `parse_encoded`
    (-> (encoded bytes, label)), when given, lets preprocessing decode only the part of a JPEG it reads."""

    files: tuple[str, ...]
    shard_lengths: tuple[int, ...]
    channels: int
    parse: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
    parse_encoded: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None = None

    @property
    def num_examples(self) -> int:
        return sum(self.shard_lengths)


def class_subset(raw: IndexedSplit, classes: tuple[int, ...]) -> IndexedSplit:
    """The examples of `classes` only, relabelled 0..k-1 in the order given (a view: nothing is copied)."""
    if raw.labels is None:
        raise ValueError("classes: needs a source whose labels are known without decoding (not TFDS)")
    classes = [int(c) for c in classes]
    lookup = np.full(max(max(classes), int(raw.labels.max(initial=0))) + 1, -1, np.int32)
    lookup[classes] = np.arange(len(classes), dtype=np.int32)
    kept = np.flatnonzero(lookup[raw.labels] >= 0).astype(np.int64)
    labels = lookup[raw.labels[kept]]

    def subset(make_inner):
        def make_fetch():
            inner = make_inner()
            kept_t, lookup_t = tf.constant(kept), tf.constant(lookup)

            def fetch(index):
                image, label = inner(tf.gather(kept_t, index))
                return image, tf.gather(lookup_t, tf.cast(label, tf.int32))

            return fetch

        return make_fetch

    encoded = subset(raw.make_fetch_encoded) if raw.make_fetch_encoded else None
    return IndexedSplit(len(kept), raw.channels, subset(raw.make_fetch), labels=labels, make_fetch_encoded=encoded)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
    return split


def check_channels(channels: int | None) -> None:
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels: must be 1 or 3, got {channels}")


def in_memory_split(images: np.ndarray, labels: np.ndarray, channels: int) -> IndexedSplit:
    """Whole split held as two tensors: the cache of decoded, unaugmented examples.

    This stands in for `Dataset.cache()`: random access lets a resumed run start
    at any position, which a cached sequential stream cannot.
    """
    def make_fetch():
        images_t = tf.constant(images)
        labels_t = tf.constant(labels.astype(np.int32))

        def fetch(index):
            image = preprocessing.to_channels(tf.gather(images_t, index), channels)
            return image, tf.gather(labels_t, index)

        return fetch

    return IndexedSplit(len(labels), channels, make_fetch, labels=np.asarray(labels))


# --- synthetic ------------------------------------------------------------------
