"""Inference latency of extracted subnets in Keras, SavedModel and TFLite.

    python bench/inference.py --model=mobilenet_v1                # reference nets only
    python bench/inference.py --job_dir=runs/mbv1 --threads=2     # plus every winner of a run

Batch 1, CPU. Each subnet is timed as `Supernet.extract` writes it, on a fixed
input at its own resolution (`extract(config, resize=False, batch_size=1)`),
in three forms:

    keras       the Keras model's inference call inside one tf.function
    savedmodel  `model.export` -> `tf.saved_model.load(...).serve`
    tflite      `TFLiteConverter.from_keras_model`, LiteRT with --threads

Uniform-width subnets are compared with the `keras.applications` model of the
same width and resolution (weights=None): extraction must add nothing at
inference. Prints one JSON object; medians in ms.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import machine_state, time_calls

REFERENCES = {
    "mobilenet_v1": [(224, 1.0), (224, 0.75), (128, 1.0), (128, 0.75)],
    "mobilenet_v2": [(224, 1.0), (128, 1.0)],
}


def _median_ms(fn, warmup: int, repeats: int) -> float:
    return round(statistics.median(time_calls(fn, warmup, repeats)) * 1e3, 3)


def tflite_ops(model) -> dict:
    """Op type -> count in the model's TFLite conversion (what the runtime runs)."""
    from collections import Counter

    from pss_tf.latency import measure

    interpreter = measure._interpreter_class()(model_content=measure.to_tflite(model, direct=False))
    return dict(sorted(Counter(op["op_name"] for op in interpreter._get_ops_details()).items()))


def fastest(passes: list[dict]) -> dict:
    """Per form, the fastest of several passes (interference only adds time)."""
    return {form: min(p[form] for p in passes) for form in passes[0]}


def time_forms(model, resolution: int, threads: int, repeats: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from pss_tf.latency import measure

    shape = (1, resolution, resolution, model.inputs[0].shape[-1])
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, shape).astype("float32"))
    result = {}
    call = tf.function(lambda images: model(images, training=False))
    result["keras"] = _median_ms(lambda: call(x).numpy(), 5, repeats)
    with tempfile.TemporaryDirectory() as directory:
        with measure._captured_output():
            model.export(directory, format="tf_saved_model", verbose=False)
        served = tf.saved_model.load(directory)
        result["savedmodel"] = _median_ms(lambda: served.serve(x).numpy(), 5, repeats)
    timer = measure.Timer(threads, measure.Protocol(warmup_s=0.2, repeats=9, min_repeat_s=0.05))
    result["tflite"] = round(timer.time_keras(model, direct=False).median_ms, 3)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v1", choices=["mobilenet_v1", "mobilenet_v2"])
    parser.add_argument("--job_dir", default=None, help="a training run: time each of its winners")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--passes", type=int, default=3, help="alternating timing passes per reference pair")
    parser.add_argument("--skip_references", action="store_true")
    args = parser.parse_args()
    for name in ("passes", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: must be at least 1, got {getattr(args, name)}")

    import keras
    import tensorflow as tf

    from pss_tf import SubnetConfig, build_supernet
    from pss_tf.latency.measure import runtime_info

    results = {
        "benchmark": "inference",
        **machine_state(),
        "threads_tflite": args.threads,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "litert": runtime_info()["version"],
        "batch": 1,
    }
    if not args.skip_references:
        supernet = build_supernet(args.model, num_classes=1000)
        app = keras.applications.MobileNet if args.model == "mobilenet_v1" else keras.applications.MobileNetV2
        rows = []
        for resolution, width in REFERENCES[args.model]:
            config = SubnetConfig.uniform(args.model, resolution, width)
            extracted = supernet.extract(config, resize=False, batch_size=1)
            reference = app(
                input_shape=(resolution, resolution, 3), alpha=width, weights=None, classifier_activation=None
            )
            # Alternate the two models over passes so that drift in the
            # machine's speed hits both alike; keep each form's fastest pass.
            timings = {"extracted": [], "keras_applications": []}
            for _ in range(args.passes):
                timings["extracted"].append(time_forms(extracted, resolution, args.threads, args.repeats))
                timings["keras_applications"].append(time_forms(reference, resolution, args.threads, args.repeats))
            row = {
                "subnet": str(config),
                "params_extracted": extracted.count_params(),
                "params_keras_applications": reference.count_params(),
                "tflite_ops_extracted": tflite_ops(extracted),
                "tflite_ops_keras_applications": tflite_ops(reference),
                **{name: fastest(passes) for name, passes in timings.items()},
                "passes": timings,
            }
            for form in ("keras", "savedmodel", "tflite"):
                row[f"{form}_ratio"] = round(row["extracted"][form] / row["keras_applications"][form], 3)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        results["references"] = rows
    if args.job_dir:
        from pss_tf.run.job import Job

        job = Job(args.job_dir)
        supernet = job.restore_supernet()
        rows = []
        for entry, subnet in job.winners():
            model = supernet.extract(subnet, resize=False, batch_size=1)
            rows.append({"name": entry["name"], "subnet": str(subnet), "value": entry["value"],
                         **time_forms(model, subnet.resolution, args.threads, args.repeats)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        results["winners"] = rows
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
