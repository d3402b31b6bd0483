"""From a client's uint8 images to what an exported network was evaluated on.

Validation accuracy (winners.json, the manifest) is measured on images that
the evaluation pipeline resized and centre-cropped to `S`, the search space's
largest resolution, and normalised. `prepare_images` applies the same function
(`pss_tf.data.preprocessing.eval_resize_and_crop`) to a whole batch inside the
serving graph, so a served subnet sees what the evaluated one saw and a client
sends plain pixels of any size.
"""

from __future__ import annotations

import tensorflow as tf

from pss_tf.data.preprocessing import (
    DEFAULT_CROP_FRACTION,
    eval_resize_and_crop,
    normalize_clipped,
)


def prepare_images(
    images: tf.Tensor,
    image_size: int,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    channels: int | None = None,
) -> tf.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, S, S, C) in [-1, 1], as evaluation saw them."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(f"images: expected a batch (N, H, W, C), got shape {images.shape}")
    if channels is not None and images.shape[-1] not in (None, channels):
        raise ValueError(f"images: expected {channels} channels, got {images.shape[-1]}")
    return normalize_clipped(eval_resize_and_crop(images, image_size, crop_fraction))
