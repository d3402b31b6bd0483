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

from pss_tf import cli, config_flags
from pss_tf.errors import ConfigError
from pss_tf.export.options import ExportOptions

config_flags.define_flags(ExportOptions)


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
    del argv
    from pss_tf.export import exporter

    try:
        result = exporter.export(config_flags.from_flags(ExportOptions), log=cli.timed_printer())
    except ConfigError as e:
        return cli.error(e)
    print(_summary(result))
    return 0


if __name__ == "__main__":
    cli.run(main)
