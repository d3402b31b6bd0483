"""Reading what pss_tf 0.1 wrote.

pss_tf 0.1 (`__version__` 0.1.x) wrote run.json flat, before configs had
groups, with its own defaults where today's follow the release; called the
MobileNetV2 whose last conv is slimmed `mobilenet_v2`; wrote winners.json
without `pareto`; and kept its pools outside the checkpoints. From 0.2 on
pss_tf writes the current formats (each file names its format and version);
every reader of the older ones is here, so they can go together one day.
"""

from __future__ import annotations

from pss_tf.errors import ConfigError
from pss_tf.pareto import mark_pareto_front

# What 0.1 did where today's defaults follow the release instead.
DEFAULTS_0_1 = {
    "resolution_end_weight": 1.0,
    "bn_epsilon": 1e-3,
    "resize_align_corners": False,
    "sampler_extremes": True,
    "color_jitter": 0.0,
    "lighting": 0.0,
    "normalization": "minus_one_to_one",
}


def nested_run_config(data: dict, leaf_paths: dict) -> dict:
    """The nested form of 0.1's flat run.json (`leaf_paths`: field name -> path in TrainConfig).

    Fields added since keep the behaviour those runs had, and their
    MobileNetV2 slimmed its last conv (`mobilenet_v2_slim_last_conv` today).
    """
    data = {**DEFAULTS_0_1, **data}
    if data.get("model") == "mobilenet_v2":
        data["model"] = "mobilenet_v2_slim_last_conv"
    targets = data.pop("targets", {}) or {}
    for metric, grid in targets.items():
        data[f"{metric}_targets"] = grid
    unknown = sorted(set(data) - set(leaf_paths))
    if unknown:
        raise ConfigError(None, f"run.json: unknown field(s) {unknown}")
    nested: dict = {}
    for name, value in data.items():
        *groups, leaf = leaf_paths[name]
        node = nested
        for part in groups:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def winner_entries(entries: list, model: str) -> list:
    """winners.json's entries as the current version writes them: each config of
    the run's `model` (0.1 wrote "mobilenet_v2" for the slimmed-tail model) and
    `pareto` marked (0.1 did not)."""
    if any("pareto" not in e for e in entries):
        mark_pareto_front(entries)
    return [{**e, "config": {**e["config"], "model": model}} for e in entries]


def checkpoint_is_0_1(checkpoint: str) -> bool:
    """Whether a TF checkpoint lacks the host state (pools, random states) 0.1 kept elsewhere."""
    import tensorflow as tf

    return not any(name.startswith("host/") for name, _ in tf.train.list_variables(checkpoint))
