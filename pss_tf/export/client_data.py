"""What a client hands an exported model: uint8 images at the export's fixed size.

The SavedModel signatures take images of any size, but a TFLite model takes
one size, S x S (the search space's largest resolution), so an app resizes
its photos to S x S first. These images feed the int8 converter's
representative dataset (drawn from the training split) and the TFLite
accuracy checks. Network inputs (normalised floats) come from the run's
`DataSettings` itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from pss_tf.data import sources
from pss_tf.data.settings import DataSettings

# Map functions without autograph: they branch on static values only (see pss_tf.data.pipeline).
_plain = tf.autograph.experimental.do_not_convert


class ClientData:
    """Client-side images of one run's dataset."""

    def __init__(self, data: DataSettings):
        self.data = data
        self.image_size = data.image_size
        self.channels = data.info.channels

    def _raw(self, split: str, sample: int = 0, seed: int = 0, indices=None) -> tf.data.Dataset:
        """(uint8 image, label) of a split, unprocessed: in order, `sample` at random, or the
        given `indices` (indexed splits)."""
        raw = self.data.raw_split(split)
        if isinstance(raw, sources.IndexedSplit):
            if sample:  # From the examples the run trains on: never its held-out ones.
                kept = self.data.training_indices() if split == "train" else np.arange(raw.num_examples)
                indices = np.random.default_rng(seed).permutation(kept)[:sample]
            if indices is not None:
                positions = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
            else:
                positions = tf.data.Dataset.range(raw.num_examples)
            return positions.map(_plain(raw.make_fetch()), num_parallel_calls=tf.data.AUTOTUNE)
        records = tf.data.TFRecordDataset(list(raw.files))
        if sample:  # Shuffle the encoded records: a small buffer of them is cheap.
            records = records.shuffle(min(max(sample * 5, 1000), 10_000), seed=seed).take(sample)
        return records.map(_plain(raw.parse), num_parallel_calls=tf.data.AUTOTUNE)

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
        return tf.ensure_shape(image, [size, size, self.channels]), label

    def batches(self, split: str, batch_size: int, limit: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """uint8 (B, S, S, C) images and int labels of `split`: all of them, or the `limit`
        examples `DataSettings.subset_indices` draws (those the Keras checks read too)."""
        indices = self.data.subset_indices(split, limit)
        dataset = self._raw(split, indices=indices)
        if limit and indices is None:
            dataset = dataset.take(limit)
        dataset = dataset.map(_plain(self._to_client_size), num_parallel_calls=tf.data.AUTOTUNE)
        for images, labels in dataset.batch(batch_size).prefetch(2).as_numpy_iterator():
            yield images, labels.astype(np.int64)

    def representative_images(self, count: int, seed: int = 0) -> np.ndarray:
        """`count` training images at client size, drawn at random from those the run trained
        on (int8 calibration)."""
        dataset = self._raw("train", sample=count, seed=seed).map(_plain(self._to_client_size))
        images = [image for image, _ in dataset.as_numpy_iterator()]
        if not images:
            raise ValueError("representative data: the training split is empty")
        return np.stack(images)
