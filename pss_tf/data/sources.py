"""Where images come from: dataset names, availability checks and raw splits.

A source turns a dataset name into a `DatasetInfo` (cheaply, so a bad flag fails
before any heavy work) and into raw splits of decoded uint8 images. Splits come
in two kinds, which the pipeline streams differently:

* `IndexedSplit`: random access by example index (synthetic, Fashion-MNIST,
  image folders). A training run can jump straight to any step.
* `RecordSplit`: TFRecord shards of a prepared TFDS dataset, read in order.

Nothing here downloads: data must already be on disk.
"""

from __future__ import annotations

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
) -> tuple[DatasetInfo, IndexedSplit | RecordSplit]:
    """Checks the dataset, then returns its info and the raw `split`."""
    split = check_split(split)
    info = check_dataset(name, data_dir, channels=channels, synthetic=synthetic)
    if name == "synthetic":
        raw = synthetic_source.split(synthetic or SyntheticSpec(), info, split, image_size)
    elif name == "fashion_mnist":
        raw = fashion_mnist.split(data_dir or FASHION_MNIST_DIR, split, info.channels)
    elif name == "imagefolder":
        raw = imagefolder.split(data_dir, split, info.channels)
    else:
        raw = tfds.split(name, data_dir, split, info.channels)
    return info, raw
