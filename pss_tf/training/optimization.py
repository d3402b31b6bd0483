"""Optimizer, learning-rate schedule and weight decay for supernet training.

The release's recipe (design note section 6): SGD with Nesterov momentum,
cosine decay per iteration with optional linear warm-up, and L2 weight decay
added to the gradients of conv and classifier kernels only, never to batch
norm parameters, biases or depthwise kernels (decaying those hurts thin nets).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pss_tf.models.layers import SlimConv2D, SlimDense


def learning_rate_schedule(base_rate: float, total_steps: int, warmup_steps: int = 0):
    """Cosine decay to zero over `total_steps`, after a linear warm-up from zero."""
    if base_rate <= 0:
        raise ValueError(f"learning_rate: must be positive, got {base_rate}")
    if total_steps <= warmup_steps:
        raise ValueError(
            f"warmup_epochs: warm-up ({warmup_steps} steps) must be shorter than training ({total_steps} steps)"
        )
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=total_steps - warmup_steps,
            warmup_target=base_rate,
            warmup_steps=warmup_steps,
        )
    return keras.optimizers.schedules.CosineDecay(base_rate, decay_steps=total_steps)


def build_optimizer(schedule, momentum: float = 0.9, nesterov: bool = True, loss_scale: bool = False):
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=momentum, nesterov=nesterov)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def decayed_variables(supernet) -> list:
    """Conv (not depthwise) and classifier kernels: the weights L2 decay applies to."""
    return [layer.kernel for layer in supernet.slim_layers() if isinstance(layer, (SlimConv2D, SlimDense))]


def add_weight_decay(gradients, variables, decayed, rate: float, loss_scale=None):
    """gradient += rate * variable for the decayed variables (SGD's L2 decay).

    Gradients of a scaled loss (mixed float16) are divided by the loss scale
    when the optimizer applies them, so the decay is added scaled too:
    `rate * loss_scale * variable`, which arrives as `rate * variable`.
    """
    if not rate:
        return list(gradients)
    decayed_ids = {id(v) for v in decayed}
    result = []
    for g, v in zip(gradients, variables):
        if g is not None and id(v) in decayed_ids:
            factor = tf.cast(rate, g.dtype) if loss_scale is None else tf.cast(rate * loss_scale, g.dtype)
            g = g + factor * tf.cast(v, g.dtype)
        result.append(g)
    return result
