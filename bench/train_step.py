"""Training-step throughput: one PSS step, its parts, and the Keras floor.

    python bench/train_step.py --model=mobilenet_v1 [--batch=32 --resolution=224]
    python bench/train_step.py --model=mobilenet_v1 --profile_dir=/tmp/prof   # also a TF profile

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

The chosen subnet is a fixed mid-space config (all widths at the middle,
middle resolution), so repeats are comparable.
"""

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import machine_state, time_calls


def _median_seconds(fn, warmup: int, repeats: int) -> dict:
    times = time_calls(fn, warmup, repeats)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "repeats": repeats}


def _done(outputs):
    """One scalar that depends on every tensor in `outputs` (gradients included).

    Timing a tf.function that returns only the loss measures the forward pass
    alone: ops no output depends on are pruned, the backward pass among them.
    """
    import tensorflow as tf

    tensors = [t for t in tf.nest.flatten(outputs) if t is not None]
    return tf.add_n([tf.reduce_sum(tf.reshape(tf.cast(t, tf.float32), [-1])[:1]) for t in tensors])


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

    def forward_backward():
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    floor_fn = tf.function(lambda: _done(forward_backward()))

    @tf.function
    def step_fn():
        loss, grads = forward_backward()
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return {
        f"{prefix}_floor": _with_rate(_median_seconds(lambda: float(floor_fn()), args.warmup, args.repeats), args.batch),
        f"{prefix}_step": _with_rate(_median_seconds(lambda: float(step_fn()), args.warmup, args.repeats), args.batch),
    }


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
    parser.add_argument("--profile_dir", default=None, help="write a TF profiler trace of 2 PSS steps here")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from pss_tf import SearchSpace, SubnetConfig, build_supernet
    from pss_tf.models.supernet import encode
    from pss_tf.training.distribute import create_strategy
    from pss_tf.training.optimization import build_optimizer, learning_rate_schedule
    from pss_tf.training.step import SandwichStep

    keras.utils.set_random_seed(0)
    space = SearchSpace(args.model, args.min_resolution, args.resolution, 8, args.min_width, 1.0)
    middle_res = space.resolutions[len(space.resolutions) // 2]
    chosen = SubnetConfig.uniform(args.model, middle_res, round((args.min_width + 1.0) / 2, 3))
    configs = {"max": space.max_config(), "chosen": chosen, "min": space.min_config()}
    vectors = {k: tf.constant(encode(c)) for k, c in configs.items()}

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 1, (args.batch, args.resolution, args.resolution, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, args.classes, args.batch).astype("int32"))

    strategy = create_strategy(args.strategy)
    with strategy.scope():
        supernet = build_supernet(args.model, num_classes=args.classes)
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
        **machine_state(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "strategy": args.strategy,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
    }
    start = time.perf_counter()
    pss_step()
    results["first_step_s_incl_tracing"] = round(time.perf_counter() - start, 2)
    results["pss_step"] = _with_rate(_median_seconds(pss_step, args.warmup - 1, args.repeats), args.batch)

    if not args.skip_parts:
        teacher = tf.zeros([args.batch, args.classes])
        for name, vector in vectors.items():
            # The step's own traced function for one subnet: forward, loss, backward.
            # The gradients are returned: a function returning only the loss
            # would let graph pruning drop the whole backward pass.
            part = tf.function(
                lambda vector=vector, labels_flag=tf.constant(name == "max"): _done(
                    step._pass(images, labels, vector, teacher, labels_flag)
                )
            )
            results[f"part_{name}"] = _with_rate(
                _median_seconds(lambda part=part: float(part()), args.warmup, args.repeats), args.batch
            )

    # The floors: keras.applications and tf_keras.applications at the max net's width and resolution.
    import tf_keras

    results.update(_plain_steps(keras, args, images, labels, "keras"))
    results.update(_plain_steps(tf_keras, args, images, labels, "tf_keras"))
    if not args.skip_parts:
        results["max_part_over_tf_keras_floor"] = round(
            results["part_max"]["median_s"] / results["tf_keras_floor"]["median_s"], 3
        )
        results["max_part_over_floor"] = round(results["part_max"]["median_s"] / results["keras_floor"]["median_s"], 3)
        parts = sum(results[f"part_{k}"]["median_s"] for k in configs)
        results["step_over_sum_of_parts"] = round(results["pss_step"]["median_s"] / parts, 3)

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
