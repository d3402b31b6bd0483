"""Training batch norm (forward and backward) in several formulations, over the max net's layer shapes.

    python bench/batch_norm_kernels.py [--batch=32 --repeats=7 --formulations=fused,moments]
    python bench/batch_norm_kernels.py --kernels=native,onednn_avx2,eigen_avx2 --out=docs/bench/batch_norm_kernels_mbv1.json

With oneDNN held to AVX2, its forward-training batch-norm kernel took 66 ms on
32x56x56x128 against 8 ms on AVX-512, and batch norm was about half of the max
net's training pass. This benchmark asks whether another way of computing the
same thing is cheaper there. Each formulation maps NHWC `x`, an output
gradient `dy`, scale and offset to (y, dx, dscale, doffset):

    fused            tf.compat.v1.nn.fused_batch_norm and its gradient (what
                     SlimBatchNormalization runs in training now)
    moments          tf.nn.moments and tf.nn.batch_normalization, autodiff
    sums             one pass: sum and sum of squares, autodiff
    fused_flat       the fused op on x reshaped to (N*H*W, 1, 1, C)
    fused_nchw       the fused op in NCHW, with transposes in and out
    fused_5d         the fused op on x reshaped to NDHWC (N, H, W, 1, C): oneDNN
                     does not take 5-D batch norm, so TensorFlow's own (Eigen)
                     kernels run forward and backward
    5d_forward       fused_5d's forward with the 4-D (oneDNN) gradient op
    moments_forward  moments' forward with the 4-D fused gradient op
    xla              `moments` compiled by XLA (jit_compile=True); under an
                     emulated AVX2 setting XLA's code is held to AVX2 too
                     (XLA_FLAGS=--xla_cpu_max_isa=AVX2)

for every batch norm of the MobileNetV1 subnet (`--resolution`, `--width`;
default the max net), `--batch` images, float32. Each formulation is one
tf.function taking its tensors as arguments, timed alone, one call at a time
(median of `--repeats`), less the time of the same function without the ops.
Inputs are N(2, 1), so one-pass sums meet some cancellation. Per formulation
the JSON gives per-layer and summed seconds, the sum over `fused`'s, and the
largest absolute difference of each output from `fused` and from a float64
reference (`moments` in float64), with the largest reference magnitude.
What it found (`fused_flat` about 4x faster than `fused` on oneDNN's AVX2
path, no faster elsewhere): docs/PERFORMANCE.md, "Batch norm on AVX2".
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2":  # Before TensorFlow reads it.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_max_isa=AVX2").strip()

import kernels
from common import lscpu_model_name, machine_state, one_scalar_of, report_json, time_calls
from elementwise_kernels import EPSILON, layer_shapes

OUTPUTS = ("y", "dx", "dscale", "doffset")


def formulations():
    """{name: fn(x, dy, scale, offset) -> (y, dx, dscale, doffset)}, built on first use (needs TensorFlow)."""
    import tensorflow as tf

    def with_gradients(forward):
        def fn(x, dy, scale, offset):
            with tf.GradientTape() as tape:
                tape.watch([x, scale, offset])
                y = forward(x, scale, offset)
            return (y, *tape.gradient(y, [x, scale, offset], output_gradients=dy))

        return fn

    def fused(x, scale, offset):
        return tf.compat.v1.nn.fused_batch_norm(x, scale, offset, epsilon=EPSILON, is_training=True)[0]

    def moments(x, scale, offset):
        mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
        return tf.nn.batch_normalization(x, mean, variance, offset, scale, EPSILON)

    def sums(x, scale, offset):
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype)
        mean = tf.reduce_sum(x, [0, 1, 2]) / count
        variance = tf.nn.relu(tf.reduce_sum(tf.square(x), [0, 1, 2]) / count - tf.square(mean))
        return tf.nn.batch_normalization(x, mean, variance, offset, scale, EPSILON)

    def fused_flat(x, scale, offset):
        shape = tf.shape(x)
        return tf.reshape(fused(tf.reshape(x, [-1, 1, 1, shape[3]]), scale, offset), shape)

    def fused_nchw(x, scale, offset):
        y = tf.compat.v1.nn.fused_batch_norm(tf.transpose(x, [0, 3, 1, 2]), scale, offset, epsilon=EPSILON,
                                             is_training=True, data_format="NCHW")[0]
        return tf.transpose(y, [0, 2, 3, 1])

    def fused_5d_with_statistics(x, scale, offset):
        """y, the batch mean and the biased batch variance (the reserve spaces; the op's own variance
        output is Bessel-corrected)."""
        empty = tf.zeros([0])
        y, _, _, mean, variance, _ = tf.raw_ops.FusedBatchNormV3(
            x=tf.expand_dims(x, 3), scale=scale, offset=offset, mean=empty, variance=empty, epsilon=EPSILON,
            is_training=True, data_format="NDHWC")
        return tf.reshape(y, tf.shape(x)), mean, variance

    def fused_5d(x, scale, offset):
        return fused_5d_with_statistics(x, scale, offset)[0]

    def with_fused_gradient(forward):
        """`forward` (x, scale, offset -> y, batch mean, biased batch variance) with the 4-D fused gradient op."""

        @tf.custom_gradient
        def fn(x, scale, offset):
            y, mean, variance = forward(x, scale, offset)

            def gradient(dy):
                dx, dscale, doffset = tf.raw_ops.FusedBatchNormGradV3(
                    y_backprop=dy, x=x, scale=scale, reserve_space_1=mean, reserve_space_2=variance,
                    reserve_space_3=tf.zeros([0]), epsilon=EPSILON, is_training=True)[:3]
                return dx, dscale, doffset

            return y, gradient

        return fn

    def moments_with_statistics(x, scale, offset):
        mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
        return tf.nn.batch_normalization(x, mean, variance, offset, scale, EPSILON), mean, variance

    return {
        "fused": with_gradients(fused),
        "moments": with_gradients(moments),
        "sums": with_gradients(sums),
        "fused_flat": with_gradients(fused_flat),
        "fused_nchw": with_gradients(fused_nchw),
        "fused_5d": with_gradients(fused_5d),
        "5d_forward": with_gradients(with_fused_gradient(fused_5d_with_statistics)),
        "moments_forward": with_gradients(with_fused_gradient(moments_with_statistics)),
        "xla": tf.function(with_gradients(moments), jit_compile=True),
    }


NAMES = ("fused", "moments", "sums", "fused_flat", "fused_nchw", "fused_5d", "5d_forward", "moments_forward", "xla")


def _reference(x, dy, scale, offset):
    """(y, dx, dscale, doffset) of `moments` in float64, as numpy arrays."""
    import tensorflow as tf

    moments = formulations()["moments"]
    return [t.numpy() for t in moments(*(tf.cast(t, tf.float64) for t in (x, dy, scale, offset)))]


def _max_abs_difference(outputs, reference) -> dict:
    import numpy as np

    return {name: float(np.max(np.abs(np.asarray(a, np.float64) - b))) for name, a, b in zip(OUTPUTS, outputs, reference)}


def _keep_largest(largest: dict, values: dict) -> None:
    for key, value in values.items():
        largest[key] = max(largest.get(key, value), value)


def measure(args) -> dict:
    import numpy as np
    import tensorflow as tf

    built = formulations()
    timed = {name: tf.function(lambda *t, fn=built[name]: one_scalar_of(fn(*t))) for name in args.formulations}
    overhead = tf.function(lambda *t: one_scalar_of(t))

    def seconds(fn, tensors):
        return statistics.median(time_calls(lambda: fn(*tensors).numpy(), args.warmup, args.repeats))

    rng = np.random.default_rng(0)
    results = {
        "benchmark": "batch_norm_kernels",
        "lscpu_model_name": lscpu_model_name(),
        **machine_state(),
        "tensorflow": tf.__version__,
        "kernels": kernels.current(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "batch": args.batch, "resolution": args.resolution, "width": args.width, "repeats": args.repeats,
        "layers": [],
    }
    max_abs_diff = {name: {"vs_fused": {}, "vs_float64": {}} for name in args.formulations}
    reference_max_abs = {}
    for shape in layer_shapes("mobilenet_v1", args.resolution, args.width, args.batch):
        x = tf.constant(rng.normal(2.0, 1.0, shape).astype("float32"))
        dy = tf.constant(rng.standard_normal(shape).astype("float32"))
        scale = tf.constant(rng.uniform(0.5, 1.5, shape[-1]).astype("float32"))
        offset = tf.constant(rng.uniform(-0.5, 0.5, shape[-1]).astype("float32"))
        tensors = (x, dy, scale, offset)
        reference = _reference(*tensors)
        fused_outputs = [t.numpy() for t in built["fused"](*tensors)]
        base = seconds(overhead, tensors)
        layer = {"shape": list(shape), "call_overhead_s": round(base, 6), "seconds": {}}
        _keep_largest(reference_max_abs, {out: float(np.max(np.abs(r))) for out, r in zip(OUTPUTS, reference)})
        for name in args.formulations:
            outputs = [t.numpy() for t in built[name](*tensors)]
            _keep_largest(max_abs_diff[name]["vs_fused"], _max_abs_difference(outputs, fused_outputs))
            _keep_largest(max_abs_diff[name]["vs_float64"], _max_abs_difference(outputs, reference))
            layer["seconds"][name] = round(max(seconds(timed[name], tensors) - base, 0.0), 6)
        results["layers"].append(layer)
        print(f"{shape}: {layer['seconds']}", file=sys.stderr, flush=True)
    totals = {name: round(sum(layer["seconds"][name] for layer in results["layers"]), 5) for name in args.formulations}
    results["total_s"] = totals
    if "fused" in totals and totals["fused"] > 0:
        results["total_over_fused"] = {name: round(t / totals["fused"], 3) for name, t in totals.items()}
    results["max_abs_diff"] = max_abs_diff  # Over all layers.
    results["reference_max_abs"] = reference_max_abs
    results["machine_state_at_end"] = machine_state()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--formulations", default=",".join(NAMES), help=f"comma-separated, of {', '.join(NAMES)}")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--kernels", default=None,
                        help=f"comma-separated kernel settings, each in a fresh process ({', '.join(kernels.SETTINGS)})")
    args = parser.parse_args()
    args.formulations = [n.strip() for n in args.formulations.split(",") if n.strip()]
    if not args.formulations or set(args.formulations) - set(NAMES):
        parser.error(f"--formulations: choose from {', '.join(NAMES)}")
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.resolution < 1 or args.width <= 0:
        parser.error("--batch, --resolution and --repeats: at least 1; --warmup: at least 0; --width: positive")
    if not args.kernels:
        report_json(measure(args), args.out)
        return
    names = kernels.parse(args.kernels)
    argv = sys.argv[1:]
    results = {"benchmark": "batch_norm_kernels", "lscpu_model_name": lscpu_model_name(), **machine_state(),
               "command": ["python", "bench/batch_norm_kernels.py", *argv]}
    results["settings"] = kernels.run_each(names, os.path.abspath(__file__), kernels.without_flags(argv, "--kernels", "--out"))
    results["total_over_fused"] = {name: record["run"].get("total_over_fused")
                                   for name, record in results["settings"].items()}
    results["machine_state_at_end"] = machine_state()
    report_json(results, args.out)


if __name__ == "__main__":
    main()
