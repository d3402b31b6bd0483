"""The training modes a run may name, and what each asks of the other settings.

A mode's code is one module under `pss_tf.training.modes` (its `create(...)`
builds the mode for a run); this table is what a run's configuration knows of
it without TensorFlow: the `--mode` flag's choices and help, the subnet sampler
`--sampler=auto` runs with it, and the `parallel_subnets` it takes, checked with
the other settings before anything is built. Adding a mode is one module there
and one line here.
"""

from __future__ import annotations

from typing import NamedTuple

from pss_tf import checks
from pss_tf.errors import ConfigError


class Mode(NamedTuple):
    module: str  # under pss_tf.training.modes
    own_sampler: str  # what `--sampler=auto` runs
    help: str  # one line for the flag's help
    parallel_subnets: checks.Bounds = checks.Bounds(minimum=1)
    parallel_reason: str = ""  # why it needs those, for the error


# `--sampler=auto` runs the mode's own sampler: PSS's pools for the sandwich rule; for PSE-Net, which
# keeps no pools, fresh subnets for uniformly drawn targets (the setting RESULTS measured for it).
MODES = {
    "sandwich": Mode(
        "sandwich",
        "pss",
        "the max net learns from the labels and teaches the others (PSS; with parallel_subnets >= 2, "
        "one masked pass carries the thinnest subnet and the chosen ones)",
    ),
    "pse": Mode(
        "pse",
        "conditional",
        "every subnet learns from its labels (PSE-Net's parallel-subnets training, needs parallel_subnets >= 2)",
        checks.Bounds(minimum=2),
        "trains a group of subnets per pass: give 2 or more",
    ),
    "plain": Mode(
        "plain",
        "pss",
        "the max net alone learns from the labels (the plain-training baseline; no pools)",
        checks.Bounds(minimum=1, maximum=1),
        "trains the max net alone: give 1",
    ),
}

NAMES = tuple(MODES)


def help_text() -> str:
    return "; ".join(f"{name}: {mode.help}" for name, mode in MODES.items()) + "."


def own_sampler(name: str) -> str:
    """The subnet sampler that mode `name` runs with `--sampler=auto`."""
    return MODES[name].own_sampler


def check_parallel_subnets(name: str, parallel_subnets: int) -> None:
    """ConfigError naming `parallel_subnets` when mode `name` cannot train that many per pass."""
    mode = MODES[name]
    if not mode.parallel_subnets.contains(parallel_subnets):
        raise ConfigError("parallel_subnets", f"mode {name} {mode.parallel_reason}")
