"""A resource budget: the window [alpha B, B] a searched subnet must fall in.

Searching for "the best subnet under B" alone drifts to ever smaller subnets
when the fitness is noisy, and wastes evaluations on subnets far below B;
BCNet, PSE-Net and OFA therefore accept only candidates whose cost lies in
[alpha B, B] (alpha 0.8). Every proposal and the evolution check candidates with
the same `Budget`, so they can never disagree about what fits.
"""

from __future__ import annotations

import numpy as np

from pss_tf import checks
from pss_tf.errors import ConfigError
from pss_tf.space.config import SearchSpace, SubnetConfig
from pss_tf.space.metrics import Metric


class Budget:
    """Budget `value` of `metric`, accepting costs in [alpha * value, value].

    Costs are compared exactly, with no tolerance: `contains` (one config) and
    `mask` (arrays) use the metric's `value` and `values`, which agree exactly.
    """

    def __init__(self, metric: Metric, value: float, alpha: float = 0.8):
        if not isinstance(metric, Metric):
            raise ValueError(f"metric: must be a Metric, got {type(metric).__name__}")
        self.metric = metric
        self.value = checks.number("budget", value, above=0.0, error=ValueError)
        self.alpha = checks.number("alpha", alpha, above=0.0, maximum=1.0, error=ValueError)
        self.low = self.alpha * self.value
        self.high = self.value

    def cost(self, config: SubnetConfig) -> float:
        return float(self.metric.value(config))

    def contains(self, config: SubnetConfig) -> bool:
        """Whether `config`'s cost lies in [alpha B, B]."""
        return self.low <= self.cost(config) <= self.high

    def mask(self, resolutions: np.ndarray, widths: np.ndarray) -> np.ndarray:
        """`contains` over configs given as arrays (see `Metric.values`)."""
        values = self.metric.values(resolutions, widths)
        return (values >= self.low) & (values <= self.high)

    def check_feasible(self, space: SearchSpace) -> None:
        """Raises ConfigError (a ValueError naming `budget` or `space`), before any
        heavy work, when no subnet of `space` can fit.

        Cost grows with every width and the resolution, so the min net is the
        cheapest subnet and the max net the most expensive.
        """
        if space.model != self.metric.model:
            raise ConfigError(
                "space", f"is for {space.model} but the {self.metric.name} metric measures {self.metric.model}"
            )
        cheapest = self.cost(space.min_config())
        priciest = self.cost(space.max_config())
        name = self.metric.name
        if cheapest > self.high:
            raise ConfigError(
                "budget",
                f"{self.value:g} {name} is below the cheapest subnet of the space "
                f"({cheapest:.4g} {name}, the min net); choose a budget of at least {cheapest:.4g}"
            )
        if priciest < self.low:
            raise ConfigError(
                "budget",
                f"alpha * budget = {self.low:.4g} {name} is above the most expensive subnet of the "
                f"space ({priciest:.4g} {name}, the max net); choose a budget of at most {priciest / self.alpha:.4g} "
                f"or a smaller alpha"
            )

    def to_dict(self) -> dict:
        return {"metric": self.metric.to_dict(), "budget": self.value, "alpha": self.alpha}

    def __repr__(self) -> str:
        return f"Budget({self.metric.name}: [{self.low:g}, {self.high:g}])"
