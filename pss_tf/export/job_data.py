"""The data an export reads, in the two forms it needs.

* Network inputs (normalised float images at the largest resolution), exactly
  as the trainer's evaluator builds them: BN calibration must see the batches
  that produced the validation accuracy in winners.json, and the Keras
  evaluation must see the same validation images.
* Client inputs: uint8 images at the export's fixed TFLite size, what an app
  hands the interpreter. They feed the int8 converter's representative dataset
  (drawn from the training split) and the TFLite accuracy checks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from pss_tf import data as data_lib
from pss_tf.data import sources
from pss_tf.train_config import TrainConfig


class JobData:
    """Data access for one training run, its data directory optionally moved."""

    def __init__(self, config: TrainConfig, info: data_lib.DatasetInfo, data_dir: str | None = None):
        self.config = config
        self.info = info
        self.data_dir = data_dir or config.data_dir
        self.image_size = config.search_space().max_resolution
        self._synthetic = data_lib.SyntheticSpec(
            num_classes=config.synthetic_classes,
            num_train=config.synthetic_train_examples,
            num_val=config.synthetic_val_examples,
        )

    def _kwargs(self) -> dict:
        config = self.config
        return dict(
            channels=self.info.channels,
            synthetic=self._synthetic,
            crop_scale=(config.crop_scale_min, 1.0),
            flip=config.flip,
        )

    # --- network inputs (as the trainer's evaluator) -------------------------

    def calibration_batches(self, num_batches: int):
        """A function giving the first `num_batches` augmented training batches the
        evaluator calibrates on: the same batches at every call, read afresh (a
        large dataset's batches need not all sit in memory)."""
        config = self.config
        dataset = data_lib.load(
            config.dataset, self.data_dir, "train", self.image_size,
            min(config.global_batch_size, config.eval_batch_size), training=True, seed=config.seed + 1,
            **self._kwargs(),
        )
        return lambda: itertools.islice(iter(dataset), num_batches)

    def validation_batches(self, limit: int = 0) -> tf.data.Dataset:
        """(images, labels) of the validation split, the first `limit` examples (0: all)."""
        config = self.config
        dataset = data_lib.load(
            config.dataset, self.data_dir, "val", self.image_size, config.eval_batch_size, training=False,
            **self._kwargs(),
        )
        return dataset.unbatch().take(limit).batch(config.eval_batch_size) if limit else dataset

    def training_batches(self, batch_size: int, seed: int) -> tf.data.Dataset:
        """An endless augmented training stream (quantization-aware fine-tuning)."""
        config = self.config
        return data_lib.load(
            config.dataset, self.data_dir, "train", self.image_size, batch_size, training=True, seed=seed,
            **self._kwargs(),
        )

    # --- client inputs (uint8 at the fixed TFLite size) ----------------------

    def _raw(self, split: str, sample: int = 0, seed: int = 0) -> tf.data.Dataset:
        """(uint8 image, label) of a split, unprocessed: in order, or `sample` at random."""
        _, raw = sources.open_split(
            self.config.dataset, self.data_dir, split, self.image_size,
            channels=self.info.channels, synthetic=self._synthetic,
        )
        if isinstance(raw, sources.IndexedSplit):
            if sample:
                indices = np.random.default_rng(seed).permutation(raw.num_examples)[:sample]
                positions = tf.data.Dataset.from_tensor_slices(indices.astype(np.int64))
            else:
                positions = tf.data.Dataset.range(raw.num_examples)
            return positions.map(raw.make_fetch(), num_parallel_calls=tf.data.AUTOTUNE)
        records = tf.data.TFRecordDataset(list(raw.files))
        if sample:  # Shuffle the encoded records: a small buffer of them is cheap.
            records = records.shuffle(min(max(sample * 5, 1000), 10_000), seed=seed).take(sample)
        return records.map(raw.parse, num_parallel_calls=tf.data.AUTOTUNE)

    def _to_client_size(self, image, label):
        """What a client does to a photo of another size: resize it to S x S."""
        size = self.image_size
        shape = tf.shape(image)[:2]
        resized = tf.case(
            [
                (tf.reduce_all(shape == size), lambda: tf.cast(image, tf.float32)),
                (tf.reduce_any(shape > size), lambda: tf.image.resize(image, [size, size], antialias=True)),
            ],
            default=lambda: tf.image.resize(image, [size, size]),
        )
        image = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
        return tf.ensure_shape(image, [size, size, self.info.channels]), label

    def client_batches(self, split: str, batch_size: int, limit: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """uint8 (B, S, S, C) images and int labels of `split`, the first `limit` (0: all)."""
        dataset = self._raw(split)
        if limit:
            dataset = dataset.take(limit)
        dataset = dataset.map(self._to_client_size, num_parallel_calls=tf.data.AUTOTUNE)
        for images, labels in dataset.batch(batch_size).prefetch(2).as_numpy_iterator():
            yield images, labels.astype(np.int64)

    def representative_images(self, count: int, seed: int = 0) -> np.ndarray:
        """`count` training images at client size, drawn at random (int8 calibration)."""
        dataset = self._raw("train", sample=count, seed=seed).map(self._to_client_size)
        images = [image for image, _ in dataset.as_numpy_iterator()]
        if not images:
            raise ValueError("representative data: the training split is empty")
        return np.stack(images)
