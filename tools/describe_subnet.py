"""Prints a subnet's channels, MACs and parameters.

    python tools/describe_subnet.py --model=mobilenet_v1 --resolution=224 --width=0.75
    python tools/describe_subnet.py --config='{"model": "mobilenet_v2", "resolution": 160, "widths": [...]}'
"""

import json

from absl import app, flags

from pss_tf import SubnetConfig, count_flops, count_params

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mobilenet_v1", "Supernet architecture: mobilenet_v1 or mobilenet_v2.")
flags.DEFINE_integer("resolution", 224, "Input resolution in pixels.")
flags.DEFINE_float("width", 1.0, "One width multiplier for every stage (ignored with --widths or --config).")
flags.DEFINE_list("widths", None, "Per-stage width multipliers (14 for mobilenet_v1, 9 for mobilenet_v2).")
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


def main(argv):
    del argv
    try:
        config = _config()
    except ValueError as e:
        raise app.UsageError(str(e))
    kwargs = dict(num_classes=FLAGS.num_classes, small_input=FLAGS.small_input, in_channels=FLAGS.in_channels)
    print(
        json.dumps(
            {
                "config": config.to_dict(),
                "channels": list(config.channels),
                "mflops": round(count_flops(config, **kwargs), 4),
                "params": count_params(config, **kwargs),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    app.run(main)
