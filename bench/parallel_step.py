"""Parallel subnets against serial passes: what one masked pass of N subnets costs.

    python bench/parallel_step.py                                  # the full matrix below
    python bench/parallel_step.py --models=mobilenet_v1 --batches=32 --groups=4 --spaces=imagenet

For each model, space (ImageNet's 224 px and Fashion-MNIST's 28 px small-input
space), batch and group size N, one fixed group of N random subnets of one
resolution (the group's widest channels are what the masked pass runs at):

    serial     N subnet passes, subnet i on slice i of the batch (B / N images),
               forward, loss and backward each, gradients summed: the same
               subnet-examples and the same gradients as the masked pass
    masked     one pass of the whole batch through `supernet(images, group)`

Each is timed in its own subprocess (so its peak memory is its own), traced
once, then the median of --repeats calls. Reported per case: seconds per step,
images and subnet-examples per second (both B / time: each image trains one
subnet), MACs per step from the cost model (serial: sum of each subnet's MACs x
B / N; masked: the group's widest channels x B), tracing time, peak RSS, and the
largest difference between the two gradients measured in the run (float32).
Prints one JSON object.
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import machine_state

SPACES = {
    # name: (min_resolution, max_resolution, step, min_width, max_width, small_input, classes, channels)
    "imagenet": (128, 224, 8, 0.75, 1.0, False, 1000, 3),
    "fashion_mnist": (20, 28, 4, 0.25, 0.5, True, 10, 1),
}


def _case(args) -> dict:
    """One (model, space, batch, N, kind) timing, in this process."""
    import resource
    import statistics
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from pss_tf import SearchSpace, SubnetConfig, build_supernet, count_flops
    from pss_tf.supernet import encode, encode_group

    low, high, step, wmin, wmax, small, classes, channels = SPACES[args.space]
    keras.utils.set_random_seed(0)
    space = SearchSpace(args.model, low, high, step, wmin, wmax)
    rng = __import__("random").Random(args.seed)
    resolution = space.resolutions[len(space.resolutions) // 2]
    configs = [SubnetConfig(args.model, resolution, space.random_config(rng).widths) for _ in range(args.group)]
    supernet = build_supernet(args.model, num_classes=classes, small_input=small, in_channels=channels)
    data = np.random.default_rng(0)
    images = tf.constant(data.uniform(-1, 1, (args.batch, high, high, channels)).astype("float32"))
    labels = tf.constant(data.integers(0, classes, args.batch).astype("int32"))
    variables = supernet.trainable_variables
    slice_size = args.batch // args.group

    def loss_of(logits, y):
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)) / slice_size

    group = tf.constant(encode_group(configs))
    vectors = [tf.constant(encode(c)) for c in configs]

    @tf.function
    def masked():
        with tf.GradientTape() as tape:
            logits = supernet(images, group, training=True)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            loss = tf.reduce_sum(per_example) / slice_size
        return tape.gradient(loss, variables)

    @tf.function
    def one(x, y, vector):
        with tf.GradientTape() as tape:
            loss = loss_of(supernet(x, vector, training=True), y)
        return tape.gradient(loss, variables)

    def serial():
        total = None
        for i, vector in enumerate(vectors):
            grads = one(images[i * slice_size : (i + 1) * slice_size], labels[i * slice_size : (i + 1) * slice_size], vector)
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        return total

    fn = masked if args.kind == "masked" else serial
    start = time.perf_counter()
    first = fn()
    _ = [g.numpy() for g in first]
    tracing = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        grads = fn()
        _ = [g.numpy() for g in grads]
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    result = {
        "median_s": round(median, 4),
        "images_per_s": round(args.batch / median, 1),
        "subnet_examples_per_s": round(args.batch / median, 1),
        "tracing_s": round(tracing, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    common = dict(num_classes=classes, small_input=small, in_channels=channels)
    if args.kind == "serial":
        result["mmacs_per_step"] = round(sum(count_flops(c, **common) for c in configs) * slice_size, 1)
    else:
        widest = tuple(max(c.widths[s] for c in configs) for s in range(space.num_stages))
        result["mmacs_per_step"] = round(count_flops(SubnetConfig(args.model, resolution, widest), **common) * args.batch, 1)
        reference = serial()
        result["max_abs_gradient_difference"] = float(
            max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(grads, reference))
        )
        result["max_abs_gradient"] = float(max(float(tf.reduce_max(tf.abs(b))) for b in reference))
    result["group"] = [str(c) for c in configs]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenet_v1,mobilenet_v2")
    parser.add_argument("--spaces", default="imagenet,fashion_mnist")
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--groups", default="2,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the JSON here (atomically)")
    # One case, run in a subprocess by the matrix.
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--space", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--group", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=["serial", "masked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_case(args)))
        return
    models, spaces = args.models.split(","), args.spaces.split(",")
    batches, groups = [int(b) for b in args.batches.split(",")], [int(n) for n in args.groups.split(",")]
    if args.repeats < 1 or any(b % n for b in batches for n in groups):
        parser.error("--repeats must be positive and every batch divisible by every group size")
    for space in spaces:
        if space not in SPACES:
            parser.error(f"--spaces: unknown space {space!r}; expected some of {list(SPACES)}")
    from tqdm import tqdm

    cases = [(m, s, b, n) for m in models for s in spaces for b in batches for n in groups]
    results = {"benchmark": "parallel_step", **machine_state(), "repeats": args.repeats, "cases": []}
    for model, space, batch, group in tqdm(cases, desc="cases", unit="case"):
        row = {"model": model, "space": space, "batch": batch, "group": group}
        for kind in ("serial", "masked"):
            command = [
                sys.executable, __file__, "--case", f"--model={model}", f"--space={space}", f"--batch={batch}",
                f"--group={group}", f"--kind={kind}", f"--repeats={args.repeats}", f"--seed={args.seed}",
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            row[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        row["masked_over_serial_time"] = round(row["masked"]["median_s"] / row["serial"]["median_s"], 3)
        row["masked_over_serial_macs"] = round(row["masked"]["mmacs_per_step"] / row["serial"]["mmacs_per_step"], 3)
        results["cases"].append(row)
        print(json.dumps({k: row[k] for k in ("model", "space", "batch", "group", "masked_over_serial_time")}),
              file=sys.stderr, flush=True)
    results["machine_state_at_end"] = machine_state()
    text = json.dumps(results, indent=2)
    if args.out:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from pss_tf.io_utils import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
