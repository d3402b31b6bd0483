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

# How pixels become network inputs; training, evaluation and exported models of a
# run share one. "imagenet" is the release's (x / 255 - mean) / std.
NORMALIZATIONS = {
    "imagenet": "(x / 255 - mean) / std with ImageNet's RGB mean (0.485, 0.456, 0.406) and std "
    "(0.229, 0.224, 0.225); one channel: mean 0.449, std 0.226",
    "minus_one_to_one": "x / 127.5 - 1: uint8 [0, 255] -> float32 [-1, 1]",
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# AlexNet's PCA of ImageNet RGB pixels in [0, 1] (the release's utils/transforms.py).
_PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
_PCA_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

DEFAULT_CROP_SCALE = (0.25, 1.0)
DEFAULT_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
DEFAULT_CROP_FRACTION = 0.875
_CROP_ATTEMPTS = 10
_JPEG_MARGIN = 16  # the largest MCU (4:2:0 chroma subsampling), in pixels


def normalize(images: tf.Tensor, normalization: str = "imagenet") -> tf.Tensor:
    """Maps uint8 pixels (or floats in [0, 255]) to network inputs (`NORMALIZATIONS`).

    Pixels are clipped to [0, 255] first: bilinear weights are convex, so that
    only removes float round-off. Serving graphs call this too, so exported
    models see the inputs the weights were trained on.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization: expected one of {list(NORMALIZATIONS)}, got {normalization!r}")
    x = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)
    if normalization == "minus_one_to_one":
        return x / 127.5 - 1.0
    channels = images.shape[-1]
    if channels is None:
        raise ValueError("normalize: the images' channel count must be static to pick the mean and std")
    mean, std = (_IMAGENET_MEAN, _IMAGENET_STD) if channels == 3 else ((0.449,), (0.226,))
    return (x / 255.0 - tf.constant(mean)) / tf.constant(std)


def _normalize_rgb_image(image: tf.Tensor, normalization: str) -> tf.Tensor:
    """`normalize` of one (H, W, C) image in the input streams, equal up to float rounding
    (a float32 ulp or two, under 5e-7).

    ImageNet's per-channel mean and std as a 3x3 diagonal matmul and a
    `bias_add`: the same affine map without TensorFlow's slow general
    broadcasting of a 3-vector, which was most of the cost of `normalize` per
    image. Serving graphs keep `normalize` itself.
    """
    if normalization != "imagenet" or image.shape[-1] != 3:
        return normalize(image, normalization)
    mean, std = np.asarray(_IMAGENET_MEAN, np.float32), np.asarray(_IMAGENET_STD, np.float32)
    pixels = tf.reshape(tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0), [-1, 3])
    scaled = tf.matmul(pixels, tf.constant(np.diag(1.0 / (255.0 * std))))
    return tf.reshape(tf.nn.bias_add(scaled, tf.constant(-mean / std)), tf.shape(image))


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


def decode(data: tf.Tensor, channels: int) -> tf.Tensor:
    """A whole encoded image (JPEG, PNG, BMP, first frame of a GIF) as uint8 (H, W, channels)."""
    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def decode_crop_window(
    data: tf.Tensor, channels: int, seed: tf.Tensor, scale: tuple[float, float] = DEFAULT_CROP_SCALE
) -> tf.Tensor:
    """The `sample_crop_window` crop of an encoded image, as uint8 (crop_h, crop_w, channels).

    A JPEG's size is read from its header and only the window (plus a 16 px
    margin) is decoded, `decode_and_crop_jpeg`: the same pixels as decoding whole
    and slicing. Other formats are decoded whole. Same seed, same window.
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data)
        top, left, crop_h, crop_w = sample_crop_window(shape[0], shape[1], seed, scale)
        # Chroma upsampling treats the decoded region's edges as image edges: decode a
        # margin of one MCU (16 px) around the window, so its pixels are the whole image's.
        y0, x0 = tf.maximum(top - _JPEG_MARGIN, 0), tf.maximum(left - _JPEG_MARGIN, 0)
        y1 = tf.minimum(top + crop_h + _JPEG_MARGIN, shape[0])
        x1 = tf.minimum(left + crop_w + _JPEG_MARGIN, shape[1])
        region = tf.image.decode_and_crop_jpeg(data, tf.stack([y0, x0, y1 - y0, x1 - x0]), channels=channels)
        return tf.slice(region, tf.stack([top - y0, left - x0, 0]), tf.stack([crop_h, crop_w, -1]))

    def other():
        image = decode(data, channels)
        shape = tf.shape(image)
        top, left, crop_h, crop_w = sample_crop_window(shape[0], shape[1], seed, scale)
        return tf.slice(image, tf.stack([top, left, 0]), tf.stack([crop_h, crop_w, -1]))

    image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    image.set_shape([None, None, channels])
    return image


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


# PIL's convert("L") weights (ITU-R 601-2 luma), each repeated over a row: an RGB image's
# pixels (N, 3) times this are its grey image in all three channels.
_GREY_WEIGHTS = (0.299, 0.587, 0.114)
_TO_GREY_RGB = tuple((w, w, w) for w in _GREY_WEIGHTS)


def _grey_like(image: tf.Tensor) -> tf.Tensor:
    """PIL's grey image of a float (H, W, C) image, in every channel (a one-channel image is its own).

    A matmul rather than a (H, W, 1) grey image: broadcasting that back over
    three channels is TensorFlow's slow broadcasting path.
    """
    if image.shape[-1] == 1:
        return image
    pixels = tf.reshape(image, [-1, 3])
    return tf.reshape(tf.matmul(pixels, tf.constant(_TO_GREY_RGB)), tf.shape(image))


def color_jitter(image: tf.Tensor, strength: float, seed: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast and saturation jitter of a float image in [0, 255].

    Each factor is uniform in [1 - strength, 1 + strength] and the three
    adjustments run in a random order, clipping after each, as torchvision's
    `ColorJitter(b, c, s)` on the release's PIL images: each is PIL's blend
    `degenerate + factor * (image - degenerate)` with black (brightness), the
    grey image's mean rounded to an integer (contrast) or the grey image
    (saturation), in float rather than PIL's uint8. Saturation leaves a
    one-channel image unchanged.
    """
    factor_seed, order_seed = _split_seed(seed, 2)
    factors = tf.random.stateless_uniform([3], factor_seed, 1.0 - strength, 1.0 + strength)
    order = tf.argsort(tf.random.stateless_uniform([3], order_seed))
    return blend_jitter(image, factors, order)


def blend_jitter(image: tf.Tensor, factors: tf.Tensor, order: tf.Tensor) -> tf.Tensor:
    """`color_jitter` with given factors (brightness, contrast, saturation) and order
    (a permutation of 0 brightness, 1 contrast, 2 saturation)."""

    def brightness(x):
        return x * factors[0]

    def contrast(x):
        mean = tf.floor(tf.reduce_mean(_grey_like(x)) + 0.5)
        return mean + factors[1] * (x - mean)

    def saturation(x):
        grey = _grey_like(x)
        return grey + factors[2] * (x - grey)

    adjustments = [brightness, contrast, saturation]
    for position in range(3):
        image = tf.switch_case(order[position], [lambda f=f: f(image) for f in adjustments])
        image = tf.clip_by_value(image, 0.0, 255.0)
    return image


def pca_lighting(image: tf.Tensor, std: float, seed: tf.Tensor) -> tf.Tensor:
    """AlexNet's PCA lighting noise on an RGB float image in [0, 255]: adds
    `eigvecs @ (alpha * eigvals)` with alpha ~ N(0, std), on the [0, 1] scale the
    eigenvalues are for (the release adds it to 0..255 pixels, where it is at
    most 0.05 grey levels; see docs/FIDELITY.md). One-channel images pass."""
    if image.shape[-1] is None:
        raise ValueError("pca_lighting: the image's channel count must be static")
    if image.shape[-1] != 3:
        return image
    alpha = tf.random.stateless_normal([3], seed, stddev=std)
    shift = tf.linalg.matvec(tf.constant(_PCA_EIGENVECTORS), alpha * tf.constant(_PCA_EIGENVALUES))
    # bias_add: the per-channel add without TensorFlow's slow general broadcasting.
    return tf.clip_by_value(tf.nn.bias_add(image, 255.0 * shift), 0.0, 255.0)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirrors an (H, W, C) image left-right with probability 1/2: the draw and the
    decision of `tf.image.stateless_random_flip_left_right`, without its branch
    (a reverse over no axes when not flipping)."""
    flips = tf.random.stateless_uniform([], seed, 0, 1.0) < 0.5
    return tf.reverse(image, tf.boolean_mask(tf.constant([1]), tf.reshape(flips, [1])))


def preprocess_for_train(
    image: tf.Tensor,
    image_size: int,
    seed: tf.Tensor,
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE,
    flip: bool = True,
    color_jitter_strength: float = 0.0,
    lighting_std: float = 0.0,
    normalization: str = "imagenet",
    channels: int | None = None,
) -> tf.Tensor:
    """Random resized crop to `image_size`, colour jitter, PCA lighting, flip, normalise.

    The release's order (`utils/datasets.py`). `image` is decoded uint8
    (H, W, C) or, with `channels`, an encoded image (a scalar string) of which
    only the crop window is decoded where the format allows (JPEG). `seed` is a shape-[2] integer tensor; the output is a
    pure function of the image and the seed. Small datasets usually want a
    larger lower crop scale, e.g. (0.5, 1.0); digits and text want `flip=False`.
    """
    crop_seed, flip_seed, jitter_seed, lighting_seed = _split_seed(seed, 4)
    if image.dtype == tf.string:
        if channels is None:
            raise ValueError("channels: required to decode an encoded image")
        image = decode_crop_window(image, channels, crop_seed, crop_scale)
    else:
        shape = tf.shape(image)
        top, left, crop_h, crop_w = sample_crop_window(shape[0], shape[1], crop_seed, crop_scale)
        # A slice of dynamic size loses the static channel count, which lighting and
        # normalisation read: keep it.
        image = tf.ensure_shape(
            tf.slice(image, tf.stack([top, left, 0]), tf.stack([crop_h, crop_w, -1])), [None, None, image.shape[-1]]
        )
    image = _resize(image, [image_size, image_size])
    if color_jitter_strength:
        image = color_jitter(image, color_jitter_strength, jitter_seed)
    if lighting_std:
        image = pca_lighting(image, lighting_std, lighting_seed)
    if flip:
        image = random_flip(image, flip_seed)
    return _normalize_rgb_image(image, normalization)


def _eval_resized_size(height: tf.Tensor, width: tf.Tensor, image_size: int, resize_to: int):
    """(new_h, new_w), int32: the shorter side resized to `resize_to`, neither side below `image_size`."""
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    scale = resize_to / tf.minimum(h, w)
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), image_size)
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), image_size)
    return new_h, new_w


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
    new_h, new_w = _eval_resized_size(shape[rows], shape[rows + 1], image_size, resize_to)
    x = _resize(x, tf.stack([new_h, new_w]), shape[rows : rows + 2])
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    begin = tf.stack([top, left, 0]) if rows == 0 else tf.stack([0, top, left, 0])
    size = tf.constant([image_size, image_size, -1]) if rows == 0 else tf.constant([-1, image_size, image_size, -1])
    x = tf.slice(x, begin, size)
    return tf.ensure_shape(x, images.shape[:rows].concatenate([image_size, image_size, images.shape[-1]]))


def decode_eval_crop(data: tf.Tensor, channels: int, image_size: int, crop_fraction: float = DEFAULT_CROP_FRACTION):
    """`eval_resize_and_crop` of an encoded image, float32 (image_size, image_size, channels).

    For a JPEG only the source rows and columns the centre crop reads are
    decoded (plus a 16 px margin, as `decode_crop_window`), and only the crop's
    pixels are computed: one `ScaleAndTranslate` with the whole-image resize's
    scale and a translation that puts the crop's first pixel at the origin.
    Same filter, same sample positions: the pixels of resizing the whole image
    and cropping, up to float rounding of the sample positions (within 1/100
    of a grey level; where the whole-image path enlarges, its plain bilinear
    resize is this filter too). Other formats are decoded whole and go
    through `eval_resize_and_crop` itself.
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction: must lie in (0, 1], got {crop_fraction}")
    resize_to = int(round(image_size / crop_fraction))

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data)[:2]
        new_h, new_w = _eval_resized_size(shape[0], shape[1], image_size, resize_to)
        new_size = tf.stack([new_h, new_w])
        corner = (new_size - image_size) // 2  # the crop's (top, left) in the resized image
        scale = tf.cast(new_size, tf.float32) / tf.cast(shape, tf.float32)  # as tf.image.resize
        # The triangle filter reaches max(1 / scale, 1) source pixels either side of a sample.
        reach = tf.maximum(1.0 / scale, 1.0)
        first = tf.cast(tf.floor(tf.cast(corner, tf.float32) / scale - reach), tf.int32) - 1 - _JPEG_MARGIN
        end = tf.math.ceil(tf.cast(corner + image_size, tf.float32) / scale + reach)
        last = tf.cast(end, tf.int32) + 1 + _JPEG_MARGIN
        first, last = tf.maximum(first, 0), tf.minimum(last, shape)
        region = tf.image.decode_and_crop_jpeg(data, tf.concat([first, last - first], 0), channels=channels)
        translation = tf.cast(first, tf.float32) * scale - tf.cast(corner, tf.float32)
        resampled = tf.raw_ops.ScaleAndTranslate(
            images=region[None], size=[image_size, image_size], scale=scale, translation=translation,
            kernel_type="triangle", antialias=True,
        )
        return resampled[0]

    def other():
        return eval_resize_and_crop(decode(data, channels), image_size, crop_fraction)

    image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    return tf.ensure_shape(image, [image_size, image_size, channels])


def preprocess_for_eval(
    image: tf.Tensor,
    image_size: int,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    normalization: str = "imagenet",
    channels: int | None = None,
) -> tf.Tensor:
    """`eval_resize_and_crop`, then normalise (`crop_fraction=1.0` keeps the whole shorter side).

    `image` is decoded uint8 (H, W, C) or, with `channels`, an encoded image of
    which a JPEG has only the part the crop reads decoded (`decode_eval_crop`).
    """
    if image.dtype == tf.string:
        if channels is None:
            raise ValueError("channels: required to decode an encoded image")
        return _normalize_rgb_image(decode_eval_crop(image, channels, image_size, crop_fraction), normalization)
    return _normalize_rgb_image(eval_resize_and_crop(image, image_size, crop_fraction), normalization)
