"""Process-wide settings of a training run, set once by the program that runs it.

Precision policy, op determinism and the global seeds belong to the process,
not to one library object: the driver (`tools/train.py`, or `run` below for
library users) sets them before anything is built.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def configure(run_config) -> None:
    """Applies `run_config`'s (a TrainConfig) precision, determinism and seed to this process."""
    precision = run_config.optimization.mixed_precision
    keras.mixed_precision.set_global_policy("float32" if precision == "none" else f"mixed_{precision}")
    if run_config.runtime.deterministic:  # TensorFlow offers no public way back: once per process.
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(run_config.runtime.seed)


def run(run_config, strategy=None):
    """Configures the process for `run_config`, then trains (or resumes) the run."""
    from pss_tf.training.trainer import Trainer

    configure(run_config)
    return Trainer(run_config, strategy).run()
