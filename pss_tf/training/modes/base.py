"""What every training mode is, and where drawn subnets come from.

`TrainingMode` is the interface the trainer drives: `draw(epoch)` picks the
step's subnets on the host, `step(batch, subnets)` runs the traced step and
returns a `StepResult` (the losses to log and each drawn subnet's
cross-entropy), and `pool_updates` / `record_updates` say which of those
scores go to which pool and to the training records. `SubnetSource` is the
subnet supply the PSS-style modes share: the pools (`pss`), the conditional
samplers alone (`conditional`), or the whole space uniformly (`uniform`).
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

from pss_tf.errors import ConfigError
from pss_tf.models.supernet import encode_group
from pss_tf.sampling.conditional_sampler import ConditionalSampler
from pss_tf.sampling.samplers import Draw, PrioritizedSampler, UniformSampler
from pss_tf.sampling.schedules import ExponentialSchedule
from pss_tf.training.step import NONFINITE_WEIGHTS


@dataclasses.dataclass(frozen=True)
class StepSubnets:
    """One step's subnets: the drawn ones (scored) and the encoded configs its traced step takes."""

    draws: tuple[Draw, ...]
    vectors: tuple
    fixed: int = 0  # Subnets of a group before the drawn ones (not scored).


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What a step returns to the loop."""

    losses: dict  # name -> global mean (float), logged and checked finite
    draws: tuple[Draw, ...]
    scores: list  # each drawn subnet's cross-entropy on its labels (float), in `draws` order
    nonfinite_weights: float  # replicas whose weights stopped being finite

    @classmethod
    def from_outputs(cls, outputs: dict, draws, scores) -> "StepResult":
        losses = {name: float(value) for name, value in outputs.items()}
        nonfinite_weights = losses.pop(NONFINITE_WEIGHTS)
        return cls(losses, tuple(draws), [float(v) for v in scores], nonfinite_weights)


class SubnetSource:
    """The run's subnet sampler (`--sampler`), and the pools its draws are filed under."""

    def __init__(self, run_config, space, metrics, pools, job):
        sampling, epochs, seed = run_config.sampling, run_config.optimization.epochs, run_config.runtime.seed
        self.conditional_samplers = {}
        if sampling.subnet_sampler == "uniform":
            self.sampler = UniformSampler(space, list(metrics.values()), seed=seed)
            self.pool_keys = [(m.name, t) for m in metrics.values() for t in m.grid.targets]
            return
        for name, metric in metrics.items():
            cache = job.sampler_cache(name)
            sampler = ConditionalSampler.build_or_load(
                cache if os.path.exists(cache) else None,
                space, metric, sampling.sampler_samples, seed, sampling.sampler_extremes,
            )
            if not sampler.targets:
                raise ConfigError(f"{name}_targets", f"no subnet of the search space reaches any target of {metric.grid}")
            self.conditional_samplers[name] = sampler
        self.sampler = PrioritizedSampler(
            pools,
            self.conditional_samplers,
            ExponentialSchedule(sampling.p_fresh_start, sampling.p_fresh_end, epochs),
            ExponentialSchedule(sampling.temperature_start, sampling.temperature_end, epochs),
            seed=seed,
            use_pools=sampling.subnet_sampler == "pss",
        )
        self.pool_keys = list(self.sampler.keys)

    def use_pools(self, pools) -> None:
        if isinstance(self.sampler, PrioritizedSampler):
            self.sampler.pools = pools

    def summaries(self, epoch: int) -> dict:
        """The sampling schedules' values at `epoch`, for TensorBoard."""
        if not isinstance(self.sampler, PrioritizedSampler):
            return {}
        return {
            "sampling/p_fresh": self.sampler.p_fresh_schedule(epoch),
            "sampling/temperature": self.sampler.temperature_schedule(epoch),
        }


class TrainingMode:
    """One way of training the supernet, behind the interface the trainer drives.

    `source` is the run's `SubnetSource`, or None for a mode that draws nothing.
    """

    step_class = None  # The `pss_tf.training.step.Step` subclass this mode runs.

    def __init__(self, run_config, space, source: SubnetSource | None):
        self.run_config = run_config
        self.space = space
        self.source = source

    # Host side: pools, caches and random state the trainer saves with the run.

    @property
    def pool_keys(self) -> list:
        """The (metric, target) pools the run keeps."""
        return self.source.pool_keys if self.source else []

    @property
    def conditional_samplers(self) -> dict:
        """Metric name -> `ConditionalSampler` whose cache the job directory keeps."""
        return self.source.conditional_samplers if self.source else {}

    def use_pools(self, pools) -> None:
        """Draws from `pools` from now on (a resumed run restores them)."""
        if self.source:
            self.source.use_pools(pools)

    def get_state(self) -> dict:
        return self.source.sampler.get_state() if self.source else {}

    def set_state(self, state: dict) -> None:
        if self.source:
            self.source.sampler.set_state(state)

    def summaries(self, epoch: int) -> dict:
        return self.source.summaries(epoch) if self.source else {}

    # The step.

    def build(self, supernet, optimizer, strategy) -> None:
        """Makes the traced step (under `strategy`'s scope or not: it creates no variables)."""
        optimization = self.run_config.optimization
        self.supernet = supernet
        self.max_vector = tf.constant(supernet.encode(self.space.max_config()))
        self.min_vector = tf.constant(supernet.encode(self.space.min_config()))
        self.step_fn = self.step_class(
            supernet, optimizer, strategy, optimization.global_batch_size, optimization.weight_decay
        )

    def draw(self, epoch: int) -> StepSubnets:
        raise NotImplementedError

    def step(self, batch, subnets: StepSubnets) -> StepResult:
        raise NotImplementedError

    # Where the scores go.

    def pool_updates(self, result: StepResult) -> list:
        """(pool key, config, cross-entropy) of every drawn subnet filed under a pool."""
        return [(d.key, d.config, ce) for d, ce in zip(result.draws, result.scores) if d.key is not None]

    def record_updates(self, result: StepResult) -> list:
        """(config, cross-entropy) of every drawn subnet, for the training records."""
        return [(d.config, ce) for d, ce in zip(result.draws, result.scores)]


class GroupMode(TrainingMode):
    """A mode whose step trains a group of subnets of one resolution in one masked pass:
    the fixed ones first (`fixed_subnets`), then `parallel_subnets` minus those drawn."""

    def fixed_subnets(self, resolution: int) -> list:
        raise NotImplementedError

    def draw(self, epoch: int) -> StepSubnets:
        resolution = self.source.sampler.draw_resolution()
        fixed = self.fixed_subnets(resolution)
        count = self.run_config.sampling.parallel_subnets - len(fixed)
        draws = [self.source.sampler.draw(epoch, resolution=resolution) for _ in range(count)]
        group = encode_group(fixed + [d.config for d in draws])
        return StepSubnets(tuple(draws), (tf.constant(group),), fixed=len(fixed))

    def group_result(self, outputs: dict, subnets: StepSubnets) -> StepResult:
        """The result of a group step: the drawn slices' cross-entropies are the scores,
        and `chosen_ce`, their mean, is logged when more than one subnet was drawn."""
        outputs = dict(outputs)
        scores = list(outputs.pop("slice_ce").numpy()[subnets.fixed :])
        result = StepResult.from_outputs(outputs, subnets.draws, scores)
        if len(result.scores) > 1:
            result.losses["chosen_ce"] = sum(result.scores) / len(result.scores)
        return result
