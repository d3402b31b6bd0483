"""What `tools/finetune.py` is told: one flag per field.

A subnet is fine-tuned as the standalone model that ships (the extracted Keras
model: standard layers, fused batch norm) with the release's optimiser family:
SGD with Nesterov momentum, cosine decay to zero per step after an optional
linear warm-up, L2 decay on conv and classifier kernels only. Defaults that
depend on the run (batch size, decay, learning rate) are resolved by
`FinetuneOptions.recipe`. Validation raises `ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import os

from pss_tf import config_flags
from pss_tf.config_flags import option
from pss_tf.errors import ConfigError

# What `--subnets` takes besides winner names and config JSON.
ALL_WINNERS = "winners"
ALL_SEARCHED = "searched"

# Fine-tuning from inherited weights starts at this fraction of the run's
# learning rate unless `learning_rate` says otherwise; from scratch, at the run's.
INHERITED_LEARNING_RATE_FACTOR = 0.1


@dataclasses.dataclass(frozen=True)
class FinetuneOptions(config_flags.Declared):
    """Everything `tools/finetune.py` is told (one flag per field)."""

    job_dir: str = option(
        "", help="The training run whose subnets to fine-tune.", resumable=True, required=True, path=True
    )
    subnets: tuple[str, ...] = option(
        (),
        help="Comma-separated: winner names (e.g. flops_6M), `winners` (all of them), `searched` (tools/search.py's "
        "subnets) or a SubnetConfig as JSON (repeat the flag for several JSON configs).",
        repeated=True,
    )
    epochs: int = option(
        3,
        help="Epochs of fine-tuning per subnet (3: on Fashion-MNIST's winners +1.09 points against +0.59 for one "
        "epoch, more at every winner; docs/RESULTS.md).",
        minimum=1,
    )
    steps_per_epoch: int = option(0, help="Steps per epoch (0: one pass over the run's training examples).", minimum=0)
    batch_size: int = option(0, help="Batch size (0: the run's global batch size).", minimum=0)
    learning_rate: float = option(
        0.0,
        help=f"Peak learning rate (0: the run's, times {INHERITED_LEARNING_RATE_FACTOR:g} from inherited weights; "
        "the run's from scratch).",
        minimum=0.0,
    )
    warmup_epochs: float = option(0.0, help="Linear warm-up epochs before the cosine decay.", minimum=0.0)
    momentum: float = option(0.9, help="Nesterov momentum.", minimum=0.0, below=1.0)
    weight_decay: float | None = option(
        None, help="L2 decay of conv and classifier kernels (default: the run's).", minimum=0.0
    )
    from_scratch: bool = option(
        False, help="Re-initialise the subnet (the release's initialisers) instead of inheriting its weights."
    )
    distill: bool = option(
        False,
        help="Learn from the supernet's max net (BN-calibrated) as the teacher: KL divergence from its softmax, as "
        "training distils the subnets it draws, instead of the labels.",
    )
    calibration_batches: int = option(
        0, help="BN calibration batches before fine-tuning (0: the run's setting).", minimum=0
    )
    seed: int = option(0, help="Seed of the data order, augmentation and re-initialisation.", minimum=0)
    data_dir: str | None = option(None, help="The run's data, if it moved since training.", resumable=True, path=True)
    out: str = option("", help="Output directory (default: JOB_DIR/finetune).", resumable=True, path=True)
    progress: bool = option(True, help="Progress bars.", resumable=True)

    @property
    def out_dir(self) -> str:
        return self.out or os.path.join(self.job_dir, "finetune")

    def validate(self) -> None:
        config_flags.check_declared(self)  # Every field's kind and range; job_dir given.
        if not self.subnets:
            raise ConfigError("subnets", f"name at least one: a winner's name, {ALL_WINNERS}, {ALL_SEARCHED} or a config JSON")
        if self.warmup_epochs >= self.epochs:
            raise ConfigError("warmup_epochs", f"must be shorter than epochs ({self.epochs}), got {self.warmup_epochs}")

    @property
    def mode(self) -> str:
        return "from_scratch" if self.from_scratch else "inherited"

    def settings(self) -> dict:
        """The values a saved fine-tuning must share to be resumed."""
        values = config_flags.leaf_values(self)
        skip = {leaf.name for leaf in config_flags.leaves(FinetuneOptions) if leaf.resumable} | {"subnets"}
        return {name: value for name, value in values.items() if name not in skip}

    def recipe(self, run_config, steps_per_epoch: int) -> dict:
        """The resolved training recipe against the run's config (`TrainConfig`)."""
        opt = run_config.optimization
        learning_rate = self.learning_rate or (
            opt.learning_rate if self.from_scratch else opt.learning_rate * INHERITED_LEARNING_RATE_FACTOR
        )
        steps = self.steps_per_epoch or steps_per_epoch
        return {
            "mode": self.mode,
            "distill": self.distill,
            "epochs": self.epochs,
            "steps_per_epoch": steps,
            "total_steps": steps * self.epochs,
            "warmup_steps": round(self.warmup_epochs * steps),
            "batch_size": self.batch_size or opt.global_batch_size,
            "learning_rate": learning_rate,
            "momentum": self.momentum,
            "nesterov": True,
            "weight_decay": opt.weight_decay if self.weight_decay is None else self.weight_decay,
            "seed": self.seed,
        }

