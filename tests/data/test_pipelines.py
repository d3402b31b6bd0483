"""Tests for pss_tf.data: sources, preprocessing, streams, distribution, resume."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from support import (
    assert_same_batches, make_fashion_dir, prepare_tfds_images, subprocess_env, take_batches, write_idx,
)

from pss_tf import data
from pss_tf.data import idx, preprocessing

# --- helpers -----------------------------------------------------------------------


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(np.asarray(array, np.uint8)))


def make_imagefolder(root):
    """train: ant (2), cat (1, grayscale), dog (2); val: ant (1), dog (1)."""
    rng = np.random.default_rng(1)
    layout = {
        ("train", "dog"): [(30, 40, 3), (50, 20, 3)],
        ("train", "ant"): [(16, 16, 3), (33, 47, 3)],
        ("train", "cat"): [(25, 25, 1)],
        ("val", "ant"): [(40, 30, 3)],
        ("val", "dog"): [(20, 64, 3)],
    }
    for (split, cls), shapes in layout.items():
        for i, shape in enumerate(shapes):
            write_png(os.path.join(root, split, cls, f"{i}.png"), rng.integers(0, 256, shape))
    with open(os.path.join(root, "train", "dog", "notes.txt"), "w") as f:
        f.write("not an image")


# --- normalisation -----------------------------------------------------------------


def _in_input_range(x) -> bool:
    """Within what ImageNet normalisation makes of [0, 255] pixels (the pipelines' default)."""
    return -2.1179 - 1e-4 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 2.6400 + 1e-4


def test_normalize_maps_uint8_to_unit_range():
    out = data.normalize(tf.constant([0, 51, 255], tf.uint8), "minus_one_to_one").numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.float32([0, 51, 255]) / np.float32(127.5) - 1)
    assert out[0] == -1.0 and out[-1] == 1.0
    assert "127.5" in data.NORMALIZATIONS["minus_one_to_one"]


def test_imagenet_normalisation_is_the_release_mean_and_std():
    pixels = np.array([[[0, 128, 255]]], np.uint8)
    out = data.normalize(tf.constant(pixels), "imagenet").numpy()
    expected = (pixels / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    gray = data.normalize(tf.constant([[[255]]], tf.uint8), "imagenet").numpy()
    np.testing.assert_allclose(gray, (1 - 0.449) / 0.226, rtol=1e-6)
    with pytest.raises(ValueError, match="normalization"):
        data.normalize(tf.constant(pixels), "zero_to_one")


# --- IDX -------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = str(tmp_path / "x-idx3-ubyte")
    write_idx(path, array, gz)
    assert idx.read_idx_shape(path, ndim=3) == (2, 3, 4)
    np.testing.assert_array_equal(idx.read_idx(path, ndim=3), array)


def test_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad.*magic"):
        idx.read_idx(str(bad_magic))
    short = str(tmp_path / "short")
    write_idx(short, np.zeros(5, np.uint8), gz=False)
    with open(short, "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ValueError, match="short.*payload"):
        idx.read_idx(short)
    with pytest.raises(ValueError, match="expected an IDX file of 3 dimensions"):
        idx.read_idx_shape(short, ndim=3)
    truncated = str(tmp_path / "truncated.gz")
    write_idx(truncated, np.zeros((4, 5, 5), np.uint8), gz=True)
    with open(truncated, "r+b") as f:
        f.truncate(20)
    with pytest.raises(ValueError, match="truncated.gz.*cannot read"):
        idx.read_idx(truncated)


# --- Fashion-MNIST ---------------------------------------------------------------


def test_fashion_mnist_from_idx_files(tmp_path):
    arrays = make_fashion_dir(str(tmp_path))
    info = data.check_dataset("fashion_mnist", str(tmp_path))
    assert info == data.DatasetInfo("fashion_mnist", 10, 1, 20, 10)
    # At the native size and crop_fraction 1 evaluation is exactly normalisation.
    ds = data.load("fashion_mnist", str(tmp_path), "val", 28, 4, training=False, crop_fraction=1.0)
    got = take_batches(ds, 10)
    assert [len(y) for _, y in got] == [4, 4, 2]
    images = np.concatenate([x for x, _ in got])
    labels = np.concatenate([y for _, y in got])
    expected = data.normalize(arrays["t10k"][0][..., None]).numpy()
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, arrays["t10k"][1])
    assert labels.dtype == np.int32


def test_fashion_mnist_missing_file_names_flag_and_file(tmp_path):
    make_fashion_dir(str(tmp_path))
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(ValueError, match="data_dir: .*t10k-labels-idx1-ubyte.*" + str(tmp_path)):
        data.check_dataset("fashion_mnist", str(tmp_path))
    with pytest.raises(ValueError, match="data_dir: .*does not exist"):
        data.check_dataset("fashion_mnist", str(tmp_path / "nowhere"))


def test_fashion_mnist_training_epoch_is_a_permutation(tmp_path):
    make_fashion_dir(str(tmp_path), num_train=10)
    ds = data.load("fashion_mnist", str(tmp_path), "train", 16, 5, training=True, seed=7)
    labels = [y for _, y in take_batches(ds, 6)]  # Three epochs of two batches.
    epochs = [np.concatenate(labels[i : i + 2]) for i in range(0, 6, 2)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(10))  # Label i belongs to example i only.
    assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])


@pytest.mark.skipif(
    not os.path.isdir(data.FASHION_MNIST_DIR), reason="Debian's dataset-fashion-mnist not installed"
)
def test_installed_fashion_mnist():
    info = data.check_dataset("fashion_mnist", None)
    assert info == data.DatasetInfo("fashion_mnist", 10, 1, 60000, 10000)
    _, raw_labels = data.load_fashion_mnist_arrays(data.FASHION_MNIST_DIR, "val")
    x, y = next(iter(data.load("fashion_mnist", None, "val", 32, 128, False, crop_fraction=1.0)))
    assert x.shape == (128, 32, 32, 1) and x.dtype == tf.float32
    np.testing.assert_array_equal(y.numpy(), raw_labels[:128])
    train = data.load("fashion_mnist", None, "train", 32, 128, True, crop_scale=(0.35, 1.0))
    x, y = next(iter(train))
    assert x.shape == (128, 32, 32, 1) and y.shape == (128,)
    assert _in_input_range(x)


# --- image folders -----------------------------------------------------------------


def test_imagefolder_classes_shapes_and_range(tmp_path):
    make_imagefolder(str(tmp_path))
    root = str(tmp_path)
    assert data.imagefolder_classes(root) == ("ant", "cat", "dog")
    assert data.check_dataset("imagefolder", root) == data.DatasetInfo("imagefolder", 3, 3, 5, 2)

    x, y = next(iter(data.load("imagefolder", root, "val", 24, 8, training=False)))
    assert x.shape == (2, 24, 24, 3) and x.dtype == tf.float32
    np.testing.assert_array_equal(y.numpy(), [0, 2])  # ant, dog: the train mapping.

    x, y = next(iter(data.load("imagefolder", root, "train", 24, 5, training=True, seed=1)))
    assert x.shape == (5, 24, 24, 3)
    assert sorted(y.numpy()) == [0, 0, 1, 2, 2]
    assert _in_input_range(x)

    gray = data.load("imagefolder", root, "train", 24, 5, training=True, channels=1)
    assert next(iter(gray))[0].shape == (5, 24, 24, 1)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ValueError, match="data_dir: .*required"):
        data.check_dataset("imagefolder", None)
    with pytest.raises(ValueError, match="data_dir: .*nowhere.*not a directory"):
        data.check_dataset("imagefolder", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="data_dir: .*val.*missing"):
        os.makedirs(tmp_path / "train" / "a")
        data.check_dataset("imagefolder", str(tmp_path))
    make_imagefolder(str(tmp_path / "ok"))
    write_png(str(tmp_path / "ok" / "val" / "zebra" / "0.png"), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="data_dir: .*classes missing.*zebra"):
        data.check_dataset("imagefolder", str(tmp_path / "ok"))


# --- synthetic ---------------------------------------------------------------------


def test_synthetic_is_deterministic(tmp_path):
    spec = data.SyntheticSpec(num_classes=4, channels=3, num_train=40, num_val=12)
    make = lambda seed: data.load(  # noqa: E731
        "synthetic", None, "train", 16, 8, True, seed=seed, synthetic=spec
    )
    first, again, other = take_batches(make(5), 3), take_batches(make(5), 3), take_batches(make(6), 3)
    assert_same_batches(first, again)
    assert not np.array_equal(first[0][0], other[0][0])
    assert first[0][0].shape == (8, 16, 16, 3)
    assert data.check_dataset("synthetic", synthetic=spec).num_classes == 4
    gray = data.load("synthetic", None, "val", 16, 4, False, synthetic=spec, channels=1)
    assert next(iter(gray))[0].shape == (4, 16, 16, 1)


def test_synthetic_labels_are_learnable():
    spec = data.SyntheticSpec(num_classes=5, channels=3, num_train=200, num_val=100)
    load = lambda split: data.load("synthetic", None, split, 16, 500, False, synthetic=spec)  # noqa
    (x_train, y_train), (x_val, y_val) = next(iter(load("train"))), next(iter(load("val")))
    # Nearest class-mean colour already beats chance (0.2) by far.
    colours = lambda x: tf.reduce_mean(x, axis=[1, 2]).numpy()  # noqa: E731
    centroids = np.stack([colours(x_train)[y_train.numpy() == c].mean(0) for c in range(5)])
    distances = ((colours(x_val)[:, None] - centroids[None]) ** 2).sum(-1)
    assert (distances.argmin(1) == y_val.numpy()).mean() > 0.8


# --- preprocessing -----------------------------------------------------------------


def test_eval_centre_crop_without_resize():
    image = (np.arange(40 * 60 * 3) % 251).astype(np.uint8).reshape(40, 60, 3)
    out = preprocessing.preprocess_for_eval(tf.constant(image), 20, crop_fraction=0.5)
    # The stream's normalisation is `normalize`'s affine map as a matmul and bias_add: one ulp apart.
    np.testing.assert_allclose(out.numpy(), data.normalize(image[10:30, 20:40]).numpy(), rtol=0, atol=5e-7)


def test_eval_resizes_shorter_side_then_crops_centre():
    image = np.zeros((64, 96, 1), np.uint8)
    image[16:48, 32:64] = 255  # The centre half of the shorter side, centred.
    out = preprocessing.preprocess_for_eval(tf.constant(image), 16, crop_fraction=0.5).numpy()
    assert out.shape == (16, 16, 1)
    np.testing.assert_allclose(out[2:14, 2:14], (1 - 0.449) / 0.226, rtol=1e-6)  # Edges may blend.
    full = preprocessing.preprocess_for_eval(
        tf.constant(image), 16, crop_fraction=1.0, normalization="minus_one_to_one"
    ).numpy()
    assert full[0, 0, 0] == -1.0 and full[8, 8, 0] == 1.0


def test_train_augmentation_is_deterministic_given_seed():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (40, 50, 3)), tf.uint8)
    aug = lambda seed: preprocessing.preprocess_for_train(  # noqa: E731
        image, 24, tf.constant(seed, tf.int64), (0.08, 1.0), True, 0.4, 0.1, "minus_one_to_one"
    ).numpy()
    np.testing.assert_array_equal(aug([1, 2]), aug([1, 2]))
    assert not np.array_equal(aug([1, 2]), aug([1, 3]))
    out = aug([3, 4])
    assert out.shape == (24, 24, 3) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_colour_jitter_scales_brightness_contrast_and_saturation_within_the_strength():
    rng = np.random.default_rng(1)
    image = tf.constant(rng.uniform(60, 190, (16, 16, 3)), tf.float32)
    gray = tf.image.rgb_to_grayscale(image)
    for i in range(20):
        out = preprocessing.color_jitter(image, 0.4, tf.constant([i, 7], tf.int64))
        np.testing.assert_array_equal(out, preprocessing.color_jitter(image, 0.4, tf.constant([i, 7], tf.int64)))
        assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
        # Mean brightness moves by at most the brightness and contrast factors' range.
        ratio = float(tf.reduce_mean(tf.image.rgb_to_grayscale(out)) / tf.reduce_mean(gray))
        assert 0.6 * 0.6 - 1e-3 <= ratio <= 1.4 + 1e-3
    # Saturation 0 strength is the identity; a one-channel image keeps its hue-free values.
    np.testing.assert_allclose(preprocessing.color_jitter(image, 0.0, tf.constant([1, 1], tf.int64)), image, atol=1e-4)
    one = tf.constant(rng.uniform(60, 190, (8, 8, 1)), tf.float32)
    assert preprocessing.color_jitter(one, 0.4, tf.constant([2, 2], tf.int64)).shape == (8, 8, 1)


def test_pca_lighting_adds_one_colour_shift_along_the_eigenvectors():
    image = tf.fill([4, 4, 3], 128.0)
    out = preprocessing.pca_lighting(image, 0.1, tf.constant([3, 3], tf.int64)).numpy()
    shift = out[0, 0] - 128.0
    np.testing.assert_allclose(out - 128.0, np.broadcast_to(shift, out.shape), atol=1e-4)
    assert 0.0 < np.abs(shift).max() < 255 * 0.1 * 0.2175 * 4  # Four sigma of the largest component.
    gray = tf.fill([4, 4, 1], 128.0)
    np.testing.assert_array_equal(preprocessing.pca_lighting(gray, 0.1, tf.constant([3, 3], tf.int64)), gray)


@pytest.mark.parametrize("height,width", [(40, 50), (5, 300), (1, 1)])
def test_crop_windows_stay_inside_the_image(height, width):
    for i in range(30):
        top, left, h, w = (
            int(v)
            for v in preprocessing.sample_crop_window(
                height, width, tf.constant([i, 0], tf.int64), (0.35, 1.0)
            )
        )
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        assert h >= 1 and w >= 1


def test_flip_can_be_disabled():
    image = tf.constant(np.tile(np.arange(32, dtype=np.uint8)[None, :, None], (32, 1, 1)))
    for i in range(8):
        out = preprocessing.preprocess_for_train(
            image, 32, tf.constant([i, 0], tf.int64), (1.0, 1.0), flip=False
        )
        assert out[0, 0, 0] < out[0, -1, 0]  # Left stays darker than right.


# --- streams ---------------------------------------------------------------------


def test_element_specs():
    spec = data.SyntheticSpec(num_train=16, num_val=10)
    train = data.load("synthetic", None, "train", 24, 4, True, synthetic=spec)
    assert train.element_spec[0] == tf.TensorSpec((4, 24, 24, 3), tf.float32)
    assert train.element_spec[1] == tf.TensorSpec((4,), tf.int32)
    val = data.load("synthetic", None, "val", 24, 4, False, synthetic=spec)
    assert val.element_spec[0] == tf.TensorSpec((None, 24, 24, 3), tf.float32)
    assert sum(int(y.shape[0]) for _, y in val) == 10


@pytest.mark.parametrize("start_step", [1, 4, 7])
def test_resume_equals_uninterrupted_stream(start_step):
    # 20 examples at batch 8: batches straddle epoch boundaries.
    spec = data.SyntheticSpec(num_classes=3, num_train=20, num_val=4)
    make = lambda start: data.load(  # noqa: E731
        "synthetic", None, "train", 16, 8, True, seed=3, synthetic=spec, start_step=start
    )
    full = take_batches(make(0), start_step + 3)
    assert_same_batches(take_batches(make(start_step), 3), full[start_step:])


def test_input_pipelines_split_the_global_stream():
    spec = data.SyntheticSpec(num_train=24, num_val=4)
    fn = data.make_input_fn(
        "synthetic", None, "train", 16, 8, True, seed=1, synthetic=spec, start_step=2
    )
    (x_global, y_global), = take_batches(fn(None), 1)
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, 2)
        (x, y), = take_batches(fn(context), 1)
        assert x.shape == (4, 16, 16, 3)
        np.testing.assert_array_equal(x, x_global[pipeline::2])
        np.testing.assert_array_equal(y, y_global[pipeline::2])
    assert fn.info.num_train == 24


def test_mirrored_strategy_gets_half_batches_per_replica():
    script = textwrap.dedent(
        """
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from pss_tf import data
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        spec = data.SyntheticSpec(num_train=32, num_val=8)
        fn = data.make_input_fn("synthetic", None, "train", 16, 8, True, synthetic=spec)
        dist = strategy.distribute_datasets_from_function(fn)
        images, labels = next(iter(dist))
        shapes = [tuple(t.shape) for t in strategy.experimental_local_results(images)]
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
        assert shapes == [(4, 16, 16, 3)] * 2, shapes
        print("OK", shapes)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=subprocess_env(CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout


def test_invalid_arguments():
    with pytest.raises(ValueError, match="split"):
        data.load("synthetic", None, "test", 16, 4, False)
    with pytest.raises(ValueError, match="crop_scale"):
        data.load("synthetic", None, "train", 16, 4, True, crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="start_step"):
        data.load("synthetic", None, "val", 16, 4, False, start_step=3)
    with pytest.raises(ValueError, match="dataset: "):
        data.check_dataset("")


# --- TFDS --------------------------------------------------------------------------


def test_unknown_tfds_name(tmp_path):
    with pytest.raises(ValueError, match="dataset: .*no_such_dataset_xyz"):
        data.check_dataset("no_such_dataset_xyz", str(tmp_path))


def test_unprepared_tfds_dataset_is_not_downloaded(tmp_path):
    with pytest.raises(ValueError, match="data_dir: .*'mnist' is not prepared.*never downloads"):
        data.check_dataset("mnist", str(tmp_path))
    assert not os.path.exists(tmp_path / "downloads")


def test_imagenet_names_the_manual_dir(tmp_path):
    manual = os.path.join(str(tmp_path), "downloads", "manual")
    with pytest.raises(ValueError, match="data_dir: .*ILSVRC2012_img_train.tar") as error:
        data.check_dataset("imagenet2012", str(tmp_path))
    assert manual in str(error.value)
    os.makedirs(manual)
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        open(os.path.join(manual, name), "wb").close()
    if importlib.util.find_spec("importlib_resources") is None:
        with pytest.raises(ValueError, match="importlib_resources"):
            data.check_dataset("imagenet2012", str(tmp_path))
        return
    info = data.check_dataset("imagenet2012", str(tmp_path))
    assert (info.num_classes, info.num_train, info.num_val) == (1000, 1281167, 50000)


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    """A 3-class image dataset prepared by TFDS in 3 shards, splits train and test."""
    pytest.importorskip("tensorflow_datasets")

    def random_pixels(rng, i):
        return rng.integers(0, 256, (int(rng.integers(12, 40)), int(rng.integers(12, 40)), 3), dtype=np.uint8)

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    name = prepare_tfds_images(data_dir, "PssTinyImages", num_classes=3, splits={"train": (0, 30), "test": (1, 9)},
                               make_image=random_pixels, num_shards=3)
    return name, data_dir


def test_tfds_prepared_dataset(tiny_tfds):
    name, data_dir = tiny_tfds
    assert data.check_dataset(name, data_dir) == data.DatasetInfo(name, 3, 3, 30, 9)
    val = take_batches(data.load(name, data_dir, "val", 16, 4, False), 10)
    assert [len(y) for _, y in val] == [4, 4, 1]
    x, y = next(iter(data.load(name, data_dir, "train", 16, 6, True, seed=2)))
    assert x.shape == (6, 16, 16, 3) and y.dtype == tf.int32
    assert _in_input_range(x)


def test_tfds_epochs_and_resume(tiny_tfds):
    name, data_dir = tiny_tfds
    make = lambda start: data.load(  # noqa: E731
        name, data_dir, "train", 16, 12, True, seed=4, shuffle_buffer=8, start_step=start
    )
    full = take_batches(make(0), 6)
    labels = np.concatenate([y for _, y in full])
    for epoch in range(2):  # Each epoch sees every example once: ten of each class.
        np.testing.assert_array_equal(np.bincount(labels[epoch * 30 : (epoch + 1) * 30]), [10] * 3)
    assert_same_batches(take_batches(make(4), 2), full[4:])
    assert_same_batches(take_batches(make(0), 6), full)


def test_tfds_resume_with_two_input_pipelines(tiny_tfds):
    name, data_dir = tiny_tfds
    make = lambda start: data.make_input_fn(  # noqa: E731
        name, data_dir, "train", 16, 8, True, seed=4, shuffle_buffer=8, start_step=start
    )
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, 2)
        full = take_batches(make(0)(context), 7)
        assert full[0][0].shape == (4, 16, 16, 3)
        assert_same_batches(take_batches(make(5)(context), 2), full[5:])

