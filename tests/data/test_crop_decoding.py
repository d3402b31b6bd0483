"""Decoding only the crop window of a JPEG gives the pixels of decoding it whole and slicing."""

import numpy as np
import pytest
import tensorflow as tf

from pss_tf.data import preprocessing


def _smooth_image(rng, height, width, channels):
    """A photo-like image (smooth gradients plus noise), so that JPEG keeps detail to compare."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 3 + y * 2 + 40 * c) % 256 for c in range(channels)], -1)
    return np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


def _jpeg(image, chroma_downsampling=True):
    return tf.io.encode_jpeg(image, quality=90, chroma_downsampling=chroma_downsampling)


@pytest.mark.parametrize("height, width, channels, subsampled, decode_channels", [
    (375, 500, 3, True, 3),  # ImageNet-shaped, 4:2:0 chroma: edges need the decoding margin
    (301, 403, 3, True, 3),  # sizes off the 16 px MCU grid
    (333, 257, 3, False, 3),  # odd sizes, 4:4:4
    (97, 131, 3, True, 1),  # colour file read as grey
    (120, 90, 1, False, 3),  # grey file read as colour
])
def test_crop_window_of_a_jpeg_equals_decoding_whole_and_slicing(height, width, channels, subsampled, decode_channels):
    rng = np.random.default_rng(height)
    data = _jpeg(_smooth_image(rng, height, width, channels), subsampled)
    whole = tf.io.decode_image(data, channels=decode_channels, expand_animations=False)
    for i in range(24):
        seed = tf.constant([i, 7], tf.int64)
        top, left, crop_h, crop_w = (int(v) for v in preprocessing.sample_crop_window(height, width, seed))
        window = preprocessing.decode_crop_window(data, decode_channels, seed)
        np.testing.assert_array_equal(window.numpy(), whole[top : top + crop_h, left : left + crop_w].numpy())


def test_other_formats_are_decoded_whole_with_the_same_window():
    image = _smooth_image(np.random.default_rng(0), 60, 80, 3)
    seed = tf.constant([3, 4], tf.int64)
    top, left, crop_h, crop_w = (int(v) for v in preprocessing.sample_crop_window(60, 80, seed))
    window = preprocessing.decode_crop_window(tf.io.encode_png(image), 3, seed)
    np.testing.assert_array_equal(window.numpy(), image[top : top + crop_h, left : left + crop_w])


def test_encoded_images_need_channels():
    with pytest.raises(ValueError, match="channels"):
        preprocessing.preprocess_for_train(tf.constant(b"x"), 8, tf.constant([0, 0], tf.int64))
