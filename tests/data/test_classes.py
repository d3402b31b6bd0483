"""A class filter (`classes`): only those classes' examples, relabelled, in every split and pipeline."""

import numpy as np
import pytest

from pss_tf.data.settings import DataSettings
from pss_tf.data.sources import SyntheticSpec
from pss_tf.errors import ConfigError
from pss_tf.run.config import TrainConfig

SPEC = SyntheticSpec(num_classes=5, num_train=200, num_val=100)


def settings(classes=(), **changes):
    return DataSettings("synthetic", None, image_size=16, synthetic=SPEC, classes=classes,
                        normalization="minus_one_to_one", **changes)


def test_only_the_named_classes_relabelled_in_order():
    everything, subset = settings(), settings(classes=(3, 1))
    train_labels = everything.raw_split("train").labels
    val_labels = everything.raw_split("val").labels
    info = subset.info
    assert info.num_classes == 2
    assert info.num_train == np.isin(train_labels, [3, 1]).sum() and info.num_val == np.isin(val_labels, [3, 1]).sum()
    # Class 3 is label 0, class 1 is label 1; the images are the same examples, in split order.
    (images_all, labels_all), = list(everything.validation(100))
    (images, labels), = list(subset.validation(100))
    keep = np.isin(labels_all.numpy(), [3, 1])
    np.testing.assert_array_equal(images.numpy(), images_all.numpy()[keep])
    np.testing.assert_array_equal(labels.numpy(), np.where(labels_all.numpy()[keep] == 3, 0, 1))
    trained = np.concatenate([y.numpy() for _, y in subset.training(10, seed=0).take(info.num_train // 10)])
    assert set(trained) == {0, 1} and len(trained) == info.num_train // 10 * 10
    assert subset.class_names() == ["3", "1"]


def test_classes_combine_with_held_out_examples():
    subset = settings(classes=(0, 4), holdout_examples=10)
    held = subset.held_out_indices()
    counts = subset.class_counts()
    assert counts["held_out"].sum() == 10 and counts["training"].sum() == subset.info.num_train - 10
    assert set(subset.raw_split("train").labels[held]) == {0, 1}


def test_bad_class_filters_name_the_field(tmp_path):
    for classes, message in (((5, 1), r"\[5\] are not labels of synthetic \(0..4\)"), ((1, 1), "a class is named twice"),
                             ((2,), "name at least two")):
        with pytest.raises(ConfigError, match=f"classes: {message}"):
            settings(classes=classes).info
    with pytest.raises(ConfigError, match="classes: mnist is a TFDS dataset"):
        DataSettings("mnist", str(tmp_path), image_size=28, classes=(0, 1)).info
    config = TrainConfig(job_dir=str(tmp_path / "job")).replace(classes=(5, 6, 7))
    assert config.data_settings().classes == (5, 6, 7)
