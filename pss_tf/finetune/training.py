"""Training one extracted subnet as the standalone Keras model that ships.

Inside the supernet a subnet shares every weight with thousands of others, and
`docs/RESULTS.md` measured each 0.7 to 2.8 points below the same network
trained alone. Fine-tuning trains the model `Supernet.extract` builds (standard
layers, fused batch norm) on the run's training stream, from its inherited,
BN-calibrated weights or re-initialised (`reinitialise`), learning from the
labels or from a teacher's softmax. The loop checkpoints the model, the
optimizer and the step, so Ctrl-C stops at a step boundary and a resumed run
continues with exactly the batches and weights an uninterrupted one would see.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from pss_tf.errors import TrainingDiverged
from pss_tf.models.layers import conv_initializer, depthwise_initializer
from pss_tf.run.outputs import WEIGHTS_FILE
from pss_tf.training.optimization import add_weight_decay, build_optimizer, learning_rate_schedule
from pss_tf.training.step import cross_entropy, distillation_loss

CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
# The release's classifier initialisation: N(0, 0.01), bias 0.
CLASSIFIER_STDDEV = 0.01


def reinitialise(model: keras.Model, seed: int) -> None:
    """Draws every weight of an extracted model afresh, as the release initialises a
    network of these widths: conv kernels He (fan-out) normal, depthwise kernels
    N(0, sqrt(2 / (k*k*C))), classifier N(0, 0.01) with zero bias, BN gamma 1,
    beta 0, moving statistics 0 and 1. Each layer's own shape sets its fan, as
    for a network built at this width (the supernet's slices keep its full widths')."""
    for index, layer in enumerate(model.layers):
        if not layer.weights:
            continue
        layer_seed = seed * 1_000_003 + index
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = depthwise_initializer()
            layer.kernel.assign(_draw(kernel, layer.kernel.shape, layer_seed))
        elif isinstance(layer, keras.layers.Conv2D):
            layer.kernel.assign(_draw(conv_initializer(), layer.kernel.shape, layer_seed))
        elif isinstance(layer, keras.layers.Dense):
            normal = keras.initializers.RandomNormal(0.0, CLASSIFIER_STDDEV)
            layer.kernel.assign(_draw(normal, layer.kernel.shape, layer_seed))
            layer.bias.assign(tf.zeros_like(layer.bias))
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(tf.ones_like(layer.gamma))
            layer.beta.assign(tf.zeros_like(layer.beta))
            layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
            layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
        else:
            raise TypeError(f"reinitialise: no rule for layer {layer.name} ({type(layer).__name__})")


def _draw(initializer, shape, seed: int):
    config = initializer.get_config()
    config["seed"] = seed
    return type(initializer).from_config(config)(shape)


def recalibrate_bn(model: keras.Model, batches, num_batches: int) -> int:
    """Re-estimates the BN moving statistics of a fine-tuned model as the supernet's evaluation
    does (design note section 6): reset to 0 / 1, then a cumulative average (momentum t / (t + 1))
    of the batch statistics of `num_batches` training batches; weights untouched. Keras' 0.99
    momentum would keep most of the statistics from before fine-tuning after a few dozen steps,
    while the weights moved. Returns the batches used."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
    used = 0
    try:
        for batch in batches:
            if used >= num_batches:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = used / (used + 1)
            model(images, training=True)  # BN updates its moving statistics; no gradient is taken
            used += 1
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    if used == 0:
        raise ValueError("recalibrate_bn: no calibration batches were given")
    return used


def decayed_kernels(model: keras.Model) -> list:
    """Conv (not depthwise) and classifier kernels: what the release's L2 decay applies to."""
    return [
        layer.kernel for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
        and not isinstance(layer, keras.layers.DepthwiseConv2D)
    ]


def model_weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """`{layer name: arrays}`: what `Supernet.extract(config, weights=...)` takes back."""
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


@dataclasses.dataclass
class FinetuneResult:
    finished: bool
    steps: int
    wall_seconds: float


class SubnetFinetuning:
    """Trains one extracted model on the run's training stream; resumable.

    Args:
        model: the extracted subnet (inherited weights, or `reinitialise`d).
        data: the run's `DataSettings` (held-out examples never trained on).
        recipe: `FinetuneOptions.recipe(...)`.
        directory: where checkpoints, TensorBoard events and the weights go.
        teacher: a Keras model whose softmax the subnet learns (None: the labels).
    """

    def __init__(self, model, data, recipe: dict, directory: str, teacher=None, progress: bool = True):
        self.model, self.data, self.recipe, self.teacher = model, data, recipe, teacher
        self.directory = directory
        self.progress = progress
        self.schedule = learning_rate_schedule(recipe["learning_rate"], recipe["total_steps"], recipe["warmup_steps"])
        self.optimizer = build_optimizer(self.schedule, recipe["momentum"], recipe["nesterov"])
        self.optimizer.build(model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=self.optimizer, step=self.step, elapsed=self.elapsed)
        self.manager = tf.train.CheckpointManager(checkpoint, os.path.join(directory, CHECKPOINTS_DIR), max_to_keep=2)
        if self.manager.latest_checkpoint:
            checkpoint.restore(self.manager.latest_checkpoint).assert_consumed()
        self._decayed = decayed_kernels(model)
        self._train_step = tf.function(self._step_fn, autograph=False)

    @property
    def weights_file(self) -> str:
        return os.path.join(self.directory, WEIGHTS_FILE)

    def _step_fn(self, images, labels):
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            if self.teacher is None:
                per_example = cross_entropy(labels, logits)
            else:
                per_example = distillation_loss(self.teacher(images, training=False), logits)
            loss = tf.reduce_mean(per_example)
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)
        gradients = add_weight_decay(gradients, variables, self._decayed, self.recipe["weight_decay"])
        self.optimizer.apply(gradients, variables)
        self.step.assign_add(1)
        return loss

    def run(self, stop) -> FinetuneResult:
        """Trains to `total_steps`, or until `stop.requested` (then saves); resumes where it stopped."""
        total = self.recipe["total_steps"]
        start = int(self.step.numpy())
        if start >= total:
            return FinetuneResult(True, start, float(self.elapsed.numpy()))
        batches = self.data.input_fn(self.recipe["batch_size"], self.recipe["seed"], start_step=start)(None)
        writer = tf.summary.create_file_writer(os.path.join(self.directory, TENSORBOARD_DIR))
        bar = self._progress_bar(start, total)
        steps_per_epoch = self.recipe["steps_per_epoch"]
        began = time.perf_counter()
        elapsed_before = float(self.elapsed.numpy())
        try:
            with writer.as_default():
                for images, labels in batches:
                    step = int(self.step.numpy())
                    if step >= total or stop.requested:
                        break
                    tick = time.perf_counter()
                    loss = float(self._train_step(images, labels))
                    if not math.isfinite(loss):
                        raise TrainingDiverged(
                            step + 1, f"the fine-tuning loss became {loss} at step {step + 1}; nothing of that step "
                            f"was saved (lower --learning_rate)",
                        )
                    images_per_second = len(labels) / max(time.perf_counter() - tick, 1e-9)
                    tf.summary.scalar("finetune/loss", loss, step=step + 1)
                    tf.summary.scalar("finetune/learning_rate", float(self.schedule(step)), step=step + 1)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{images_per_second:.0f}", refresh=False)
                    if (step + 1) % steps_per_epoch == 0 and step + 1 < total:
                        self._save(began, elapsed_before)
        finally:
            if bar is not None:
                bar.close()
        self._save(began, elapsed_before)
        done = int(self.step.numpy())
        return FinetuneResult(done >= total, done, float(self.elapsed.numpy()))

    def _save(self, began: float, elapsed_before: float) -> None:
        self.elapsed.assign(elapsed_before + time.perf_counter() - began)
        self.manager.save(checkpoint_number=int(self.step.numpy()))

    def _progress_bar(self, start: int, total: int):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=start, desc=f"  {self.model.name}", unit="step", dynamic_ncols=True,
                    mininterval=1.0)
