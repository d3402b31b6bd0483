"""Everything a training run is told, validated before any heavy work.

`TrainConfig` is what `tools/train.py` builds from its flags and what a job
directory's `run.json` records, so a resumed run can check it continues the
same experiment. Validation errors name the flag to fix.
"""

from __future__ import annotations

import dataclasses
import math

from pss_tf import architectures
from pss_tf.config import SearchSpace

SAMPLERS = ("pss", "uniform")
METRIC_NAMES = ("flops", "latency_cpu")
MIXED_PRECISION = ("none", "float16", "bfloat16")

# Fields a resumed run may change without starting a different experiment.
RESUMABLE_CHANGES = frozenset(
    {"resume", "max_steps", "log_every_steps", "progress", "checkpoint_every_steps", "strategy", "deterministic"}
)


@dataclasses.dataclass
class TrainConfig:
    job_dir: str
    model: str = "mobilenet_v1"
    small_input: bool = False
    dataset: str = "synthetic"
    data_dir: str | None = None
    # Search space.
    min_resolution: int = 128
    max_resolution: int = 224
    resolution_step: int = 8
    min_width: float = 0.75
    max_width: float = 1.0
    # Resource targets: metric name -> (start, stop, step); an empty tuple picks a grid.
    metrics: tuple[str, ...] = ("flops",)
    targets: dict = dataclasses.field(default_factory=dict)
    # Lookup table of the latency_cpu metric (tools/build_lut.py).
    latency_cpu_lut: str | None = None
    # Subnet sampling.
    sampler: str = "pss"
    pool_capacity: int = 50
    score_momentum: float = 0.9
    p_fresh_start: float = 1.0
    p_fresh_end: float = 0.01
    temperature_start: float = 1.0
    temperature_end: float = 0.01
    sampler_samples: int = 100_000
    # Optimisation.
    epochs: int = 250
    global_batch_size: int = 1024
    learning_rate: float = 0.4
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    dropout_rate: float = 0.0
    synchronized_bn: bool = False
    mixed_precision: str = "none"
    steps_per_epoch: int = 0  # 0: one pass over the training split
    # Data augmentation.
    crop_scale_min: float = 0.08
    flip: bool = True
    synthetic_train_examples: int = 1024
    synthetic_val_examples: int = 256
    synthetic_classes: int = 10
    # Evaluation.
    calibration_batches: int = 8
    eval_batch_size: int = 256
    eval_every_epochs: int = 1
    eval_winners_per_epoch: int = 3
    final_top_k: int = 1
    # Running.
    strategy: str = "mirrored"
    seed: int = 0
    deterministic: bool = False
    resume: bool = False
    max_steps: int = 0  # stop (as if interrupted) after this many steps in total; 0: never
    checkpoint_every_steps: int = 0  # 0: at the end of every epoch only
    keep_checkpoints: int = 3
    log_every_steps: int = 10
    progress: bool = True

    def search_space(self) -> SearchSpace:
        return SearchSpace(
            self.model,
            self.min_resolution,
            self.max_resolution,
            self.resolution_step,
            self.min_width,
            self.max_width,
        )

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        if not self.job_dir:
            raise ValueError("--job_dir: required")
        if self.model not in architectures.MODEL_NAMES:
            raise ValueError(f"--model: unknown model {self.model!r}; expected one of {list(architectures.MODEL_NAMES)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler: unknown sampler {self.sampler!r}; expected one of {list(SAMPLERS)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"--mixed_precision: expected one of {list(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        try:
            self.search_space()
        except ValueError as e:
            raise ValueError(f"--{e}") from None
        if not self.metrics:
            raise ValueError("--metrics: name at least one metric")
        for name in self.metrics:
            if name not in METRIC_NAMES:
                raise ValueError(f"--metrics: unknown metric {name!r}; expected one of {list(METRIC_NAMES)}")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"--metrics: a metric is named twice in {list(self.metrics)}")
        for name, grid in self.targets.items():
            if name not in self.metrics:
                raise ValueError(f"--{name}_targets: metric {name!r} is not in --metrics")
            if grid:
                _check_grid(name, grid)
        if "latency_cpu" in self.metrics and not self.latency_cpu_lut:
            raise ValueError("--latency_cpu_lut: required with --metrics=latency_cpu (build one with tools/build_lut.py)")
        if self.latency_cpu_lut and "latency_cpu" not in self.metrics:
            raise ValueError("--latency_cpu_lut: given but latency_cpu is not in --metrics")
        _positive_int("pool_capacity", self.pool_capacity)
        _positive_int("epochs", self.epochs)
        _positive_int("global_batch_size", self.global_batch_size)
        _positive_int("sampler_samples", self.sampler_samples)
        _positive_int("calibration_batches", self.calibration_batches)
        _positive_int("eval_batch_size", self.eval_batch_size)
        _positive_int("eval_every_epochs", self.eval_every_epochs)
        _positive_int("final_top_k", self.final_top_k)
        _positive_int("keep_checkpoints", self.keep_checkpoints)
        _positive_int("log_every_steps", self.log_every_steps)
        for name in ("steps_per_epoch", "max_steps", "checkpoint_every_steps", "eval_winners_per_epoch"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.score_momentum < 1.0:
            raise ValueError(f"--score_momentum: must lie in [0, 1), got {self.score_momentum}")
        for name in ("p_fresh_start", "p_fresh_end"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"--{name}: a probability in (0, 1], got {getattr(self, name)}")
        for name in ("temperature_start", "temperature_end", "learning_rate"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"--{name}: must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"--warmup_epochs: must lie in [0, --epochs), got {self.warmup_epochs}")
        if self.weight_decay < 0:
            raise ValueError(f"--weight_decay: must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"--momentum: must lie in [0, 1), got {self.momentum}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"--dropout_rate: must lie in [0, 1), got {self.dropout_rate}")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(f"--crop_scale_min: must lie in (0, 1], got {self.crop_scale_min}")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["metrics"] = list(self.metrics)
        data["targets"] = {k: list(v) for k, v in self.targets.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"run.json: unknown field(s) {sorted(unknown)}")
        data = dict(data)
        data["metrics"] = tuple(data.get("metrics", ("flops",)))
        data["targets"] = {k: tuple(v) for k, v in data.get("targets", {}).items()}
        return cls(**data)

    def differences(self, other: "TrainConfig") -> list[str]:
        """Flags whose values differ, ignoring those a resumed run may change."""
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs.get(k))


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--{name}: must be a positive int, got {value!r}")


def _check_grid(name: str, grid) -> None:
    flag = f"--{name}_targets"
    if len(grid) != 3:
        raise ValueError(f"{flag}: expected start,stop,step, got {list(grid)}")
    start, stop, step = (float(v) for v in grid)
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise ValueError(f"{flag}: values must be finite, got {list(grid)}")
    if step <= 0:
        raise ValueError(f"{flag}: step must be positive, got {step:g}")
    if start > stop:
        raise ValueError(f"{flag}: empty or inverted range: start {start:g} > stop {stop:g}")
