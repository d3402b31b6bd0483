"""Evaluating a subnet: BN calibration, then top-1 and top-5 on a split.

Subnets share batch-norm statistics that training never accumulates, so each
evaluation first re-estimates them for the subnet at hand (design note
section 6), then counts correct predictions over the validation batches.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Iterable

import tensorflow as tf

from pss_tf.data.settings import calibration_stream
from pss_tf.space.config import SubnetConfig


@dataclasses.dataclass(frozen=True)
class Accuracy:
    top1: float
    top5: float
    examples: int


def evaluate_model(model, batches: Iterable) -> Accuracy:
    """Top-1 and top-5 of a standalone Keras model (an extracted or fine-tuned subnet) in
    inference mode over (images, labels) batches; Keras' predict function is traced once."""
    top1 = top5 = examples = 0
    for images, labels in batches:
        logits = tf.convert_to_tensor(model.predict_on_batch(images))
        labels = tf.cast(labels, tf.int32)
        k = min(5, int(logits.shape[-1]))
        top1 += int(tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.int32)))
        top5 += int(tf.reduce_sum(tf.cast(tf.nn.in_top_k(labels, logits, k), tf.int32)))
        examples += int(labels.shape[0])
    if not examples:
        raise ValueError("evaluation: the validation split is empty")
    return Accuracy(top1 / examples, top5 / examples, examples)


def make_evaluator(supernet, run_config, data, calibration_batches: int | None = None) -> "SubnetEvaluator":
    """The evaluator of a run (`run_config`, a TrainConfig; `data`, its DataSettings).

    Training's epoch-end evaluations, its final winners and the export all
    calibrate on these batches and validate on this split, so the accuracies
    they report agree. `calibration_batches` overrides the run's number.
    """
    evaluation = run_config.evaluation
    validation = data.validation(evaluation.eval_batch_size)
    return SubnetEvaluator(
        supernet, calibration_stream(run_config, data), validation, calibration_batches or evaluation.calibration_batches
    )


class SubnetEvaluator:
    """Calibrates and evaluates subnets of one supernet on fixed data.

    Args:
        supernet: the `Supernet`.
        calibration_data: an iterable of training batches (images, labels),
            re-iterated for every subnet; the first `calibration_batches` are used.
        validation_data: an iterable of (images, labels) batches.
    """

    def __init__(self, supernet, calibration_data: Iterable, validation_data: Iterable, calibration_batches: int = 8):
        if calibration_batches < 1:
            raise ValueError(f"calibration_batches: must be at least 1, got {calibration_batches}")
        self.supernet = supernet
        self.calibration_data = calibration_data
        self.validation_data = validation_data
        self.calibration_batches = int(calibration_batches)
        top_k = min(5, supernet.num_classes)

        def correct(images, labels, vector):
            logits = supernet(images, vector, training=False)
            labels = tf.cast(labels, tf.int32)
            top1 = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.int64))
            top5 = tf.reduce_sum(tf.cast(tf.nn.in_top_k(labels, logits, top_k), tf.int64))
            return top1, top5

        self._correct = tf.function(correct, reduce_retracing=True, autograph=False)

    def calibrate(self, config: SubnetConfig):
        batches = itertools.islice(iter(self.calibration_data), self.calibration_batches)
        self.supernet.calibrate_bn(batches, config)

    def evaluate(self, config: SubnetConfig, calibrate: bool = True) -> Accuracy:
        if calibrate:
            self.calibrate(config)
        vector = tf.constant(self.supernet.encode(config))
        top1 = top5 = examples = 0
        for images, labels in self.validation_data:
            a, b = self._correct(images, labels, vector)
            top1 += int(a)
            top5 += int(b)
            examples += int(tf.shape(labels)[0])
        if examples == 0:
            raise ValueError("validation data: no examples to evaluate on")
        return Accuracy(top1 / examples, top5 / examples, examples)


def evaluate_all(evaluator: SubnetEvaluator, configs: list, bar=None) -> list[Accuracy]:
    """Accuracies of `configs`, each BN-calibrated first; advances `bar` (tqdm) with
    validation images per second: a run's final evaluation can take minutes."""
    accuracies, started, images = [], time.perf_counter(), 0
    for config in configs:
        accuracies.append(evaluator.evaluate(config))
        images += accuracies[-1].examples
        if bar is not None:
            bar.set_postfix(val_img_s=f"{images / max(time.perf_counter() - started, 1e-9):.0f}")
            bar.update(1)
    return accuracies


def winner_entry(metric, target, config: SubnetConfig, score: float, metrics: dict) -> dict:
    """A winners.json entry of pool (metric, target) without its accuracies."""
    return {
        "metric": metric,
        "target": target,
        "name": metrics[metric].label(target),
        "config": config.to_dict(),
        "value": metrics[metric].value(config),
        "score": score,
    }


def validated_winners(pools, keys, metrics: dict, top_k: int, evaluate) -> list[dict]:
    """Each pool's `top_k` members validated, the best by top-1 kept (as the release picks winners).

    `evaluate(configs) -> accuracies` runs once over every candidate of every
    pool in `keys`, so one progress bar can follow it.
    """
    candidates = {key: pools.top_k(key, top_k) for key in keys if pools.size(key)}
    accuracies = iter(evaluate([config for members in candidates.values() for config, _ in members]))
    entries = []
    for (metric, target), members in candidates.items():
        best = None
        for config, score in members:
            accuracy = next(accuracies)
            if best is None or accuracy.top1 > best[2].top1:
                best = (config, score, accuracy)
        config, score, accuracy = best
        entries.append({**winner_entry(metric, target, config, score, metrics),
                        "val_top1": accuracy.top1, "val_top5": accuracy.top5})
    return entries
