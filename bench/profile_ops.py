"""Where the supernet's passes spend their time, against the plain network: op types ranked by time.

    python bench/profile_ops.py --passes [--model=mobilenet_v1 --batch=32 --resolution=224]
    python bench/train_step.py --model=mobilenet_v1 --profile_dir=/tmp/prof && python bench/profile_ops.py /tmp/prof

With `--passes` it builds the supernet and `tf_keras.applications`' network of
the max net's width (Keras 2: TensorFlow's fused batch norm) and, for each case
below, times it (median of `--repeats` calls after warm-up, the cases taken in
turn so that a busy stretch of the machine touches them alike) and then
profiles `--profiled` further calls with `tf.profiler.experimental`:

    supernet_forward, supernet_forward_backward
                  the max net (widths and resolution given as the int32
                  config vector the training step takes), training mode
    supernet_static_forward, supernet_static_forward_backward
                  the same subnet given as a `SubnetConfig` (every width a
                  Python int: static shapes), to tell what dynamic shapes cost
    plain_forward, plain_forward_backward
                  the tf_keras network, training mode
    pss_step      one `SandwichStep` (max, a mid-space subnet and the min net,
                  one SGD update) under the training's MirroredStrategy, as the
                  trainer calls it: the max and min nets as `SubnetConfig`s
                  (static shapes), the drawn subnet as its int32 vector
    pss_step_all_encoded, pss_step_static_max
                  the same with all three subnets as int32 vectors, or only
                  the max net as a `SubnetConfig`
    step_part_max, step_part_max_captured
                  the step's own traced pass of the max net (forward, loss,
                  backward) with its inputs as arguments, or captured as
                  constants
    plain_step    one tf_keras forward-backward and SGD update

Every function takes its images, labels and config as arguments (captured
constants would let graph optimisation fold work away) and returns a value
that depends on every gradient (else the backward pass is pruned).

With `--kernels=eigen_avx2,onednn_avx2` (bench/kernels.py) the passes run in a
fresh process per kernel setting, one after another; the JSON holds each
setting's variables, what a probe process saw take effect, and its run.

Given a directory, it only reads the newest `*.xplane.pb` under it. Either
way an op's time is the sum of the durations of its TensorFlow op events on
the host threads (`name:Type` events), so on 2 cores the op times of one call
can add up to twice its wall time. Prints one JSON object.
"""

import argparse
import collections
import glob
import json
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kernels
from common import lscpu_model_name, one_scalar_of

# Op types by what they do, for the summary of each case.
CATEGORIES = {
    "conv": ("Conv2D", "Conv2DBackpropFilter", "Conv2DBackpropInput"),
    "depthwise": ("DepthwiseConv2dNative", "DepthwiseConv2dNativeBackpropFilter", "DepthwiseConv2dNativeBackpropInput"),
    "batch_norm": ("FusedBatchNormV3", "FusedBatchNormGradV3", "FusedBatchNormEx"),
    "activation": ("Relu6", "Relu6Grad", "Relu", "ReluGrad"),
    "weight_slicing": ("StridedSlice", "StridedSliceGrad", "Slice", "Pad", "TensorScatterAdd", "ScatterNd"),
    "resize": ("ResizeBilinear", "ResizeBilinearGrad"),
    "optimizer": ("ResourceApplyKerasMomentum", "ResourceApplyMomentum", "AssignVariableOp", "AssignAddVariableOp",
                  "AssignSubVariableOp"),
}


def base_op_type(op_type: str) -> str:
    """The op type without oneDNN's prefixes: `_MklNativeConv2D` -> `Conv2D`."""
    for prefix in ("_MklNativeFused", "_MklNative", "_MklFused", "_Mkl", "_Fused"):
        if op_type.startswith(prefix):
            stripped = op_type[len(prefix):]
            return ("Fused" + stripped) if prefix.endswith("Fused") else stripped
    return op_type


def op_totals(path: str) -> tuple[dict, int]:
    """{op type: [picoseconds, count]} of one `*.xplane.pb`, and the sum of all."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.defaultdict(lambda: [0, 0])
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                # Op events are "node_name:OpType"; executor and runtime events use "::".
                if ":" not in name or "::" in name or name.startswith(("__inference", "Eager")):
                    continue
                op_type = name.rsplit(":", 1)[1]
                if not op_type or not (op_type[0].isupper() or op_type[0] == "_"):
                    continue
                totals[op_type][0] += event.duration_ps
                totals[op_type][1] += 1
    return totals, sum(t[0] for t in totals.values())


def breakdown(path: str, top: int, calls: int = 1) -> dict:
    """The ranked op types of one profile, and the categories' shares, per call."""
    totals, everything = op_totals(path)
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])
    categories = collections.defaultdict(int)
    for op, (ps, _) in totals.items():
        base = base_op_type(op)
        name = next((c for c, ops in CATEGORIES.items() if base in ops), "other")
        categories[name] += ps
    per_call = 1e12 * calls
    return {
        "profile": path,
        "calls": calls,
        "op_time_s_per_call": round(everything / per_call, 4),
        "categories_s_per_call": {
            k: round(v / per_call, 4) for k, v in sorted(categories.items(), key=lambda kv: -kv[1])
        },
        "ops": [
            {"op": op, "s_per_call": round(ps / per_call, 4), "pct": round(100 * ps / everything, 1),
             "count_per_call": round(count / calls, 1)}
            for op, (ps, count) in ranked[:top]
        ],
    }


def newest_xplane(directory: str) -> str | None:
    files = sorted(glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    return files[-1] if files else None


def build_cases(args) -> dict:
    """{case: a no-argument callable that runs it once and waits for the result}."""
    import keras
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from pss_tf import SearchSpace, SubnetConfig, build_supernet
    from pss_tf.models.supernet import encode
    from pss_tf.training.distribute import create_strategy
    from pss_tf.training.optimization import build_optimizer, learning_rate_schedule
    from pss_tf.training.step import SandwichStep

    keras.utils.set_random_seed(0)
    space = SearchSpace(args.model, args.min_resolution, args.resolution, 8, args.min_width, 1.0)
    middle = space.resolutions[len(space.resolutions) // 2]
    chosen = SubnetConfig.uniform(args.model, middle, round((args.min_width + 1.0) / 2, 3))
    max_config, min_config = space.max_config(), space.min_config()
    vectors = [tf.constant(encode(c)) for c in (max_config, chosen, min_config)]
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 1, (args.batch, args.resolution, args.resolution, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, args.classes, args.batch).astype("int32"))

    strategy = create_strategy("mirrored")
    with strategy.scope():
        supernet = build_supernet(args.model, num_classes=args.classes)
        optimizer = build_optimizer(learning_rate_schedule(0.1, 1000))
        optimizer.build(supernet.trainable_variables)
    step = SandwichStep(supernet, optimizer, strategy, args.batch, 1e-4)

    app = tf_keras.applications.MobileNet if args.model == "mobilenet_v1" else tf_keras.applications.MobileNetV2
    plain = app(input_shape=(args.resolution, args.resolution, 3), alpha=1.0, weights=None, classes=args.classes,
                classifier_activation=None)
    plain_optimizer = tf_keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    plain_optimizer.build(plain.trainable_variables)

    def forward_backward(model_call, variables, x, y):
        with tf.GradientTape() as tape:
            logits = model_call(x)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        return loss, tape.gradient(loss, variables)

    super_forward = tf.function(lambda x, v: one_scalar_of(supernet(x, v, training=True)))
    super_static_forward = tf.function(lambda x: one_scalar_of(supernet(x, max_config, training=True)))
    super_fb = tf.function(
        lambda x, y, v: one_scalar_of(
            forward_backward(lambda i: supernet(i, v, training=True), supernet.trainable_variables, x, y)
        )
    )
    super_static_fb = tf.function(
        lambda x, y: one_scalar_of(
            forward_backward(lambda i: supernet(i, max_config, training=True), supernet.trainable_variables, x, y)
        )
    )
    plain_forward = tf.function(lambda x: one_scalar_of(plain(x, training=True)))
    plain_fb = tf.function(lambda x, y: one_scalar_of(forward_backward(lambda i: plain(i, training=True),
                                                                plain.trainable_variables, x, y)))

    # The step's own traced pass of the max net, called with its inputs as arguments,
    # and as this benchmark's first version timed it (inputs captured as constants).
    teacher = tf.zeros([args.batch, args.classes])
    flag = tf.constant(True)
    part = tf.function(lambda x, y, v, f: one_scalar_of(step._pass(x, y, v, teacher, f)))
    part_captured = tf.function(lambda: one_scalar_of(step._pass(images, labels, vectors[0], teacher, flag)))

    @tf.function
    def plain_step(x, y):
        loss, grads = forward_backward(lambda i: plain(i, training=True), plain.trainable_variables, x, y)
        plain_optimizer.apply_gradients(zip(grads, plain.trainable_variables))
        return loss

    return {
        "supernet_forward": lambda: float(super_forward(images, vectors[0])),
        "supernet_static_forward": lambda: float(super_static_forward(images)),
        "plain_forward": lambda: float(plain_forward(images)),
        "supernet_forward_backward": lambda: float(super_fb(images, labels, vectors[0])),
        "supernet_static_forward_backward": lambda: float(super_static_fb(images, labels)),
        "plain_forward_backward": lambda: float(plain_fb(images, labels)),
        "pss_step": lambda: float(step((images, labels), max_config, vectors[1], min_config)["loss"]),
        "pss_step_all_encoded": lambda: float(step((images, labels), *vectors)["loss"]),
        "pss_step_static_max": lambda: float(step((images, labels), max_config, *vectors[1:])["loss"]),
        "step_part_max": lambda: float(part(images, labels, vectors[0], flag)),
        "step_part_max_captured": lambda: float(part_captured()),
        "plain_step": lambda: float(plain_step(images, labels)),
    }


RATIOS = {
    "forward_over_plain": ("supernet_forward", "plain_forward"),
    "static_forward_over_plain": ("supernet_static_forward", "plain_forward"),
    "forward_backward_over_plain": ("supernet_forward_backward", "plain_forward_backward"),
    "static_forward_backward_over_plain": ("supernet_static_forward_backward", "plain_forward_backward"),
    "pss_step_over_plain_step": ("pss_step", "plain_step"),
    "pss_step_all_encoded_over_plain_step": ("pss_step_all_encoded", "plain_step"),
    "step_part_max_over_plain": ("step_part_max", "plain_forward_backward"),
    "step_part_max_captured_over_plain": ("step_part_max_captured", "plain_forward_backward"),
}


def run_passes(args) -> dict:
    import time

    import tensorflow as tf

    from common import machine_state

    cases = build_cases(args)
    if args.cases:
        unknown = sorted(set(args.cases) - set(cases))
        if unknown:
            raise SystemExit(f"--cases: unknown case(s) {unknown}; choose from {sorted(cases)}")
        cases = {k: v for k, v in cases.items() if k in args.cases}

    results = {
        "benchmark": "profile_ops",
        "lscpu_model_name": lscpu_model_name(),
        **machine_state(),
        "tensorflow": tf.__version__,
        "kernels": kernels.current(),
        "model": args.model,
        "batch": args.batch,
        "resolution": args.resolution,
        "cases": {},
    }
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="profile_ops_")
    first = {}
    for name, call in cases.items():  # Tracing and graph optimisation.
        start = time.perf_counter()
        call()
        first[name] = time.perf_counter() - start
    for _ in range(args.warmup):
        for call in cases.values():
            call()
    # Round robin: every case once per round, so a slow stretch of the machine
    # touches all cases alike rather than the one timed during it.
    times = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, call in cases.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    for name, call in cases.items():
        case = {"first_call_s": round(first[name], 2), "median_s": round(statistics.median(times[name]), 4),
                "min_s": round(min(times[name]), 4), "repeats": args.repeats}
        if args.profiled:
            directory = os.path.join(out_dir, name)
            tf.profiler.experimental.start(directory)
            for _ in range(args.profiled):
                call()
            tf.profiler.experimental.stop()
            case["ops"] = breakdown(newest_xplane(directory), args.top, args.profiled)
        results["cases"][name] = case
        print(f"{name}: median {case['median_s']} s", file=sys.stderr, flush=True)
    timed = results["cases"]
    results["ratios"] = {
        k: round(timed[a]["median_s"] / timed[b]["median_s"], 3) for k, (a, b) in RATIOS.items()
        if a in timed and b in timed
    }
    results["machine_state_at_end"] = machine_state()
    return results


def across_kernels(args, argv: list[str]) -> dict:
    """`--passes` once per kernel setting, each in a fresh process."""
    from common import machine_state

    names = kernels.parse(args.kernels)
    results = {"benchmark": "profile_ops", "lscpu_model_name": lscpu_model_name(), **machine_state(),
               "command": ["python", "bench/profile_ops.py", *argv]}
    results["settings"] = kernels.run_each(names, os.path.abspath(__file__), kernels.without_flags(argv, "--kernels"))
    results["machine_state_at_end"] = machine_state()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile_dir", nargs="?", help="read the newest profile under this directory")
    parser.add_argument("--passes", action="store_true", help="time and profile the passes (see above)")
    parser.add_argument("--cases", nargs="*", default=None, help="only these cases")
    parser.add_argument("--model", default="mobilenet_v1", choices=["mobilenet_v1", "mobilenet_v2"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--min_resolution", type=int, default=128)
    parser.add_argument("--min_width", type=float, default=0.75)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profiled", type=int, default=2, help="calls profiled per case (0: none)")
    parser.add_argument("--out_dir", default=None, help="where the profiles go (default: a temporary directory)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--kernels", default=None,
                        help=f"with --passes: comma-separated kernel settings ({', '.join(kernels.SETTINGS)})")
    args = parser.parse_args()
    if args.kernels:
        if not args.passes:
            parser.error("--kernels: only with --passes")
        kernels.parse(args.kernels)
        print(json.dumps(across_kernels(args, sys.argv[1:]), indent=2))
        return 0
    if args.passes:
        print(json.dumps(run_passes(args), indent=2))
        return 0
    if not args.profile_dir:
        parser.error("give a profile directory, or --passes")
    path = newest_xplane(args.profile_dir)
    if path is None:
        print(f"error: no *.xplane.pb under {args.profile_dir}", file=sys.stderr)
        return 2
    print(json.dumps({"lscpu_model_name": lscpu_model_name(), **breakdown(path, args.top)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
