"""Which subnet to train next to the max and min nets (design note section 5, steps 2-3).

`PrioritizedSampler` is PSS: pick a (metric, target) pool, then either a fresh
subnet for that target or a pool member chosen by softmax priority.
`UniformSampler` is the baseline it is compared with (universally slimmable
networks): a uniformly random subnet of the whole space.

Both return a `Draw` whose `key` names the pool the trainer records the subnet's
score in, and both expose their random state as JSON so that a resumed run draws
exactly what the interrupted one would have. The pools themselves are saved by
`PoolManager.save`, not here.

Parallel subnets (PSE-Net) train several subnets in one pass, which must share a
resolution: `draw_resolution` draws the step's (the space's end-weighted
distribution), and `draw(epoch, resolution=r)` then draws a subnet of that
resolution. For PSS this restricts each slot to the targets reachable at r
(`ConditionalSampler.targets_at`) and each pool draw to the members of
resolution r (softmax over those); a target with no member at r draws fresh.
Over many steps every resolution keeps its share, but a pool's members are
revisited in proportion to how often their own resolution comes up.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence

import numpy as np

from pss_tf.sampling.conditional_sampler import ConditionalSampler
from pss_tf.sampling.pools import PoolManager
from pss_tf.sampling.schedules import ExponentialSchedule
from pss_tf.space.config import SearchSpace, SubnetConfig
from pss_tf.space.metrics import Metric


@dataclasses.dataclass(frozen=True)
class Draw:
    """One drawn subnet.

    `key` is the `(metric name, target)` pool the subnet belongs to, or None when
    its metric lies outside the grid (only the uniform baseline can draw such a
    subnet). `fresh` is False when it came from a pool.
    """

    config: SubnetConfig
    key: tuple[str, float] | None
    fresh: bool


def _random_state(rng: random.Random) -> list:
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def _set_random_state(rng: random.Random, state: list) -> None:
    version, internal, gauss_next = state
    rng.setstate((version, tuple(internal), gauss_next))


class PrioritizedSampler:
    """Prioritized Subnet Sampling.

    Args:
        pools: the run's `PoolManager`; read here, updated by the trainer.
        samplers: metric name -> `ConditionalSampler` of that metric. Only reachable
            targets are ever chosen.
        p_fresh_schedule: epoch -> probability of a fresh subnet even when the
            pool is full (`p_e`).
        temperature_schedule: epoch -> softmax temperature over pool scores (`t_e`).
        seed: seeds both generators: a `random.Random` for the choices and the pool
            draws, a `np.random.Generator` for the conditional samplers.
        use_pools: False always draws fresh subnets for the chosen target (the
            "conditional" sampler: targets without priorities); the trainer
            still records their scores in the pools, for the winners.
    """

    def __init__(
        self,
        pools: PoolManager,
        samplers: Mapping[str, ConditionalSampler],
        p_fresh_schedule: ExponentialSchedule,
        temperature_schedule: ExponentialSchedule,
        seed: int = 0,
        use_pools: bool = True,
    ):
        if not samplers:
            raise ValueError("samplers: need at least one metric's ConditionalSampler")
        for name, sampler in samplers.items():
            if sampler.metric.name != name:
                raise ValueError(f"samplers: key {name!r} holds the sampler of metric {sampler.metric.name!r}")
        self.pools = pools
        self.samplers = dict(samplers)
        self.p_fresh_schedule = p_fresh_schedule
        self.temperature_schedule = temperature_schedule
        # Sorted by metric name so the draws do not depend on the mapping's order.
        self.keys = tuple((name, target) for name in sorted(self.samplers) for target in self.samplers[name].targets)
        if not self.keys:
            raise ValueError("samplers: no metric has a reachable target")
        self.use_pools = bool(use_pools)
        self.space = next(iter(self.samplers.values())).space
        self._keys_at: dict[int, tuple] = {}
        self._rng = random.Random(seed)
        self._np_rng = np.random.default_rng(seed)

    def draw_resolution(self) -> int:
        """The resolution of a step's parallel subnets."""
        return self._rng.choices(self.space.resolutions, weights=self.space.resolution_probabilities)[0]

    def keys_at(self, resolution: int) -> tuple:
        """The (metric, target) keys a subnet of `resolution` can be drawn for."""
        if resolution not in self._keys_at:
            self._keys_at[resolution] = tuple(
                (name, target)
                for name in sorted(self.samplers)
                for target in self.samplers[name].targets_at(resolution)
                if (name, target) in self.keys
            )
        return self._keys_at[resolution]

    def draw(self, epoch: float, resolution: int | None = None) -> Draw:
        """The subnet to train at `epoch` (fractional epochs allowed), of `resolution` if given."""
        # One uniform pick among all (metric, target) pairs is the same as picking a
        # metric with probability proportional to its number of targets, then one
        # of its targets uniformly.
        keys = self.keys if resolution is None else self.keys_at(resolution)
        if not keys:
            raise ValueError(f"resolution: no target of any metric is reachable at {resolution}")
        key = keys[self._rng.randrange(len(keys))]
        # Always consume the coin so the random stream does not depend on pool sizes.
        coin = self._rng.random()
        fresh = (
            not self.use_pools
            or coin < self.p_fresh_schedule(epoch)
            or not self.pools.is_full(key)
            or (resolution is not None and not self.pools.has_member_at(key, resolution))
        )
        name, target = key
        if fresh:
            return Draw(self.samplers[name].sample(target, self._np_rng, resolution), key, fresh=True)
        config = self.pools.sample(key, self.temperature_schedule(epoch), self._rng, resolution)
        return Draw(config, key, fresh=False)

    def get_state(self) -> dict:
        """JSON-serialisable random state; `set_state` resumes from it."""
        return {"random": _random_state(self._rng), "numpy": self._np_rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        _set_random_state(self._rng, state["random"])
        self._np_rng.bit_generator.state = state["numpy"]


class UniformSampler:
    """The uniform baseline: every subnet uniformly from the whole space.

    Each draw is still filed under one metric's pool so the trainer can score it and
    report winners just like PSS: the metric is chosen with probability proportional
    to its number of grid targets (as PSS chooses metrics), and the key is the
    target the subnet snaps to under it.

    Args:
        space: the space to draw from.
        metrics: the metrics, as a sequence or a name -> metric mapping.
        seed: seeds the single `random.Random` used for every choice.
    """

    def __init__(self, space: SearchSpace, metrics: Sequence[Metric] | Mapping[str, Metric], seed: int = 0):
        metrics = list(metrics.values()) if isinstance(metrics, Mapping) else list(metrics)
        if not metrics:
            raise ValueError("metrics: need at least one metric")
        by_name = {}
        for metric in metrics:
            if metric.name in by_name:
                raise ValueError(f"metrics: two metrics are named {metric.name!r}")
            if metric.model != space.model:
                raise ValueError(f"metrics: {metric.name} measures {metric.model}, the space is {space.model}")
            by_name[metric.name] = metric
        self.space = space
        self.metrics = {name: by_name[name] for name in sorted(by_name)}
        self._metric_slots = tuple(name for name, metric in self.metrics.items() for _ in metric.grid.targets)
        self._rng = random.Random(seed)

    def draw_resolution(self) -> int:
        """The resolution of a step's parallel subnets."""
        return self._rng.choices(self.space.resolutions, weights=self.space.resolution_probabilities)[0]

    def draw(self, epoch: float | None = None, resolution: int | None = None) -> Draw:
        """A uniformly random subnet (of `resolution`, if given); `epoch` is ignored."""
        metric = self.metrics[self._metric_slots[self._rng.randrange(len(self._metric_slots))]]
        config = self.space.random_config(self._rng)
        if resolution is not None:
            config = SubnetConfig(config.model, resolution, config.widths)
        target = metric.target(config)
        return Draw(config, None if target is None else (metric.name, target), fresh=True)

    def get_state(self) -> dict:
        return {"random": _random_state(self._rng)}

    def set_state(self, state: dict) -> None:
        _set_random_state(self._rng, state["random"])
