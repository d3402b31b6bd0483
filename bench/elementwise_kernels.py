"""Batch norm and ReLU6 alone, per value, over the layer shapes of the max, a mid-space and the min MobileNetV1 subnet.

    python bench/elementwise_kernels.py [--batch=32 --repeats=15]
    python bench/elementwise_kernels.py --kernels=native,eigen_avx2,onednn_avx2   # bench/kernels.py

The PSS step's profile charged batch norm 3.3x and ReLU6 2.8x a plain step's
op time for 1.8x the values: per value the smaller subnets' element-wise ops
looked about twice as dear as the max net's. Either small and odd shapes cost
more per value, or the op times were stretched because the step's three passes
run at once (an op waiting for a thread of the shared pool still counts as
running, and the profile sums op time over threads). This benchmark settles it
by timing each layer's ops alone, one call at a time, on TensorFlow's default
threads:

    bn      FusedBatchNormV3 (training mode) and FusedBatchNormGradV3
    relu6   Relu6 and Relu6Grad

for every batch norm of the subnets (NHWC, `--batch` images; the shapes
follow the architecture's strides and the config's channels). Each call is
one tf.function taking its tensors as arguments; the time of an otherwise
identical function without the ops (call overhead) is subtracted. Prints one
JSON object: per subnet and layer the net seconds, and per subnet the sums
and nanoseconds per value.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kernels
from common import lscpu_model_name, machine_state

SUBNETS = {"max": (224, 1.0), "chosen": (176, 0.875), "min": (128, 0.75)}
EPSILON = 1e-5


def layer_shapes(model: str, resolution: int, width: float, batch: int) -> list[tuple[int, int, int, int]]:
    """NHWC shape of every batch norm's input in the subnet, in order."""
    from pss_tf import SubnetConfig
    from pss_tf.space import architectures

    if model != "mobilenet_v1":
        raise SystemExit("--model: only mobilenet_v1 (stem, then depthwise and pointwise layers)")
    config = SubnetConfig.uniform(model, resolution, width)
    arch = architectures.get_architecture(model, False)
    table = arch.channel_table(config.channels)
    shapes, size = [], resolution
    for block in arch.blocks:
        size = math.ceil(size / block.stride)
        if block.in_stage is None:  # The stem: one 3x3 convolution.
            shapes.append((batch, size, size, table[block.out_stage]))
        else:  # Depthwise (at the input's width), then pointwise.
            shapes.append((batch, size, size, table[block.in_stage]))
            shapes.append((batch, size, size, table[block.out_stage]))
    return shapes


def _timed(fn, args, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn(*args).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(args) -> dict:
    import numpy as np
    import tensorflow as tf

    def first(*tensors):  # One value from each output: cheap, and keeps every op alive.
        return tf.add_n([tf.reshape(t, [-1])[0] for t in tensors])

    @tf.function
    def overhead(x, dy, scale, offset):
        return first(x, dy, scale, offset)

    @tf.function
    def bn(x, dy, scale, offset):
        empty = tf.zeros([0], tf.float32)
        y, mean, variance, r1, r2, r3 = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=EPSILON, is_training=True)
        dx, dscale, doffset, _, _ = tf.raw_ops.FusedBatchNormGradV3(
            y_backprop=dy, x=x, scale=scale, reserve_space_1=r1, reserve_space_2=r2, reserve_space_3=r3,
            epsilon=EPSILON, is_training=True)
        return first(y, mean, variance, dx, dscale, doffset)

    @tf.function
    def relu6(x, dy, scale, offset):
        y = tf.nn.relu6(x)
        return first(y, tf.raw_ops.Relu6Grad(gradients=dy, features=x))

    rng = np.random.default_rng(0)
    results = {
        "benchmark": "elementwise_kernels",
        "lscpu_model_name": lscpu_model_name(),
        **machine_state(),
        "tensorflow": tf.__version__,
        "kernels": kernels.current(),
        "batch": args.batch, "repeats": args.repeats,
        "subnets": {},
    }
    for name in args.subnets:
        resolution, width = SUBNETS[name]
        layers = []
        for shape in layer_shapes(args.model, resolution, width, args.batch):
            tensors = [tf.constant(rng.standard_normal(shape).astype("float32")) for _ in range(2)]
            tensors += [tf.ones([shape[-1]]), tf.zeros([shape[-1]])]
            base = _timed(overhead, tensors, args.warmup, args.repeats)
            layer = {"shape": list(shape), "values": int(np.prod(shape)), "call_overhead_s": round(base, 6)}
            for op, fn in (("bn", bn), ("relu6", relu6)):
                layer[f"{op}_s"] = round(max(_timed(fn, tensors, args.warmup, args.repeats) - base, 0.0), 6)
            layers.append(layer)
        values = sum(layer["values"] for layer in layers)
        totals = {"layers": len(layers), "values": values}
        for op in ("bn", "relu6"):
            seconds = sum(layer[f"{op}_s"] for layer in layers)
            totals[f"{op}_s"] = round(seconds, 7)
            totals[f"{op}_ns_per_value"] = round(1e9 * seconds / values, 4)
        results["subnets"][name] = {"resolution": resolution, "width": width, "totals": totals, "layers": layers}
        print(f"{name}: {totals}", file=sys.stderr, flush=True)
    subnets = results["subnets"]
    if "max" not in subnets:
        results["machine_state_at_end"] = machine_state()
        return results
    max_totals = subnets["max"]["totals"]
    results["per_value_over_max"] = {
        name: {op: round(subnets[name]["totals"][f"{op}_ns_per_value"] / max_totals[f"{op}_ns_per_value"], 3)
               for op in ("bn", "relu6")}
        for name in subnets
    }
    # A step does each layer of each of the three passes once; a plain step the max net's once.
    # (With all three subnets; else only the ratios to the max net.)
    if len(subnets) < len(SUBNETS):
        results["machine_state_at_end"] = machine_state()
        return results
    results["step_over_plain"] = {
        op: round(sum(s["totals"][f"{op}_s"] for s in subnets.values()) / subnets["max"]["totals"][f"{op}_s"], 3)
        for op in ("bn", "relu6")
    }
    results["values_step_over_plain"] = round(
        sum(s["totals"]["values"] for s in subnets.values()) / subnets["max"]["totals"]["values"], 3)
    results["machine_state_at_end"] = machine_state()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v1", choices=["mobilenet_v1"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--kernels", default=None,
                        help=f"comma-separated kernel settings, each in a fresh process ({', '.join(kernels.SETTINGS)})"
                        )
    parser.add_argument("--subnets", default=",".join(SUBNETS), help=f"comma-separated, of {', '.join(SUBNETS)}")
    args = parser.parse_args()
    args.subnets = [n.strip() for n in args.subnets.split(",") if n.strip()]
    if not args.subnets or set(args.subnets) - set(SUBNETS):
        parser.error(f"--subnets: choose from {', '.join(SUBNETS)}")
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch and --repeats: at least 1; --warmup: at least 0")
    if not args.kernels:
        print(json.dumps(measure(args), indent=2))
        return
    names = kernels.parse(args.kernels)
    argv = sys.argv[1:]
    results = {"benchmark": "elementwise_kernels", "lscpu_model_name": lscpu_model_name(), **machine_state(),
               "command": ["python", "bench/elementwise_kernels.py", *argv]}
    results["settings"] = kernels.run_each(names, os.path.abspath(__file__), kernels.without_flags(argv, "--kernels"))
    results["machine_state_at_end"] = machine_state()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
