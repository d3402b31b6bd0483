"""Fine-tuning one extracted subnet: options, re-initialisation, weights files, exact resume."""

import numpy as np
import pytest
import tensorflow as tf
from support import smoke_space

from pss_tf.data.settings import DataSettings
from pss_tf.data.sources import SyntheticSpec
from pss_tf.errors import ConfigError
from pss_tf.finetune import training
from pss_tf.finetune.options import INHERITED_LEARNING_RATE_FACTOR, FinetuneOptions
from pss_tf.run import outputs
from pss_tf.run.config import TrainConfig

SPACE = smoke_space()  # MobileNetV1, 24..32 px, widths 0.35..0.5


def options(**changes):
    return FinetuneOptions(job_dir="/tmp/run", subnets=("winners",)).replace(**changes)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"job_dir": ""}, "job_dir: required"),
        ({"subnets": ()}, "subnets: name at least one"),
        ({"epochs": 0}, "epochs: must be an int of at least 1, got 0"),
        ({"epochs": True}, "epochs: must be an int of at least 1, got True"),
        ({"batch_size": -1}, "batch_size: must be an int of at least 0"),
        ({"learning_rate": float("nan")}, "learning_rate: must be a finite number"),
        ({"epochs": 1, "warmup_epochs": 1.0}, r"warmup_epochs: must be shorter than epochs \(1\)"),
        ({"momentum": 1.0}, r"momentum: must lie in \[0, 1\)"),
        ({"weight_decay": -1e-4}, "weight_decay: must be a finite number of at least 0"),
    ],
)
def test_bad_options_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        options(**changes).validate()


def test_the_recipe_follows_the_run_unless_told():
    run = TrainConfig(job_dir="/tmp/run").replace(learning_rate=0.2, weight_decay=3e-5, global_batch_size=64)
    inherited = options(epochs=2).recipe(run, steps_per_epoch=10)
    assert inherited["learning_rate"] == pytest.approx(0.2 * INHERITED_LEARNING_RATE_FACTOR)
    assert (inherited["weight_decay"], inherited["batch_size"], inherited["total_steps"]) == (3e-5, 64, 20)
    assert inherited["mode"] == "inherited" and not inherited["distill"]
    scratch = options(from_scratch=True, distill=True, epochs=1, steps_per_epoch=3, batch_size=8, weight_decay=0.0,
                      warmup_epochs=0.5).recipe(run, 10)
    assert (scratch["learning_rate"], scratch["weight_decay"], scratch["batch_size"]) == (0.2, 0.0, 8)
    assert (scratch["total_steps"], scratch["warmup_steps"], scratch["mode"]) == (3, 2, "from_scratch")
    assert options(learning_rate=0.03).recipe(run, 10)["learning_rate"] == 0.03
    # What a resume must share: the training settings, not where the run or output lives.
    assert options(out="/a", progress=False).settings() == options(out="/b").settings()
    assert options(epochs=2).settings() != options().settings()
    assert options().epochs == 3  # The default the fine-tuning study chose (docs/RESULTS.md).


def test_reinitialise_draws_the_release_initialisers_at_the_subnet_widths(supernet):
    config = SPACE.max_config()
    model = supernet.extract(config)
    training.reinitialise(model, seed=1)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.DepthwiseConv2D):
            k, _, channels, _ = layer.kernel.shape
            expected = np.sqrt(2.0 / (k * k * channels))
            assert np.std(layer.kernel.numpy()) == pytest.approx(expected, rel=0.3)
        elif isinstance(layer, tf.keras.layers.Conv2D):
            k, _, _, out = layer.kernel.shape
            assert np.std(layer.kernel.numpy()) == pytest.approx(np.sqrt(2.0 / (k * k * out)), rel=0.15)
        elif isinstance(layer, tf.keras.layers.Dense):
            assert np.std(layer.kernel.numpy()) == pytest.approx(0.01, rel=0.15)
            assert not np.any(layer.bias.numpy())
        elif isinstance(layer, tf.keras.layers.BatchNormalization):
            assert np.all(layer.gamma.numpy() == 1) and np.all(layer.moving_variance.numpy() == 1)
            assert not np.any(layer.beta.numpy()) and not np.any(layer.moving_mean.numpy())
    again = supernet.extract(config)
    training.reinitialise(again, seed=1)
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # A function of the seed.
    other = supernet.extract(config)
    training.reinitialise(other, seed=2)
    assert not np.array_equal(model.layers[2].get_weights()[0], other.layers[2].get_weights()[0])


def test_weights_files_round_trip_and_refuse_pickles(supernet, tmp_path):
    config = SPACE.min_config()
    weights = supernet.subnet_weights(config)
    path = str(tmp_path / "weights.npz")
    outputs.save_weights(path, weights)
    loaded = outputs.load_weights(path)
    assert set(loaded) == set(weights)
    for name in weights:
        for a, b in zip(weights[name], loaded[name]):
            np.testing.assert_array_equal(a, b)
    model = supernet.extract(config, weights=loaded)
    images = tf.random.uniform([2, 32, 32, 3])
    np.testing.assert_allclose(model(images, training=False), supernet(images, config, training=False), atol=1e-5)
    evil = str(tmp_path / "evil.npz")
    np.savez(evil, **{"layer/0": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):
        outputs.load_weights(evil)


class StopAfter:
    """A stop request that comes after `steps` polls (the loop polls once per step)."""

    def __init__(self, steps):
        self.steps = steps

    @property
    def requested(self):
        self.steps -= 1
        return self.steps < 0


def finetune(supernet, directory, stop, teacher=None):
    data = DataSettings("synthetic", None, image_size=32, synthetic=SyntheticSpec(num_classes=4, num_train=64),
                        normalization="minus_one_to_one")
    config = SPACE.min_config()
    model = supernet.extract(config, weights=supernet.subnet_weights(config))
    recipe = options(steps_per_epoch=3, epochs=2).recipe(TrainConfig(job_dir="x"), steps_per_epoch=3)
    run = training.SubnetFinetuning(model, data, {**recipe, "batch_size": 8}, str(directory), teacher, progress=False)
    return run, run.run(stop)


def test_a_resumed_finetuning_equals_an_uninterrupted_one(supernet, tmp_path):
    whole, result = finetune(supernet, tmp_path / "whole", StopAfter(100))
    assert result.finished and result.steps == 6
    first, stopped = finetune(supernet, tmp_path / "parts", StopAfter(4))
    assert not stopped.finished and stopped.steps == 4
    again, resumed = finetune(supernet, tmp_path / "parts", StopAfter(100))
    assert resumed.finished and resumed.steps == 6
    for a, b in zip(whole.model.weights, again.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    changed = [not np.array_equal(a, b) for a, b in zip(whole.model.get_weights(), supernet.extract(
        SPACE.min_config(), weights=supernet.subnet_weights(SPACE.min_config())).get_weights())]
    assert any(changed)  # It trained.
    teacher = supernet.extract(SPACE.max_config())
    distilled, result = finetune(supernet, tmp_path / "distilled", StopAfter(100), teacher)
    assert result.finished
    assert not np.array_equal(distilled.model.get_weights()[0], whole.model.get_weights()[0])
