"""Exports a trained run's subnets for TF Serving and TFLite (LiteRT).

    python tools/export.py --job_dir=runs/fashion_mnist --export_dir=exports/fashion_mnist
    python tools/export.py --job_dir=runs/fashion_mnist --export_dir=exports/fashion_mnist --new_version --qat
    python tools/export.py --job_dir=/tmp/smoke --export_dir=/tmp/smoke_export \\
        --config='{"model": "mobilenet_v1", "resolution": 28, "widths": [0.4, ...]}'

Writes OUT/serving/<model_name>/<version>/ (SavedModel: one signature per
subnet, serving_default, adaptive), OUT/tflite/<version>/ (float32,
dynamic-range and int8 files per subnet, plus multi-signature bundles),
OUT/models.config and OUT/manifest.json. See docs/DEPLOYMENT.md.
"""

import os
import sys
import time

from absl import app, flags

from pss_tf.export.exporter import ExportOptions
from pss_tf.export.tflite import KINDS

FLAGS = flags.FLAGS
_DEFAULTS = ExportOptions(job_dir="", export_dir="")

flags.DEFINE_string("job_dir", None, "Training run to export (tools/train.py's --job_dir).")
flags.DEFINE_string("export_dir", None, "Output directory; must be new or empty unless --new_version.")
flags.DEFINE_string("model_name", None, "TF Serving model name (default: pss_<model>, e.g. pss_mobilenet_v1).")
flags.DEFINE_bool("new_version", False, "Add the next version to an existing export instead of refusing it.")
flags.DEFINE_multi_string("config", [], "A SubnetConfig as JSON to export (repeatable); must lie in the run's space.")
flags.DEFINE_bool("winners", None, "Export the run's winners (default: yes, unless --config is given).")
flags.DEFINE_list("tflite_kinds", list(KINDS), f"TFLite files per subnet: some of {', '.join(KINDS)} (empty: none).")
flags.DEFINE_bool("bundle", True, "Also write one multi-signature .tflite per kind holding every subnet.")
flags.DEFINE_integer("representative_examples", 200, "Training images that calibrate the int8 conversion.")
flags.DEFINE_integer("calibration_batches", 0, "BN calibration batches per subnet (0: the run's setting).")
flags.DEFINE_float("crop_fraction", _DEFAULTS.crop_fraction, "Centre-crop fraction of evaluation preprocessing.")
flags.DEFINE_bool("evaluate", True, "Measure Keras and TFLite top-1 on the validation split.")
flags.DEFINE_integer("eval_examples", 0, "Validation examples to evaluate on (0: all).")
flags.DEFINE_bool("latency", True, "Time every .tflite file (batch 1) on this machine.")
flags.DEFINE_integer("latency_threads", 1, "Interpreter threads for the latency measurements.")
flags.DEFINE_bool("qat", False, "Quantization-aware fine-tuning of one subnet before an extra int8 conversion.")
flags.DEFINE_string("qat_subnet", None, "The subnet to fine-tune (default: the largest).")
flags.DEFINE_integer("qat_epochs", _DEFAULTS.qat_epochs, "QAT epochs.")
flags.DEFINE_integer("qat_steps_per_epoch", 0, "QAT steps per epoch (0: one pass over the training split).")
flags.DEFINE_float("qat_learning_rate", _DEFAULTS.qat_learning_rate, "QAT learning rate (SGD, momentum 0.9).")
flags.DEFINE_integer("qat_batch_size", 0, "QAT batch size (0: the run's --global_batch_size).")
flags.DEFINE_string("container_dir", _DEFAULTS.container_dir, "Where the server mounts --export_dir (models.config).")
flags.DEFINE_string("data_dir", None, "The run's data, if it moved since training.")
flags.DEFINE_integer("seed", 0, "Seed of the representative and QAT data.")


def options_from_flags() -> ExportOptions:
    return ExportOptions(
        job_dir=FLAGS.job_dir or "",
        export_dir=FLAGS.export_dir or "",
        model_name=FLAGS.model_name,
        new_version=FLAGS.new_version,
        configs=tuple(FLAGS.config),
        winners=FLAGS.winners,
        tflite_kinds=tuple(FLAGS.tflite_kinds),
        bundle=FLAGS.bundle,
        representative_examples=FLAGS.representative_examples,
        calibration_batches=FLAGS.calibration_batches,
        crop_fraction=FLAGS.crop_fraction,
        evaluate=FLAGS.evaluate,
        eval_examples=FLAGS.eval_examples,
        latency=FLAGS.latency,
        latency_threads=FLAGS.latency_threads,
        qat=FLAGS.qat,
        qat_subnet=FLAGS.qat_subnet,
        qat_epochs=FLAGS.qat_epochs,
        qat_steps_per_epoch=FLAGS.qat_steps_per_epoch,
        qat_learning_rate=FLAGS.qat_learning_rate,
        qat_batch_size=FLAGS.qat_batch_size,
        container_dir=FLAGS.container_dir,
        data_dir=FLAGS.data_dir,
        seed=FLAGS.seed,
    )


def _summary(result) -> str:
    from pss_tf.export.manifest import markdown_table

    manifest = result.manifest
    lines = [f"{result.model_name} version {result.version} in {result.export_dir}", ""]
    lines.append(markdown_table(manifest))
    for kind, bundle in manifest["tflite_bundles"].items():
        lines.append(f"bundle {kind}: {bundle['file']} ({bundle['bytes'] / 1024:.0f} KiB, {len(bundle['signatures'])} signatures)")
    if manifest.get("qat"):
        q = manifest["qat"]
        lines.append(
            f"QAT {q['subnet']}: int8 top-1 {100 * q['int8_top1_without_qat']:.2f} without, "
            f"{100 * q['int8_top1_with_qat']:.2f} with ({q['epochs']} epochs of {q['steps_per_epoch']} steps)"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from absl import logging

    from pss_tf.export import exporter

    logging.set_verbosity(logging.WARNING)  # TensorFlow's per-save INFO lines; progress is printed below
    start = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", flush=True)

    try:
        result = exporter.export(options_from_flags(), log=log)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_summary(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
