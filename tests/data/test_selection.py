"""Seeded, class-stratified draws of examples (`pss_tf.data.selection`)."""

import numpy as np
import pytest

from pss_tf.data import selection
from pss_tf.data.selection import Holdout, class_balance_warnings, stratified_draw

# An MNIST-like class-sorted split: what an image folder lists (class by class).
SORTED_LABELS = np.repeat(np.arange(10), [400] * 9 + [392])


def test_keys_are_a_fixed_function_of_seed_salt_and_index():
    # SplitMix64's published outputs for state 1234567 (first and second).
    golden = 0x9E3779B97F4A7C15
    hashed = selection._splitmix64(np.array([1234567, (1234567 + golden) % 2**64], np.uint64))
    assert hashed.tolist() == [6457827717110365317, 3203168211198807973]
    # Pinned: a recorded run's held-out set must not move with a numpy upgrade.
    np.testing.assert_allclose(
        selection.uniform_keys(0, selection.HOLDOUT_SALT, 4),
        [0.5703073404190709, 0.7755100956756414, 0.2256777209759122, 0.06729110111033787],
        rtol=0, atol=1e-15,
    )
    keys = selection.uniform_keys(5, 1, 100_000)
    assert 0.0 <= keys.min() and keys.max() < 1.0
    assert abs(keys.mean() - 0.5) < 0.01 and len(np.unique(keys)) == len(keys)
    assert not np.array_equal(keys, selection.uniform_keys(6, 1, 100_000))
    assert not np.array_equal(keys, selection.uniform_keys(5, 2, 100_000))


def test_a_stratified_draw_gives_every_class_its_share_in_every_prefix():
    drawn = stratified_draw(len(SORTED_LABELS), 500, seed=0, salt=selection.HOLDOUT_SALT, labels=SORTED_LABELS)
    assert len(drawn) == 500 and len(np.unique(drawn)) == 500
    shares = np.bincount(SORTED_LABELS) / len(SORTED_LABELS)
    counts = np.bincount(SORTED_LABELS[drawn], minlength=10)
    assert counts.sum() == 500 and np.all(np.abs(counts - 500 * shares) < 1)  # Largest remainders.
    for prefix in range(1, 501):
        prefix_counts = np.bincount(SORTED_LABELS[drawn[:prefix]], minlength=10)
        assert np.all(np.abs(prefix_counts - prefix * counts / 500) < 2), prefix
    # Within a class, which members are drawn is random, not the first ones.
    first_class = np.sort(drawn[SORTED_LABELS[drawn] == 0])
    assert first_class.max() > 200 and not np.array_equal(first_class, np.arange(len(first_class)))


def test_a_draw_is_a_function_of_seed_and_labels_only():
    again = stratified_draw(len(SORTED_LABELS), 300, seed=4, salt=3, labels=SORTED_LABELS)
    np.testing.assert_array_equal(again, stratified_draw(len(SORTED_LABELS), 300, seed=4, salt=3, labels=SORTED_LABELS))
    other = stratified_draw(len(SORTED_LABELS), 300, seed=5, salt=3, labels=SORTED_LABELS)
    assert set(again) != set(other)
    # Shuffled files: the class shares are the same whatever the order.
    shuffled = np.random.default_rng(0).permutation(SORTED_LABELS)
    drawn = stratified_draw(len(shuffled), 300, seed=4, salt=3, labels=shuffled)
    np.testing.assert_array_equal(np.bincount(shuffled[drawn]), np.bincount(SORTED_LABELS[again]))


def test_a_draw_is_remembered_read_only_and_follows_the_labels():
    from pss_tf.data import selection

    first = stratified_draw(len(SORTED_LABELS), 300, seed=6, salt=3, labels=SORTED_LABELS)
    assert stratified_draw(len(SORTED_LABELS), 300, seed=6, salt=3, labels=SORTED_LABELS.copy()) is first
    assert not first.flags.writeable
    np.testing.assert_array_equal(first, selection._draw(len(SORTED_LABELS), 300, 6, 3, SORTED_LABELS))
    relabelled = SORTED_LABELS.copy()
    relabelled[:50] = (relabelled[:50] + 1) % 10  # Other labels, same length: a new draw, not the remembered one.
    np.testing.assert_array_equal(
        stratified_draw(len(relabelled), 300, seed=6, salt=3, labels=relabelled),
        selection._draw(len(relabelled), 300, 6, 3, relabelled),
    )


@pytest.mark.parametrize("count", [0, 1, 7, 100])
def test_a_draw_without_labels_is_uniform_and_distinct(count):
    drawn = stratified_draw(100, count, seed=1, salt=2)
    assert len(drawn) == count and len(set(drawn)) == count and all(0 <= i < 100 for i in drawn)
    if count == 100:
        assert sorted(drawn) == list(range(100)) and list(drawn) != list(range(100))


def test_bad_draws_are_refused():
    with pytest.raises(ValueError, match=r"count: must lie in \[0, 10\], got 11"):
        stratified_draw(10, 11, 0, 0)
    with pytest.raises(ValueError, match=r"labels: expected shape \(10,\)"):
        stratified_draw(10, 3, 0, 0, labels=np.zeros(9))
    with pytest.raises(ValueError, match="holdout_examples: must be an int >= 0"):
        Holdout(True)


def test_holdout_selections_partition_the_split():
    labels = SORTED_LABELS
    last = Holdout(500, "last")
    np.testing.assert_array_equal(last.held_out(len(labels), labels), np.arange(len(labels) - 500, len(labels)))
    np.testing.assert_array_equal(last.training(len(labels), labels), np.arange(len(labels) - 500))
    assert set(labels[last.held_out(len(labels), labels)]) == {8, 9}  # The class-sorted trap.
    drawn = Holdout(500, "stratified", seed=3)
    held, kept = drawn.held_out(len(labels), labels), drawn.training(len(labels), labels)
    assert len(set(held) | set(kept)) == len(labels) and not set(held) & set(kept)
    assert np.all(np.diff(kept) > 0)
    assert set(labels[held]) == set(range(10)) and set(labels[kept]) == set(range(10))
    np.testing.assert_array_equal(Holdout(0).training(5, None), np.arange(5))
    assert not Holdout(0) and Holdout(1)


def names(n):
    return [f"c{i}" for i in range(n)]


def test_balance_warnings_name_the_classes():
    training = np.array([40, 40, 40, 0])
    validation = np.array([10, 10, 10, 10])
    warnings = class_balance_warnings({"training": training, "validation": validation}, names(4))
    assert set(warnings) == {"untrained"}
    assert "no example of 1 of the 4 classes (c3): the run never trains on them" in warnings["untrained"]

    held = np.array([0, 0, 8, 40])
    warnings = class_balance_warnings({"training": training + 10, "validation": validation, "held_out": held}, names(4))
    assert set(warnings) == {"held_out_missing", "held_out_mix"}
    assert "holds no example of 2 of the 4 classes (c0, c1)" in warnings["held_out_missing"]
    assert "total variation 0.58" in warnings["held_out_mix"] and "class c3 is 83.3%" in warnings["held_out_mix"]

    small = class_balance_warnings(
        {"training": training + 10, "validation": validation, "held_out": np.array([1, 1, 1, 0])}, names(4)
    )
    assert "has 3 examples for 4 classes" in small["held_out_small"]
    good = {"training": training + 10, "validation": validation, "held_out": np.array([9, 11, 10, 10])}
    assert class_balance_warnings(good, names(4)) == {}


@pytest.mark.parametrize("examples", [20, 100, 300, 3000])
def test_random_draws_are_not_reported_and_class_sorted_slices_are(examples):
    """The far-mix warning flags a class-sorted slice, not the sampling error of a random draw."""
    rng = np.random.default_rng(examples)
    validation = np.bincount(SORTED_LABELS)
    for _ in range(200):
        held = np.bincount(rng.choice(SORTED_LABELS, examples, replace=False), minlength=10)
        counts = {"training": validation, "validation": validation, "held_out": held}
        assert "held_out_mix" not in class_balance_warnings(counts, names(10)), held
    last = np.bincount(SORTED_LABELS[-examples:], minlength=10)
    counts = {"training": validation, "validation": validation, "held_out": last}
    assert "held_out_mix" in class_balance_warnings(counts, names(10))
