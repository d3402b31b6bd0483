"""BN statistics of a fine-tuned subnet: Keras' momentum keeps the old ones; re-estimating fixes it.

The extracted model's Keras BatchNormalization updates its moving statistics with
momentum 0.99, so after a few dozen steps they are still mostly those from before
fine-tuning while the weights moved. The fine-tuning driver therefore re-estimates
them as the supernet's evaluation does (`training.recalibrate_bn`).
"""

import itertools

import keras
import numpy as np
from support import smoke_space

from pss_tf.data.settings import DataSettings
from pss_tf.data.sources import SyntheticSpec
from pss_tf.finetune import training
from pss_tf.finetune.options import FinetuneOptions
from pss_tf.space.config import SubnetConfig
from pss_tf.run.config import TrainConfig

SPACE = smoke_space()  # MobileNetV1, 24..32 px, widths 0.35..0.5
DATA = DataSettings("synthetic", None, image_size=32, synthetic=SyntheticSpec(num_classes=4, num_train=256),
                    normalization="minus_one_to_one")
STEPS = 30


class Never:
    requested = False


def batches(count, seed=1):
    return list(itertools.islice(iter(DATA.training(16, seed=seed)), count))


def statistics(model) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
            for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def travelled(inherited, stale, fresh) -> np.ndarray:
    """Per BN statistic, how far the stale one went from the inherited towards the fresh one (0: not at all)."""
    return np.array([np.linalg.norm(s - i) / max(np.linalg.norm(f - i), 1e-12)
                     for a, b, c in zip(inherited, stale, fresh) for i, s, f in zip(a, b, c)])


def test_recalibration_equals_the_supernet_calibration(supernet):
    config = SubnetConfig("mobilenet_v1", 28, (0.4,) * 14)
    calibration = batches(3)
    model = supernet.extract(config, weights=supernet.subnet_weights(config))  # whatever statistics
    assert training.recalibrate_bn(model, calibration + batches(2, seed=9), 3) == 3
    supernet.calibrate_bn(calibration, config)
    reference = supernet.extract(config, weights=supernet.subnet_weights(config))
    for (mean, var), (ref_mean, ref_var) in zip(statistics(model), statistics(reference)):
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(var, ref_var, rtol=1e-4, atol=1e-5)
    assert all(layer.momentum == 0.99 for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))


def test_after_a_few_dozen_steps_keras_momentum_leaves_the_old_statistics(supernet, tmp_path):
    """The cause: stale statistics nearer the pre-training ones than the fine-tuned weights' own."""
    config = SPACE.max_config()
    supernet.calibrate_bn(batches(4), config)
    model = supernet.extract(config, weights=supernet.subnet_weights(config))
    inherited = statistics(model)
    recipe = FinetuneOptions(job_dir="x", subnets=("winners",), steps_per_epoch=STEPS, epochs=1,
                             learning_rate=0.3).recipe(TrainConfig(job_dir="x"), STEPS)
    run = training.SubnetFinetuning(model, DATA, {**recipe, "batch_size": 16}, str(tmp_path), progress=False)
    assert run.run(Never()).steps == STEPS
    stale = statistics(model)
    training.recalibrate_bn(model, batches(4), 4)
    fresh = statistics(model)
    # After 30 steps at momentum 0.99, 0.99 ** 30 = 74% of each statistic is still the inherited one:
    # the stale statistics went about a quarter of the way to what the fine-tuned weights produce.
    fractions = travelled(inherited, stale, fresh)
    assert np.median(fractions) < 0.5, fractions
