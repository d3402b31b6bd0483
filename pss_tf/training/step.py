"""One PSS training step: the sandwich rule with in-place distillation.

Per step (design note section 5): the max net learns from the labels; the
pool-chosen subnet and the min net learn from the max net's softened logits
(KL divergence); one optimizer step applies the sum of the three gradients.
The chosen subnet's cross-entropy comes from the same forward pass that
trains it, so scoring costs no extra forward.

Configs go in as int32 vectors (`pss_tf.models.supernet.encode`), so the step is
traced once for every subnet. Each replica of the strategy runs the same
three subnets on its slice of the global batch.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pss_tf.training.optimization import add_weight_decay, decayed_variables


def cross_entropy(labels, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def distillation_loss(teacher_logits, student_logits):
    """Per-example KL(teacher || student) over classes."""
    teacher_log_probs = tf.nn.log_softmax(tf.cast(teacher_logits, student_logits.dtype))
    student_log_probs = tf.nn.log_softmax(student_logits)
    return tf.reduce_sum(tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)


# The count of replicas whose weights stopped being finite after the update: a
# run must stop before such weights reach a checkpoint.
NONFINITE_WEIGHTS = "nonfinite_weights"


def nonfinite(variables) -> tf.Tensor:
    """1.0 when any of `variables` holds a NaN or infinity, else 0.0."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
    return 1.0 - tf.cast(finite, tf.float32)


class SandwichStep:
    """The distributed training step; call it with a batch and three configs.

    Returns the global mean of each loss: `max_ce` (max net, labels),
    `chosen_kd` and `min_kd` (distillation), `chosen_ce` (the chosen subnet's
    cross-entropy on the labels, whose negative is its pool score) and `loss`;
    and `NONFINITE_WEIGHTS`.
    """

    def __init__(self, supernet, optimizer, strategy, global_batch_size: int, weight_decay: float):
        self.supernet = supernet
        self.optimizer = optimizer
        self.strategy = strategy
        self.global_batch_size = int(global_batch_size)
        self.weight_decay = float(weight_decay)
        self._decayed = decayed_variables(supernet)
        self._step = tf.function(self._distributed_step)
        # A nested tf.function may not hold a cross-replica sync point, which
        # synchronized BN over several replicas is: then the subnet pass inlines.
        if supernet.synchronized_bn and strategy.num_replicas_in_sync > 1:
            self._subnet_step = self._subnet_gradients
        else:
            self._subnet_step = tf.function(self._subnet_gradients)

    def __call__(self, batch, max_vector, chosen_vector, min_vector):
        return self._step(batch, max_vector, chosen_vector, min_vector)

    @property
    def tracing_count(self) -> int:
        return self._step.experimental_get_tracing_count()

    def _loss_scale(self):
        """The factor the optimizer divides gradients by (None: no loss scaling)."""
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return self.optimizer.dynamic_scale
        return None

    def _mean(self, per_example):
        return tf.reduce_sum(per_example) / self.global_batch_size

    def _subnet_gradients(self, images, labels, vector, teacher_logits, learn_from_labels):
        """Loss, gradients and logits of one subnet.

        Cross-entropy with the labels when `learn_from_labels`, else KL from the
        teacher. Traced once as its own function and called for all three
        subnets, which cuts the step's tracing and graph-optimisation time
        threefold against inlining three copies.
        """
        variables = self.supernet.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.supernet(images, vector, training=True)
            loss = tf.cond(
                learn_from_labels,
                lambda: self._mean(cross_entropy(labels, logits)),
                lambda: self._mean(distillation_loss(teacher_logits, logits)),
            )
            scaled = self.optimizer.scale_loss(loss)
        return tape.gradient(scaled, variables), logits, loss

    def _replica_step(self, images, labels, max_vector, chosen_vector, min_vector):
        labels = tf.cast(labels, tf.int32)
        no_teacher = tf.zeros([tf.shape(labels)[0], self.supernet.num_classes])
        max_grads, max_logits, max_ce = self._subnet_step(images, labels, max_vector, no_teacher, tf.constant(True))
        teacher = tf.stop_gradient(max_logits)
        chosen_grads, chosen_logits, chosen_kd = self._subnet_step(images, labels, chosen_vector, teacher, tf.constant(False))
        min_grads, _, min_kd = self._subnet_step(images, labels, min_vector, teacher, tf.constant(False))
        chosen_ce = self._mean(cross_entropy(labels, tf.stop_gradient(chosen_logits)))

        variables = self.supernet.trainable_variables
        gradients = [a + b + c for a, b, c in zip(max_grads, chosen_grads, min_grads)]
        # Gradients are summed over replicas, so each adds its share of the decay.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        gradients = add_weight_decay(
            gradients, variables, self._decayed, self.weight_decay / replicas, loss_scale=self._loss_scale()
        )
        self.optimizer.apply_gradients(zip(gradients, variables))
        return {
            NONFINITE_WEIGHTS: nonfinite(variables),
            "loss": max_ce + chosen_kd + min_kd,
            "max_ce": max_ce,
            "chosen_kd": chosen_kd,
            "min_kd": min_kd,
            "chosen_ce": chosen_ce,
        }

    def _distributed_step(self, batch, max_vector, chosen_vector, min_vector):
        images, labels = batch
        per_replica = self.strategy.run(
            self._replica_step, args=(images, labels, max_vector, chosen_vector, min_vector)
        )
        return {
            name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in per_replica.items()
        }
