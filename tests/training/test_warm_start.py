"""Warm starts (`init_from`): the weight rules, the checks, and the run's record of its source."""

import random

import numpy as np
import pytest
import tensorflow as tf
from support import smoke_config

from pss_tf import SearchSpace, build_supernet
from pss_tf.errors import ConfigError
from pss_tf.run.config import TrainConfig
from pss_tf.run.job import Job
from pss_tf.training import warm_start

SPACE = SearchSpace("mobilenet_v1", min_resolution=24, max_resolution=32, resolution_step=4, min_width=0.35,
                    max_width=0.5)


def supernet(classes, channels, seed):
    tf.keras.utils.set_random_seed(seed)
    return build_supernet("mobilenet_v1", num_classes=classes, small_input=True, in_channels=channels)


def randomise_statistics(net, seed):
    rng = np.random.default_rng(seed)
    for layer in net.batch_norm_layers():
        for variable in (layer.moving_mean, layer.moving_variance, layer.gamma, layer.beta):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))


@pytest.mark.parametrize("source_channels, channels", [(3, 1), (1, 3)])
def test_a_warm_start_computes_what_the_source_computes(source_channels, channels):
    source = supernet(4, source_channels, seed=0)
    randomise_statistics(source, 0)
    target = supernet(4, channels, seed=1)
    warm_start.copy_weights(source, target)
    grey = tf.random.uniform([3, 32, 32, 1], -1.0, 1.0, seed=2)
    config = SPACE.random_config(random.Random(3))
    # Grey images as three equal channels are what an RGB stem sees of them.
    source_input = tf.tile(grey, [1, 1, 1, 3]) if source_channels == 3 else grey
    target_input = grey if channels == 1 else tf.tile(grey, [1, 1, 1, 3])
    np.testing.assert_allclose(
        target(target_input, config, training=False), source(source_input, config, training=False),
        rtol=1e-4, atol=1e-5,
    )


def test_another_class_count_keeps_every_weight_but_the_classifier():
    source = supernet(4, 3, seed=0)
    randomise_statistics(source, 0)
    target = supernet(7, 3, seed=1)
    before = {v.path: v.numpy() for v in target.classifier.weights}
    warm_start.copy_weights(source, target)
    for ours, theirs in zip(target.weights, source.weights):
        if ours.path in before:
            np.testing.assert_array_equal(ours.numpy(), before[ours.path])  # Its own initialisation.
        else:
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_stem_rules():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 8)).astype(np.float32)
    np.testing.assert_allclose(warm_start.stem_for_channels(kernel, 1)[:, :, 0], kernel.sum(axis=2), rtol=1e-6)
    grey = kernel[:, :, :1]
    spread = warm_start.stem_for_channels(grey, 3)
    assert spread.shape == (3, 3, 3, 8)
    np.testing.assert_allclose(spread.sum(axis=2), grey[:, :, 0], rtol=1e-6)


def refused(smoke_job, tmp_path, message, **changes):
    config = TrainConfig(job_dir=str(tmp_path / "new")).replace(
        model="mobilenet_v1", small_input=True, min_resolution=24, max_resolution=32, resolution_step=4,
        min_width=0.35, max_width=0.5, init_from=smoke_job,
    ).replace(**changes)
    with pytest.raises(ConfigError, match=message):
        config.validate()
        warm_start.plan(config, Job(smoke_job).info)


def test_bad_sources_and_spaces_are_refused(smoke_job, tmp_path):
    refused(smoke_job, tmp_path, "model: the run in .* has model='mobilenet_v1', this run 'mobilenet_v2'",
            model="mobilenet_v2", min_width=0.75, max_width=1.0)
    refused(smoke_job, tmp_path, "small_input: .* has small_input=True, this run False", small_input=False)
    refused(smoke_job, tmp_path, "padding: .* has padding='same', this run 'symmetric'", padding="symmetric")
    refused(smoke_job, tmp_path, "max_width: 0.6 is above the 0.5", max_width=0.6)
    refused(smoke_job, tmp_path, "min_width: 0.3 is below the 0.35", min_width=0.3)
    refused(smoke_job, tmp_path, r"max_resolution: resolutions \[36\] were never trained", max_resolution=36)
    refused(smoke_job, tmp_path, r"min_resolution: resolutions \[20\] were never trained", min_resolution=20)
    refused(smoke_job, tmp_path, r"resolution_step: resolutions \[26, 30\] were never trained", resolution_step=2)
    refused(smoke_job, tmp_path, "init_from: .* is not a directory", init_from=str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    refused(smoke_job, tmp_path, "init_from: .* holds no training run", init_from=str(tmp_path / "empty"))
    refused(smoke_job, tmp_path, "init_pools: needs init_from", init_from="", init_pools=True)
    # A narrower space is fine.
    config = TrainConfig(job_dir=str(tmp_path / "new")).replace(
        model="mobilenet_v1", small_input=True, min_resolution=28, max_resolution=32, resolution_step=4,
        min_width=0.4, max_width=0.5, init_from=smoke_job,
    )
    plan = warm_start.plan(config, Job(smoke_job).info)
    assert plan.notes == [] and plan.record["step"] == plan.step > 0 and len(plan.record["sha256"]) == 64


def test_a_damaged_source_checkpoint_is_refused(smoke_job, tmp_path):
    import shutil

    copy = tmp_path / "source"
    shutil.copytree(smoke_job, copy, ignore=shutil.ignore_patterns("tensorboard"))
    index = tf.train.latest_checkpoint(str(copy / "checkpoints")) + ".index"
    with open(index, "r+b") as f:
        f.truncate(20)
    refused(str(copy), tmp_path, "init_from: .*ckpt-.* cannot be read")


def test_a_mobilenet_v3_run_warm_starts_from_another(mobilenet_v3_smoke_job, tmp_path):
    """A MobileNetV3-Small run (4 RGB classes) warm-starts one on 3 grey classes at 28..32 px:
    every weight and BN statistic is the source's, but the classifier (its own, another
    class count) and the stem (summed over the colour channels); the pools are seeded."""
    from pss_tf.training.trainer import Trainer

    config = smoke_config(
        str(tmp_path / "new"), model="mobilenet_v3_small", init_from=mobilenet_v3_smoke_job, init_pools=True,
        synthetic_classes=3, synthetic_channels=1, min_resolution=28,
    )
    trainer = Trainer(config)
    assert trainer.warm_start.notes == [
        f"the classifier starts afresh: {mobilenet_v3_smoke_job} has 4 classes, this run 3",
        f"the stem's kernel is summed over its colour channels: {mobilenet_v3_smoke_job} reads 3-channel images, "
        "this run 1-channel ones",
    ]
    source = Job(mobilenet_v3_smoke_job).restore_supernet()
    theirs = {v.path: v.numpy() for v in source.weights}
    classifier = {v.path for v in trainer.supernet.classifier.weights}
    stem = trainer.supernet.stem.conv.kernel.path
    assert set(theirs) == {v.path for v in trainer.supernet.weights}
    assert any("se_reduce" in path for path in theirs), "no squeeze-and-excite weights were compared"
    for variable in trainer.supernet.weights:
        if variable.path in classifier:
            assert variable.shape[-1] == 3
        elif variable.path == stem:
            np.testing.assert_array_equal(variable.numpy(), theirs[stem].sum(axis=2, keepdims=True))
        else:
            np.testing.assert_array_equal(variable.numpy(), theirs[variable.path], err_msg=variable.path)
    # The source's pool members at 28 and 32 px lie in the narrower space and join its pools.
    source_pools = Job(mobilenet_v3_smoke_job).pools()
    offered = {c for key in source_pools.keys() for c, _ in source_pools.members(key)}
    seeded = [c for key in trainer.pools.keys() for c, _ in trainer.pools.members(key)]
    assert seeded and all(c in offered and trainer.space.contains(c) for c in seeded)
    assert {c for c in offered if c.resolution >= 28} == set(seeded)


def test_a_mobilenet_v3_warm_start_refuses_another_space(mobilenet_v3_smoke_job, tmp_path):
    def refused_v3(message, **changes):
        config = smoke_config(str(tmp_path / "new"), model="mobilenet_v3_small", init_from=mobilenet_v3_smoke_job)
        with pytest.raises(ConfigError, match=message):
            config = config.replace(**changes)
            config.validate()
            warm_start.plan(config, Job(mobilenet_v3_smoke_job).info)

    refused_v3("model: the run in .* has model='mobilenet_v3_small', this run 'mobilenet_v3_large'",
               model="mobilenet_v3_large")
    refused_v3("model: .* this run 'mobilenet_v3_small_layerwise'", model="mobilenet_v3_small_layerwise")
    refused_v3("model: .* this run 'mobilenet_v1'", model="mobilenet_v1")
    refused_v3("max_width: 0.6 is above the 0.5", max_width=0.6)
    refused_v3(r"max_resolution: resolutions \[36\] were never trained", max_resolution=36)
