"""TFDS image classification datasets already prepared on disk (never downloaded)."""

from __future__ import annotations

import importlib.util
import os

import tensorflow as tf

from pss_tf.data import preprocessing
from pss_tf.data.splits import BUILTIN_DATASETS, DatasetInfo, RecordSplit
from pss_tf.errors import ConfigError

# ImageNet's split sizes are known before TFDS has prepared (and counted) it.
_IMAGENET_SIZES = {"num_classes": 1000, "num_train": 1281167, "num_val": 50000}
_IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


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


def info(name: str, data_dir: str | None, channels: int | None) -> DatasetInfo:
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


def split(name: str, data_dir: str | None, split: str, channels: int) -> RecordSplit:
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

    def parse_encoded(serialized):
        example = features.deserialize_example(serialized, decoders=decoders)
        return example[image_key], tf.cast(example[label_key], tf.int32)

    def parse(serialized):
        data, label = parse_encoded(serialized)
        return preprocessing.decode(data, channels), label

    return RecordSplit(
        tuple(os.fspath(p) for p in split_info.filepaths),
        tuple(int(n) for n in split_info.shard_lengths),
        channels,
        parse,
        parse_encoded,
    )
