"""Plain training: the max net alone learns from the labels.

The baseline that every supernet method is measured against: the same network,
data and schedule, no subnets. It draws nothing, so the pools and the training
records stay empty and the run has no winners; its evaluations hold the max
net (and the min net, untrained, as a reference).
"""

from __future__ import annotations

from pss_tf.training.modes.base import StepResult, StepSubnets, TrainingMode
from pss_tf.training.step import Step


class MaxNetStep(Step):
    """One pass of the max net with the labels; returns `loss` and `max_ce`."""

    def _replica_step(self, images, labels, max_vector):
        grads, _, max_ce = self._teacher_pass(images, labels, max_vector)
        return [grads], {"loss": max_ce, "max_ce": max_ce}


class PlainMode(TrainingMode):
    step_class = MaxNetStep

    def draw(self, epoch: int) -> StepSubnets:
        return StepSubnets((), (self.max_vector,))

    def step(self, batch, subnets: StepSubnets) -> StepResult:
        return StepResult.from_outputs(self.step_fn(batch, *subnets.vectors), (), [])


def create(run_config, space, metrics, pools, job):
    return PlainMode(run_config, space, None)
