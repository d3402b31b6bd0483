"""Everything a training run is told, in groups, validated before any heavy work.

`TrainConfig` is what `tools/train.py` builds from its flags (one flag per leaf
field, `pss_tf.config_flags`) and what a job directory's `run.json` records, so
a resumed run can check it continues the same experiment. Validation raises
`ConfigError` naming the field to fix.
"""

from __future__ import annotations

import dataclasses
from pss_tf import checks, config_flags, cpu_kernels
from pss_tf.config_flags import group, option
from pss_tf.errors import ConfigError
from pss_tf.run import compat, modes
from pss_tf.run import metrics as metric_kinds
from pss_tf.space import architectures
from pss_tf.space.config import SearchSpace

# Records run.json keeps beside the config, of where a run's first weights came
# from: an imported release checkpoint (tools/import_release.py), or the source
# run of a warm start (path, step, checksum).
IMPORTED_KEY = "imported"
INIT_SOURCE = "init_source"
PROVENANCE_KEYS = (IMPORTED_KEY, INIT_SOURCE)


# The subnet samplers of `--sampler` (besides auto, the training mode's own).
SAMPLERS = ("pss", "uniform", "conditional")
# SpaceConfig's fields that shape the supernet rather than the subnets drawn from it.
SUPERNET_FIELDS = ("small_input", "bn_epsilon", "resize_align_corners", "padding")


@dataclasses.dataclass(frozen=True)
class SpaceConfig:
    """The supernet and the subnets it is trained for."""

    model: str = option(
        "mobilenet_v1",
        help=f"Supernet: one of {', '.join(architectures.MODEL_NAMES)}, or one at a base width w as <model>_<w>x "
        "(mobilenet_v2_1.5x: every layer 1.5 times as wide, the last conv 1920, as AutoSlim and BCNet prune).",
    )
    small_input: bool = option(False, help="Stem stride 1, for 28 to 64 pixel images.")
    min_resolution: int = option(128, help="Smallest subnet resolution.", minimum=1)
    max_resolution: int = option(224, help="Largest subnet resolution (images load at it).", minimum=1)
    resolution_step: int = option(8, help="Resolution grid step.", minimum=1)
    min_width: float = option(0.75, help="Smallest width multiplier.", above=0.0, maximum=1.0)
    max_width: float = option(1.0, help="Largest width multiplier.", above=0.0, maximum=1.0)
    width_bins: int = option(
        0,
        help="0: multipliers anywhere in [min_width, max_width] (3 decimals, the release); N: only the multiples "
        "k/N in that range, each as likely (channel-pruning spaces: BCNet's 20 bins, AutoSlim's 12).",
        minimum=0,
    )
    resolution_end_weight: float = option(
        0.5,
        help="Weight of the smallest and largest resolution against an inner one when subnets are drawn "
        "(0.5: the release's make_divisible(uniform(min, max)) draw; 1: uniform).",
        above=0.0,
        maximum=1.0,
    )
    bn_epsilon: float = option(1e-5, help="Epsilon of every batch norm (1e-5 as the release).", above=0.0, below=1.0)
    resize_align_corners: bool = option(
        True, help="The network resizes its input bilinearly with align_corners (the release) or half-pixel centres."
    )
    padding: str = option(
        "same",
        help="How strided 3x3 convs pad: same (TensorFlow's: bottom and right only on even sizes) or symmetric "
        "(the release's PyTorch padding=1; imported release weights need it).",
        choices=("same", "symmetric"),
    )

    def search_space(self) -> SearchSpace:
        return SearchSpace(**config_flags.keyword_arguments(SearchSpace, self, elsewhere=SUPERNET_FIELDS))

    def supernet_arguments(self, **given) -> dict:
        """`Supernet`'s arguments from the architecture fields, plus `given` (the
        dataset's classes and channels, and what other groups set)."""
        from pss_tf.models.supernet import Supernet

        return config_flags.keyword_arguments(
            Supernet, self, renamed={"model": "model_name", "resize_align_corners": "align_corners"},
            elsewhere=(SearchSpace,), **given,
        )

    def validate(self) -> None:
        self.search_space()  # Raises ConfigError naming the field.


class _Targets:
    """What `TargetsConfig` does with the fields `pss_tf.run.metrics` declares for it."""

    def grid(self, metric: str) -> tuple[float, ...]:
        """What `<metric>_targets` holds: `start, stop, step`, a count `N`, or ()."""
        return getattr(self, f"{metric}_targets")

    def grid_form(self, metric: str) -> str:
        """How `metric`'s grid is given: "range" (start,stop,step), "count" (N targets
        spread over the space) or "automatic" (nothing given); the latter two are
        chosen from the space when the run starts."""
        return _grid_form(self.grid(metric))

    def validate(self) -> None:
        if not self.metrics:
            raise ConfigError("metrics", "name at least one metric")
        if len(set(self.metrics)) != len(self.metrics):
            raise ConfigError("metrics", f"a metric is named twice in {list(self.metrics)}")
        for name in metric_kinds.METRIC_NAMES:
            grid = self.grid(name)
            if grid and name not in self.metrics:
                raise ConfigError(f"{name}_targets", f"metric {name!r} is not in `metrics`")
            if grid:
                _check_grid(f"{name}_targets", grid)
        metric_kinds.check_tables(self)


# One option per metric's target grid and per table, declared from `pss_tf.run.metrics`.
TargetsConfig = dataclasses.make_dataclass(
    "TargetsConfig",
    [
        ("metrics", tuple[str, ...],
         option(("flops",), help="Resource metrics with pools.", choices=metric_kinds.METRIC_NAMES)),
        *metric_kinds.target_options(option),
    ],
    bases=(_Targets,),
    namespace={"__module__": __name__, "__doc__": "The resource metrics that have pools, their target grids and tables."},
    frozen=True,
)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How the subnet trained beside the max and min nets is chosen (PSS)."""

    sampler: str = option(
        "auto",
        help="Which subnets train: pss (pools and priorities), conditional (fresh subnets for uniformly chosen "
        "targets, no priorities), uniform (the baseline: uniformly random subnets), or auto (the mode's own: "
        "pss with sandwich, conditional with pse).",
        choices=("auto",) + SAMPLERS,
    )
    mode: str = option("sandwich", help=f"Training mode: {modes.help_text()}", choices=modes.NAMES)
    parallel_subnets: int = option(
        1,
        help="Subnets per masked pass (PSE-Net): 1 trains them one after the other; with sandwich, N carries the "
        "thinnest subnet of the step's resolution and N-1 chosen ones, each on 1/N of the batch.",
        minimum=1,
    )
    pse_anchor: bool = option(False, help="With mode pse, the widest subnet of the step's resolution in every group.")
    pool_capacity: int = option(50, help="Subnets per pool (K).", minimum=1)
    score_momentum: float = option(0.9, help="EMA momentum of pool scores.", minimum=0.0, below=1.0)
    p_fresh_start: float = option(1.0, help="Fresh-sampling probability at epoch 0.", above=0.0, maximum=1.0)
    p_fresh_end: float = option(0.01, help="Fresh-sampling probability at the last epoch.", above=0.0, maximum=1.0)
    temperature_start: float = option(1.0, help="Pool softmax temperature at epoch 0.", above=0.0)
    temperature_end: float = option(0.01, help="Pool softmax temperature at the last epoch.", above=0.0)
    sampler_samples: int = option(
        100_000, help="Random subnets strictly inside the target grid that the conditional sampler bins.",
        minimum=1,
    )
    sampler_extremes: bool = option(
        False,
        help="Also bin every uniform-width and correlated subnets, so the grid's end targets get pools "
        "(pss_tf's option for small spaces; the release has pools strictly inside the grid only).",
    )

    @property
    def subnet_sampler(self) -> str:
        """The sampler that runs: `sampler`, or with auto the mode's own (`modes.own_sampler`)."""
        return modes.own_sampler(self.mode) if self.sampler == "auto" else self.sampler

    def validate(self) -> None:
        modes.check_parallel_subnets(self.mode, self.parallel_subnets)
        if self.pse_anchor and self.mode != "pse":
            raise ConfigError("pse_anchor", "given without `mode` pse")


@dataclasses.dataclass(frozen=True)
class OptimizationConfig:
    """SGD, the learning-rate schedule and what the step computes in."""

    epochs: int = option(250, help="Training epochs.", minimum=1)
    global_batch_size: int = option(1024, help="Batch over all replicas.", minimum=1)
    steps_per_epoch: int = option(0, help="Steps per epoch (0: one pass over the training split).", minimum=0)
    learning_rate: float = option(0.3, help="Peak learning rate (cosine decay to zero per step).", above=0.0)
    warmup_epochs: float = option(0.0, help="Linear warm-up length in epochs.", minimum=0.0)
    momentum: float = option(0.9, help="Nesterov momentum.", minimum=0.0, below=1.0)
    weight_decay: float = option(1e-4, help="L2 decay of conv and classifier kernels.", minimum=0.0)
    dropout_rate: float = option(0.0, help="Dropout before the classifier.", minimum=0.0, below=1.0)
    synchronized_bn: bool = option(False, help="BN statistics over all replicas (global-batch semantics).")
    mixed_precision: str = option("none", help="Compute dtype.", choices=("none", "float16", "bfloat16"))

    def validate(self) -> None:
        if not self.warmup_epochs < self.epochs:
            raise ConfigError("warmup_epochs", f"must lie in [0, `epochs`), got {self.warmup_epochs}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset, where, and the training augmentation."""

    dataset: str = option(
        "synthetic", help="synthetic, fashion_mnist, imagefolder, or a TFDS name (e.g. imagenet2012)."
    )
    data_dir: str | None = option(
        None, help="Data location (fashion_mnist defaults to /usr/share/datasets/fashion-mnist).", path=True
    )
    crop_scale_min: float = option(0.25, help="Smallest area fraction of the random resized crop.", above=0.0, maximum=1.0)
    flip: bool = option(True, help="Random horizontal flips in training.")
    color_jitter: float = option(
        0.4, help="Brightness, contrast and saturation jitter strength in training (0: none).",
        minimum=0.0,
        below=1.0,
    )
    lighting: float = option(0.1, help="Std of AlexNet-style PCA lighting noise in training, RGB only (0: none).", minimum=0.0)
    normalization: str = option(
        "imagenet",
        help="How pixels become inputs: imagenet (mean/std), minus_one_to_one (x / 127.5 - 1).",
        choices=("imagenet", "minus_one_to_one"),
    )
    crop_fraction: float = option(
        0.875, help="Evaluation (and serving): resize the shorter side to size/crop_fraction, centre-crop size.",
        above=0.0,
        maximum=1.0,
    )
    synthetic_train_examples: int = option(1024, help="Size of synthetic train.", minimum=1)
    synthetic_val_examples: int = option(256, help="Size of synthetic val.", minimum=1)
    synthetic_classes: int = option(10, help="Classes of the synthetic dataset.", minimum=1)
    synthetic_channels: int = option(3, help="Channels of the synthetic dataset's images.", choices=(1, 3))
    holdout_examples: int = option(
        0,
        help="Keep N training examples out of training and BN calibration (held-out data for the search); >= 0.",
    )
    classes: tuple[int, ...] = option(
        (),
        help="Train and evaluate on these classes only, relabelled 0..k-1 in the order given (comma-separated "
        "labels; empty: every class). Indexed datasets only.",
    )
    holdout_selection: str = option(
        "stratified",
        help="Which examples holdout_examples keeps out: stratified (a draw seeded by --seed, every class its "
        "share) or last (the split's last N in file order, as runs before this option; class-sorted sources such "
        "as image folders then lose whole classes).",
        choices=("stratified", "last"),
    )


    def validate(self) -> None:
        if not checks.is_integer(self.holdout_examples, 0):  # Its message predates pss_tf.checks'.
            raise ConfigError("holdout_examples", f"must be an int >= 0, got {self.holdout_examples!r}")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """BN calibration and validation during and at the end of training."""

    calibration_batches: int = option(
        9, help="Batches for BN re-estimation (the release's ComputeBN(num_batch=8) runs 9: it checks after the forward).",
        minimum=1,
    )
    eval_batch_size: int = option(256, help="Evaluation batch size.", minimum=1)
    eval_every_epochs: int = option(1, help="Evaluate every N epochs.", minimum=1)
    eval_winners_per_epoch: int = option(3, help="Pool winners evaluated per epoch.", minimum=0)
    final_top_k: int = option(5, help="Members per pool validated at the end; best kept.", minimum=1)


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How the run executes; most of it may change when a run is resumed."""

    strategy: str = option(
        "mirrored", help="tf.distribute strategy.", choices=("mirrored", "multi_worker", "one_device"), resumable=True
    )
    seed: int = option(0, help="Seed of every random choice.", minimum=0)
    deterministic: bool = option(False, help="TensorFlow's deterministic ops (slower).", resumable=True)
    batch_norm_kernel: str = option(
        "auto",
        help="How training batch norm's fused kernel sees the maps: nhwc, as (N, H, W, C); flat, as "
        "(N*H*W, 1, 1, C), equal up to rounding and about 3.6x faster with oneDNN on AVX2-only CPUs (1.12x the time "
        "with AVX-512); auto: flat where oneDNN runs without AVX-512.",
        choices=cpu_kernels.BATCH_NORM_KERNELS,
        resumable=True,
    )
    resume: bool = option(False, help="Continue the run in job_dir.", resumable=True)
    max_steps: int = option(0, help="Stop after this many steps in total, resumably (0: no).", resumable=True, minimum=0)
    checkpoint_every_steps: int = option(0, help="Extra checkpoints (0: epochs).", resumable=True, minimum=0)
    keep_checkpoints: int = option(3, help="Checkpoints kept.", minimum=1)
    log_every_steps: int = option(10, help="TensorBoard scalars every N steps.", resumable=True, minimum=1)
    progress: bool = option(True, help="Progress bars and per-epoch summaries on stdout.", resumable=True)


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    """Starting from another run's supernet (`pss_tf.training.warm_start`)."""

    init_from: str = option(
        "",
        help="A pss_tf run (trained or imported) whose supernet weights and BN statistics start this run (not its "
        "optimizer, step or schedule). Same model; this run's space must lie inside its space.",
        path=True,
    )
    init_pools: bool = option(
        False,
        help="With init_from: seed the pools with its members that lie in this run's space and grid, each scored "
        "afresh on the first training batch.",
    )

    def validate(self) -> None:
        if self.init_pools and not self.init_from:
            raise ConfigError("init_pools", "needs init_from (the run whose pools seed this one)")


@dataclasses.dataclass(frozen=True)
class TrainConfig(config_flags.Declared):
    job_dir: str = option(
        "", help="Directory for checkpoints, pools, winners and TensorBoard events.", required=True, path=True
    )
    space: SpaceConfig = group(SpaceConfig)
    targets: TargetsConfig = group(TargetsConfig)
    sampling: SamplingConfig = group(SamplingConfig)
    optimization: OptimizationConfig = group(OptimizationConfig)
    data: DataConfig = group(DataConfig)
    evaluation: EvaluationConfig = group(EvaluationConfig)
    runtime: RuntimeConfig = group(RuntimeConfig)
    warm_start: WarmStartConfig = group(WarmStartConfig)

    def search_space(self) -> SearchSpace:
        return self.space.search_space()

    def data_settings(self):
        """The run's `DataSettings`: every pipeline of training, evaluation and export."""
        from pss_tf.data.settings import DataSettings
        from pss_tf.data.sources import SyntheticSpec

        data = self.data
        synthetic = SyntheticSpec(
            num_classes=data.synthetic_classes, channels=data.synthetic_channels,
            num_train=data.synthetic_train_examples, num_val=data.synthetic_val_examples,
        )
        return DataSettings(**config_flags.keyword_arguments(
            DataSettings, data,
            elsewhere=("crop_scale_min", "synthetic_classes", "synthetic_channels", "synthetic_train_examples",
                       "synthetic_val_examples"),
            image_size=self.space.max_resolution, synthetic=synthetic, crop_scale=(data.crop_scale_min, 1.0),
            selection_seed=self.runtime.seed,
        ))

    def leaf_values(self) -> dict:
        """`{field name: value}` over every group."""
        return config_flags.leaf_values(self)

    def validate(self) -> None:
        """Raises ConfigError naming the first bad field."""
        config_flags.check_declared(self)  # Every field's kind, choices and range.
        for part in (self.space, self.targets, self.sampling, self.optimization, self.data, self.warm_start):
            part.validate()  # What involves several fields.
        batch, parallel = self.optimization.global_batch_size, self.sampling.parallel_subnets
        if batch % parallel:  # The replicas split each slice again: the trainer checks that.
            raise ConfigError(
                "global_batch_size", f"{batch} does not split into {parallel} equal slices (`parallel_subnets`)"
            )

    def to_dict(self) -> dict:
        return config_flags.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Reads the nested form, or the flat one `run.json` had before the groups.

        Records of where a run's first weights came from (`PROVENANCE_KEYS`:
        an import, a warm start) sit beside the config and are left out.
        """
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in PROVENANCE_KEYS}
        if isinstance(data, dict) and "space" not in data:
            data = _from_flat(data)
        return config_flags.from_dict(cls, _with_fields_added_since(data), "run.json")

    def differences(self, other: "TrainConfig") -> list[str]:
        """Leaf fields whose values differ, ignoring those a resumed run may change."""
        mine, theirs = config_flags.leaf_values(self), config_flags.leaf_values(other)
        resumable = {leaf.name for leaf in config_flags.leaves(TrainConfig) if leaf.resumable}
        return sorted(k for k in mine if k not in resumable and mine[k] != theirs[k])


def _with_fields_added_since(data: dict) -> dict:
    """A recorded run's config with the behaviour it had for fields added after it.

    `holdout_selection`: runs recorded before it held out their last
    `holdout_examples` examples; they keep that set (what they never trained on).
    """
    group = data.get("data") if isinstance(data, dict) else None
    if isinstance(group, dict) and "holdout_selection" not in group and group.get("holdout_examples"):
        data = {**data, "data": {**group, "holdout_selection": "last"}}
    return data


def _from_flat(data: dict) -> dict:
    """The nested form of a run.json written before configs had groups (pss_tf 0.1)."""
    return compat.nested_run_config(data, {leaf.name: leaf.path for leaf in config_flags.leaves(TrainConfig)})


def _grid_form(grid) -> str:
    """The form of a `<metric>_targets` value: "range", "count" or "automatic";
    "invalid" for any other length (`_check_grid` refuses it)."""
    return {3: "range", 1: "count", 0: "automatic"}.get(len(grid), "invalid")


def _check_grid(field: str, grid) -> None:
    form = _grid_form(grid)
    if form == "count":
        count = grid[0]
        if not (float(count).is_integer() and count >= 2):
            raise ConfigError(field, f"a count of targets must be an integer of at least 2, got {count:g}")
        return
    if form != "range":
        raise ConfigError(field, f"expected start,stop,step or a count of targets N, got {list(grid)}")
    start, stop, step = (checks.number(field, float(v)) for v in grid)
    if step <= 0:
        raise ConfigError(field, f"step must be positive, got {step:g}")
    if start > stop:
        raise ConfigError(field, f"empty or inverted range: start {start:g} > stop {stop:g}")
