"""Standalone Keras models of a run's subnets, each with BN statistics of its own.

Subnets share one set of BN statistics that training never accumulates, so a
subnet is only usable after its statistics are re-estimated. Each subnet is
calibrated on exactly the batches the trainer's evaluator used, then written
out by `Supernet.extract` while those statistics are in place.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from pss_tf import trainer

logger = logging.getLogger(__name__)


def load_supernet(job_dir: str):
    """`trainer.load_job(job_dir)`, with every trained weight checked to be restored.

    Checkpoints written while the supernet's blocks were invisible to
    `tf.train.Checkpoint` hold those weights only through the optimizer, which
    tracks every trainable variable in order (`_trainable_variables/i`). Any
    trainable variable the model's own entries left unrestored is read from
    there, after checking its shape, so such runs export their trained weights
    rather than the initial ones.
    """
    supernet, config, info = trainer.load_job(job_dir)
    latest = tf.train.latest_checkpoint(os.path.join(job_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(latest)
    shapes = reader.get_variable_to_shape_map()
    if sum(1 for key in shapes if key.startswith("model/")) >= len(supernet.variables):
        return supernet, config, info
    prefix = _optimizer_variable_prefix(shapes)
    if prefix is None:
        raise ValueError(f"--job_dir: the checkpoint {latest} does not hold the supernet's weights")
    restored = 0
    for i, variable in enumerate(supernet.trainable_variables):
        # A variable the model's own entries hold is saved there only (and restored already).
        key = f"{prefix}{i}/.ATTRIBUTES/VARIABLE_VALUE"
        if key not in shapes:
            continue
        if tuple(shapes[key]) != tuple(variable.shape):
            raise ValueError(
                f"--job_dir: the checkpoint {latest} does not match the supernet (variable {variable.path})"
            )
        variable.assign(reader.get_tensor(key))
        restored += 1
    logger.info("Restored %d trained variables from the optimizer's entries of %s.", restored, latest)
    return supernet, config, info


def _optimizer_variable_prefix(keys) -> str | None:
    """`optimizer/_trainable_variables/` (or a loss-scale wrapper's inner one)."""
    candidates = sorted({k.split("_trainable_variables/")[0] for k in keys if "/_trainable_variables/" in k})
    candidates = [c for c in candidates if c.startswith("optimizer/")]
    return candidates[-1] + "_trainable_variables/" if candidates else None


def extract_calibrated(supernet, subnets, calibration_batches: list) -> dict:
    """Keras models by subnet name, each extracted right after its calibration."""
    if not calibration_batches:
        raise ValueError("calibration: no batches")
    models = {}
    for subnet in subnets:
        supernet.calibrate_bn(calibration_batches, subnet.config)
        models[subnet.name] = supernet.extract(subnet.config, name=subnet.name)
    return models


def keras_top1(model, batches) -> float:
    """Top-1 of a Keras model over (normalised images, labels) batches."""
    predict = tf.function(lambda x: tf.argmax(model(x, training=False), -1), reduce_retracing=True)
    correct = total = 0
    for images, labels in batches:
        predictions = predict(images).numpy()
        correct += int(np.sum(predictions == labels.numpy()))
        total += len(predictions)
    if not total:
        raise ValueError("evaluation: the validation split is empty")
    return correct / total
