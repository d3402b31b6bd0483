"""Trains a resource-adaptive supernet with Prioritized Subnet Sampling.

    python tools/train.py --flagfile=configs/fashion_mnist.flags --job_dir=runs/fmnist
    python tools/train.py --flagfile=configs/smoke.flags --job_dir=/tmp/smoke
    python tools/train.py --flagfile=configs/mbv1.flags --job_dir=runs/mbv1 --data_dir=/data/tfds

A stopped run continues with the same flags plus --resume.
"""

import dataclasses
import logging
import os
import sys

from absl import app, flags

from pss_tf.train_config import METRIC_NAMES, TrainConfig

FLAGS = flags.FLAGS
_DEFAULTS = TrainConfig(job_dir="")

flags.DEFINE_string("job_dir", None, "Directory for checkpoints, pools, winners and TensorBoard events.")
flags.DEFINE_string("model", _DEFAULTS.model, "Supernet: mobilenet_v1 or mobilenet_v2.")
flags.DEFINE_bool("small_input", _DEFAULTS.small_input, "Stem stride 1, for 28 to 64 pixel images.")
flags.DEFINE_string(
    "dataset", _DEFAULTS.dataset, "synthetic, fashion_mnist, imagefolder, or a TFDS name (e.g. imagenet2012)."
)
flags.DEFINE_string("data_dir", None, "Data location (fashion_mnist defaults to /usr/share/datasets/fashion-mnist).")
flags.DEFINE_integer("min_resolution", _DEFAULTS.min_resolution, "Smallest subnet resolution.")
flags.DEFINE_integer("max_resolution", _DEFAULTS.max_resolution, "Largest subnet resolution (images load at it).")
flags.DEFINE_integer("resolution_step", _DEFAULTS.resolution_step, "Resolution grid step.")
flags.DEFINE_float("min_width", _DEFAULTS.min_width, "Smallest width multiplier.")
flags.DEFINE_float("max_width", _DEFAULTS.max_width, "Largest width multiplier.")
flags.DEFINE_list("metrics", list(_DEFAULTS.metrics), f"Resource metrics with pools: {', '.join(METRIC_NAMES)}.")
flags.DEFINE_list("flops_targets", [], "FLOPs target grid in M MACs: start,stop,step (empty: about 10 targets).")
flags.DEFINE_list("latency_cpu_targets", [], "CPU latency target grid in ms: start,stop,step (empty: about 10).")
flags.DEFINE_string("latency_cpu_lut", None, "Latency lookup table of latency_cpu (tools/build_lut.py).")
flags.DEFINE_enum("sampler", _DEFAULTS.sampler, ["pss", "uniform"], "pss, or the uniform sandwich baseline.")
flags.DEFINE_integer("pool_capacity", _DEFAULTS.pool_capacity, "Subnets per pool (K).")
flags.DEFINE_float("score_momentum", _DEFAULTS.score_momentum, "EMA momentum of pool scores.")
flags.DEFINE_float("p_fresh_start", _DEFAULTS.p_fresh_start, "Fresh-sampling probability at epoch 0.")
flags.DEFINE_float("p_fresh_end", _DEFAULTS.p_fresh_end, "Fresh-sampling probability at the last epoch.")
flags.DEFINE_float("temperature_start", _DEFAULTS.temperature_start, "Pool softmax temperature at epoch 0.")
flags.DEFINE_float("temperature_end", _DEFAULTS.temperature_end, "Pool softmax temperature at the last epoch.")
flags.DEFINE_integer("sampler_samples", _DEFAULTS.sampler_samples, "Random subnets the conditional sampler bins.")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Training epochs.")
flags.DEFINE_integer("global_batch_size", _DEFAULTS.global_batch_size, "Batch over all replicas.")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Peak learning rate (cosine decay to zero).")
flags.DEFINE_float("warmup_epochs", _DEFAULTS.warmup_epochs, "Linear warm-up length in epochs.")
flags.DEFINE_float("momentum", _DEFAULTS.momentum, "Nesterov momentum.")
flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay, "L2 decay of conv and classifier kernels.")
flags.DEFINE_float("dropout_rate", _DEFAULTS.dropout_rate, "Dropout before the classifier.")
flags.DEFINE_bool(
    "synchronized_bn", _DEFAULTS.synchronized_bn, "BN statistics over all replicas (global-batch semantics)."
)
flags.DEFINE_enum("mixed_precision", _DEFAULTS.mixed_precision, ["none", "float16", "bfloat16"], "Compute dtype.")
flags.DEFINE_integer("steps_per_epoch", _DEFAULTS.steps_per_epoch, "Steps per epoch (0: one pass over the data).")
flags.DEFINE_float("crop_scale_min", _DEFAULTS.crop_scale_min, "Smallest area fraction of the random resized crop.")
flags.DEFINE_bool("flip", _DEFAULTS.flip, "Random horizontal flips in training.")
flags.DEFINE_integer("synthetic_train_examples", _DEFAULTS.synthetic_train_examples, "Size of synthetic train.")
flags.DEFINE_integer("synthetic_val_examples", _DEFAULTS.synthetic_val_examples, "Size of synthetic val.")
flags.DEFINE_integer("synthetic_classes", _DEFAULTS.synthetic_classes, "Classes of the synthetic dataset.")
flags.DEFINE_integer("calibration_batches", _DEFAULTS.calibration_batches, "Batches for BN re-estimation.")
flags.DEFINE_integer("eval_batch_size", _DEFAULTS.eval_batch_size, "Evaluation batch size.")
flags.DEFINE_integer("eval_every_epochs", _DEFAULTS.eval_every_epochs, "Evaluate every N epochs.")
flags.DEFINE_integer("eval_winners_per_epoch", _DEFAULTS.eval_winners_per_epoch, "Pool winners evaluated per epoch.")
flags.DEFINE_integer("final_top_k", _DEFAULTS.final_top_k, "Members per pool validated at the end; best kept.")
flags.DEFINE_enum("strategy", _DEFAULTS.strategy, ["mirrored", "multi_worker", "one_device"], "tf.distribute.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of every random choice.")
flags.DEFINE_bool("deterministic", _DEFAULTS.deterministic, "TensorFlow's deterministic ops (slower).")
flags.DEFINE_bool("resume", _DEFAULTS.resume, "Continue the run in --job_dir.")
flags.DEFINE_integer("max_steps", _DEFAULTS.max_steps, "Stop after this many steps in total, resumably (0: no).")
flags.DEFINE_integer("checkpoint_every_steps", _DEFAULTS.checkpoint_every_steps, "Extra checkpoints (0: epochs).")
flags.DEFINE_integer("keep_checkpoints", _DEFAULTS.keep_checkpoints, "Checkpoints kept.")
flags.DEFINE_integer("log_every_steps", _DEFAULTS.log_every_steps, "TensorBoard scalars every N steps.")
flags.DEFINE_bool("progress", _DEFAULTS.progress, "Progress bars and per-epoch summaries on stdout.")


def config_from_flags() -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {name: FLAGS[name].value for name in fields if name in FLAGS and name != "targets"}
    values["metrics"] = tuple(FLAGS.metrics)
    targets = {}
    for metric in METRIC_NAMES:
        grid = FLAGS[f"{metric}_targets"].value
        if grid:
            try:
                targets[metric] = tuple(float(v) for v in grid)
            except ValueError:
                raise ValueError(f"--{metric}_targets: not numbers: {','.join(grid)}") from None
    values["targets"] = targets
    values["job_dir"] = FLAGS.job_dir or ""
    return TrainConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger("pss_tf").setLevel(logging.INFO)
    try:
        config = config_from_flags()
        config.validate()
        from pss_tf.trainer import Trainer

        trainer = Trainer(config)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = trainer.run()
    state = "finished" if result.finished else "stopped (continue with --resume)"
    print(f"{state} after {result.steps} steps; outputs in {os.path.abspath(result.job_dir)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
