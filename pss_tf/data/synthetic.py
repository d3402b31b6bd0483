"""The `synthetic` dataset: learnable images generated in memory (class colours and stripes)."""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from pss_tf.data.splits import SPLITS, DatasetInfo, SyntheticSpec, in_memory_split


def info(spec: SyntheticSpec, channels: int | None) -> DatasetInfo:
    return DatasetInfo(
        "synthetic", spec.num_classes, channels or spec.channels, spec.num_train, spec.num_val
    )


def _example(
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
def _arrays(spec: SyntheticSpec, seed: int, size: int, split: str, channels: int):
    """Generates a whole synthetic split once (in-graph, deterministic in `seed`)."""
    count = spec.num_train if split == "train" else spec.num_val
    split_id = SPLITS.index(split)
    label_seed = tf.constant([seed, 100 + split_id], tf.int64)
    labels = tf.random.stateless_uniform([count], label_seed, 0, spec.num_classes, dtype=tf.int32)
    ds = tf.data.Dataset.from_tensor_slices((tf.range(count, dtype=tf.int64), labels))
    ds = ds.map(
        tf.autograph.experimental.do_not_convert(lambda i, y: _example(i, y, seed, size, channels, split_id)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    images = np.concatenate(list(ds.batch(256).as_numpy_iterator()), axis=0)
    return images, labels.numpy()


# The synthetic data's own seed is fixed: the training seed shuffles and augments,
# it does not change the dataset (so runs with different seeds see the same task).
SYNTHETIC_DATA_SEED = 1234


def split(spec: SyntheticSpec, info: DatasetInfo, split: str, image_size: int):
    size = spec.image_size or image_size
    images, labels = _arrays(spec, SYNTHETIC_DATA_SEED, size, split, spec.channels)
    return in_memory_split(images, labels, info.channels)


# --- Fashion-MNIST (IDX files) -----------------------------------------------------
