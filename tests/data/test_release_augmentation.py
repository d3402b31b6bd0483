"""The training augmentation's colour jitter and flip against what the release's PIL
transforms compute: PIL's blend formulas in NumPy, PIL itself where installed, and
TensorFlow's own flip."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from pss_tf.data import preprocessing

_LUMA = np.array([0.299, 0.587, 0.114])


def _pil_blends(image, factors, order):
    """ColorJitter's three ImageEnhance steps as PIL defines them, in float64 without
    PIL's rounding to uint8: blend(degenerate, image, f) = degenerate + f * (image - degenerate)."""
    x = image.astype(np.float64)
    for adjustment in order:
        grey = x if x.shape[-1] == 1 else (x @ _LUMA)[..., None]
        degenerate = {0: 0.0, 1: np.floor(grey.mean() + 0.5), 2: grey}[adjustment]
        x = np.clip(degenerate + factors[adjustment] * (x - degenerate), 0.0, 255.0)
    return x


def _photo(rng, shape):
    return np.clip(rng.normal(128, 60, shape), 0, 255).astype(np.float32)


@pytest.mark.parametrize("factors", [(1.3, 0.7, 1.25), (0.6, 1.4, 0.6), (1.4, 1.4, 1.4)])
def test_colour_jitter_is_pils_blends_in_every_order(factors):
    rng = np.random.default_rng(0)
    image = _photo(rng, (17, 23, 3))  # Wide spread: the clipping after each step matters.
    for order in itertools.permutations(range(3)):
        out = preprocessing.blend_jitter(tf.constant(image), tf.constant(factors), tf.constant(order)).numpy()
        np.testing.assert_allclose(out, _pil_blends(image, factors, order), atol=2e-3)


def test_colour_jitter_of_one_channel_skips_saturation():
    image = _photo(np.random.default_rng(1), (9, 11, 1))
    factors, order = (1.2, 0.8, 0.6), (2, 1, 0)
    out = preprocessing.blend_jitter(tf.constant(image), tf.constant(factors), tf.constant(order)).numpy()
    np.testing.assert_allclose(out, _pil_blends(image, factors, order), atol=2e-3)
    saturation_only = preprocessing.blend_jitter(tf.constant(image), tf.constant((1.0, 1.0, 0.6)), tf.constant(order))
    np.testing.assert_allclose(saturation_only.numpy(), image, atol=1e-4)  # Contrast 1.0: rounding only.


def test_colour_jitter_is_within_rounding_of_pil_itself():
    Image = pytest.importorskip("PIL.Image")
    ImageEnhance = pytest.importorskip("PIL.ImageEnhance")
    rng = np.random.default_rng(2)
    image = np.clip(rng.normal(128, 50, (32, 40, 3)), 0, 255).astype(np.uint8)
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    factors = (1.25, 0.75, 1.3)
    for order in itertools.permutations(range(3)):
        pil = Image.fromarray(image)
        for adjustment in order:
            pil = enhancers[adjustment](pil).enhance(factors[adjustment])
        ours = preprocessing.blend_jitter(
            tf.constant(image, tf.float32), tf.constant(factors), tf.constant(order)
        ).numpy()
        # PIL truncates to uint8 after every step (and its grey image is rounded): under one
        # grey level per step, amplified by the later factors (at most 1 + 1.3 + 1.3 * 1.25).
        difference = np.abs(ours - np.asarray(pil, np.float64))
        assert difference.max() < 4.0 and difference.mean() < 1.5, (order, difference.max(), difference.mean())


def test_colour_jitter_draws_factors_within_the_strength_in_every_order():
    image = tf.constant(_photo(np.random.default_rng(3), (6, 6, 3)))
    brightness_only = tf.fill([6, 6, 3], 100.0)  # Grey: contrast and saturation leave it.
    seen = set()
    for i in range(60):
        out = preprocessing.color_jitter(brightness_only, 0.4, tf.constant([i, 5], tf.int64)).numpy()
        ratio = out[0, 0, 0] / 100.0
        assert 0.6 - 1e-6 <= ratio <= 1.4 + 1e-6
        np.testing.assert_allclose(out, out[0, 0, 0], rtol=1e-6)
        jittered = preprocessing.color_jitter(image, 0.4, tf.constant([i, 5], tf.int64))
        seen.add(tuple(np.round(jittered.numpy()[0, 0], 3)))
    assert len(seen) == 60


def test_flip_draws_as_tensorflows_stateless_flip():
    image = tf.constant(np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3))
    flipped = 0
    for i in range(40):
        seed = tf.constant([i, 3], tf.int64)
        ours = preprocessing.random_flip(image, seed).numpy()
        np.testing.assert_array_equal(ours, tf.image.stateless_random_flip_left_right(image, seed).numpy())
        flipped += not np.array_equal(ours, image.numpy())
    assert 10 < flipped < 30
