"""Trains a resource-adaptive supernet with Prioritized Subnet Sampling.

    python tools/train.py --flagfile=configs/fashion_mnist.flags --job_dir=runs/fmnist
    python tools/train.py --flagfile=configs/smoke.flags --job_dir=/tmp/smoke
    python tools/train.py --flagfile=configs/mbv1.flags --job_dir=runs/mbv1 --data_dir=/data/tfds

A stopped run continues with the same flags plus --resume. Every flag is a
field of `pss_tf.run.config.TrainConfig` (`--helpfull` lists them).
"""

import os

from pss_tf import cli, config_flags
from pss_tf.errors import ConfigError, TrainingDiverged
from pss_tf.run.config import TrainConfig

config_flags.define_flags(TrainConfig)


def main(argv):
    del argv
    cli.show_library_logs()
    try:
        run_config = config_flags.from_flags(TrainConfig)
        run_config.validate()
        from pss_tf.training import runtime
        from pss_tf.training.trainer import Trainer

        runtime.configure(run_config)
        trainer = Trainer(run_config)
    except ConfigError as e:
        return cli.error(e)
    try:
        result = trainer.run()
    except TrainingDiverged as e:
        return cli.error(str(e), status=1)
    state = "finished" if result.finished else "stopped (continue with --resume)"
    print(f"{state} after {result.steps} steps; outputs in {os.path.abspath(result.job_dir)}")
    return 0


if __name__ == "__main__":
    cli.run(main, skip_teardown=True)
