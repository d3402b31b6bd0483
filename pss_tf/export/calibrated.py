"""Standalone Keras models of a run's subnets, each with BN statistics of its own.

Subnets share one set of BN statistics that training never accumulates, so a
subnet is only usable after its statistics are re-estimated. Each subnet is
calibrated on exactly the batches the trainer's evaluator used, then written
out by `Supernet.extract` while those statistics are in place.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def extract_calibrated(supernet, subnets, calibration_batches) -> dict:
    """Keras models by subnet name, each extracted right after its calibration.

    `calibration_batches()` gives the same training batches at every call.
    """
    models = {}
    for subnet in subnets:
        supernet.calibrate_bn(calibration_batches(), subnet.config)
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
