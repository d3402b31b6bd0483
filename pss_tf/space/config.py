"""Subnet configurations and the search space they are drawn from.

A subnet is a resolution plus one width multiplier per stage. `SubnetConfig` is
immutable and hashable because the pools key on it; `SearchSpace` knows the
ranges a supernet was trained for and draws configs from them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random as _random

import numpy as np

from pss_tf import checks
from pss_tf.errors import ConfigError
from pss_tf.space import architectures
from pss_tf.space.channels import CHANNEL_DIVISOR, make_divisible, make_divisible_array  # noqa: F401 (re-exported)

# Width multipliers (and the resolution end weight) lie in (0, 1].
WIDTH_RANGE = checks.Bounds(above=0.0, maximum=1.0)


@dataclasses.dataclass(frozen=True)
class SubnetConfig:
    """One subnet: model name, input resolution and per-stage width multipliers."""

    model: str
    resolution: int
    widths: tuple[float, ...]

    def __post_init__(self):
        architectures.parse_model(self.model)  # ValueError naming the model if it is none.
        object.__setattr__(self, "resolution", checks.integer("resolution", self.resolution, 1, error=ValueError))
        try:
            widths = tuple(float(w) for w in self.widths)
        except (TypeError, ValueError):
            raise ValueError(f"widths: must be a sequence of numbers, got {self.widths!r}") from None
        expected = architectures.get_architecture(self.model).num_stages
        if len(widths) != expected:
            hint = ""
            if self.model == "mobilenet_v2" and len(widths) == expected + 1:
                hint = (
                    "; its last 1x1 conv keeps 1280 channels, as in the PSS-Net release. Configs written "
                    "by pss_tf 0.1 have a ninth multiplier that slimmed that conv: give them the model "
                    "mobilenet_v2_slim_last_conv, or drop the ninth multiplier"
                )
            raise ValueError(
                f"widths: {self.model} takes {expected} width multipliers, got {len(widths)}{hint}"
            )
        for i, w in enumerate(widths):
            if not (0.0 < w <= 1.0) or math.isnan(w):
                raise ValueError(f"widths[{i}]: multiplier must lie in (0, 1], got {w}")
        object.__setattr__(self, "widths", widths)

    @classmethod
    def uniform(cls, model: str, resolution: int, width: float) -> "SubnetConfig":
        """The config with the same multiplier in every stage."""
        stages = architectures.get_architecture(model).num_stages
        return cls(model, resolution, (width,) * stages)

    @functools.cached_property
    def channels(self) -> tuple[int, ...]:
        """The active channel count of each channel group (one per multiplier but in
        spaces whose multipliers scale several groups, as ResNet-50's stages)."""
        return architectures.get_architecture(self.model).channels(self.widths)

    def to_dict(self) -> dict:
        return {"model": self.model, "resolution": self.resolution, "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict) -> "SubnetConfig":
        if not isinstance(data, dict):
            raise ValueError(f"config: expected a JSON object, got {type(data).__name__}")
        missing = {"model", "resolution", "widths"} - set(data)
        if missing:
            raise ValueError(f"config: missing field(s) {sorted(missing)}")
        extra = set(data) - {"model", "resolution", "widths"}
        if extra:
            raise ValueError(f"config: unknown field(s) {sorted(extra)}")
        return cls(data["model"], data["resolution"], tuple(data["widths"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SubnetConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config: not valid JSON ({e})") from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        widths = ",".join(f"{w:g}" for w in self.widths)
        return f"{self.model}@{self.resolution}[{widths}]"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The resolutions and widths a supernet is trained for.

    Resolutions are `min_resolution, min_resolution + resolution_step, ...,
    max_resolution`; each stage's multiplier is uniform in `[min_width, max_width]`,
    rounded to `decimals` places (the release), or with `width_bins` N one of the
    multiples k/N in that range, each as likely (channel-pruning spaces: BCNet's 20
    bins, AutoSlim's i/12). Either way multipliers are multiples of 1/`width_scale`,
    `width_values` lists them. Random draws weight the smallest and largest
    resolution `resolution_end_weight` times an inner one: 0.5 is the release's
    `make_divisible(uniform(min, max), step)`, whose rounding gives the ends half
    an interval each; 1.0 draws resolutions uniformly.
    """

    model: str
    min_resolution: int = 128
    max_resolution: int = 224
    resolution_step: int = 8
    min_width: float = 0.75
    max_width: float = 1.0
    decimals: int = 3
    resolution_end_weight: float = 0.5
    width_bins: int = 0

    def __post_init__(self):
        """ConfigError naming the first bad field (a run's settings build the space)."""
        try:
            architectures.parse_model(self.model)
        except ValueError as e:
            raise ConfigError("model", str(e).removeprefix("model: ")) from None
        for name in ("min_resolution", "max_resolution", "resolution_step"):
            checks.integer(name, getattr(self, name), 1)
        if self.min_resolution > self.max_resolution:
            raise ConfigError(
                "min_resolution", f"{self.min_resolution} is larger than max_resolution {self.max_resolution}"
            )
        if (self.max_resolution - self.min_resolution) % self.resolution_step:
            raise ConfigError(
                "resolution_step",
                f"{self.resolution_step} does not divide "
                f"max_resolution - min_resolution = {self.max_resolution - self.min_resolution}",
            )
        for name in ("min_width", "max_width", "resolution_end_weight"):
            checks.number(name, getattr(self, name), WIDTH_RANGE)
        if self.min_width > self.max_width:
            raise ConfigError("min_width", f"{self.min_width} is larger than max_width {self.max_width}")
        checks.integer("width_bins", self.width_bins, 0)
        if self.width_bins and not len(self.width_values):
            raise ConfigError(
                "width_bins",
                f"no multiple of 1/{self.width_bins} lies in [min_width, max_width] = [{self.min_width}, {self.max_width}]",
            )

    @property
    def width_scale(self) -> int:
        """Every multiplier of the space is a multiple of 1/width_scale."""
        return self.width_bins or 10**self.decimals

    @functools.cached_property
    def _width_codes(self) -> np.ndarray:
        scale = self.width_scale
        # The tolerance keeps float error (0.07 * 100 = 7.000000000000001) from skipping a value.
        return np.arange(math.ceil(self.min_width * scale - 1e-9), math.floor(self.max_width * scale + 1e-9) + 1)

    @functools.cached_property
    def width_values(self) -> np.ndarray:
        """Every multiplier a stage can take, increasing (read only): the very floats draws give."""
        codes = self._width_codes
        values = codes / self.width_scale if self.width_bins else np.round(codes / self.width_scale, self.decimals)
        values.setflags(write=False)
        return values

    def snap_widths(self, widths: np.ndarray) -> np.ndarray:
        """Multipliers in [min_width, max_width] moved to the nearest value of the space."""
        if not self.width_bins:
            return np.round(widths, self.decimals)
        codes = np.clip(np.rint(np.asarray(widths) * self.width_bins), self._width_codes[0], self._width_codes[-1])
        return codes / self.width_bins

    @property
    def widest(self) -> float:
        """The largest multiplier of the space (max_width, or the largest bin below it)."""
        return float(self.width_values[-1]) if self.width_bins else self.max_width

    @property
    def thinnest(self) -> float:
        """The smallest multiplier of the space (min_width, or the smallest bin above it)."""
        return float(self.width_values[0]) if self.width_bins else self.min_width

    @property
    def num_stages(self) -> int:
        return architectures.get_architecture(self.model).num_stages

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(range(self.min_resolution, self.max_resolution + 1, self.resolution_step))

    def max_config(self) -> SubnetConfig:
        return SubnetConfig.uniform(self.model, self.max_resolution, self.widest)

    def min_config(self) -> SubnetConfig:
        return SubnetConfig.uniform(self.model, self.min_resolution, self.thinnest)

    @functools.cached_property
    def resolution_probabilities(self) -> tuple[float, ...]:
        """The probability of each resolution in a random draw (ends weighted, see above)."""
        weights = [1.0] * len(self.resolutions)
        if len(weights) > 1:
            weights[0] = weights[-1] = self.resolution_end_weight
        total = math.fsum(weights)
        return tuple(w / total for w in weights)

    def random_config(self, rng: _random.Random | None = None) -> SubnetConfig:
        """One random config (Python's `random`, for reproducible runs)."""
        rng = rng or _random.Random()
        if self.width_bins:
            widths = tuple(float(rng.choice(self.width_values)) for _ in range(self.num_stages))
        else:
            widths = tuple(
                round(rng.uniform(self.min_width, self.max_width), self.decimals)
                for _ in range(self.num_stages)
            )
        resolution = rng.choices(self.resolutions, weights=self.resolution_probabilities)[0]
        return SubnetConfig(self.model, resolution, widths)

    def sample_arrays(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`n` random configs as arrays: resolutions (n,) and widths (n, stages)."""
        resolutions = rng.choice(np.asarray(self.resolutions), size=n, p=self.resolution_probabilities)
        if self.width_bins:
            return resolutions, self.width_values[rng.integers(0, len(self.width_values), size=(n, self.num_stages))]
        widths = np.round(
            rng.uniform(self.min_width, self.max_width, size=(n, self.num_stages)), self.decimals
        )
        return resolutions, widths

    def contains(self, config: SubnetConfig) -> bool:
        return not self.violations(config)

    def violations(self, config: SubnetConfig) -> list[str]:
        """Why `config` lies outside this space (empty when it lies inside)."""
        problems = []
        if config.model != self.model:
            problems.append(f"model: {config.model!r} is not {self.model!r}")
            return problems
        if config.resolution not in self.resolutions:
            problems.append(
                f"resolution: {config.resolution} is not one of {self.min_resolution}.."
                f"{self.max_resolution} step {self.resolution_step}"
            )
        for i, w in enumerate(config.widths):
            if not (self.min_width - 1e-9 <= w <= self.max_width + 1e-9):
                problems.append(f"widths[{i}]: {w} is outside [{self.min_width}, {self.max_width}]")
            elif self.width_bins and abs(w * self.width_bins - round(w * self.width_bins)) > 1e-6:
                problems.append(f"widths[{i}]: {w} is not a multiple of 1/{self.width_bins} (width_bins)")
        return problems

    def to_dict(self) -> dict:
        """The fields; `width_bins` only when set, so files of spaces without bins read as before."""
        data = dataclasses.asdict(self)
        if not self.width_bins:
            del data["width_bins"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SearchSpace":
        return cls(**data)


def in_space(config: SubnetConfig, space: SearchSpace, field: str, what: str) -> SubnetConfig:
    """`config`, or a ConfigError naming `field` and why `what` lies outside the space the supernet trained."""
    problems = space.violations(config)
    if problems:
        raise ConfigError(field, f"{what} lies outside the run's search space: " + "; ".join(problems))
    return config
