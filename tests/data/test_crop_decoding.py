"""Decoding only the crop window of a JPEG gives the pixels of decoding it whole and slicing,
and the training streams, which now decode only the window, give the batches they gave before."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from support import assert_same_batches, prepare_tfds_images, take_batches

from pss_tf import data
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


def test_progressive_jpeg_crop_window_equals_decoding_whole_and_slicing():
    image = _smooth_image(np.random.default_rng(5), 203, 311, 3)
    data = tf.io.encode_jpeg(image, quality=85, progressive=True)
    whole = tf.io.decode_image(data, channels=3, expand_animations=False)
    for i in range(16):
        seed = tf.constant([i, 9], tf.int64)
        top, left, crop_h, crop_w = (int(v) for v in preprocessing.sample_crop_window(203, 311, seed))
        window = preprocessing.decode_crop_window(data, 3, seed)
        np.testing.assert_array_equal(window.numpy(), whole[top : top + crop_h, left : left + crop_w].numpy())


# --- in the training streams ---------------------------------------------------------

_FOLDER = {  # (height, width, channels, chroma subsampled, format); photo-like content.
    ("train", "a"): [(150, 200, 3, True, "jpeg"), (97, 131, 3, True, "jpeg"), (64, 90, 1, False, "jpeg")],
    ("train", "b"): [(120, 77, 3, False, "jpeg"), (81, 113, 3, True, "progressive"), (50, 70, 3, False, "png")],
    ("train", "c"): [(133, 101, 3, True, "jpeg"), (66, 66, 3, True, "jpeg")],
    ("val", "a"): [(40, 60, 3, True, "jpeg")],
}


def _write_folder(root):
    rng = np.random.default_rng(11)
    for (split, cls), images in _FOLDER.items():
        for i, (height, width, channels, subsampled, kind) in enumerate(images):
            image = _smooth_image(rng, height, width, channels)
            if kind == "png":
                data, name = tf.io.encode_png(image), f"{i}.png"
            else:
                data = tf.io.encode_jpeg(image, quality=90, chroma_downsampling=subsampled,
                                         progressive=kind == "progressive")
                name = f"{i}.jpg"
            path = root / split / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.numpy())
    return str(root)


def _decoding_whole(monkeypatch):
    """Makes the pipelines decode every image whole and slice the crop window (the former stream)."""
    from pss_tf.data import pipeline

    open_split = pipeline.sources.open_split

    def whole(*args, **kwargs):
        info, raw = open_split(*args, **kwargs)
        if isinstance(raw, pipeline.sources.IndexedSplit):
            return info, dataclasses.replace(raw, make_fetch_encoded=None)
        return info, dataclasses.replace(raw, parse_encoded=None)

    monkeypatch.setattr(pipeline.sources, "open_split", whole)


_RELEASE_AUGMENTATION = dict(crop_scale=(0.25, 1.0), color_jitter=0.4, lighting=0.1)


@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder_stream_equals_decoding_whole(tmp_path, monkeypatch, channels):
    root = _write_folder(tmp_path)
    load = lambda: data.load(  # noqa: E731
        "imagefolder", root, "train", 40, 4, True, seed=5, channels=channels, **_RELEASE_AUGMENTATION
    )
    windowed = take_batches(load(), 8)  # Four epochs of the 8 images.
    assert windowed[0][0].shape == (4, 40, 40, channels)
    _decoding_whole(monkeypatch)
    assert_same_batches(take_batches(load(), 8), windowed)


@pytest.mark.parametrize("start_step", [3, 5])
def test_image_folder_resume_equals_uninterrupted_stream(tmp_path, start_step):
    root = _write_folder(tmp_path)
    load = lambda start: data.load(  # noqa: E731
        "imagefolder", root, "train", 32, 3, True, seed=2, start_step=start, **_RELEASE_AUGMENTATION
    )
    full = take_batches(load(0), start_step + 3)
    assert_same_batches(take_batches(load(start_step), 3), full[start_step:])


def test_tfds_jpeg_stream_equals_decoding_whole(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")

    def smooth(rng, i):
        height, width = int(rng.integers(40, 130)), int(rng.integers(40, 130))
        return _smooth_image(rng, height, width, 3)

    name = prepare_tfds_images(tmp_path, "PssTinyJpegs", num_classes=2, splits={"train": (0, 10), "test": (1, 2)},
                               make_image=smooth, encoding_format="jpeg")
    load = lambda start=0: data.load(  # noqa: E731
        name, str(tmp_path), "train", 32, 4, True, seed=3, shuffle_buffer=4, start_step=start,
        **_RELEASE_AUGMENTATION,
    )
    windowed = take_batches(load(), 6)
    assert_same_batches(take_batches(load(4), 2), windowed[4:])
    _decoding_whole(monkeypatch)
    assert_same_batches(take_batches(load(), 6), windowed)


def test_traced_augmentation_of_a_decoded_image_equals_eager():
    # In a traced stream the crop of a decoded image has a dynamic size; it must keep its
    # channel count, or lighting is skipped and RGB images get the one-channel mean and std.
    image = _smooth_image(np.random.default_rng(2), 70, 90, 3)
    seed = tf.constant([4, 1], tf.int64)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def traced(image):
        return preprocessing.preprocess_for_train(image, 24, seed, color_jitter_strength=0.4, lighting_std=0.1)

    eager = preprocessing.preprocess_for_train(
        tf.constant(image), 24, seed, color_jitter_strength=0.4, lighting_std=0.1
    )
    np.testing.assert_allclose(traced(tf.constant(image)).numpy(), eager.numpy(), atol=1e-5)
    without_lighting = preprocessing.preprocess_for_train(tf.constant(image), 24, seed, color_jitter_strength=0.4)
    assert np.abs(eager.numpy() - without_lighting.numpy()).max() > 1e-3


def test_normalisation_needs_a_static_channel_count():
    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
    def unknown_channels(x):
        return preprocessing.normalize(x, "imagenet")

    with pytest.raises(ValueError, match="channel count"):
        unknown_channels.get_concrete_function()


# --- evaluation: decoding and resampling only what the centre crop reads ----------------


def _resize_whole_and_crop(data, channels, image_size, crop_fraction):
    """The serving graphs' geometry on the whole decoded image (shapes unknown, as in a stream)."""
    whole = tf.io.decode_image(data, channels=channels, expand_animations=False)
    fn = tf.function(
        lambda x: preprocessing.eval_resize_and_crop(x, image_size, crop_fraction),
        input_signature=[tf.TensorSpec([None, None, channels], tf.uint8)],
    )
    return fn(whole).numpy()


@pytest.mark.parametrize("height, width, channels, subsampled, decode_channels", [
    (375, 500, 3, True, 3),  # ImageNet-shaped, shrinking to 256
    (500, 333, 3, True, 3),  # portrait
    (301, 403, 3, False, 3),  # off the MCU grid, 4:4:4
    (97, 131, 3, True, 1),  # colour read as grey; enlarging
    (120, 90, 1, False, 3),  # grey read as colour; enlarging
    (257, 999, 3, True, 3),  # elongated
])
@pytest.mark.parametrize("image_size, crop_fraction", [(224, 0.875), (128, 0.875), (64, 0.5)])
def test_eval_crop_of_a_jpeg_equals_resizing_whole_and_cropping(
    height, width, channels, subsampled, decode_channels, image_size, crop_fraction
):
    rng = np.random.default_rng(height + width)
    data = _jpeg(_smooth_image(rng, height, width, channels), subsampled)
    expected = _resize_whole_and_crop(data, decode_channels, image_size, crop_fraction)
    out = preprocessing.decode_eval_crop(data, decode_channels, image_size, crop_fraction).numpy()
    assert out.shape == expected.shape == (image_size, image_size, decode_channels)
    # Only the float rounding of the sample positions differs (~3e-5 px), on edges of up to
    # 255 grey levels in these images: well under 1/100 of a grey level.
    difference = np.abs(out - expected)
    assert difference.max() < 1e-2 and difference.mean() < 1e-3, (difference.max(), difference.mean())


def test_eval_crop_without_resampling_is_exact():
    # Shorter side already the resize target: the crop is a copy of decoded pixels.
    data = _jpeg(_smooth_image(np.random.default_rng(4), 256, 300, 3))
    expected = _resize_whole_and_crop(data, 3, 224, 0.875)
    np.testing.assert_array_equal(preprocessing.decode_eval_crop(data, 3, 224, 0.875).numpy(), expected)


def test_eval_crop_of_other_formats_is_the_whole_image_path():
    image = _smooth_image(np.random.default_rng(6), 75, 103, 3)
    data = tf.io.encode_png(image)
    expected = _resize_whole_and_crop(data, 3, 32, 0.875)
    np.testing.assert_array_equal(preprocessing.decode_eval_crop(data, 3, 32, 0.875).numpy(), expected)


@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder_eval_stream_equals_decoding_whole(tmp_path, monkeypatch, channels):
    root = _write_folder(tmp_path)
    load = lambda: data.load("imagefolder", root, "train", 40, 3, False, channels=channels)  # noqa: E731
    cropped = take_batches(load(), 3)
    assert sum(len(y) for _, y in cropped) == 8
    _decoding_whole(monkeypatch)
    whole = take_batches(load(), 3)
    for (xa, ya), (xb, yb) in zip(cropped, whole):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_allclose(xa, xb, atol=2e-4)  # Normalised: 1e-2 grey levels is 1.7e-4.
