"""PSE-Net's training: a group of subnets in one masked pass, each learning from its labels.

With `pse_anchor` the widest subnet of the step's resolution leads every group.
"""

from __future__ import annotations

from pss_tf.space.config import SubnetConfig
from pss_tf.training.modes.base import GroupMode, StepResult, StepSubnets, SubnetSource
from pss_tf.training.step import ParallelLabelsStep


class PSEMode(GroupMode):
    step_class = ParallelLabelsStep

    def fixed_subnets(self, resolution: int) -> list:
        if not self.run_config.sampling.pse_anchor:
            return []
        return [SubnetConfig.uniform(self.space.model, resolution, self.space.widest)]

    def step(self, batch, subnets: StepSubnets) -> StepResult:
        (group,) = subnets.vectors
        return self.group_result(self.step_fn(batch, group), subnets)


def create(run_config, space, metrics, pools, job):
    return PSEMode(run_config, space, SubnetSource(run_config, space, metrics, pools, job))
