"""Resource metrics: what a subnet costs, and the target grid it is trained for.

A metric is a name, a `TargetGrid` and a way to measure one config (`value`) or a
batch of configs given as arrays (`values`). The conditional sampler evaluates
hundreds of thousands of subnets at start-up and a few hundred per draw, so the
array form is the one that must be fast; `value` is for single configs.
"""

from __future__ import annotations

import numbers

import numpy as np

from pss_tf import architectures, cost
from pss_tf.config import SubnetConfig
from pss_tf.targets import TargetGrid


class Metric:
    """Base class of resource metrics.

    Subclasses implement `value` and, for speed, `values`. `to_dict` must describe
    everything that changes the metric's numbers: caches built from a metric are
    reused only while it stays the same.
    """

    def __init__(self, name: str, model: str, grid: TargetGrid):
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: must be a non-empty string, got {name!r}")
        if model not in architectures.MODEL_NAMES:
            raise ValueError(f"model: unknown model {model!r}; expected one of {list(architectures.MODEL_NAMES)}")
        if not isinstance(grid, TargetGrid):
            raise ValueError(f"grid: must be a TargetGrid, got {type(grid).__name__}")
        self.name = name
        self.model = model
        self.grid = grid

    def value(self, config: SubnetConfig) -> float:
        """The metric of one config, in the grid's unit."""
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

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "name": self.name, "model": self.model, "grid": self.grid.to_dict()}

    def _check_model(self, config: SubnetConfig) -> None:
        if config.model != self.model:
            raise ValueError(f"config: {self.name} measures {self.model}, got a {config.model} config")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class FlopsMetric(Metric):
    """Multiply-accumulates in millions, counted by `pss_tf.cost` (design note section 2)."""

    def __init__(
        self,
        model: str,
        grid: TargetGrid,
        num_classes: int = 1000,
        small_input: bool = False,
        in_channels: int = 3,
        name: str = "flops",
    ):
        super().__init__(name, model, grid)
        for field, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"{field}: must be a positive int, got {value!r}")
        self.num_classes = int(num_classes)
        self.small_input = bool(small_input)
        self.in_channels = int(in_channels)

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
