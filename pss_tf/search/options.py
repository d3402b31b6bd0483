"""What `tools/search.py` is told: the search's options, in groups, one flag per leaf.

Defaults of the evolution are BCNet's (design note section 8). Validation raises
`ConfigError` naming the field; what needs the run (its metrics, space, records,
checkpoint) is checked by `pss_tf.search.driver.plan`.
"""

from __future__ import annotations

import dataclasses
import math
import os

from pss_tf import config_flags
from pss_tf.config_flags import group, option
from pss_tf.errors import ConfigError
from pss_tf.run.metrics import METRIC_NAMES

INITS = ("uniform", "conditional", "prior")


@dataclasses.dataclass(frozen=True)
class EvolutionOptions:
    """The evolutionary search of every budget."""

    alpha: float = option(
        0.8, help="Candidates must cost within [alpha * budget, budget].", above=0.0, maximum=1.0
    )
    population: int = option(80, help="Candidates per generation.", minimum=1)
    generations: int = option(40, help="Generations, the initial population included.", minimum=1)
    parents: int = option(10, help="Best subnets kept as parents.", minimum=1)
    mutations: int = option(40, help="Mutated parents per generation.", minimum=0)
    mutation_prob: float = option(
        0.1, help="Probability that a mutation redraws each gene.", minimum=0.0, maximum=1.0
    )
    crossovers: int = option(40, help="Children of two parents per generation.", minimum=0)


@dataclasses.dataclass(frozen=True)
class FitnessOptions:
    """How a candidate is scored: top-1 after BN calibration on held-out training data."""

    calibration_batches: int = option(
        0, help="BN calibration batches per candidate (0: the run's setting).", minimum=0
    )
    fitness_examples: int = option(
        0,
        help="Held-out examples each candidate is scored on (0: all; a run without held-out data uses this many "
        "training examples, 0: as many as its validation split).",
        minimum=0,
    )


@dataclasses.dataclass(frozen=True)
class SearchOptions(config_flags.Declared):
    """Everything `tools/search.py` is told (one flag per leaf field)."""

    job_dir: str = option(
        "", help="Training run to search (tools/train.py's job_dir).", resumable=True, required=True, path=True
    )
    metric: str = option("flops", help="Resource metric of the budgets (one the run trained).", choices=METRIC_NAMES)
    budgets: tuple[float, ...] = option(
        (), help="Budgets in the metric's unit (M MACs, ms), comma-separated; one search per budget and init."
    )
    init: tuple[str, ...] = option(
        ("prior",),
        help="Where the initial population and mutated genes come from (comma-separated for several searches): "
        "uniform over the space, the run's conditional sampler, or the prior fitted to the training records "
        "and seeded with pool members.",
        choices=INITS,
    )
    seed: int = option(0, help="Seed of the evolution.", minimum=0)
    out: str = option("", help="Output directory (default: JOB_DIR/search).", resumable=True, path=True)
    data_dir: str | None = option(None, help="The run's data, if it moved since training.", resumable=True, path=True)
    progress: bool = option(True, help="Progress bars.", resumable=True)
    evolution: EvolutionOptions = group(EvolutionOptions)
    fitness: FitnessOptions = group(FitnessOptions)

    @property
    def out_dir(self) -> str:
        return self.out or os.path.join(self.job_dir, "search")

    def validate(self) -> None:
        config_flags.check_declared(self)  # Every field's kind, choices and range.
        if not self.budgets:
            raise ConfigError("budgets", "name at least one budget, e.g. 7.5 or 6,8,10")
        for budget in self.budgets:
            if not (math.isfinite(budget) and budget > 0):  # One message for the whole list.
                raise ConfigError("budgets", f"budgets must be positive numbers, got {budget!r}")
        if len(set(self.budgets)) != len(self.budgets):
            raise ConfigError("budgets", f"a budget is named twice in {list(self.budgets)}")
        if not self.init:
            raise ConfigError("init", f"name at least one of {list(INITS)}")
        if len(set(self.init)) != len(self.init):
            raise ConfigError("init", f"an init is named twice in {list(self.init)}")

    def search_settings(self) -> dict:
        """The leaf values a saved search must share to be resumed (budget and init name the search)."""
        values = config_flags.leaf_values(self)
        skip = {leaf.name for leaf in config_flags.leaves(SearchOptions) if leaf.resumable} | {"budgets", "init"}
        return {name: value for name, value in values.items() if name not in skip}

