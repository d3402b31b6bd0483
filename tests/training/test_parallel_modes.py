"""Training with parallel subnets: PSS's sandwich with a masked group pass, and PSE-Net's mode.

The group pass itself is checked for exactness in tests/models/test_parallel.py;
here the steps score each slice from its own examples, and both modes train,
resume exactly and export their winners.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from support import smoke_config

from pss_tf import SearchSpace, SubnetConfig, build_supernet
from pss_tf.supernet import encode, encode_group
from pss_tf.training.optimization import build_optimizer, learning_rate_schedule
from pss_tf.training.step import ParallelLabelsStep, ParallelSandwichStep, cross_entropy

SPACE = SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 0.5)


def _step(step_class, global_batch=8):
    supernet = build_supernet("mobilenet_v1", num_classes=4, small_input=True)
    optimizer = build_optimizer(learning_rate_schedule(0.05, 10))
    optimizer.build(supernet.trainable_variables)
    return supernet, step_class(supernet, optimizer, tf.distribute.get_strategy(), global_batch, weight_decay=1e-4)


def _batch():
    images = tf.random.stateless_uniform([8, 32, 32, 3], seed=[1, 2], minval=-1, maxval=1)
    return images, tf.constant([0, 1, 2, 3, 3, 2, 1, 0])


@pytest.mark.parametrize("step_class", [ParallelSandwichStep, ParallelLabelsStep])
def test_each_slice_is_scored_on_its_own_examples_and_one_trace_serves_every_group(step_class):
    import random

    supernet, step = _step(step_class)
    images, labels = _batch()
    rng = random.Random(0)
    max_vector = tf.constant(encode(SPACE.max_config()))
    for _ in range(3):
        resolution = rng.choice(SPACE.resolutions)
        configs = [SubnetConfig(c.model, resolution, c.widths) for c in (SPACE.random_config(rng) for _ in range(2))]
        group = tf.constant(encode_group(configs))
        # Each slice's cross-entropy before the update, from one subnet pass on its slice.
        expected = [
            float(tf.reduce_mean(cross_entropy(labels[4 * i : 4 * i + 4], supernet(images[4 * i : 4 * i + 4], c, training=True))))
            for i, c in enumerate(configs)
        ]
        out = step((images, labels), max_vector, group) if step_class is ParallelSandwichStep else step((images, labels), group)
        np.testing.assert_allclose(out["slice_ce"].numpy(), expected, rtol=1e-4)
        if step_class is ParallelLabelsStep:
            assert float(out["loss"]) == pytest.approx(sum(expected), rel=1e-4)
        else:
            assert float(out["loss"]) == pytest.approx(float(out["max_ce"] + out["group_kd"]), rel=1e-6)
    assert step.tracing_count == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        dict(mode="sandwich", parallel_subnets=2, sampler="pss"),
        dict(mode="pse", parallel_subnets=2, sampler="conditional", pse_anchor=True),
    ],
    ids=["pss_parallel", "pse_conditional_anchor"],
)
def test_parallel_modes_train_and_resume_exactly(tmp_path, changes):
    """(PSE with the uniform sampler and no anchor steps like these: tests/training/test_mode_replay.py
    replays it. A parallel run's checkpoint and winners are those of any run, so its export is
    tests/export's.)"""
    from pss_tf.run.job import Job
    from pss_tf.training.runtime import run

    settings = dict(epochs=2, steps_per_epoch=3, eval_winners_per_epoch=0, final_top_k=1, **changes)
    straight = run(smoke_config(tmp_path / "straight", **settings))
    assert straight.finished and straight.winners
    stopped = run(smoke_config(tmp_path / "resumed", max_steps=2, **settings))
    assert not stopped.finished
    resumed = run(smoke_config(tmp_path / "resumed", resume=True, **settings))
    assert resumed.finished and resumed.steps == 6
    for name in ("pools.json", "records.json", "winners.json"):
        a, b = (json.load(open(tmp_path / d / name)) for d in ("straight", "resumed"))
        if name == "winners.json":
            a, b = [w["config"] for w in a], [w["config"] for w in b]
        assert a == b, name
    records = Job(str(tmp_path / "straight")).records().records()
    drawn = changes["parallel_subnets"] - (1 if changes.get("pse_anchor") or changes["mode"] == "sandwich" else 0)
    assert len(records) <= 6 * drawn and records


def test_parallel_settings_are_checked_before_any_work(tmp_path):
    from pss_tf.errors import ConfigError
    from pss_tf.training.trainer import Trainer

    with pytest.raises(ConfigError) as raised:
        Trainer(smoke_config(tmp_path / "a", mode="pse", parallel_subnets=1))
    assert raised.value.field == "parallel_subnets"
    with pytest.raises(ConfigError) as raised:
        Trainer(smoke_config(tmp_path / "b", parallel_subnets=3))  # 32 images do not split in 3.
    assert raised.value.field == "global_batch_size" and "parallel_subnets" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        Trainer(smoke_config(tmp_path / "c", pse_anchor=True))
    assert raised.value.field == "pse_anchor"
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
