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

import dataclasses
import functools
import importlib.util
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from pss_tf.data import idx, preprocessing
from pss_tf.errors import ConfigError

SPLITS = ("train", "val")
BUILTIN_DATASETS = ("synthetic", "fashion_mnist", "imagefolder")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# ImageNet's split sizes are known before TFDS has prepared (and counted) it.
_IMAGENET_SIZES = {"num_classes": 1000, "num_train": 1281167, "num_val": 50000}
_IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trainer need to know about a dataset before reading it."""

    name: str
    num_classes: int
    channels: int
    num_train: int
    num_val: int

    def num_examples(self, split: str) -> int:
        return self.num_train if _check_split(split) == "train" else self.num_val


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
    tensors on its own host.
    """

    num_examples: int
    channels: int
    make_fetch: Callable[[], Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]]


@dataclasses.dataclass(frozen=True)
class RecordSplit:
    """TFRecord shards plus `parse(serialized) -> (image, label)`."""

    files: tuple[str, ...]
    shard_lengths: tuple[int, ...]
    channels: int
    parse: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]

    @property
    def num_examples(self) -> int:
        return sum(self.shard_lengths)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
    return split


def _check_channels(channels: int | None) -> None:
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels: must be 1 or 3, got {channels}")


def check_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    channels: int | None = None,
    synthetic: SyntheticSpec | None = None,
) -> DatasetInfo:
    """Validates that `name` is readable from `data_dir` and describes it.

    Cheap: reads headers and directory listings only. Raises `ValueError` naming
    the offending flag (`--dataset` or `--data_dir`) and path.
    """
    _check_channels(channels)
    if not name:
        raise ConfigError("dataset", "empty dataset name")
    if name == "synthetic":
        return _synthetic_info(synthetic or SyntheticSpec(), channels)
    if name == "fashion_mnist":
        return _fashion_mnist_info(data_dir or FASHION_MNIST_DIR, channels)
    if name == "imagefolder":
        return _imagefolder_info(_require_dir(name, data_dir), channels)
    return _tfds_info(name, data_dir, channels)


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
    split = _check_split(split)
    info = check_dataset(name, data_dir, channels=channels, synthetic=synthetic)
    if name == "synthetic":
        raw = _synthetic_split(synthetic or SyntheticSpec(), info, split, image_size)
    elif name == "fashion_mnist":
        raw = _fashion_mnist_split(data_dir or FASHION_MNIST_DIR, split, info.channels)
    elif name == "imagefolder":
        raw = _imagefolder_split(data_dir, split, info.channels)
    else:
        raw = _tfds_split(name, data_dir, split, info.channels)
    return info, raw


def _require_dir(name: str, data_dir: str | None) -> str:
    if not data_dir:
        raise ConfigError("data_dir", f"required for dataset {name}")
    if not os.path.isdir(data_dir):
        raise ConfigError("data_dir", f"{data_dir} is not a directory")
    return data_dir


def _in_memory_split(images: np.ndarray, labels: np.ndarray, channels: int) -> IndexedSplit:
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

    return IndexedSplit(len(labels), channels, make_fetch)


# --- synthetic ------------------------------------------------------------------


def _synthetic_info(spec: SyntheticSpec, channels: int | None) -> DatasetInfo:
    return DatasetInfo(
        "synthetic", spec.num_classes, channels or spec.channels, spec.num_train, spec.num_val
    )


def _synthetic_example(
    index: tf.Tensor, label: tf.Tensor, seed: int, size: int, channels: int, split_id: int
) -> tf.Tensor:
    """One synthetic uint8 image: its class's colour and stripes, plus noise.

    Each class has a mean colour and a sinusoidal grating of its own angle and
    frequency (both a function of `seed` and the label only), so the task is
    learnable even after cropping and flipping; per-example noise and phase
    keep examples distinct.
    """
    class_seed = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), label)
    colour_seed, pattern_seed = tf.unstack(tf.random.experimental.stateless_split(class_seed, 2))
    colour = tf.random.stateless_uniform([channels], colour_seed, 50.0, 205.0)
    angle, freq = tf.unstack(tf.random.stateless_uniform([2], pattern_seed, 0.0, 1.0))
    angle = angle * np.pi
    freq = 2.0 + 6.0 * freq  # periods across the image

    example_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, 1 + split_id], tf.int64), index
    )
    phase_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(example_seed, 2))
    phase = tf.random.stateless_uniform([], phase_seed, 0.0, 2.0 * np.pi)
    grid = tf.linspace(0.0, 1.0, size)
    ys, xs = tf.meshgrid(grid, grid, indexing="ij")
    wave = tf.sin(2.0 * np.pi * freq * (xs * tf.cos(angle) + ys * tf.sin(angle)) + phase)
    noise = tf.random.stateless_normal([size, size, channels], noise_seed, stddev=20.0)
    image = colour + 40.0 * wave[..., None] + noise
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


@functools.lru_cache(maxsize=4)
def _synthetic_arrays(spec: SyntheticSpec, seed: int, size: int, split: str, channels: int):
    """Generates a whole synthetic split once (in-graph, deterministic in `seed`)."""
    count = spec.num_train if split == "train" else spec.num_val
    split_id = SPLITS.index(split)
    label_seed = tf.constant([seed, 100 + split_id], tf.int64)
    labels = tf.random.stateless_uniform([count], label_seed, 0, spec.num_classes, dtype=tf.int32)
    ds = tf.data.Dataset.from_tensor_slices((tf.range(count, dtype=tf.int64), labels))
    ds = ds.map(
        lambda i, y: _synthetic_example(i, y, seed, size, channels, split_id),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    images = np.concatenate(list(ds.batch(256).as_numpy_iterator()), axis=0)
    return images, labels.numpy()


# The synthetic data's own seed is fixed: the training seed shuffles and augments,
# it does not change the dataset (so runs with different seeds see the same task).
SYNTHETIC_DATA_SEED = 1234


def _synthetic_split(spec: SyntheticSpec, info: DatasetInfo, split: str, image_size: int):
    size = spec.image_size or image_size
    images, labels = _synthetic_arrays(spec, SYNTHETIC_DATA_SEED, size, split, spec.channels)
    return _in_memory_split(images, labels, info.channels)


# --- Fashion-MNIST (IDX files) -----------------------------------------------------

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


def _fashion_mnist_files(data_dir: str, split: str) -> tuple[str, str]:
    images_stem, labels_stem = _FASHION_FILES[split]
    return _find_idx_file(data_dir, images_stem), _find_idx_file(data_dir, labels_stem)


def _fashion_mnist_count(data_dir: str, split: str) -> int:
    images_path, labels_path = _fashion_mnist_files(data_dir, split)
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


def _fashion_mnist_info(data_dir: str, channels: int | None) -> DatasetInfo:
    if not os.path.isdir(data_dir):
        raise ConfigError("data_dir", f"Fashion-MNIST directory {data_dir} does not exist")
    return DatasetInfo(
        "fashion_mnist",
        _FASHION_CLASSES,
        channels or 1,
        _fashion_mnist_count(data_dir, "train"),
        _fashion_mnist_count(data_dir, "val"),
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
    images_path, labels_path = _fashion_mnist_files(data_dir, _check_split(split))
    return _read_idx_pair(_file_key(images_path), _file_key(labels_path))


def _fashion_mnist_split(data_dir: str, split: str, channels: int) -> IndexedSplit:
    images, labels = load_fashion_mnist_arrays(data_dir, split)
    return _in_memory_split(images, labels, channels)


# --- image folders ---------------------------------------------------------------


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


def _imagefolder_info(data_dir: str, channels: int | None) -> DatasetInfo:
    classes, splits = _scan_imagefolder(data_dir)
    return DatasetInfo(
        "imagefolder", len(classes), channels or 3, len(splits["train"][0]), len(splits["val"][0])
    )


def _imagefolder_split(data_dir: str, split: str, channels: int) -> IndexedSplit:
    paths, labels = _scan_imagefolder(data_dir)[1][split]

    def make_fetch():
        paths_t = tf.constant(paths)
        labels_t = tf.constant(labels)

        def fetch(index):
            data = tf.io.read_file(tf.gather(paths_t, index))
            image = tf.io.decode_image(data, channels=channels, expand_animations=False)
            image.set_shape([None, None, channels])
            return image, tf.gather(labels_t, index)

        return fetch

    return IndexedSplit(len(paths), channels, make_fetch)


# --- TFDS ----------------------------------------------------------------------


def _tfds_builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            "dataset",
            f"unknown dataset {name!r}: not one of {', '.join(BUILTIN_DATASETS)} "
            "nor a TFDS dataset name"
        ) from None


def _imagenet_manual_dir(builder) -> str:
    """Where TFDS looks for manually downloaded files: `<data_dir>/downloads/manual`."""
    return os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual")


def _tfds_keys(name: str, builder) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    features = builder.info.features
    keys = builder.info.supervised_keys or ("image", "label")
    if (
        not isinstance(keys, tuple)
        or len(keys) != 2
        or not all(isinstance(k, str) and k in features for k in keys)
        or not isinstance(features[keys[0]], tfds.features.Image)
        or not isinstance(features[keys[1]], tfds.features.ClassLabel)
    ):
        raise ConfigError("dataset", f"TFDS dataset {name!r} is not an image classification dataset")
    return keys


def _tfds_val_split(name: str, builder) -> str:
    splits = builder.info.splits
    for candidate in ("validation", "test"):
        if candidate in splits:
            return candidate
    raise ConfigError(
        "dataset",
        f"TFDS dataset {name!r} has neither a 'validation' nor a 'test' split"
    )


def _tfds_info(name: str, data_dir: str | None, channels: int | None) -> DatasetInfo:
    builder = _tfds_builder(name, data_dir)
    image_key, label_key = _tfds_keys(name, builder)
    native_channels = builder.info.features[image_key].shape[-1] or 3
    channels = channels or (native_channels if native_channels in (1, 3) else 3)
    num_classes = builder.info.features[label_key].num_classes
    if builder.is_prepared():
        splits = builder.info.splits
        if "train" not in splits:
            raise ConfigError("dataset", f"TFDS dataset {name!r} has no 'train' split")
        num_train = splits["train"].num_examples
        num_val = splits[_tfds_val_split(name, builder)].num_examples
        return DatasetInfo(name, num_classes, channels, num_train, num_val)
    if builder.name == "imagenet2012":
        manual_dir = _imagenet_manual_dir(builder)
        missing = [
            f for f in _IMAGENET_MANUAL_FILES if not os.path.isfile(os.path.join(manual_dir, f))
        ]
        if missing:
            raise ConfigError(
                "data_dir",
                f"imagenet2012 is not prepared in {builder.data_dir} and its manual "
                f"files are missing: put {' and '.join(_IMAGENET_MANUAL_FILES)} in {manual_dir} "
                f"(missing: {', '.join(missing)}); the first run prepares the dataset from them"
            )
        if importlib.util.find_spec("importlib_resources") is None:
            # TFDS's imagenet2012 builder reads its label files through it.
            raise ConfigError(
                "dataset",
                f"preparing imagenet2012 from {manual_dir} needs the Python "
                "package importlib_resources: pip install importlib_resources"
            )
        return DatasetInfo(name, channels=channels, **_IMAGENET_SIZES)
    raise ConfigError(
        "data_dir",
        f"TFDS dataset {name!r} is not prepared in "
        f"{data_dir or 'the TFDS default data_dir'} "
        f"(looked for {builder.data_dir}); pss_tf never downloads: prepare it with "
        f"`tfds build {name} --data_dir DIR` where the network is reachable, then give DIR as data_dir"
    )


def _prepare_imagenet(builder) -> None:
    """Builds imagenet2012's TFRecords from the manual tars (slow, once)."""
    import tensorflow_datasets as tfds

    config = tfds.download.DownloadConfig(
        manual_dir=_imagenet_manual_dir(builder), try_download_gcs=False
    )
    builder.download_and_prepare(download_config=config)


def _tfds_split(name: str, data_dir: str | None, split: str, channels: int) -> RecordSplit:
    import tensorflow_datasets as tfds

    builder = _tfds_builder(name, data_dir)
    if not builder.is_prepared() and builder.name == "imagenet2012":
        _prepare_imagenet(builder)
        builder = _tfds_builder(name, data_dir)
    if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
        raise ConfigError(
            "dataset",
            f"TFDS dataset {name!r} is stored as {builder.info.file_format.value}; "
            "only tfrecord is supported"
        )
    image_key, label_key = _tfds_keys(name, builder)
    tfds_split = "train" if split == "train" else _tfds_val_split(name, builder)
    split_info = builder.info.splits[tfds_split]
    features = builder.info.features
    decoders = {image_key: tfds.decode.SkipDecoding()}

    def parse(serialized):
        example = features.deserialize_example(serialized, decoders=decoders)
        image = tf.io.decode_image(example[image_key], channels=channels, expand_animations=False)
        image.set_shape([None, None, channels])
        return image, tf.cast(example[label_key], tf.int32)

    return RecordSplit(
        tuple(os.fspath(p) for p in split_info.filepaths),
        tuple(int(n) for n in split_info.shard_lengths),
        channels,
        parse,
    )
