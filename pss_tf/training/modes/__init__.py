"""Training modes: what one step trains, and the registry that names them.

A mode (`base.TrainingMode`) draws a step's subnets, runs its traced step
through one call (`mode.step(batch, subnets) -> StepResult`) and says which
scores go to which pool and which training records; the trainer is the loop
around it. Each mode lives in its own module, which provides
`create(run_config, space, metrics, pools, job)`; the `--mode` flag's choices and
help come from `MODES` below. Adding a mode is one module and one line here.

This module imports no TensorFlow: the run's config takes its choices from it.
"""

from __future__ import annotations

import importlib

# --mode value -> (module under pss_tf.training.modes, its own subnet sampler, one line for the flag's help).
# `--sampler=auto` runs the mode's own sampler: PSS's pools for the sandwich rule; for PSE-Net, which
# keeps no pools, fresh subnets for uniformly drawn targets (the setting RESULTS measured for it).
MODES = {
    "sandwich": (
        "sandwich",
        "pss",
        "the max net learns from the labels and teaches the others (PSS; with parallel_subnets >= 2, "
        "one masked pass carries the thinnest subnet and the chosen ones)",
    ),
    "pse": (
        "pse",
        "conditional",
        "every subnet learns from its labels (PSE-Net's parallel-subnets training, needs parallel_subnets >= 2)",
    ),
    "plain": ("plain", "pss", "the max net alone learns from the labels (the plain-training baseline; no pools)"),
}

NAMES = tuple(MODES)


def help_text() -> str:
    return "; ".join(f"{name}: {line}" for name, (_, _, line) in MODES.items()) + "."


def own_sampler(name: str) -> str:
    """The subnet sampler that mode `name` runs with `--sampler=auto`."""
    return MODES[name][1]


def module(name: str):
    """The module of mode `name`."""
    return importlib.import_module(f"{__name__}.{MODES[name][0]}")


def create(run_config, space, metrics, pools, job):
    """The `TrainingMode` of `run_config.sampling.mode` for a run (its host side; `build` adds the step)."""
    return module(run_config.sampling.mode).create(run_config, space, metrics, pools, job)
