"""Where the search's candidates come from: the proposal interface and two baselines.

The evolution needs two things from a source of candidates: an initial
population that fits the budget, and new values for mutated genes (BCNet draws
both from the same distributions). `Proposal` is that interface; `Prior`
(pss_tf.search.prior) implements it, and so do the two baselines the prior is
measured against:

* `UniformProposal`: uniform over the space's discrete values, rejecting
  subnets outside [alpha B, B] (what a search without a prior does);
* `ConditionalProposal`: the training's `ConditionalSampler`, for the grid
  targets whose bins overlap [alpha B, B].
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from pss_tf import checks
from pss_tf.errors import ConfigError
from pss_tf.sampling.conditional_sampler import ConditionalSampler
from pss_tf.search.budget import Budget
from pss_tf.search.genes import GeneSpace
from pss_tf.space.config import SearchSpace, SubnetConfig

# Rejection sampling: draws per batch and batches before giving up.
_BATCH = 1024
_MAX_BATCHES = 64


@runtime_checkable
class Proposal(Protocol):
    """A source of candidates for one space and budget.

    Attributes: `name` (recorded in the search state), `space`, `genes` (its
    `GeneSpace`), `budget`.
    """

    name: str
    space: SearchSpace
    genes: GeneSpace
    budget: Budget

    def sample(self, rng: np.random.Generator, n: int) -> list[SubnetConfig]:
        """`n` draws in the space whose cost lies in [alpha B, B] (duplicates allowed)."""
        ...

    def mutate(self, config: SubnetConfig, gene_prob: float, rng: np.random.Generator) -> SubnetConfig:
        """`config` with each gene redrawn with probability `gene_prob`; in the space,
        not necessarily in the window."""
        ...

    def to_dict(self) -> dict:
        """JSON description with `name`; equal descriptions must mean equal draws
        (a search resumes only with a proposal of the same description)."""
        ...


def _redraw(genes: GeneSpace, config: SubnetConfig, gene_prob: float, rng, drawn: np.ndarray) -> SubnetConfig:
    current = genes.encode(config)
    redraw = rng.random(genes.num_genes) < gene_prob
    current[redraw] = drawn[redraw]
    return genes.decode(current)


class UniformProposal:
    """Uniform over the space's resolutions and multipliers (`SearchSpace.width_values`)."""

    name = "uniform"

    def __init__(self, space: SearchSpace, budget: Budget):
        if not isinstance(budget, Budget):
            raise ValueError(f"budget: must be a Budget, got {type(budget).__name__}")
        self.genes = GeneSpace(space)
        self.space = space
        self.budget = budget
        budget.check_feasible(space)
        self._sizes = np.asarray(self.genes.sizes)

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # Floor of uniform * size: one `random` call per gene, uniform over codes.
        return np.minimum((rng.random((n, len(self._sizes))) * self._sizes).astype(np.int64), self._sizes - 1)

    def sample(self, rng: np.random.Generator, n: int) -> list[SubnetConfig]:
        """Rejection sampling in batches of 1024; RuntimeError after 64 batches fall short.

        That happens when the window holds a tiny fraction of the space (a budget
        near the min or max net), which is why the prior exists.
        """
        checks.generator("rng", rng)
        n = checks.integer("n", n, 0, error=ValueError)
        out: list[SubnetConfig] = []
        tries = 0
        while len(out) < n:
            if tries == _MAX_BATCHES:
                raise RuntimeError(
                    f"uniform: only {len(out)} of {_MAX_BATCHES * _BATCH} uniform subnets fit "
                    f"[{self.budget.low:g}, {self.budget.high:g}] {self.budget.metric.name}; "
                    f"use the conditional or prior proposal for this budget"
                )
            tries += 1
            genes = self._draw(rng, _BATCH)
            inside = genes[self.budget.mask(*self.genes.arrays(genes))]
            out.extend(self.genes.decode(row) for row in inside[: n - len(out)])
        return out

    def mutate(self, config: SubnetConfig, gene_prob: float, rng: np.random.Generator) -> SubnetConfig:
        gene_prob = checks.probability("gene_prob", gene_prob, error=ValueError)
        checks.generator("rng", rng)
        return _redraw(self.genes, config, gene_prob, rng, self._draw(rng, 1)[0])

    def to_dict(self) -> dict:
        return {"name": self.name, "space": self.space.to_dict(), "budget": self.budget.to_dict()}


class ConditionalProposal:
    """Draws from a `ConditionalSampler` for the targets around the budget.

    The targets used are the sampler's reachable targets whose bin
    [t - step/2, t + step/2] overlaps [alpha B, B]; each draw picks one uniformly.
    Draws outside the window (a bin can stick out of it) are rejected. A mutated
    gene takes its value from a fresh draw, as BCNet takes it from a fresh subnet.
    """

    name = "conditional"

    def __init__(self, sampler: ConditionalSampler, budget: Budget):
        if not isinstance(sampler, ConditionalSampler):
            raise ValueError(f"sampler: must be a ConditionalSampler, got {type(sampler).__name__}")
        if not isinstance(budget, Budget):
            raise ValueError(f"budget: must be a Budget, got {type(budget).__name__}")
        if sampler.metric.to_dict() != budget.metric.to_dict():
            raise ValueError(
                f"sampler: was built for metric {sampler.metric.to_dict()}, not the budget's {budget.metric.to_dict()}"
            )
        self.sampler = sampler
        self.space = sampler.space
        self.genes = GeneSpace(sampler.space)
        self.budget = budget
        budget.check_feasible(self.space)
        half = sampler.metric.grid.step / 2
        self.targets = tuple(t for t in sampler.targets if t - half <= budget.high and t + half >= budget.low)
        if not self.targets:
            raise ConfigError(
                "budget",
                f"no reachable {budget.metric.name} target of the sampler lies near "
                f"[{budget.low:g}, {budget.high:g}] (reachable: {sampler.targets[:1]}..{sampler.targets[-1:]}); "
                f"use the uniform or prior proposal"
            )

    def _draw(self, rng: np.random.Generator) -> SubnetConfig:
        return self.sampler.sample(self.targets[int(rng.integers(len(self.targets)))], rng)

    def sample(self, rng: np.random.Generator, n: int) -> list[SubnetConfig]:
        checks.generator("rng", rng)
        n = checks.integer("n", n, 0, error=ValueError)
        out: list[SubnetConfig] = []
        budget_tries = max(64, 20 * n)
        for _ in range(budget_tries):
            if len(out) == n:
                return out
            config = self._draw(rng)
            if self.budget.contains(config):
                out.append(config)
        if len(out) == n:
            return out
        raise RuntimeError(
            f"conditional: only {len(out)} of {budget_tries} draws for targets {self.targets} fit "
            f"[{self.budget.low:g}, {self.budget.high:g}] {self.budget.metric.name}"
        )

    def mutate(self, config: SubnetConfig, gene_prob: float, rng: np.random.Generator) -> SubnetConfig:
        gene_prob = checks.probability("gene_prob", gene_prob, error=ValueError)
        checks.generator("rng", rng)
        return _redraw(self.genes, config, gene_prob, rng, self.genes.encode(self._draw(rng)))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "sampler": self.sampler.fingerprint,
            "budget": self.budget.to_dict(),
            "targets": list(self.targets),
        }
