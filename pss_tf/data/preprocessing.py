"""Per-image preprocessing: normalisation, training augmentation, evaluation crop.

Every pipeline hands the network float32 images of one fixed size, the search
space's maximum resolution; the network resizes them to a subnet's resolution
itself. The functions here turn one decoded uint8 image (H, W, C) into that.

Training randomness is stateless: every random op takes a seed derived from the
caller's per-element seed, so the same element at the same stream position is
augmented identically in a resumed run.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

# The input convention shared by training, evaluation and exported models.
PIXEL_SCALE = 127.5
PIXEL_OFFSET = -1.0
INPUT_RANGE = (-1.0, 1.0)
NORMALIZATION = "x / 127.5 - 1: uint8 [0, 255] -> float32 [-1, 1]"

DEFAULT_CROP_SCALE = (0.08, 1.0)
DEFAULT_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
DEFAULT_CROP_FRACTION = 0.875
_CROP_ATTEMPTS = 10


def normalize(images: tf.Tensor) -> tf.Tensor:
    """Maps uint8 pixels (or floats in [0, 255]) to float32 in [-1, 1].

    Exporters call this inside serving graphs, so it must stay exactly
    `x / 127.5 - 1` for trained weights to see the inputs they were trained on.
    """
    return tf.cast(images, tf.float32) / PIXEL_SCALE + PIXEL_OFFSET


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Converts a uint8 (H, W, C) image between grayscale and RGB when needed."""
    have = image.shape[-1]
    if have is None:
        raise ValueError("to_channels: the image's channel count must be static")
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)
    if have == 4 and channels == 3:
        return image[..., :3]
    raise ValueError(f"channels: cannot convert {have}-channel images to {channels} channels")


def _split_seed(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def sample_crop_window(
    height: tf.Tensor,
    width: tf.Tensor,
    seed: tf.Tensor,
    scale: tuple[float, float] = DEFAULT_CROP_SCALE,
    ratio: tuple[float, float] = DEFAULT_CROP_RATIO,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Draws an Inception-style crop (top, left, crop_h, crop_w), all int32.

    The area fraction is uniform in `scale` and the aspect ratio log-uniform in
    `ratio`, the recipe the PSS reference training used. Ten candidates are drawn
    at once and the first that fits wins; if none fits (tiny or very elongated
    images), the largest centred window of an allowed ratio is used.
    """
    area_seed, ratio_seed, y_seed, x_seed = _split_seed(seed, 4)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    areas = h * w * tf.random.stateless_uniform([_CROP_ATTEMPTS], area_seed, scale[0], scale[1])
    aspects = tf.exp(
        tf.random.stateless_uniform(
            [_CROP_ATTEMPTS], ratio_seed, math.log(ratio[0]), math.log(ratio[1])
        )
    )
    crop_ws = tf.round(tf.sqrt(areas * aspects))
    crop_hs = tf.round(tf.sqrt(areas / aspects))
    fits = (crop_ws >= 1.0) & (crop_ws <= w) & (crop_hs >= 1.0) & (crop_hs <= h)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    # Fallback: the whole image, trimmed to the nearest allowed aspect ratio.
    image_ratio = w / h
    fallback_w = tf.where(image_ratio > ratio[1], tf.round(h * ratio[1]), w)
    fallback_h = tf.where(image_ratio < ratio[0], tf.round(w / ratio[0]), h)

    any_fits = tf.reduce_any(fits)
    crop_h = tf.cast(tf.where(any_fits, crop_hs[first], fallback_h), tf.int32)
    crop_w = tf.cast(tf.where(any_fits, crop_ws[first], fallback_w), tf.int32)
    crop_h = tf.clip_by_value(crop_h, 1, tf.cast(height, tf.int32))
    crop_w = tf.clip_by_value(crop_w, 1, tf.cast(width, tf.int32))
    top = tf.random.stateless_uniform(
        [], y_seed, 0, tf.cast(height, tf.int32) - crop_h + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [], x_seed, 0, tf.cast(width, tf.int32) - crop_w + 1, dtype=tf.int32
    )
    top = tf.where(any_fits, top, (tf.cast(height, tf.int32) - crop_h) // 2)
    left = tf.where(any_fits, left, (tf.cast(width, tf.int32) - crop_w) // 2)
    return top, left, crop_h, crop_w


def _resize(image: tf.Tensor, size, current=None) -> tf.Tensor:
    """Bilinear resize, antialiased when shrinking (as PIL does in the reference pipeline).

    Enlarging gives the same result either way, and plain bilinear is much
    cheaper, which matters for small images such as Fashion-MNIST's. `current`
    is the image's (height, width) when `image` is a batch.
    """
    size = tf.convert_to_tensor(size, tf.int32)
    current = tf.shape(image)[:2] if current is None else current
    shrinking = tf.reduce_any(size < current)
    return tf.cond(
        shrinking,
        lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
        lambda: tf.image.resize(image, size, method="bilinear", antialias=False),
    )


def normalize_clipped(image: tf.Tensor) -> tf.Tensor:
    """`normalize`, clipped to the input range the network was trained on."""
    # Bilinear weights are convex, so clipping only removes float round-off.
    return tf.clip_by_value(normalize(image), INPUT_RANGE[0], INPUT_RANGE[1])


def preprocess_for_train(
    image: tf.Tensor,
    image_size: int,
    seed: tf.Tensor,
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE,
    flip: bool = True,
) -> tf.Tensor:
    """Random resized crop to `image_size`, optional horizontal flip, normalise.

    `seed` is a shape-[2] integer tensor; the output is a pure function of the
    image and the seed. Small datasets usually want a larger lower crop scale,
    e.g. (0.35, 1.0); digits and text want `flip=False`.
    """
    crop_seed, flip_seed = _split_seed(seed, 2)
    shape = tf.shape(image)
    top, left, crop_h, crop_w = sample_crop_window(shape[0], shape[1], crop_seed, crop_scale)
    image = tf.slice(image, tf.stack([top, left, 0]), tf.stack([crop_h, crop_w, -1]))
    image = _resize(image, [image_size, image_size])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return normalize_clipped(image)


def _eval_plan(height: int, width: int, image_size: int, resize_to: int) -> tuple[int, int, bool]:
    """Resized size and antialias choice for static sizes, in the float32 arithmetic of the graph."""
    scale = np.float32(resize_to) / np.float32(min(height, width))
    new_h = max(int(np.round(np.float32(height) * scale)), image_size)
    new_w = max(int(np.round(np.float32(width) * scale)), image_size)
    return new_h, new_w, new_h < height or new_w < width


def eval_resize_and_crop(images: tf.Tensor, image_size: int, crop_fraction: float = DEFAULT_CROP_FRACTION) -> tf.Tensor:
    """Resizes the shorter side to `image_size / crop_fraction`, centre-crops `image_size`.

    The one evaluation geometry: the evaluation pipeline (one image, (H, W, C))
    and the serving graphs (a batch, (N, H, W, C)) both call it, so served
    accuracy equals evaluated accuracy. Returns float32 pixels in [0, 255].
    When height and width are static (fixed-size TFLite models), every size
    decision is made here in Python, leaving only a resize and a slice in the
    graph: no shape arithmetic for the int8 quantizer to trip on.
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction: must lie in (0, 1], got {crop_fraction}")
    images = tf.convert_to_tensor(images)
    if images.shape.rank not in (3, 4):
        raise ValueError(f"images: expected (H, W, C) or (N, H, W, C), got shape {images.shape}")
    rows = images.shape.rank - 3  # 1 with a batch dimension
    resize_to = int(round(image_size / crop_fraction))
    height, width = images.shape[rows], images.shape[rows + 1]
    x = tf.cast(images, tf.float32)
    if height is not None and width is not None:
        new_h, new_w, shrinking = _eval_plan(height, width, image_size, resize_to)
        if (new_h, new_w) != (height, width):
            x = tf.image.resize(x, [new_h, new_w], method="bilinear", antialias=shrinking)
        top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
        return x[..., top : top + image_size, left : left + image_size, :]
    shape = tf.shape(x)
    h, w = tf.cast(shape[rows], tf.float32), tf.cast(shape[rows + 1], tf.float32)
    scale = resize_to / tf.minimum(h, w)
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), image_size)
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), image_size)
    x = _resize(x, tf.stack([new_h, new_w]), shape[rows : rows + 2])
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    begin = tf.stack([top, left, 0]) if rows == 0 else tf.stack([0, top, left, 0])
    size = tf.constant([image_size, image_size, -1]) if rows == 0 else tf.constant([-1, image_size, image_size, -1])
    x = tf.slice(x, begin, size)
    return tf.ensure_shape(x, images.shape[:rows].concatenate([image_size, image_size, images.shape[-1]]))


def preprocess_for_eval(
    image: tf.Tensor, image_size: int, crop_fraction: float = DEFAULT_CROP_FRACTION
) -> tf.Tensor:
    """`eval_resize_and_crop`, then normalise (`crop_fraction=1.0` keeps the whole shorter side)."""
    return normalize_clipped(eval_resize_and_crop(image, image_size, crop_fraction))
