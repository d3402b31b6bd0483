"""Training steps: the sandwich rule, serial or with parallel subnets, and PSE-Net's.

`SandwichStep` (design note section 5): the max net learns from the labels; the
pool-chosen subnet and the min net learn from the max net's softened logits
(KL divergence); one optimizer step applies the sum of the three gradients.
The chosen subnet's cross-entropy comes from the same forward pass that
trains it, so scoring costs no extra forward.

With parallel subnets (section 8) a group of N subnets of one resolution runs
in one masked pass, slice i of the batch through subnet i
(`Supernet.call` with a rank-2 config):

* `ParallelSandwichStep`: the max net as above on the whole batch, then one
  pass carrying the group (the thinnest subnet of the step's resolution and
  N-1 chosen ones), each slice learning from the teacher's logits of its own
  examples;
* `ParallelLabelsStep`: PSE-Net's training, every slice learning from its
  labels (no teacher).

Every step returns each loss as a global mean, the per-slice cross-entropies
of a group (`slice_ce`, whose negatives are the pool scores), and
`NONFINITE_WEIGHTS`. Configs go in as int32 tensors (`pss_tf.supernet.encode`,
`encode_group`), so a step is traced once for every subnet or group of N. A
single subnet may also go in as its `SubnetConfig`: its pass is then traced for
it alone, with static shapes (layers at full width read their weights
unsliced, the images' own resolution skips the resize; the same numbers). The
modes pass tensors: on the 2-core Xeon the static max and min nets made the
step no faster (bench/profile_ops.py) and cost a trace each.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pss_tf.space.config import SubnetConfig
from pss_tf.training.optimization import add_weight_decay, decayed_variables

# The count of replicas whose weights stopped being finite after the update: a
# run must stop before such weights reach a checkpoint.
NONFINITE_WEIGHTS = "nonfinite_weights"


def cross_entropy(labels, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def distillation_loss(teacher_logits, student_logits):
    """Per-example KL(teacher || student) over classes."""
    teacher_log_probs = tf.nn.log_softmax(tf.cast(teacher_logits, student_logits.dtype))
    student_log_probs = tf.nn.log_softmax(student_logits)
    return tf.reduce_sum(tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)


def nonfinite(variables) -> tf.Tensor:
    """1.0 when any of `variables` holds a NaN or infinity, else 0.0."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
    return 1.0 - tf.cast(finite, tf.float32)


class Step:
    """What every step shares: the tf.distribute plumbing, the loss scale, the decay.

    Subclasses implement `_replica_step(images, labels, *configs)`, which
    returns `(gradient lists to sum, {name: per-replica value})`.
    """

    def __init__(self, supernet, optimizer, strategy, global_batch_size: int, weight_decay: float):
        self.supernet = supernet
        self.optimizer = optimizer
        self.strategy = strategy
        self.global_batch_size = int(global_batch_size)
        self.weight_decay = float(weight_decay)
        self._decayed = decayed_variables(supernet)
        # No autograph: the steps branch with explicit tf.cond only, and converting the
        # supernet's Python on every trace cost about 2 s per traced function.
        self._step = tf.function(self._distributed_step, autograph=False)
        # A nested tf.function may not hold a cross-replica sync point, which
        # synchronized BN over several replicas is: then the passes inline.
        if supernet.synchronized_bn and strategy.num_replicas_in_sync > 1:
            self._pass = self._pass_gradients
        else:
            self._pass = tf.function(self._pass_gradients, autograph=False)

    def __call__(self, batch, *configs):
        return self._step(batch, *configs)

    @property
    def tracing_count(self) -> int:
        return self._step.experimental_get_tracing_count()

    def _loss_scale(self):
        """The factor the optimizer divides gradients by (None: no loss scaling)."""
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return self.optimizer.dynamic_scale
        return None

    def _slice_means(self, per_example, slices: int):
        """Per-slice means of a replica's per-example losses, as shares of the global
        batch's slices (they sum over replicas to the global per-slice means)."""
        return tf.reduce_sum(tf.reshape(per_example, [slices, -1]), axis=1) / (self.global_batch_size / slices)

    def _pass_gradients(self, images, labels, config, teacher_logits, learn_from_labels):
        """Gradients, logits, the loss and each slice's loss of one pass.

        `config` is one subnet (a `SubnetConfig`, or rank 1: one slice) or a
        group (rank 2, one slice per row). Cross-entropy with the labels when `learn_from_labels`, else
        KL from the teacher. Traced once as its own function and called for every
        pass of a step, which cuts the step's tracing and graph-optimisation time
        against inlining copies.
        """
        slices = 1 if isinstance(config, SubnetConfig) or config.shape.rank == 1 else config.shape[0]
        variables = self.supernet.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.supernet(images, config, training=True)
            per_example = tf.cond(
                learn_from_labels,
                lambda: cross_entropy(labels, logits),
                lambda: distillation_loss(teacher_logits, logits),
            )
            slice_losses = self._slice_means(per_example, slices)
            loss = tf.reduce_sum(slice_losses)
            scaled = self.optimizer.scale_loss(loss)
        return tape.gradient(scaled, variables), logits, loss

    def _apply(self, gradient_lists) -> tf.Tensor:
        """Applies the sum of the passes' gradients plus the decay; returns `nonfinite`."""
        variables = self.supernet.trainable_variables
        gradients = [tf.add_n(list(parts)) for parts in zip(*gradient_lists)]
        # Gradients are summed over replicas, so each adds its share of the decay.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        gradients = add_weight_decay(
            gradients, variables, self._decayed, self.weight_decay / replicas, loss_scale=self._loss_scale()
        )
        self.optimizer.apply_gradients(zip(gradients, variables))
        return nonfinite(variables)

    def _teacher_pass(self, images, labels, max_vector):
        """The max net on the replica's batch with the labels; its logits teach the others."""
        no_teacher = tf.zeros([tf.shape(labels)[0], self.supernet.num_classes])
        grads, logits, max_ce = self._pass(images, labels, max_vector, no_teacher, tf.constant(True))
        return grads, tf.stop_gradient(logits), max_ce

    def _distributed_step(self, batch, *configs):
        images, labels = batch

        def replica_step(images, labels, *configs):
            gradient_lists, outputs = self._replica_step(images, tf.cast(labels, tf.int32), *configs)
            outputs[NONFINITE_WEIGHTS] = self._apply(gradient_lists)
            return outputs

        per_replica = self.strategy.run(replica_step, args=(images, labels, *configs))
        return {
            name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in per_replica.items()
        }


class SandwichStep(Step):
    """The serial sandwich step; call it with a batch and three encoded configs
    (max net, chosen subnet, min net).

    Returns `max_ce` (max net, labels), `chosen_kd` and `min_kd`
    (distillation), `chosen_ce` (the chosen subnet's cross-entropy on the
    labels, whose negative is its pool score) and `loss`.
    """

    def _replica_step(self, images, labels, max_vector, chosen_vector, min_vector):
        max_grads, teacher, max_ce = self._teacher_pass(images, labels, max_vector)
        chosen_grads, chosen_logits, chosen_kd = self._pass(images, labels, chosen_vector, teacher, tf.constant(False))
        min_grads, _, min_kd = self._pass(images, labels, min_vector, teacher, tf.constant(False))
        chosen_ce = self._slice_means(cross_entropy(labels, tf.stop_gradient(chosen_logits)), 1)[0]
        outputs = {
            "loss": max_ce + chosen_kd + min_kd,
            "max_ce": max_ce,
            "chosen_kd": chosen_kd,
            "min_kd": min_kd,
            "chosen_ce": chosen_ce,
        }
        return [max_grads, chosen_grads, min_grads], outputs


class ParallelSandwichStep(Step):
    """The sandwich rule with parallel subnets; call it with a batch, the max net's
    encoding and a group's (`encode_group`: the thinnest subnet of the step's
    resolution first, then the chosen ones).

    Returns `max_ce`, `group_kd` (the group's distillation losses summed over
    its slices), `slice_ce` (each slice's cross-entropy on its labels: the
    scores) and `loss`.
    """

    def _replica_step(self, images, labels, max_vector, group):
        max_grads, teacher, max_ce = self._teacher_pass(images, labels, max_vector)
        group_grads, logits, group_kd = self._pass(images, labels, group, teacher, tf.constant(False))
        slice_ce = self._slice_means(cross_entropy(labels, tf.stop_gradient(logits)), group.shape[0])
        outputs = {"loss": max_ce + group_kd, "max_ce": max_ce, "group_kd": group_kd, "slice_ce": slice_ce}
        return [max_grads, group_grads], outputs


class ParallelLabelsStep(Step):
    """PSE-Net's step: one masked pass of a group, every slice learning from its
    own labels. Returns `slice_ce` (each slice's cross-entropy) and `loss`."""

    def _replica_step(self, images, labels, group):
        no_teacher = tf.zeros([tf.shape(labels)[0], self.supernet.num_classes])
        grads, logits, loss = self._pass(images, labels, group, no_teacher, tf.constant(True))
        slice_ce = self._slice_means(cross_entropy(labels, tf.stop_gradient(logits)), group.shape[0])
        return [grads], {"loss": loss, "slice_ce": slice_ce}
