"""Training modes: what one step trains, one module per mode.

A mode (`base.TrainingMode`) draws a step's subnets, runs its traced step
through one call (`mode.step(batch, subnets) -> StepResult`) and says which
scores go to which pool and which training records; the trainer is the loop
around it. Each mode lives in its own module, which provides
`create(run_config, space, metrics, pools, job)`; the `--mode` flag's choices and
help, and what each mode asks of the other settings, come from `pss_tf.run.modes`.
Adding a mode is one module here and one line there.
"""

from __future__ import annotations

import importlib

from pss_tf.run.modes import MODES


def module(name: str):
    """The module of mode `name`."""
    return importlib.import_module(f"{__name__}.{MODES[name].module}")


def create(run_config, space, metrics, pools, job):
    """The `TrainingMode` of `run_config.sampling.mode` for a run (its host side; `build` adds the step)."""
    return module(run_config.sampling.mode).create(run_config, space, metrics, pools, job)
