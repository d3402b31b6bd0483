"""Trains a resource-adaptive supernet with Prioritized Subnet Sampling.

    python tools/train.py --flagfile=configs/fashion_mnist.flags --job_dir=runs/fmnist
    python tools/train.py --flagfile=configs/smoke.flags --job_dir=/tmp/smoke
    python tools/train.py --flagfile=configs/mbv1.flags --job_dir=runs/mbv1 --data_dir=/data/tfds

A stopped run continues with the same flags plus --resume. Every flag is a
field of `pss_tf.run.config.TrainConfig` (`--helpfull` lists them).
"""

import logging
import os
import sys

from absl import app, flags

from pss_tf import config_flags
from pss_tf.errors import ConfigError, TrainingDiverged
from pss_tf.run.config import TrainConfig

config_flags.define_flags(TrainConfig)


def _quiet_logs():
    """pss_tf's own messages at INFO, once each; TensorFlow's and absl's INFO chatter off."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    library = logging.getLogger("pss_tf")
    library.setLevel(logging.INFO)
    library.addHandler(handler)
    library.propagate = False


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    _quiet_logs()
    try:
        run_config = config_flags.from_flags(TrainConfig)
        run_config.validate()
        from pss_tf.training import runtime
        from pss_tf.training.trainer import Trainer

        runtime.configure(run_config)
        trainer = Trainer(run_config)
    except ConfigError as e:
        print(f"error: {config_flags.flag_message(e, flags.FLAGS)}", file=sys.stderr)
        return 2
    try:
        result = trainer.run()
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    state = "finished" if result.finished else "stopped (continue with --resume)"
    print(f"{state} after {result.steps} steps; outputs in {os.path.abspath(result.job_dir)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
