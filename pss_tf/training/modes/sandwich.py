"""PSS's sandwich rule: the max net learns from the labels and teaches the others.

Serial (`parallel_subnets` 1): the max net, one chosen subnet and the min net
in three passes (`SandwichStep`). Parallel: the max net, then one masked pass
of the thinnest subnet of the step's resolution and N-1 chosen ones
(`ParallelSandwichStep`).
"""

from __future__ import annotations

import tensorflow as tf

from pss_tf.space.config import SubnetConfig
from pss_tf.training.modes.base import GroupMode, StepResult, StepSubnets, SubnetSource, TrainingMode
from pss_tf.training.step import ParallelSandwichStep, SandwichStep


class SerialSandwich(TrainingMode):
    step_class = SandwichStep

    def draw(self, epoch: int) -> StepSubnets:
        draw = self.source.sampler.draw(epoch)
        return StepSubnets((draw,), (tf.constant(self.supernet.encode(draw.config)),))

    def step(self, batch, subnets: StepSubnets) -> StepResult:
        (chosen,) = subnets.vectors
        outputs = self.step_fn(batch, self.max_vector, chosen, self.min_vector)
        return StepResult.from_outputs(outputs, subnets.draws, [outputs["chosen_ce"]])


class ParallelSandwich(GroupMode):
    step_class = ParallelSandwichStep

    def fixed_subnets(self, resolution: int) -> list:
        return [SubnetConfig.uniform(self.space.model, resolution, self.space.thinnest)]

    def step(self, batch, subnets: StepSubnets) -> StepResult:
        (group,) = subnets.vectors
        return self.group_result(self.step_fn(batch, self.max_vector, group), subnets)


def create(run_config, space, metrics, pools, job):
    mode = SerialSandwich if run_config.sampling.parallel_subnets == 1 else ParallelSandwich
    return mode(run_config, space, SubnetSource(run_config, space, metrics, pools, job))
