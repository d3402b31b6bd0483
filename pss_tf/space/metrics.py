"""Resource metrics: what a subnet costs, and the target grid it is trained for.

A metric is a name, a unit, a `TargetGrid` and a way to measure one config
(`value`) or a batch of configs given as arrays (`values`). The conditional sampler evaluates
hundreds of thousands of subnets at start-up and a few hundred per draw, so the
array form is the one that must be fast; `value` is for single configs.
Which metrics a run may name, and how each loads, is declared in
`pss_tf.run.metrics`.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from pss_tf import checks
from pss_tf.space import architectures, cost
from pss_tf.space.config import SearchSpace, SubnetConfig
from pss_tf.space.targets import TargetGrid

class Metric:
    """Base class of resource metrics.

    A metric knows its unit and how to name its targets, and carries the grid
    of targets a supernet is trained for (None while only values are needed,
    e.g. to choose a grid with `auto_grid`). Subclasses implement `value` and,
    for speed, `values`. `to_dict` must describe everything that changes the
    metric's numbers: caches built from a metric are reused only while it
    stays the same.
    """

    unit = ""  # How values are written for people, e.g. "M MACs".
    label_suffix = ""  # What target labels end in, e.g. "m" in flops_300m.

    def __init__(self, name: str, model: str, grid: TargetGrid | None = None):
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: must be a non-empty string, got {name!r}")
        architectures.parse_model(model)  # ValueError naming the model if it is none.
        if grid is not None and not isinstance(grid, TargetGrid):
            raise ValueError(f"grid: must be a TargetGrid or None, got {type(grid).__name__}")
        self.name = name
        self.model = model
        self._grid = grid

    @property
    def grid(self) -> TargetGrid:
        if self._grid is None:
            raise ValueError(f"{self.name}: this metric has no target grid; give one with with_grid()")
        return self._grid

    def with_grid(self, grid: TargetGrid) -> "Metric":
        """The same metric on another target grid (tables and caches are shared)."""
        if not isinstance(grid, TargetGrid):
            raise ValueError(f"grid: must be a TargetGrid, got {type(grid).__name__}")
        other = copy.copy(self)
        other._grid = grid
        return other

    def value(self, config: SubnetConfig) -> float:
        """The metric of one config, in the metric's unit."""
        raise NotImplementedError

    def values(self, resolutions: np.ndarray, widths: np.ndarray) -> np.ndarray:
        """The metric of configs given as resolutions (n,) and widths (n, stages).

        This fallback builds one `SubnetConfig` per row; subclasses should vectorise.
        """
        resolutions = np.asarray(resolutions)
        widths = np.asarray(widths, dtype=np.float64)
        return np.array(
            [self.value(SubnetConfig(self.model, int(r), tuple(w.tolist()))) for r, w in zip(resolutions, widths)],
            dtype=np.float64,
        )

    def target(self, config: SubnetConfig) -> float | None:
        """The target `config` belongs to, or None when it is outside the grid."""
        return self.grid.snap(self.value(config))

    def label(self, target: float) -> str:
        """A target's name in pools, signatures, logs and plots, e.g. `flops_300m`."""
        return target_label(self.name, target, self.label_suffix)

    def format(self, value: float) -> str:
        """A value as people read it, e.g. `300.84 M MACs`."""
        return f"{value:.2f} {self.unit}"

    def auto_grid(self, space: SearchSpace, targets: int = 10) -> TargetGrid:
        """About `targets` evenly spaced round targets across the space's range of this metric."""
        resolutions, widths = space.sample_arrays(np.random.default_rng(0), 20_000)
        values = self.values(resolutions, widths)
        low, high = float(np.percentile(values, 0.5)), float(np.percentile(values, 99.5))
        raw = max((high - low) / targets, 1e-9)
        magnitude = 10 ** math.floor(math.log10(raw))
        step = min((m * magnitude for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(s - raw))
        start = math.ceil(low / step) * step
        stop = max(start, math.floor(high / step) * step)
        return TargetGrid(round(start, 6), round(stop, 6), round(step, 6))

    def span_grid(self, space: SearchSpace, targets: int) -> TargetGrid:
        """About `targets` round targets from the space's smallest subnet (min width and
        resolution) to its largest, both ends included (`TargetGrid.spanning`)."""
        ends = self.value(space.min_config()), self.value(space.max_config())
        return TargetGrid.spanning(min(ends), max(ends), targets)

    def to_dict(self) -> dict:
        grid = self._grid.to_dict() if self._grid is not None else None
        return {"type": type(self).__name__, "name": self.name, "model": self.model, "grid": grid}

    def _check_model(self, config: SubnetConfig) -> None:
        if config.model != self.model:
            raise ValueError(f"config: {self.name} measures {self.model}, got a {config.model} config")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


def target_label(metric: str, target: float, suffix: str) -> str:
    """`flops_300m`, `latency_cpu_10p5ms`: letters, digits and '_' only (a signature name)."""
    return f"{metric}_{target:g}{suffix}".replace(".", "p")


class FlopsMetric(Metric):
    """Multiply-accumulates in millions, counted by `pss_tf.space.cost` (design note section 2)."""

    unit = "M MACs"
    label_suffix = "m"

    def __init__(
        self,
        model: str,
        grid: TargetGrid | None = None,
        num_classes: int = 1000,
        small_input: bool = False,
        in_channels: int = 3,
        name: str = "flops",
    ):
        super().__init__(name, model, grid)
        self.num_classes = checks.integer("num_classes", num_classes, 1, error=ValueError)
        self.small_input = bool(small_input)
        self.in_channels = checks.integer("in_channels", in_channels, 1, error=ValueError)

    def value(self, config: SubnetConfig) -> float:
        self._check_model(config)
        return cost.count_flops(config, self.num_classes, self.small_input, self.in_channels)

    def values(self, resolutions: np.ndarray, widths: np.ndarray) -> np.ndarray:
        return cost.count_flops_array(
            self.model, resolutions, widths, self.num_classes, self.small_input, self.in_channels
        )

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "num_classes": self.num_classes,
            "small_input": self.small_input,
            "in_channels": self.in_channels,
        }
