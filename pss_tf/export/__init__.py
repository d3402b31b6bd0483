"""Deployment of a trained run's subnets: TF Serving and TFLite (LiteRT).

    options        `ExportOptions`: what tools/export.py is told, in groups
    subnets        which subnets (winners, configs), names, values; no TensorFlow
    client_data    client-side (uint8, fixed-size) images of the run's dataset
    savedmodel     per-subnet, default and adaptive (budget -> subnet) signatures
    serving        versioned TF Serving layout, models.config, staging and commit
    client         REST and gRPC predict requests
    tflite         float32 / dynamic-range / int8 files, bundles, LiteRT runs, latency
    qat            tf_keras rebuild and quantization-aware fine-tuning (tfmot)
    manifest       manifest.json and its Markdown table
    exporter       `export(ExportOptions)`: all of the above, checked first, committed last

The run itself (its configuration, data, metrics and trained supernet) is read
through `pss_tf.run.job.Job`, and the subnets other tools left in it (searched,
fine-tuned) through `pss_tf.run.outputs`. `tools/export.py` is the command line.
"""

from pss_tf.export.options import ExportOptions

_LAZY = ("ExportPlan", "ExportResult", "export", "plan")  # from exporter, which imports TensorFlow


def __getattr__(name):
    if name in _LAZY:
        from pss_tf.export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'pss_tf.export' has no attribute {name!r}")


__all__ = ["ExportOptions", "ExportPlan", "ExportResult", "export", "plan"]
