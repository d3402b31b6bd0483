"""Deployment of a trained run's subnets: TF Serving and TFLite (LiteRT).

    subnets        which subnets (winners, --config), names, values; no TensorFlow
    calibrated     calibrate BN and extract each subnet; Keras top-1
    job_data       calibration, validation and client-side (uint8) data of a run
    preprocessing  client uint8 images -> network inputs, inside the graph
    savedmodel     per-subnet, default and adaptive (budget -> subnet) signatures
    serving        versioned TF Serving layout, models.config, staging and commit
    client         REST and gRPC predict requests
    tflite         float32 / dynamic-range / int8 files, bundles, LiteRT runs, latency
    qat            tf_keras rebuild and quantization-aware fine-tuning (tfmot)
    manifest       manifest.json and its Markdown table
    exporter       `export(ExportOptions)`: all of the above, checked first, committed last

`tools/export.py` is the command line.
"""

from pss_tf.export.exporter import ExportOptions, ExportPlan, ExportResult, export, plan

__all__ = ["ExportOptions", "ExportPlan", "ExportResult", "export", "plan"]
