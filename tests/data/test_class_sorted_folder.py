"""Held-out data on a class-sorted image folder (issue 21): every class in training and held out.

An image folder lists its files class by class, so the split's last examples
are all of its last class. Classes here are distinct colours: a subnet that
trained on every class scores the same on held-out and validation images, and
one that never saw a class cannot predict it.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from support import SMOKE_FLAGS, run_tool

from pss_tf.data.settings import DataSettings

COLOURS = ((220, 30, 30), (30, 200, 30), (40, 40, 230), (230, 220, 40))
NAMES = ("red", "green", "blue", "yellow")
TRAIN_PER_CLASS, VAL_PER_CLASS, HOLDOUT = 48, 16, 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for name, colour in zip(NAMES, COLOURS):
            os.makedirs(root / split / name)
            for i in range(count):
                image = np.clip(np.asarray(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
                tf.io.write_file(str(root / split / name / f"{i:03d}.png"), tf.io.encode_png(image))
    return str(root)


def settings(folder, holdout=HOLDOUT, selection="stratified"):
    return DataSettings(
        "imagefolder", folder, image_size=32, holdout_examples=holdout, holdout_selection=selection,
        normalization="minus_one_to_one",
    )


def test_every_class_is_trained_on_and_held_out(folder):
    data = settings(folder)
    raw_labels = data.raw_split("train").labels
    assert np.all(np.diff(raw_labels) >= 0)  # The folder really is class-sorted.
    held = np.bincount(raw_labels[data.held_out_indices()], minlength=4)
    np.testing.assert_array_equal(held, [HOLDOUT // 4] * 4)  # The split's mix exactly (equal classes).
    kept = 4 * TRAIN_PER_CLASS - HOLDOUT
    epoch = np.concatenate([y.numpy() for _, y in data.training(kept // 4, seed=1).take(4)])
    np.testing.assert_array_equal(np.bincount(epoch, minlength=4), [kept // 4] * 4)
    held_labels = np.concatenate([y.numpy() for _, y in data.holdout(8)])
    np.testing.assert_array_equal(np.bincount(held_labels, minlength=4), held)
    assert data.class_warnings() == {}
    counts = data.class_counts()
    np.testing.assert_array_equal(counts["training"], [kept // 4] * 4)
    np.testing.assert_array_equal(counts["validation"], [VAL_PER_CLASS] * 4)


def test_the_last_examples_of_a_sorted_folder_are_reported(folder):
    last = settings(folder, selection="last")
    assert set(last.raw_split("train").labels[last.held_out_indices()]) == {3}
    warnings = last.class_warnings()
    assert set(warnings) == {"held_out_missing", "held_out_mix"}
    assert "no example of 3 of the 4 classes (blue, green, red)" in warnings["held_out_missing"]
    assert "class yellow is 100.0% of it against 25.0% of validation" in warnings["held_out_mix"]
    whole_class = settings(folder, holdout=TRAIN_PER_CLASS, selection="last").class_warnings()
    assert "no example of 1 of the 4 classes (yellow): the run never trains on them" in whole_class["untrained"]


def test_limited_validation_reads_every_class(folder):
    data = settings(folder)
    limited = np.concatenate([y.numpy() for _, y in data.validation(8, limit=12)])
    np.testing.assert_array_equal(np.bincount(limited, minlength=4), [3, 3, 3, 3])
    np.testing.assert_array_equal(limited, data.raw_split("val").labels[data.subset_indices("val", 12)])
    assert data.subset_indices("val", 0) is None
    np.testing.assert_array_equal(np.sort(data.subset_indices("val", 1000)), np.arange(4 * VAL_PER_CLASS))


TRAINING = (
    f"--flagfile={SMOKE_FLAGS}", "--dataset=imagefolder", "--noprogress", "--epochs=2", "--steps_per_epoch=8",
    "--flops_targets=4,12,8", "--eval_winners_per_epoch=0", "--final_top_k=1",
)
SEARCH = (
    "--budgets=9", "--init=uniform", "--population=4", "--generations=2", "--parents=2", "--mutations=2",
    "--crossovers=2", "--calibration_batches=2", "--noprogress",
)


@pytest.mark.slow
def test_search_fitness_on_held_out_images_matches_validation(folder, tmp_path):
    job = tmp_path / "run"
    trained = run_tool("train.py", *TRAINING, f"--data_dir={folder}", f"--job_dir={job}", f"--holdout_examples={HOLDOUT}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "warning" not in trained.stdout
    searched = run_tool("search.py", f"--job_dir={job}", *SEARCH)
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert "warning" not in searched.stdout
    with open(job / "search" / "searched.json") as f:
        entry, = json.load(f)
    assert entry["fitness_data"] == "holdout" and entry["fitness_examples"] == HOLDOUT
    assert abs(entry["search_top1"] - entry["val_top1"]) <= 0.1, entry  # 32 held-out against 64 validation images.


@pytest.mark.slow
def test_a_run_that_never_trains_a_class_says_so(folder, tmp_path):
    job = tmp_path / "run"
    trained = run_tool(
        "train.py", *TRAINING, f"--data_dir={folder}", f"--job_dir={job}", f"--holdout_examples={TRAIN_PER_CLASS}",
        "--holdout_selection=last", "--epochs=1", "--steps_per_epoch=2",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    output = trained.stdout + trained.stderr
    untrained = "no example of 1 of the 4 classes (yellow): the run never trains on them"
    assert output.count(untrained) == 2, output[-3000:]  # Before training and beside the winners.
    searched = run_tool("search.py", f"--job_dir={job}", *SEARCH, "--generations=1")
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert "holds no example of 3 of the 4 classes (blue, green, red)" in searched.stdout
