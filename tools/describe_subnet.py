"""Prints a subnet's channels, MACs and parameters (trainable, and all weights with BN's statistics).

    python tools/describe_subnet.py --model=mobilenet_v1 --resolution=224 --width=0.75
    python tools/describe_subnet.py --config='{"model": "mobilenet_v2", "resolution": 160, "widths": [...]}'
"""

import json

from absl import app, flags

from pss_tf import SubnetConfig, cli, count_flops
from pss_tf.space import architectures
from pss_tf.space.cost import param_counts


def _genes() -> str:
    """How many multipliers each model's config has, from the architecture registry."""
    return ", ".join(f"{architectures.get_architecture(m).num_stages} for {m}" for m in architectures.MODEL_NAMES)


FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model", "mobilenet_v1",
    f"Supernet architecture: one of {', '.join(architectures.MODEL_NAMES)}, or one at a base width w as "
    "<model>_<w>x (mobilenet_v2_1.5x).",
)
flags.DEFINE_integer("resolution", 224, "Input resolution in pixels.")
flags.DEFINE_float("width", 1.0, "One width multiplier for every stage (ignored with --widths or --config).")
flags.DEFINE_list("widths", None, f"Per-gene width multipliers: {_genes()} (the same at any base width).")
flags.DEFINE_string("config", None, "A SubnetConfig as JSON; overrides --model, --resolution and widths.")
flags.DEFINE_integer("num_classes", 1000, "Classifier outputs.")
flags.DEFINE_bool("small_input", False, "Stem stride 1 (the supernet option for 28 to 64 pixel images).")
flags.DEFINE_integer("in_channels", 3, "Image channels.")


def _config() -> SubnetConfig:
    if FLAGS.config:
        return SubnetConfig.from_json(FLAGS.config)
    if FLAGS.widths:
        try:
            widths = tuple(float(w) for w in FLAGS.widths)
        except ValueError:
            raise ValueError(f"--widths: not a list of numbers: {FLAGS.widths}") from None
        return SubnetConfig(FLAGS.model, FLAGS.resolution, widths)
    return SubnetConfig.uniform(FLAGS.model, FLAGS.resolution, FLAGS.width)


def describe(config: SubnetConfig, **kwargs) -> dict:
    """What the tool prints: the config, its channels, MACs and both parameter counts."""
    return {
        "config": config.to_dict(),
        "channels": list(config.channels),
        "mflops": round(count_flops(config, **kwargs), 4),
        "params": param_counts(config, **kwargs),
    }


def main(argv):
    del argv
    try:
        config = _config()
    except ValueError as e:
        raise app.UsageError(str(e))
    kwargs = dict(num_classes=FLAGS.num_classes, small_input=FLAGS.small_input, in_channels=FLAGS.in_channels)
    print(json.dumps(describe(config, **kwargs), indent=2))


if __name__ == "__main__":
    cli.run(main)
