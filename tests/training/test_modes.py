"""The training-mode registry and the plain (max net only) mode.

Every mode's numerics are pinned by tests/training/test_mode_replay.py; here the
registry (`pss_tf.run.modes`) gives the `mode` option its choices and each mode
its module and its rule on `parallel_subnets`, and the plain baseline trains the
max net alone on its labels.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from support import smoke_config

from pss_tf import SearchSpace, build_supernet
from pss_tf.config_flags import leaves
from pss_tf.run import modes as registry
from pss_tf.run.config import TrainConfig
from pss_tf.training import modes
from pss_tf.training.optimization import build_optimizer, learning_rate_schedule
from pss_tf.training.step import cross_entropy

SPACE = SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 0.5)


def test_the_mode_option_lists_the_registered_modes_and_each_has_a_module():
    (mode,) = [leaf for leaf in leaves(TrainConfig) if leaf.name == "mode"]
    assert mode.choices == registry.NAMES == ("sandwich", "pse", "plain")
    for name in registry.NAMES:
        assert f"{name}: " in mode.help
        assert callable(modes.module(name).create)


def test_the_plain_step_trains_the_max_net_on_its_labels():
    from pss_tf.training.modes.plain import PlainMode

    config = smoke_config("unused", mode="plain", global_batch_size=8, weight_decay=0.0)
    supernet = build_supernet("mobilenet_v1", num_classes=4, small_input=True)
    optimizer = build_optimizer(learning_rate_schedule(0.05, 10))
    optimizer.build(supernet.trainable_variables)
    mode = PlainMode(config, SPACE, None)
    mode.build(supernet, optimizer, tf.distribute.get_strategy())
    images = tf.random.stateless_uniform([8, 32, 32, 3], seed=[1, 2], minval=-1, maxval=1)
    labels = tf.constant([0, 1, 2, 3, 3, 2, 1, 0])
    variables = supernet.trainable_variables
    before = [v.numpy() for v in variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(cross_entropy(labels, supernet(images, SPACE.max_config(), training=True)))
    gradients = tape.gradient(loss, variables)
    expected = float(loss)
    subnets = mode.draw(epoch=0)
    assert subnets.draws == () and mode.pool_keys == [] and mode.get_state() == {}
    result = mode.step((images, labels), subnets)
    assert result.losses["loss"] == pytest.approx(expected, rel=1e-5) == result.losses["max_ce"]
    assert result.scores == [] and result.nonfinite_weights == 0.0
    assert mode.pool_updates(result) == [] and mode.record_updates(result) == []
    # One SGD step on the max net's gradient alone (Nesterov, momentum 0.9, from zero
    # velocity: w -= lr * (1 + 0.9) * g); weights outside the max net keep their values.
    changed = 0
    for variable, old, gradient in zip(variables, before, gradients):
        step = np.zeros_like(old) if gradient is None else 0.05 * 1.9 * tf.convert_to_tensor(gradient).numpy()
        np.testing.assert_allclose(variable.numpy(), old - step, rtol=1e-5, atol=1e-7)
        changed += int(np.any(step != 0))
    assert changed > 0
    stem = supernet.slim_layers()[0].kernel.numpy()
    assert np.array_equal(stem[..., 16:], before[0][..., 16:]) and not np.array_equal(stem[..., :16], before[0][..., :16])


@pytest.mark.parametrize(
    "mode, parallel_subnets, message",
    [
        ("plain", 2, "mode plain trains the max net alone: give 1"),
        ("pse", 1, "mode pse trains a group of subnets per pass: give 2 or more"),
    ],
)
def test_a_mode_refuses_parallel_subnets_it_cannot_train_before_a_strategy_is_built(
    tmp_path, monkeypatch, mode, parallel_subnets, message
):
    from pss_tf.errors import ConfigError
    from pss_tf.training import distribute
    from pss_tf.training.trainer import Trainer

    def no_strategy(*args, **kwargs):
        raise AssertionError("a strategy was built for a configuration that the checks refuse")

    monkeypatch.setattr(distribute, "create_strategy", no_strategy)
    config = smoke_config(tmp_path / "job", mode=mode, parallel_subnets=parallel_subnets)
    with pytest.raises(ConfigError) as raised:
        config.validate()
    assert (raised.value.field, raised.value.message) == ("parallel_subnets", message)
    with pytest.raises(ConfigError) as raised:
        Trainer(config)
    assert (raised.value.field, raised.value.message) == ("parallel_subnets", message)
    assert not (tmp_path / "job").exists()
    smoke_config(tmp_path / "ok", mode=mode, parallel_subnets=1 if mode == "plain" else 2).validate()


def test_a_batch_that_does_not_split_into_the_parallel_slices_is_refused_by_the_config(tmp_path):
    from pss_tf.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        smoke_config(tmp_path, global_batch_size=32, parallel_subnets=3).validate()
    assert raised.value.field == "global_batch_size"
    assert raised.value.message == "32 does not split into 3 equal slices (`parallel_subnets`)"
    smoke_config(tmp_path, global_batch_size=32, parallel_subnets=4).validate()
    smoke_config(tmp_path, mode="sandwich", parallel_subnets=1).validate()


@pytest.mark.slow
def test_a_plain_run_trains_and_evaluates_the_max_net_and_keeps_no_pools(tmp_path):
    from pss_tf.training.runtime import run

    result = run(smoke_config(tmp_path, mode="plain", epochs=1, steps_per_epoch=3, eval_winners_per_epoch=0))
    assert result.finished and result.steps == 3 and result.winners == []
    assert all(not pool["members"] for pool in json.load(open(tmp_path / "pools.json"))["pools"])
    records = json.load(open(tmp_path / "records.json"))
    assert records["entries"] == [] and records["count"] == 0
    (evaluation,) = json.load(open(tmp_path / "evaluations.json"))
    assert set(evaluation) == {"epoch", "step", "max", "min"} and 0.0 <= evaluation["max"]["top1"] <= 1.0
    assert np.isfinite(evaluation["max"]["top1"])


@pytest.mark.slow
def test_the_final_evaluation_shows_progress_like_training(smoke_job, smoke_job_log):
    """(The shared smoke job trains with progress bars on; conftest keeps what it printed.)"""
    from pss_tf.run.job import Job

    top_k = Job(smoke_job).run_config.evaluation.final_top_k
    pools = json.load(open(f"{smoke_job}/pools.json"))["pools"]
    evaluated = sum(min(top_k, len(pool["members"])) for pool in pools)
    winners = json.load(open(f"{smoke_job}/winners.json"))
    assert evaluated >= len(winners) > 0
    lines = smoke_job_log.replace("\r", "\n").splitlines()
    final = [line for line in lines if line.startswith("final evaluation")]
    assert final and f"{evaluated}/{evaluated}" in final[-1] and "subnet" in final[-1] and "val_img_s=" in final[-1]
    assert any(line.startswith("evaluating epoch 1") for line in lines)
