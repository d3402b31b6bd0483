"""Held-out training examples (`holdout_examples`): never trained on, read back exactly, resume intact.

Both selections: `stratified` (today's default, a seeded draw) and `last` (the
split's last examples, which runs recorded before the option keep).
"""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from pss_tf import data
from pss_tf.data.selection import Holdout
from pss_tf.data.settings import DataSettings
from pss_tf.errors import ConfigError
from pss_tf.run.config import TrainConfig

NUM_TRAIN, HOLDOUT = 10, 3


def write_idx(path, array):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    """Fashion-MNIST files whose label is the example's index (0..9), so a label names its example."""
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", NUM_TRAIN), ("t10k", 4)):
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, 28, 28)))
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"), np.arange(n) % 10)
    return str(root)


def settings(fashion_dir, holdout=HOLDOUT, selection="last", seed=0):
    return DataSettings(
        "fashion_mnist", fashion_dir, image_size=28, holdout_examples=holdout, holdout_selection=selection,
        selection_seed=seed,
    )


def labels_of(dataset, batches):
    return np.concatenate([y.numpy() for _, y in dataset.take(batches)])


@pytest.mark.parametrize("selection", ["last", "stratified"])
def test_training_streams_never_visit_held_out_examples(fashion_dir, selection):
    kept = NUM_TRAIN - HOLDOUT
    data_settings = settings(fashion_dir, selection=selection)
    held = sorted(data_settings.held_out_indices())
    training = sorted(set(range(NUM_TRAIN)) - set(held))
    assert len(held) == HOLDOUT and len(training) == kept
    if selection == "last":
        assert held == list(range(kept, NUM_TRAIN))
    # Batches of 5 over 7 examples straddle epochs; 7 batches are 5 epochs.
    for stream in (data_settings.training(5, seed=3), data_settings.input_fn(5, seed=3)(None)):
        labels = labels_of(stream, 7)
        epochs = labels.reshape(5, kept)
        for epoch in epochs:
            assert sorted(epoch) == training  # Every kept example once per epoch, no held-out one.
        assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])  # Still reshuffled per epoch.
    assert data_settings.steps_per_epoch(2) == kept // 2
    assert settings(fashion_dir, holdout=0).steps_per_epoch(2) == NUM_TRAIN // 2


def test_held_out_stream_is_exactly_the_last_examples_with_evaluation_preprocessing(fashion_dir):
    """`last`: the selection of runs recorded before `holdout_selection` existed."""
    data_settings = settings(fashion_dir)
    everything = data.load("fashion_mnist", fashion_dir, "train", 28, NUM_TRAIN, training=False)
    (all_images, all_labels), = list(everything)
    held = list(data_settings.holdout(2))
    images = np.concatenate([x.numpy() for x, _ in held])
    labels = np.concatenate([y.numpy() for _, y in held])
    assert [len(y) for _, y in held] == [2, 1]  # One ordered pass, last batch partial.
    np.testing.assert_array_equal(labels, np.arange(NUM_TRAIN - HOLDOUT, NUM_TRAIN))
    np.testing.assert_array_equal(images, all_images.numpy()[NUM_TRAIN - HOLDOUT :])
    limited = np.concatenate([y.numpy() for _, y in data_settings.holdout(8, limit=2)])
    np.testing.assert_array_equal(limited, [NUM_TRAIN - HOLDOUT, NUM_TRAIN - HOLDOUT + 1])
    with pytest.raises(ConfigError, match="holdout_examples: the run holds no training examples out"):
        settings(fashion_dir, holdout=0).holdout(2)


def test_stratified_held_out_stream_reads_the_seeded_draw_with_evaluation_preprocessing(fashion_dir):
    everything = data.load("fashion_mnist", fashion_dir, "train", 28, NUM_TRAIN, training=False)
    (all_images, _), = list(everything)
    draws = {}
    for seed in (0, 1, 2, 3):
        data_settings = settings(fashion_dir, selection="stratified", seed=seed)
        indices = data_settings.held_out_indices()
        labels = np.concatenate([y.numpy() for _, y in data_settings.holdout(2)])
        images = np.concatenate([x.numpy() for x, _ in data_settings.holdout(2)])
        np.testing.assert_array_equal(labels, indices)  # Labels name their example here.
        np.testing.assert_array_equal(images, all_images.numpy()[indices])
        limited = np.concatenate([y.numpy() for _, y in data_settings.holdout(8, limit=2)])
        np.testing.assert_array_equal(limited, indices[:2])
        np.testing.assert_array_equal(settings(fashion_dir, selection="stratified", seed=seed).held_out_indices(), indices)
        draws[seed] = tuple(sorted(indices))
    assert len(set(draws.values())) > 1  # The seed draws; the file order does not decide.


@pytest.mark.parametrize("selection", ["last", "stratified"])
def test_train_subset_is_fixed_spread_and_excludes_held_out_examples(fashion_dir, selection):
    data_settings = settings(fashion_dir, selection=selection)
    training = sorted(set(range(NUM_TRAIN)) - set(data_settings.held_out_indices()))
    subset = data_settings.train_subset(4, examples=3)
    labels = np.concatenate([y.numpy() for _, y in subset])
    np.testing.assert_array_equal(labels, [training[0], training[2], training[4]])  # Spread over the 7 kept.
    again = np.concatenate([y.numpy() for _, y in settings(fashion_dir, selection=selection).train_subset(4, 3)])
    np.testing.assert_array_equal(labels, again)
    everything = np.concatenate([y.numpy() for _, y in settings(fashion_dir, 0).train_subset(4, examples=100)])
    np.testing.assert_array_equal(everything, np.arange(NUM_TRAIN))


@pytest.mark.parametrize("selection", ["last", "stratified"])
@pytest.mark.parametrize("start_step", [1, 3, 6])
def test_resume_with_held_out_examples_equals_uninterrupted_stream(fashion_dir, start_step, selection):
    holdout = Holdout(HOLDOUT, selection, seed=2)

    def stream(start):
        return data.load("fashion_mnist", fashion_dir, "train", 28, 4, True, seed=5, start_step=start, holdout=holdout)

    full = list(stream(0).take(start_step + 3))
    resumed = list(stream(start_step).take(3))
    for (x, y), (x_full, y_full) in zip(resumed, full[start_step:]):
        np.testing.assert_array_equal(x.numpy(), x_full.numpy())
        np.testing.assert_array_equal(y.numpy(), y_full.numpy())
    seen = set(tf.concat([y for _, y in full], 0).numpy().tolist())
    assert seen.isdisjoint(holdout.held_out(NUM_TRAIN, np.arange(NUM_TRAIN) % 10))


def test_bad_holdout_settings_are_refused(fashion_dir, tmp_path):
    with pytest.raises(ConfigError, match="holdout_examples: 10 leaves none of the 10 training examples"):
        settings(fashion_dir, holdout=NUM_TRAIN).info
    with pytest.raises(ConfigError, match="holdout_examples: .*TFDS dataset.*record shards in order"):
        DataSettings("mnist", str(tmp_path), image_size=28, holdout_examples=5).info
    config = TrainConfig(job_dir=str(tmp_path / "job"))
    with pytest.raises(ConfigError, match="holdout_examples: must be an int >= 0"):
        config.replace(holdout_examples=-1).validate()
    assert config.replace(holdout_examples=4).data_settings().holdout_examples == 4
    # A run.json written before the field existed reads as no held-out data.
    stored = config.to_dict()
    del stored["data"]["holdout_examples"]
    assert TrainConfig.from_dict(stored).data.holdout_examples == 0
    with pytest.raises(ValueError, match="holdout_examples: only training streams"):
        data.load("fashion_mnist", fashion_dir, "train", 28, 4, False, holdout=Holdout(2))
    with pytest.raises(ConfigError, match="holdout_selection: unknown value .first.; expected one of"):
        config.replace(holdout_selection="first").validate()
    with pytest.raises(ValueError, match="holdout_selection: must be one of"):
        Holdout(2, "first")


def test_runs_recorded_before_the_selection_keep_their_last_examples(tmp_path):
    config = TrainConfig(job_dir=str(tmp_path / "job")).replace(holdout_examples=4, seed=7)
    assert config.data.holdout_selection == "stratified"  # New runs draw.
    settings_now = config.data_settings()
    assert (settings_now.holdout_selection, settings_now.selection_seed) == ("stratified", 7)
    stored = config.to_dict()
    assert TrainConfig.from_dict(stored).data.holdout_selection == "stratified"  # Recorded: read back as is.
    del stored["data"]["holdout_selection"]
    assert TrainConfig.from_dict(stored).data.holdout_selection == "last"  # Recorded before the option.
    stored["data"]["holdout_examples"] = 0
    assert TrainConfig.from_dict(stored).data.holdout_selection == "stratified"  # Nothing held out: no difference.
