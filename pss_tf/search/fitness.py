"""The search's fitness: top-1 of a subnet after BN calibration, on data training never saw.

A subnet's accuracy inside the supernet is measured the way the run measures
it (`pss_tf.training.evaluation`): reset its batch-norm statistics, re-estimate
them on the run's calibration batches (training examples, held-out ones never
among them), then count correct top-1 predictions. Only the data differs:

* `holdout`: the run's held-out training examples (`holdout_examples`), the
  honest choice: the search never looks at the validation split, so the
  validation accuracy it reports afterwards is not selected on;
* `train_subset`: when the run kept none, a fixed, evenly spread subset of the
  training split with evaluation preprocessing (examples the supernet trained
  on, so fitness is optimistic; the search's output says which was used).

`SubnetFitness` takes a list of configs and returns their fitnesses (the
`batch_fitness` of `EvolutionSearch`), so a pass that evaluates several
subnets at once can replace the loop later; it caches by network
(`genes.network_key`): two multipliers that give the same channels are one
evaluation.

This module (unlike the rest of `pss_tf.search`) uses TensorFlow.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from pss_tf import checks
from pss_tf.search.genes import network_key
from pss_tf.space.config import SubnetConfig
from pss_tf.data.settings import calibration_stream
from pss_tf.training.evaluation import SubnetEvaluator

FITNESS_DATA = ("holdout", "train_subset")
# Fitness data up to this size is decoded once and kept in memory.
_IN_MEMORY_BYTES = 256 * 2**20


class SubnetFitness:
    """Held-out top-1 of configs, cached by network.

    Args:
        evaluator: calibrates and evaluates subnets (its validation data is the
            fitness data).
        data: which data that is, one of `FITNESS_DATA` (reported with results).
        examples: how many examples it holds.
        on_evaluation: called with each config as soon as it is evaluated (not
            for cache hits), e.g. to advance a progress bar.

    Attributes:
        evaluations: configs actually evaluated (cache misses).
    """

    def __init__(
        self,
        evaluator: SubnetEvaluator,
        data: str,
        examples: int,
        on_evaluation: Callable[[SubnetConfig], None] | None = None,
    ):
        if data not in FITNESS_DATA:
            raise ValueError(f"data: must be one of {FITNESS_DATA}, got {data!r}")
        self.evaluator = evaluator
        self.data = data
        self.examples = int(examples)
        self.on_evaluation = on_evaluation
        self.evaluations = 0
        self._cache: dict[tuple, float] = {}

    def __call__(self, configs: Iterable[SubnetConfig]) -> list[float]:
        """The fitness of every config, in order (each network evaluated once, ever)."""
        configs = list(configs)
        for config in configs:
            if not isinstance(config, SubnetConfig):
                raise ValueError(f"configs: expected SubnetConfigs, got {type(config).__name__}")
        out = []
        for config in configs:
            key = network_key(config)
            if key not in self._cache:
                self._cache[key] = float(self.evaluator.evaluate(config).top1)
                self.evaluations += 1
                if self.on_evaluation is not None:
                    self.on_evaluation(config)
            out.append(self._cache[key])
        return out

    def cached(self, config: SubnetConfig) -> float | None:
        return self._cache.get(network_key(config))

    def remember(self, config: SubnetConfig, fitness: float) -> None:
        """Puts a fitness measured earlier (e.g. by a saved search) in the cache."""
        self._cache.setdefault(network_key(config), float(fitness))


def fitness_source(job, examples: int = 0) -> tuple[str, int]:
    """(name, number of examples) of the data a run's subnets are scored on; cheap.

    `examples`: 0 takes every held-out example, or, when the run kept none, as
    many training examples as the validation split has.
    """
    checks.integer("fitness_examples", examples, 0)
    data, info = job.data, job.info
    if data.holdout_examples:
        return "holdout", min(examples, data.holdout_examples) if examples else data.holdout_examples
    return "train_subset", min(examples or info.num_val, info.num_train)


def fitness_dataset(job, batch_size: int, examples: int = 0):
    """(name, dataset, number of examples): one ordered pass over the fitness data (`fitness_source`)."""
    name, count = fitness_source(job, examples)
    if name == "holdout":
        return name, job.data.holdout(batch_size, limit=count), count
    return name, job.data.train_subset(batch_size, count), count


def _materialise(dataset, examples: int, image_bytes: int):
    """The batches of a small finite dataset as a list (decoded once), else the dataset."""
    if examples * image_bytes > _IN_MEMORY_BYTES:
        return dataset
    return list(dataset)


def make_fitness(
    job,
    supernet,
    calibration_batches: int = 0,
    examples: int = 0,
    batch_size: int = 0,
    on_evaluation: Callable[[SubnetConfig], None] | None = None,
) -> SubnetFitness:
    """The fitness of an opened run (`pss_tf.run.job.Job`) and its restored supernet.

    Args:
        calibration_batches: BN calibration batches per subnet (0: the run's
            `calibration_batches`); the batches are the run's own.
        examples: fitness examples (see `fitness_source`).
        batch_size: evaluation batch size (0: the run's `eval_batch_size`).
    """
    run_config = job.run_config
    checks.integer("calibration_batches", calibration_batches, 0)
    batches = calibration_batches or run_config.evaluation.calibration_batches
    name, dataset, count = fitness_dataset(job, batch_size or run_config.evaluation.eval_batch_size, examples)
    image_bytes = 4 * job.data.image_size**2 * job.info.channels
    # The same first batches of the run's calibration stream for every subnet.
    calibration = list(itertools.islice(iter(calibration_stream(run_config, job.data)), batches))
    evaluator = SubnetEvaluator(supernet, calibration, _materialise(dataset, count, image_bytes), batches)
    return SubnetFitness(evaluator, name, count, on_evaluation)

