"""Where images come from: dataset names, availability checks and raw splits.

A source turns a dataset name into a `DatasetInfo` (cheaply, so a bad flag fails
before any heavy work) and into raw splits of decoded uint8 images; sources of
encoded files (image folders, TFDS) also hand out the encoded bytes, from which
training decodes only a JPEG's crop window. Splits come
in two kinds, which the pipeline streams differently:

* `IndexedSplit`: random access by example index (synthetic, Fashion-MNIST,
  image folders). A training run can jump straight to any step.
* `RecordSplit`: TFRecord shards of a prepared TFDS dataset, read in order.

Nothing here downloads: data must already be on disk.
"""

from __future__ import annotations

import dataclasses

from pss_tf.data import fashion_mnist, imagefolder, tfds
from pss_tf.data import synthetic as synthetic_source
from pss_tf.data.fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist_arrays
from pss_tf.data.imagefolder import imagefolder_classes
from pss_tf.data.splits import (
    BUILTIN_DATASETS,
    SPLITS,
    DatasetInfo,
    IndexedSplit,
    RecordSplit,
    SyntheticSpec,
    check_channels,
    check_split,
    class_subset,
)
from pss_tf.errors import ConfigError

__all__ = [
    "BUILTIN_DATASETS", "FASHION_MNIST_DIR", "SPLITS", "DatasetInfo", "IndexedSplit", "RecordSplit", "SyntheticSpec",
    "check_dataset", "imagefolder_classes", "load_fashion_mnist_arrays", "open_split",
]


def check_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    channels: int | None = None,
    synthetic: SyntheticSpec | None = None,
) -> DatasetInfo:
    """Validates that `name` is readable from `data_dir` and describes it.

    Cheap: reads headers and directory listings only. Raises `ConfigError`
    naming the field at fault (`dataset` or `data_dir`) and the path.
    """
    check_channels(channels)
    if not name:
        raise ConfigError("dataset", "empty dataset name")
    if name == "synthetic":
        return synthetic_source.info(synthetic or SyntheticSpec(), channels)
    if name == "fashion_mnist":
        return fashion_mnist.info(data_dir or FASHION_MNIST_DIR, channels)
    if name == "imagefolder":
        return imagefolder.info(imagefolder.require_dir(name, data_dir), channels)
    return tfds.info(name, data_dir, channels)


def open_split(
    name: str,
    data_dir: str | None,
    split: str,
    image_size: int,
    *,
    channels: int | None = None,
    synthetic: SyntheticSpec | None = None,
    classes: tuple[int, ...] = (),
) -> tuple[DatasetInfo, IndexedSplit | RecordSplit]:
    """Checks the dataset, then returns its info and the raw `split`.

    `classes`: only the examples of these classes, relabelled 0..k-1 in the
    order given; the info counts them (indexed sources only).
    """
    split = check_split(split)
    if classes and name not in BUILTIN_DATASETS:
        raise ConfigError("classes", f"{name} is a TFDS dataset: a class filter needs an indexed source "
                                     f"({', '.join(BUILTIN_DATASETS)})")
    info = check_dataset(name, data_dir, channels=channels, synthetic=synthetic)
    raw = _raw_split(name, data_dir, split, image_size, info, synthetic)
    if not classes:
        return info, raw
    check_classes(name, classes, info.num_classes)
    other = _raw_split(name, data_dir, "val" if split == "train" else "train", image_size, info, synthetic)
    raw, other = class_subset(raw, classes), class_subset(other, classes)
    counts = {split: raw.num_examples, ("val" if split == "train" else "train"): other.num_examples}
    for which, count in counts.items():
        if not count:
            raise ConfigError("classes", f"the {which} split of {name} holds no example of classes {list(classes)}")
    info = dataclasses.replace(info, num_classes=len(classes), num_train=counts["train"], num_val=counts["val"])
    return info, raw


def check_classes(name: str, classes, num_classes: int) -> None:
    """ConfigError unless `classes` are distinct labels of the dataset, at least two."""
    bad = [c for c in classes if isinstance(c, bool) or not 0 <= int(c) < num_classes]
    if bad:
        raise ConfigError("classes", f"{bad} are not labels of {name} (0..{num_classes - 1})")
    if len(set(classes)) != len(classes):
        raise ConfigError("classes", f"a class is named twice in {list(classes)}")
    if len(classes) < 2:
        raise ConfigError("classes", f"name at least two classes, got {list(classes)}")


def _raw_split(name, data_dir, split, image_size, info, synthetic):
    if name == "synthetic":
        return synthetic_source.split(synthetic or SyntheticSpec(), info, split, image_size)
    if name == "fashion_mnist":
        return fashion_mnist.split(data_dir or FASHION_MNIST_DIR, split, info.channels)
    if name == "imagefolder":
        return imagefolder.split(data_dir, split, info.channels)
    return tfds.split(name, data_dir, split, info.channels)
