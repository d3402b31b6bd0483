"""Training-step throughput: one PSS step, its parts, and the Keras floor.

    python bench/train_step.py --model=mobilenet_v1 [--batch=32 --resolution=224]
    python bench/train_step.py --model=mobilenet_v1 --profile_dir=/tmp/prof   # also a TF profile
    python bench/train_step.py --model=mobilenet_v1 --batch_norm_kernel=flat   # batch norm on (N*H*W, 1, 1, C) views

Synthetic data (one fixed batch in memory), so the figures are compute only.
Prints one JSON object with the median seconds (and images per second) of:

    pss_step      SandwichStep: max, chosen and min subnet forward-backward,
                  distillation, weight decay, one optimizer update
    part_max, part_chosen, part_min
                  one subnet's forward-backward as traced inside the step
    keras_floor   keras.applications MobileNet/MobileNetV2 of the max net's
                  width: one forward-backward, the cost floor of one subnet
    keras_step    the same plus one optimizer update (a plain Keras 3 step)
    tf_keras_floor, tf_keras_step
                  the same with tf_keras.applications (Keras 2, fused batch
                  norm): the strongest plain-TensorFlow baseline, about 1.7x
                  faster than Keras 3's unfused batch norm on these CPUs
    tf_keras_flat_bn_floor, tf_keras_flat_bn_step
                  when the supernet's batch norm runs on (N*H*W, 1, 1, C)
                  views (`--batch_norm_kernel`: flat, or auto where oneDNN
                  runs without AVX-512, as training does): the same baseline
                  with the same change to its batch norm
    release_step  with `--release_dir` (a clone of the PSS-Net release) and
                  torch installed: the release's own step in PyTorch, timed
                  by bench/release_step.py in a process of its own
                  (`--torch_python`: another interpreter that has torch)

and the ratios: `max_part_over_tf_keras_floor` (the supernet's max-net pass
against the plain network's), `pss_step_over_tf_keras_step` (a whole PSS step
against one plain step) and `pss_step_over_release_step`.

With `--kernels=native,eigen_avx2,onednn_avx2` (bench/kernels.py) the TensorFlow
side runs in a fresh process per kernel setting and round (`--rounds`, the
settings in turn within a round), the release's step likewise under the
setting's PyTorch variables; the JSON records each setting's variables, what
a probe process saw take effect (oneDNN on or off, its ISA, the convolution
kernel), every run, and per setting the medians over rounds and their ratios.

The chosen subnet is a fixed mid-space config (all widths at the middle,
middle resolution), so repeats are comparable.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kernels
from common import lscpu_model_name, machine_state, one_scalar_of, time_calls


def _median_seconds(fn, warmup: int, repeats: int) -> dict:
    times = time_calls(fn, warmup, repeats)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "repeats": repeats}


def _with_rate(result: dict, batch: int) -> dict:
    return {**result, "images_per_s": round(batch / result["median_s"], 2)}


def _plain_steps(keras_module, args, images, labels, prefix: str) -> dict:
    """One plain step of `keras_module.applications` at the max net's width: its
    forward-backward (`{prefix}_floor`) and with an optimizer update (`{prefix}_step`).

    `keras` is Keras 3 (unfused batch norm); `tf_keras` is Keras 2, whose fused
    batch norm makes it the strongest plain-TensorFlow baseline on these CPUs.
    """
    import tensorflow as tf

    K = keras_module
    app = K.applications.MobileNet if args.model == "mobilenet_v1" else K.applications.MobileNetV2
    model = app(
        input_shape=(args.resolution, args.resolution, 3), alpha=1.0, weights=None, classes=args.classes,
        classifier_activation=None,
    )
    loss_fn = K.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = K.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    optimizer.build(model.trainable_variables)

    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    # Images and labels go in as arguments, as the supernet's step takes them.
    floor_fn = tf.function(lambda x, y: one_scalar_of(forward_backward(x, y)))

    @tf.function
    def step_fn(x, y):
        loss, grads = forward_backward(x, y)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    floor = _median_seconds(lambda: float(floor_fn(images, labels)), args.warmup, args.repeats)
    step = _median_seconds(lambda: float(step_fn(images, labels)), args.warmup, args.repeats)
    return {f"{prefix}_floor": _with_rate(floor, args.batch), f"{prefix}_step": _with_rate(step, args.batch)}


@contextlib.contextmanager
def _flat_fused_batch_norm():
    """While tf_keras traces its model: tf.compat.v1.nn.fused_batch_norm on (N*H*W, 1, 1, C) views of
    NHWC maps, the supernet's `flat_bn_kernel` change applied to the plain baseline."""
    import tensorflow as tf

    original = tf.compat.v1.nn.fused_batch_norm

    def flat(x, *args, data_format="NHWC", **kwargs):
        if data_format != "NHWC" or x.shape.rank != 4:
            return original(x, *args, data_format=data_format, **kwargs)
        shape = tf.shape(x)
        y, mean, variance = original(tf.reshape(x, tf.stack([-1, 1, 1, shape[3]])), *args, data_format=data_format,
                                     **kwargs)
        return tf.reshape(y, shape), mean, variance

    tf.compat.v1.nn.fused_batch_norm = flat
    try:
        yield
    finally:
        tf.compat.v1.nn.fused_batch_norm = original


def _ratio(a: dict, b: dict) -> float:
    return round(a["median_s"] / b["median_s"], 3)


def _release_step(args, chosen_resolution: int, chosen_width: float, env: dict | None = None) -> dict:
    """bench/release_step.py's JSON: the release's step, timed in a process of its own (environment `env`)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release_step.py")
    command = [
        args.torch_python, script, f"--release_dir={args.release_dir}", f"--batch={args.batch}",
        f"--resolution={args.resolution}", f"--min_resolution={args.min_resolution}",
        f"--min_width={args.min_width}", f"--chosen_resolution={chosen_resolution}",
        f"--chosen_width={chosen_width}", f"--classes={args.classes}", f"--repeats={args.repeats}",
        f"--warmup={args.warmup}", f"--threads={os.cpu_count()}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"release_step.py failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def _median_of_runs(runs: list[dict], key: str) -> float | None:
    values = [run[key]["median_s"] for run in runs if key in run]
    return round(statistics.median(values), 4) if values else None


def _across_kernels(args, argv: list[str]) -> dict:
    """The benchmark once per kernel setting and round, each in a fresh process; the medians over rounds."""
    names = kernels.parse(args.kernels)
    child_argv = kernels.without_flags(argv, "--kernels", "--rounds", "--release_dir", "--torch_python")
    script = os.path.abspath(__file__)
    chosen_resolution, chosen_width = _chosen_subnet(args)
    results = {
        "benchmark": "train_step",
        "model": args.model, "batch": args.batch, "resolution": args.resolution,
        "batch_norm_kernel": args.batch_norm_kernel,
        "lscpu_model_name": lscpu_model_name(),
        **machine_state(),
        "command": ["python", "bench/train_step.py", *argv],
        "rounds": args.rounds,
        "settings": {},
    }
    settings = results["settings"]
    for name in names:
        settings[name] = {**kernels.describe(name), "tensorflow_probe": kernels.probe(name), "runs": []}
        if args.release_dir:
            settings[name]["torch_probe"] = kernels.probe(name, "torch", args.torch_python)
            settings[name]["release_runs"] = []
    for round_index in range(args.rounds):
        for name in names:
            print(f"round {round_index + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            settings[name]["runs"].append(kernels.run_json([sys.executable, script, *child_argv],
                                                           kernels.environment(name)))
        if args.release_dir:  # Once per distinct PyTorch setting, shared by the settings that have it.
            timed = {}
            for name in names:
                key = json.dumps(kernels.SETTINGS[name]["torch"], sort_keys=True)
                if key not in timed:
                    print(f"round {round_index + 1}/{args.rounds}: the release's step, {name}'s PyTorch",
                          file=sys.stderr, flush=True)
                    timed[key] = _release_step(args, chosen_resolution, chosen_width,
                                               kernels.environment(name, "torch"))
                settings[name]["release_runs"].append(timed[key])
    for name in names:
        setting = settings[name]
        runs = setting["runs"]
        summary = {key: _median_of_runs(runs, key)
                   for key in ("pss_step", "part_max", "part_chosen", "part_min", "tf_keras_floor", "tf_keras_step",
                               "tf_keras_flat_bn_floor", "tf_keras_flat_bn_step")}
        if args.release_dir:
            summary["release_step"] = round(statistics.median(r["median_s"] for r in setting["release_runs"]), 4)
        summary = {k: v for k, v in summary.items() if v is not None}
        ratios = {"pss_step_over_tf_keras_step": round(summary["pss_step"] / summary["tf_keras_step"], 3)}
        if "tf_keras_flat_bn_step" in summary:
            ratios["pss_step_over_tf_keras_flat_bn_step"] = round(
                summary["pss_step"] / summary["tf_keras_flat_bn_step"], 3)
        if "part_max" in summary:
            ratios["max_part_over_tf_keras_floor"] = round(summary["part_max"] / summary["tf_keras_floor"], 3)
        if "release_step" in summary:
            ratios["pss_step_over_release_step"] = round(summary["pss_step"] / summary["release_step"], 3)
        setting["median_s_over_rounds"] = summary
        setting["ratios"] = ratios
    results["machine_state_at_end"] = machine_state()
    return results


def _chosen_subnet(args) -> tuple[int, float]:
    """The fixed mid-space subnet: the middle resolution, every width at the middle."""
    from pss_tf import SearchSpace

    space = SearchSpace(args.model, args.min_resolution, args.resolution, 8, args.min_width, 1.0)
    return space.resolutions[len(space.resolutions) // 2], round((args.min_width + 1.0) / 2, 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v1", choices=["mobilenet_v1", "mobilenet_v2"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224, help="max resolution (images load at it)")
    parser.add_argument("--min_resolution", type=int, default=128)
    parser.add_argument("--min_width", type=float, default=0.75)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--strategy", default="mirrored", choices=["mirrored", "one_device"])
    parser.add_argument("--skip_parts", action="store_true", help="only the full step and the floor")
    parser.add_argument("--skip_keras3", action="store_true", help="no Keras 3 floor (tf_keras's only)")
    parser.add_argument("--profile_dir", default=None, help="write a TF profiler trace of 2 PSS steps here")
    parser.add_argument("--release_dir", default=None, help="a PSS-Net release clone: also time its step")
    parser.add_argument("--torch_python", default=sys.executable, help="the interpreter that runs the release")
    parser.add_argument("--kernels", default=None,
                        help=f"comma-separated kernel settings, each in fresh processes: {', '.join(kernels.SETTINGS)}")
    parser.add_argument("--rounds", type=int, default=1, help="with --kernels: rounds of all settings in turn")
    parser.add_argument("--batch_norm_kernel", default="auto", choices=("auto", "nhwc", "flat"),
                        help="how the supernet's training batch norm sees the maps, as tools/train.py's flag")
    args = parser.parse_args()
    if args.release_dir and not os.path.isfile(os.path.join(args.release_dir, "models", "mobilenet_v1.py")):
        parser.error(f"--release_dir: {args.release_dir} holds no models/mobilenet_v1.py (a PSS-Net clone?)")
    if args.release_dir and args.model != "mobilenet_v1":
        parser.error("--release_dir: the release's step is timed for --model=mobilenet_v1 only")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    if args.kernels:
        kernels.parse(args.kernels)
        print(json.dumps(_across_kernels(args, sys.argv[1:]), indent=2))
        return

    import keras
    import numpy as np
    import tensorflow as tf

    from pss_tf import SearchSpace, SubnetConfig, build_supernet, cpu_kernels, keep_freed_memory
    from pss_tf.models.supernet import encode
    from pss_tf.training.distribute import create_strategy
    from pss_tf.training.optimization import build_optimizer, learning_rate_schedule
    from pss_tf.training.step import SandwichStep

    keras.utils.set_random_seed(0)
    space = SearchSpace(args.model, args.min_resolution, args.resolution, 8, args.min_width, 1.0)
    middle_res, middle_width = _chosen_subnet(args)
    chosen = SubnetConfig.uniform(args.model, middle_res, middle_width)
    configs = {"max": space.max_config(), "chosen": chosen, "min": space.min_config()}
    vectors = {k: tf.constant(encode(c)) for k, c in configs.items()}

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 1, (args.batch, args.resolution, args.resolution, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, args.classes, args.batch).astype("int32"))

    batch_norm = cpu_kernels.flat_batch_norm(args.batch_norm_kernel)
    strategy = create_strategy(args.strategy)
    with strategy.scope():
        supernet = build_supernet(args.model, num_classes=args.classes, flat_bn_kernel=batch_norm["flat"])
        optimizer = build_optimizer(learning_rate_schedule(0.1, 1000))
        optimizer.build(supernet.trainable_variables)
    step = SandwichStep(supernet, optimizer, strategy, args.batch, 1e-4)
    batch = (images, labels)

    def pss_step():
        losses = step(batch, vectors["max"], vectors["chosen"], vectors["min"])
        float(losses["loss"])  # Wait for the result.

    results = {
        "benchmark": "train_step",
        "model": args.model,
        "batch": args.batch,
        "resolution": args.resolution,
        "subnets": {k: str(c) for k, c in configs.items()},
        "machine": platform.processor() or platform.machine(),
        "lscpu_model_name": lscpu_model_name(),
        **machine_state(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "strategy": args.strategy,
        "batch_norm_kernel": batch_norm,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        "kernels": kernels.current(),
        "malloc_settings": keep_freed_memory(),  # pss_tf's, applied at import (empty: glibc's defaults)
    }
    start = time.perf_counter()
    pss_step()
    results["first_step_s_incl_tracing"] = round(time.perf_counter() - start, 2)
    results["pss_step"] = _with_rate(_median_seconds(pss_step, args.warmup - 1, args.repeats), args.batch)

    if not args.skip_parts:
        teacher = tf.zeros([args.batch, args.classes])
        # The step's own traced function for one subnet: forward, loss, backward,
        # called as the step calls it (images, labels and config as arguments:
        # captured constants would let graph optimisation fold work away). The
        # gradients are returned: a function returning only the loss would let
        # graph pruning drop the whole backward pass.
        part = tf.function(lambda x, y, vector, flag: one_scalar_of(step._pass(x, y, vector, teacher, flag)))
        for name, vector in vectors.items():
            flag = tf.constant(name == "max")
            results[f"part_{name}"] = _with_rate(
                _median_seconds(lambda vector=vector, flag=flag: float(part(images, labels, vector, flag)),
                                args.warmup, args.repeats),
                args.batch,
            )

    # The floors: keras.applications and tf_keras.applications at the max net's width and resolution.
    import tf_keras

    if not args.skip_keras3:
        results.update(_plain_steps(keras, args, images, labels, "keras"))
    results.update(_plain_steps(tf_keras, args, images, labels, "tf_keras"))
    if batch_norm["flat"]:
        with _flat_fused_batch_norm():
            results.update(_plain_steps(tf_keras, args, images, labels, "tf_keras_flat_bn"))
    if args.release_dir:
        results["release_step"] = _release_step(args, middle_res, chosen.widths[0])
    ratios = {}
    if not args.skip_parts:
        ratios["max_part_over_tf_keras_floor"] = _ratio(results["part_max"], results["tf_keras_floor"])
        if "keras_floor" in results:
            ratios["max_part_over_keras_floor"] = _ratio(results["part_max"], results["keras_floor"])
        parts = sum(results[f"part_{k}"]["median_s"] for k in configs)
        ratios["step_over_sum_of_parts"] = round(results["pss_step"]["median_s"] / parts, 3)
    ratios["pss_step_over_tf_keras_step"] = _ratio(results["pss_step"], results["tf_keras_step"])
    if batch_norm["flat"]:
        ratios["pss_step_over_tf_keras_flat_bn_step"] = _ratio(results["pss_step"], results["tf_keras_flat_bn_step"])
    if "release_step" in results:
        ratios["pss_step_over_release_step"] = _ratio(results["pss_step"], results["release_step"])
    results["ratios"] = ratios

    if args.profile_dir:
        tf.profiler.experimental.start(args.profile_dir)
        for _ in range(2):
            pss_step()
        tf.profiler.experimental.stop()
        results["profile_dir"] = args.profile_dir
    results["machine_state_at_end"] = machine_state()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
