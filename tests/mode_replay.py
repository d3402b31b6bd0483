"""A fixed number of steps of every training mode, as numbers to compare.

The training modes became objects (issue 19) without changing a step's
numerics: `tests/fixtures/mode_replay.json` holds what the code before that
change produced for each mode on the smoke settings (every step's losses, the
pools, the training records, and the weights as a SHA-256 plus per-variable
sums), and `tests/training/test_mode_replay.py` replays the same steps now.

Regenerate the fixture (only when a change of numerics is intended) with
`PYTHONPATH=. python tests/mode_replay.py [mode ...]`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "mode_replay.json")

# The smoke run, shortened and with pools of one, so that a few steps reach pool
# draws (full pools, a small fresh probability) without any evaluation.
SETTINGS = dict(epochs=3, steps_per_epoch=3, max_steps=8, pool_capacity=1, eval_every_epochs=100)

MODES = {
    "pss": {},
    "pss_parallel": dict(parallel_subnets=4),
    "pss_parallel_uniform": dict(parallel_subnets=2, sampler="uniform"),
    # Recorded when PSS's pools were every mode's sampler (PSE's own is conditional now).
    "pse": dict(mode="pse", parallel_subnets=4, sampler="pss"),
    "pse_anchor": dict(mode="pse", parallel_subnets=4, pse_anchor=True, sampler="pss"),
    "uniform": dict(sampler="uniform"),
    "conditional": dict(sampler="conditional"),
}


def cpu() -> str:
    """The processor's name, and the kernel variables that change its code: float results are bit-exact
    only on the same kind running the same kernels (TensorFlow's Eigen kernels, or oneDNN held to a smaller
    instruction set, round differently from the default oneDNN kernels the fixture was recorded with)."""
    name = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    variant = []
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        variant.append("Eigen kernels")
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        if variable in os.environ:
            variant.append(f"{variable}={os.environ[variable]}")
    return f"{name} ({', '.join(variant)})" if variant else name


def weights_summary(variables) -> dict:
    """SHA-256 of the values in order, and each one's sum by position (optimizer
    variables' names count the optimizers made before in the process)."""
    import numpy as np

    digest = hashlib.sha256()
    sums = []
    for variable in variables:
        value = np.asarray(variable.numpy())
        digest.update(value.tobytes())
        sums.append(float(np.sum(value, dtype=np.float64)))
    return {"sha256": digest.hexdigest(), "sums": sums}


def replay(mode: str, **extra) -> dict:
    """Runs `mode`'s steps in a temporary job directory; returns the numbers to compare."""
    from support import smoke_config

    from pss_tf.training import runtime
    from pss_tf.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as job_dir:
        config = smoke_config(job_dir, **SETTINGS, **MODES[mode], **extra)
        runtime.configure(config)
        trainer = Trainer(config)
        losses, train_step = [], trainer.train_step

        def recorded(epoch):
            step_losses = train_step(epoch)
            losses.append(dict(step_losses))
            return step_losses

        trainer.train_step = recorded
        result = trainer.run()
        assert not result.finished and result.steps == SETTINGS["max_steps"]
        return {
            "losses": losses,
            "pools": trainer.pools.to_dict(),
            "records": trainer.records.to_dict(),
            "weights": weights_summary(trainer.supernet.weights),
            "optimizer": weights_summary(trainer.optimizer.variables),
        }


def main(modes):
    data = json.load(open(FIXTURE)) if os.path.exists(FIXTURE) else {"modes": {}}
    data["cpu"] = cpu()
    data["settings"] = SETTINGS
    for mode in modes or MODES:
        data["modes"][mode] = replay(mode)
        print(mode, data["modes"][mode]["weights"]["sha256"], flush=True)
    with open(FIXTURE, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main(sys.argv[1:])
