"""Which subnets an export holds: a run's winners, configs given by hand, or both.

Everything here is cheap and framework-free, so bad input (no winners, a config
outside the search space, two subnets with one name) is refused before any
model is built. Each `Subnet` carries what the manifest and the adaptive
signatures need: its value under every metric of the run.
"""

from __future__ import annotations

import dataclasses
import re

from pss_tf.errors import ConfigError
from pss_tf.pareto import pareto_front
from pss_tf.space.config import SearchSpace, SubnetConfig, in_space
from pss_tf.space.cost import count_flops, param_counts

WINNER = "winner"
CONFIG = "config"
SEARCHED = "searched"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass
class Subnet:
    """One exported subnet.

    `name` becomes its signature name in the SavedModel and in the TFLite
    bundle, and the stem of its file names. `metric` and `target` are the pool
    it won (None for a hand-given config); `values` is its cost under every
    metric of the run, in the metric's unit.
    """

    name: str
    config: SubnetConfig
    source: str
    values: dict[str, float]
    macs_m: float
    params: dict[str, int]  # {"trainable": ..., "all_weights": ...} (pss_tf.space.cost.param_counts)
    metric: str | None = None
    target: float | None = None
    val_top1: float | None = None
    val_top5: float | None = None
    # Validation top-1 measured by the export itself (for hand-given configs).
    measured_top1: float | None = None
    # Fine-tuned weights (tools/finetune.py's weights.npz) instead of the inherited
    # ones; val_top1/val_top5 are then the fine-tuned model's, and these the inherited.
    finetuned_weights: str | None = None
    inherited_top1: float | None = None
    inherited_top5: float | None = None
    # Why the export carries the weights it does, when fine-tuned ones exist (manifest: weights_choice).
    weights_choice: dict | None = None

    @property
    def accuracy(self) -> float | None:
        """What adaptive choices compare: the run's validation top-1, else the export's own."""
        return self.val_top1 if self.val_top1 is not None else self.measured_top1

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "metric": self.metric,
            "target": self.target,
            "config": self.config.to_dict(),
            "channels": list(self.config.channels),
            "resolution": self.config.resolution,
            "values": dict(self.values),
            "macs_m": self.macs_m,
            "params": dict(self.params),
            "val_top1": self.val_top1,
            "val_top5": self.val_top5,
            "weights": "finetuned" if self.finetuned_weights else "inherited",
            "inherited_val_top1": self.inherited_top1 if self.finetuned_weights else self.val_top1,
            "inherited_val_top5": self.inherited_top5 if self.finetuned_weights else self.val_top5,
            **({"weights_choice": dict(self.weights_choice)} if self.weights_choice else {}),
        }

    def use_finetuned(self, entry: dict, weights_file: str, always: bool = False) -> None:
        """Carries the fine-tuned weights of a finetuned.json `entry` (same config) from now on,
        unless they validated below the inherited ones and not `always`: then the inherited
        weights stay, and `weights_choice` says so with both accuracies."""
        if entry["config"] != self.config.to_dict():
            raise ConfigError(
                "finetuned", f"{self.name} was fine-tuned as {entry['config']}, but the export's {self.name} is "
                f"{self.config.to_dict()}",
            )
        before, after = entry.get("val_top1_before"), entry["val_top1_after"]
        worse = before is not None and after < before
        kept = "finetuned" if always or not worse else "inherited"
        self.weights_choice = {
            "weights": kept, "inherited_val_top1": before, "finetuned_val_top1": after,
            "rule": "fine-tuned weights on request (finetuned_always)" if always else
            "the better of the inherited and the fine-tuned weights by validation top-1 (ties: fine-tuned)",
        }
        if kept == "inherited":
            if before is not None and self.val_top1 is None:
                self.val_top1, self.val_top5 = before, entry.get("val_top5_before")
            return
        self.inherited_top1 = entry.get("val_top1_before", self.val_top1)
        self.inherited_top5 = entry.get("val_top5_before", self.val_top5)
        self.val_top1, self.val_top5 = entry["val_top1_after"], entry.get("val_top5_after")
        self.finetuned_weights = weights_file


def parse_config(text: str, space: SearchSpace) -> SubnetConfig:
    """A `config` JSON, checked to lie in the space the supernet was trained on.

    Outside it the shared weights were never trained (or do not exist, for a
    width above the maximum), so an export would be meaningless.
    """
    try:
        config = SubnetConfig.from_json(text)
    except ValueError as e:
        raise ConfigError("config", f"{e}") from None
    return in_space(config, space, "config", str(config))


def config_name(config: SubnetConfig, macs_m: float) -> str:
    """A readable signature name for a hand-given config, e.g. `subnet_24px_5p31m`."""
    return f"subnet_{config.resolution}px_{macs_m:.2f}m".replace(".", "p")


def select(
    winners: list[tuple[dict, SubnetConfig]] | None,
    configs: list[SubnetConfig],
    metrics: dict,
    cost_kwargs: dict,
    searched: list[tuple[dict, SubnetConfig]] | None = None,
    finetuned: list[tuple[dict, SubnetConfig, str]] | None = None,
    finetuned_always: bool = False,
) -> list[Subnet]:
    """The subnets to export, sorted by their value under the first metric.

    Args:
        winners: `Job.winners()` entries, or None to skip them.
        configs: hand-given configs (already checked by `parse_config`).
        metrics: the run's metrics by name (`Job.metrics`); the first
            one orders the subnets and drives the default `adaptive` signature.
        cost_kwargs: num_classes, small_input and in_channels, for MACs and
            parameter counts.
        finetuned: (finetuned.json entry, config, weights file) of fine-tuned
            subnets: a chosen subnet of the same name carries those weights (if
            they validated at least as well as the inherited ones, or
            `finetuned_always`), and one not chosen otherwise joins under its own name.
    """
    subnets = []
    for entry, config in searched or []:
        subnets.append(
            _make(config, entry["name"], SEARCHED, metrics, cost_kwargs,
                  metric=entry["metric"], target=entry["budget"],
                  val_top1=entry.get("val_top1"), val_top5=entry.get("val_top5"))
        )
    for entry, config in winners or []:
        subnets.append(
            _make(config, entry["name"], WINNER, metrics, cost_kwargs,
                  metric=entry["metric"], target=entry["target"],
                  val_top1=entry.get("val_top1"), val_top5=entry.get("val_top5"))
        )
    for config in configs:
        macs = count_flops(config, **cost_kwargs)
        subnets.append(_make(config, config_name(config, macs), CONFIG, metrics, cost_kwargs))
    by_name = {s.name: s for s in subnets}
    for entry, config, weights_file in finetuned or []:
        if entry["name"] not in by_name:
            subnet = _make(config, entry["name"], entry.get("source") or CONFIG, metrics, cost_kwargs,
                           metric=entry.get("metric"), target=entry.get("target"))
            subnets.append(subnet)
            by_name[subnet.name] = subnet
        by_name[entry["name"]].use_finetuned(entry, weights_file, finetuned_always)
    if not subnets:
        raise ConfigError("config", "nothing to export: no winners, no searched subnets and no config")
    names = [s.name for s in subnets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError("config", f"two subnets would share the signature name(s) {duplicates}; drop the repeated config")
    for name in names:
        if not _NAME.match(name) or name.startswith(("adaptive", "serving_default")):
            raise ValueError(f"subnet name {name!r} cannot name a signature")
    first = next(iter(metrics))
    return sorted(subnets, key=lambda s: (s.values[first], s.name))


def _make(config, name, source, metrics, cost_kwargs, **fields) -> Subnet:
    return Subnet(
        name=name,
        config=config,
        source=source,
        values={key: float(metric.value(config)) for key, metric in metrics.items()},
        macs_m=float(count_flops(config, **cost_kwargs)),
        params=param_counts(config, **cost_kwargs),
        **fields,
    )


def largest(subnets: list[Subnet], metric: str) -> Subnet:
    """The subnet with the largest value under `metric` (the `serving_default`)."""
    return max(subnets, key=lambda s: s.values[metric])


def candidates(subnets: list[Subnet], metric: str) -> list[Subnet]:
    """The subnets an adaptive signature for `metric` chooses from, by value.

    The winners of that metric's pools, plus every hand-given config (they have
    a value under every metric); winners of other metrics' pools are left to
    their own metric's signature. Of those, only the Pareto front of accuracy
    against value (`pss_tf.pareto`): a larger budget never buys a worse model,
    so running the largest candidate that fits runs the most accurate one. When
    some accuracy is unknown (a config exported without evaluation), all of
    them, by value.
    """
    chosen = [s for s in subnets if s.source == CONFIG or s.metric == metric]
    if all(s.accuracy is not None for s in chosen):
        chosen = pareto_front(chosen, lambda s: s.values[metric], lambda s: s.accuracy)
    return sorted(chosen, key=lambda s: (s.values[metric], s.name))
