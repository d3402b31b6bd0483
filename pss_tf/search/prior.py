"""The prior of PSE-Net's search: width distributions that trade loss against the budget.

Uniformly drawn subnets rarely meet a budget, and among those that do most
spend it badly. BCNet (xiusu/BCNetV2, `edgenn/algorithm/searcher/bcnet_searcher.py`)
builds, from the lowest training losses, one categorical distribution per layer
over its widths that keeps the expected loss low while the expected FLOPs match
the budget, and draws the initial population and every mutated gene from them.

pss_tf does the same with its own pieces:

* the expected loss per resolution and per (stage, channel level) comes from
  `ExpectedLoss` (an additive model of the kept `TrainingRecords`, optionally
  with pool members in the budget window as extra observations);
* every gene g gets `p_g(l) ~ exp(-strength * dloss_g(l) / spread - lam * dcost_g(l))`,
  where `dloss` is the level's expected loss minus the average and `dcost` the
  change in log cost when only gene g moves to level l from a reference subnet;
* the one Lagrange weight `lam` is found by bisection so that the median cost
  of subnets drawn from the distributions sits at the centre of [alpha B, B]
  (in log space). BCNet instead runs SGD on a penalty with a bilinear FLOPs
  model; bisecting on the real metric needs no cost model and cannot miss.
  The draws use fixed random numbers, so the median is monotone in `lam` and the
  fit is deterministic;
* `sample` rejects, in vectorised batches, draws outside [alpha B, B].

Drawn widths are each level's canonical (thinnest) multiplier; the network is
the same for every multiplier of a level.
"""

from __future__ import annotations

import math

import numpy as np

from pss_tf import checks
from pss_tf.run.records import TrainingRecords
from pss_tf.sampling.pools import PoolManager
from pss_tf.search.budget import Budget
from pss_tf.search.expected_loss import ExpectedLoss
from pss_tf.search.genes import GeneSpace
from pss_tf.space.config import SearchSpace, SubnetConfig

# Bisection: the bracket for `lam` grows to at most this, then 60 halvings.
_LAGRANGE_LIMIT = 1e6
_BISECTIONS = 60
# Rejection sampling: batches (at least 64, at most 65536 draws) before giving up.
_MAX_BATCHES = 64


class Prior:
    """Per-gene categorical distributions for one budget, fitted from expected losses.

    Implements the search's proposal interface (`sample`, `mutate`).

    Args:
        space: the search space (or its `GeneSpace`).
        budget: the metric, B and alpha.
        expected: expected losses of the space's levels.
        strength: how much the expected loss matters; 0 gives distributions that
            only meet the budget, larger values concentrate on low-loss levels.
        fit_samples: draws used to place the median cost during the fit.
        seed: seed of those draws (the fit is deterministic).

    Attributes:
        probabilities: per gene (resolution first), the probability of each level.
        lagrange: the fitted weight of cost against loss.
        acceptance: fraction of the fit's draws that landed in [alpha B, B].
    """

    name = "prior"

    def __init__(
        self,
        space: SearchSpace | GeneSpace,
        budget: Budget,
        expected: ExpectedLoss,
        *,
        strength: float = 1.0,
        fit_samples: int = 4096,
        seed: int = 0,
    ):
        self.genes = space if isinstance(space, GeneSpace) else GeneSpace(space)
        self.space = self.genes.space
        if not isinstance(budget, Budget):
            raise ValueError(f"budget: must be a Budget, got {type(budget).__name__}")
        if not isinstance(expected, ExpectedLoss):
            raise ValueError(f"expected: must be an ExpectedLoss, got {type(expected).__name__}")
        tables = expected.gene_tables()
        if tuple(len(t) for t in tables) != self.genes.level_sizes():
            raise ValueError("expected: was fitted for another search space (level counts differ)")
        checks.number("strength", strength, minimum=0.0, error=ValueError)
        checks.integer("fit_samples", fit_samples, 16, error=ValueError)
        budget.check_feasible(self.space)
        self.budget = budget
        self.expected = expected
        self.strength = float(strength)
        self._loss_logits = [-self.strength * (t - expected.mean) / expected.spread for t in tables]
        seed = checks.integer("seed", seed, 0, error=ValueError)
        self._uniforms = np.random.default_rng(seed).random((fit_samples, self.genes.num_genes))
        self._centre = 0.5 * (math.log(budget.low) + math.log(budget.high))

        # First pass around the middle levels, second around the fitted medians.
        reference = np.array([size // 2 for size in self.genes.level_sizes()], dtype=np.int64)
        for _ in range(2):
            self._costs = self._cost_proxy(reference)
            self.lagrange = self._fit_lagrange()
            cdfs = self._cdfs(self.lagrange)
            reference = np.array([min(np.searchsorted(c, 0.5, side="right"), len(c) - 1) for c in cdfs])
        self._cdf = cdfs
        self.probabilities = [np.diff(np.concatenate([[0.0], c])) for c in cdfs]
        genes = self.genes.genes_of_levels(self._levels(self._uniforms, cdfs))
        self.acceptance = float(self.budget.mask(*self.genes.arrays(genes)).mean())

    @classmethod
    def from_records(
        cls,
        space: SearchSpace,
        budget: Budget,
        records: TrainingRecords,
        pools: PoolManager | None = None,
        *,
        strength: float = 1.0,
        ridge: float = 1.0,
        fit_samples: int = 4096,
        seed: int = 0,
    ) -> "Prior":
        """The prior from a run's training records, plus its pool members that fit
        the budget as extra observations (loss = minus their score)."""
        genes = GeneSpace(space)
        extra = []
        if pools is not None:
            extra = [(config, -score) for config, score in _window_members(pools, budget, space)]
        expected = ExpectedLoss.from_records(genes, records, extra, ridge=ridge)
        return cls(genes, budget, expected, strength=strength, fit_samples=fit_samples, seed=seed)

    # Fitting.

    def _cost_proxy(self, reference: np.ndarray) -> list[np.ndarray]:
        """Per gene, the change in log cost when only that gene moves from `reference`."""
        sizes = self.genes.level_sizes()
        rows = [reference]
        for g, size in enumerate(sizes):
            block = np.repeat(reference[None, :], size, axis=0)
            block[:, g] = np.arange(size)
            rows.append(block)
        levels = np.vstack(rows)
        values = self.budget.metric.values(*self.genes.arrays(self.genes.genes_of_levels(levels)))
        logs = np.log(np.maximum(values, 1e-300))
        costs, start = [], 1
        for size in sizes:
            costs.append(logs[start : start + size] - logs[0])
            start += size
        return costs

    def _cdfs(self, lagrange: float) -> list[np.ndarray]:
        cdfs = []
        for loss_logits, costs in zip(self._loss_logits, self._costs):
            logits = loss_logits - lagrange * costs
            weights = np.exp(logits - logits.max())
            cdf = np.cumsum(weights)
            cdfs.append(cdf / cdf[-1])
        return cdfs

    @staticmethod
    def _levels(uniforms: np.ndarray, cdfs: list[np.ndarray]) -> np.ndarray:
        levels = np.empty(uniforms.shape, dtype=np.int64)
        for g, cdf in enumerate(cdfs):
            levels[:, g] = np.minimum(np.searchsorted(cdf, uniforms[:, g], side="right"), len(cdf) - 1)
        return levels

    def _excess(self, lagrange: float) -> float:
        """Median log cost of the fit's draws minus the window's centre (decreasing in `lagrange`)."""
        genes = self.genes.genes_of_levels(self._levels(self._uniforms, self._cdfs(lagrange)))
        values = self.budget.metric.values(*self.genes.arrays(genes))
        return float(np.median(np.log(np.maximum(values, 1e-300)))) - self._centre

    def _fit_lagrange(self) -> float:
        if self._excess(0.0) > 0:
            low, high = 0.0, 1.0
            while self._excess(high) > 0 and high < _LAGRANGE_LIMIT:
                low, high = high, high * 2
        else:
            low, high = -1.0, 0.0
            while self._excess(low) <= 0 and low > -_LAGRANGE_LIMIT:
                low, high = low * 2, low
        for _ in range(_BISECTIONS):
            middle = 0.5 * (low + high)
            if self._excess(middle) > 0:
                low = middle
            else:
                high = middle
        return 0.5 * (low + high)

    # The proposal interface.

    def sample(self, rng: np.random.Generator, n: int) -> list[SubnetConfig]:
        """`n` independent draws whose cost lies in [alpha B, B].

        Raises RuntimeError when 64 vectorised batches find fewer than `n`, which
        only a prior far too strong for a narrow window does (see `acceptance`).
        """
        checks.generator("rng", rng)
        n = checks.integer("n", n, 0, error=ValueError)
        out: list[SubnetConfig] = []
        if n == 0:
            return out
        batch = int(np.clip(math.ceil(1.5 * n / max(self.acceptance, 0.01)), 64, 65536))
        for _ in range(_MAX_BATCHES):
            genes = self.genes.genes_of_levels(self._levels(rng.random((batch, self.genes.num_genes)), self._cdf))
            inside = genes[self.budget.mask(*self.genes.arrays(genes))]
            out.extend(self.genes.decode(row) for row in inside[: n - len(out)])
            if len(out) == n:
                return out
        raise RuntimeError(
            f"prior: only {len(out)} of {n} draws fit [{self.budget.low:g}, {self.budget.high:g}] "
            f"{self.budget.metric.name} after {_MAX_BATCHES * batch} tries (fit acceptance "
            f"{self.acceptance:.3g}); lower strength or alpha"
        )

    def mutate(self, config: SubnetConfig, gene_prob: float, rng: np.random.Generator) -> SubnetConfig:
        """`config` with each gene redrawn from its distribution with probability `gene_prob`.

        The result lies in the space but not necessarily in the budget window.
        """
        gene_prob = checks.probability("gene_prob", gene_prob, error=ValueError)
        checks.generator("rng", rng)
        genes = self.genes.encode(config)
        redraw = rng.random(self.genes.num_genes) < gene_prob
        drawn = self.genes.genes_of_levels(self._levels(rng.random((1, self.genes.num_genes)), self._cdf))[0]
        genes[redraw] = drawn[redraw]
        return self.genes.decode(genes)

    def to_dict(self) -> dict:
        """A description for logs, reports and resume checks (not a way to rebuild the prior)."""
        return {
            "name": self.name,
            "space": self.space.to_dict(),
            "budget": self.budget.to_dict(),
            "strength": self.strength,
            "lagrange": self.lagrange,
            "acceptance": self.acceptance,
            "observations": self.expected.observations,
            "probabilities": [p.tolist() for p in self.probabilities],
        }

    def __repr__(self) -> str:
        return f"Prior({self.budget}, strength={self.strength:g}, acceptance={self.acceptance:.3f})"


def _window_members(pools: PoolManager, budget: Budget, space: SearchSpace | None) -> list[tuple[SubnetConfig, float]]:
    """(config, score) of every pool member in [alpha B, B], best score first, each config once."""
    if not isinstance(pools, PoolManager):
        raise ValueError(f"pools: must be a PoolManager, got {type(pools).__name__}")
    best: dict[SubnetConfig, float] = {}
    for key in pools.keys():
        for config, score in pools.members(key):
            if config.model != budget.metric.model or (space is not None and not space.contains(config)):
                continue
            if config not in best and budget.contains(config):
                best[config] = score
            elif config in best:
                best[config] = max(best[config], score)
    # sorted() is stable: equal scores keep pool and joining order.
    return sorted(best.items(), key=lambda item: -item[1])


def seeds(pools: PoolManager, budget: Budget, space: SearchSpace | None = None) -> list[SubnetConfig]:
    """Pool members whose cost lies in [alpha B, B], best score first.

    Every pool of every metric is searched: a member of a FLOPs pool can fit a
    latency budget. A config in several pools appears once, ranked by its best
    score. With `space`, members outside it are left out.
    """
    if not isinstance(budget, Budget):
        raise ValueError(f"budget: must be a Budget, got {type(budget).__name__}")
    return [config for config, _ in _window_members(pools, budget, space)]
