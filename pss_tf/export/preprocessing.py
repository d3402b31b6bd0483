"""From a client's uint8 images to what an exported network was evaluated on.

Validation accuracy (winners.json, the manifest) is measured on images that
`pss_tf.data.preprocess_for_eval` resized (shorter side to `S / crop_fraction`,
antialiased when shrinking), centre-cropped to `S`, the search space's largest
resolution, and normalised. `prepare_images` does the same to a whole batch
inside the serving graph, so a served subnet sees what the evaluated one saw
and a client sends plain pixels of any size.

When the height and width are static (the fixed-size TFLite models) every
size decision is made here in Python, leaving only a resize and a slice in the
graph: no shape arithmetic or conditionals for the int8 quantizer to trip on.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pss_tf.data import DEFAULT_CROP_FRACTION, INPUT_RANGE, normalize


def _check(images: tf.Tensor, channels: int | None):
    if images.shape.rank != 4:
        raise ValueError(f"images: expected a batch (N, H, W, C), got shape {images.shape}")
    if channels is not None and images.shape[-1] not in (None, channels):
        raise ValueError(f"images: expected {channels} channels, got {images.shape[-1]}")


def _static_plan(height: int, width: int, image_size: int, resize_to: int):
    """Resized size and antialias choice, with preprocess_for_eval's float32 arithmetic."""
    scale = np.float32(resize_to) / np.float32(min(height, width))
    new_h = max(int(np.round(np.float32(height) * scale)), image_size)
    new_w = max(int(np.round(np.float32(width) * scale)), image_size)
    return new_h, new_w, new_h < height or new_w < width


def prepare_images(
    images: tf.Tensor,
    image_size: int,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    channels: int | None = None,
) -> tf.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, S, S, C) in [-1, 1], as evaluation saw them."""
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction: must lie in (0, 1], got {crop_fraction}")
    images = tf.convert_to_tensor(images)
    _check(images, channels)
    resize_to = round(image_size / crop_fraction)
    height, width = images.shape[1], images.shape[2]
    x = tf.cast(images, tf.float32)
    if height is not None and width is not None:
        new_h, new_w, shrinking = _static_plan(height, width, image_size, resize_to)
        if (new_h, new_w) != (height, width):
            x = tf.image.resize(x, [new_h, new_w], method="bilinear", antialias=shrinking)
        top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
        x = x[:, top : top + image_size, left : left + image_size, :]
    else:
        shape = tf.shape(x)
        h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        scale = resize_to / tf.minimum(h, w)
        new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), image_size)
        new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), image_size)
        size = tf.stack([new_h, new_w])
        shrinking = tf.reduce_any(size < shape[1:3])
        x = tf.cond(
            shrinking,
            lambda: tf.image.resize(x, size, method="bilinear", antialias=True),
            lambda: tf.image.resize(x, size, method="bilinear", antialias=False),
        )
        top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
        x = tf.slice(x, tf.stack([0, top, left, 0]), tf.stack([-1, image_size, image_size, -1]))
        x = tf.ensure_shape(x, [None, image_size, image_size, images.shape[-1]])
    return tf.clip_by_value(normalize(x), INPUT_RANGE[0], INPUT_RANGE[1])
