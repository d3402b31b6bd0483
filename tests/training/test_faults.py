"""What happens when training goes wrong: float16 decay, Ctrl-C, SIGTERM on one worker,
kill -9, a diverging loss, a failed start-up and an internal error.

Each test starts from a state that failed before the fix (issue 10) and checks the
behaviour a user relies on: a checkpoint that resumes, files that agree with it,
and clear messages.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import (
    SMOKE_FLAGS,
    checkpoint_step,
    free_ports,
    run_tool,
    smoke_config,
    start_tool,
    subprocess_env,
    wait_for_line,
)

from pss_tf import SearchSpace, build_supernet
from pss_tf.errors import TrainingDiverged
from pss_tf.supernet import encode
from pss_tf.training.optimization import build_optimizer, learning_rate_schedule
from pss_tf.training.step import SandwichStep

# A run long enough to be interrupted: 400 smoke steps, a checkpoint every 5.
LONG_RUN = (
    "--epochs=1", "--steps_per_epoch=400", "--eval_winners_per_epoch=0", "--final_top_k=1", "--noprogress",
    "--checkpoint_every_steps=5",
)
STARTED = "Training from step"


def _wait_for_checkpoint(job, step: int, processes, timeout: float = 300) -> None:
    """Waits until `job` holds a checkpoint of at least `step` (training is under way)."""
    deadline = time.monotonic() + timeout
    while (checkpoint_step(job) or 0) < step:
        assert all(p.poll() is None for p in processes), "training ended early"
        assert time.monotonic() < deadline, f"no checkpoint of step {step} within {timeout} s"
        time.sleep(0.2)


def _one_step(precision: str, weight_decay: float):
    """A classifier kernel before and after one step of the sandwich rule from fixed weights."""
    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        supernet = build_supernet("mobilenet_v1", num_classes=4, small_input=True)
        optimizer = build_optimizer(learning_rate_schedule(0.1, 10), 0.9, loss_scale=precision == "mixed_float16")
        optimizer.build(supernet.trainable_variables)
        if precision == "mixed_float16":
            # A scale whose float16 gradients do not overflow, so this first step is applied.
            optimizer.dynamic_scale.assign(256.0)
        step = SandwichStep(supernet, optimizer, tf.distribute.get_strategy(), 8, weight_decay)
        space = SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 0.5)
        images = tf.random.stateless_uniform([8, 32, 32, 3], seed=[1, 2], minval=-1, maxval=1)
        labels = tf.constant([0, 1, 2, 3, 0, 1, 2, 3])
        vectors = [tf.constant(encode(c)) for c in (space.max_config(), space.min_config(), space.min_config())]
        before = supernet.classifier.kernel.numpy().copy()
        step((images, labels), *vectors)
        return before, supernet.classifier.kernel.numpy().copy()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_weight_decay_is_the_same_under_float16_loss_scaling():
    """The decay's share of one Nesterov step is -lr (1 + momentum) wd w in both
    precisions. Before the fix, float16 applied 1/scale of it (the loss scale)."""
    lr, momentum, wd = 0.1, 0.9, 0.1
    shares = {}
    for precision in ("float32", "mixed_float16"):
        before, decayed = _one_step(precision, wd)
        same_before, plain = _one_step(precision, 0.0)
        np.testing.assert_array_equal(before, same_before)
        assert not np.array_equal(plain, before)  # The step was applied (no loss-scale overflow).
        shares[precision] = decayed - plain
        expected = -lr * (1 + momentum) * wd * before
        # float32 rounding of weights near 1e-2 moved by about 2e-4: well inside 1e-3.
        np.testing.assert_allclose(shares[precision], expected, rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(shares["mixed_float16"], shares["float32"], rtol=1e-3, atol=1e-8)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_continues_from_it(tmp_path):
    job = tmp_path / "job"
    args = (f"--flagfile={SMOKE_FLAGS}", f"--job_dir={job}", *LONG_RUN)
    log = tmp_path / "train.log"
    process = start_tool("train.py", *args, log=log)
    _wait_for_checkpoint(job, 10, [process])
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, open(log).read()[-3000:]
    assert "stopped" in out and "--resume" in out
    stopped = checkpoint_step(job)
    assert stopped is not None and 10 <= stopped < 400
    assert f"after {stopped} steps" in out
    assert json.load(open(job / "pools.json"))["step"] == stopped
    resumed = run_tool("train.py", *args, "--resume", f"--max_steps={stopped + 3}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Training from step {stopped} of 400" in resumed.stderr
    assert f"after {stopped + 3} steps" in resumed.stdout


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_every_worker_at_the_same_step(tmp_path):
    """Two localhost workers; SIGTERM to worker 1 only. Both stop and save the same
    step and exit cleanly (before the fix the other died in its next all-reduce),
    and both resume from it."""
    job = tmp_path / "job"
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    args = (f"--flagfile={SMOKE_FLAGS}", f"--job_dir={job}", "--strategy=multi_worker", *LONG_RUN)

    def start(index, *extra):
        env = subprocess_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        log = tmp_path / f"worker{index}_{len(extra)}.log"
        return start_tool("train.py", *args, *extra, env=env, log=log), log

    workers = [start(0), start(1)]
    _wait_for_checkpoint(job, 10, [p for p, _ in workers])
    workers[1][0].send_signal(signal.SIGTERM)
    outputs = [process.communicate(timeout=300)[0] for process, _ in workers]
    for (process, log), out in zip(workers, outputs):
        assert process.returncode == 0, open(log).read()[-3000:]
    stopped = checkpoint_step(job)
    assert stopped is not None and 10 <= stopped < 400
    assert all(f"after {stopped} steps" in out for out in outputs), outputs
    assert not [name for name in os.listdir(job) if name.startswith(".worker")]

    resumed = [start(0, "--resume", f"--max_steps={stopped + 2}"), start(1, "--resume", f"--max_steps={stopped + 2}")]
    outputs = [process.communicate(timeout=300)[0] for process, _ in resumed]
    for (process, log), out in zip(resumed, outputs):
        assert process.returncode == 0, open(log).read()[-3000:]
        assert f"after {stopped + 2} steps" in out
        assert f"Training from step {stopped} of 400" in open(log).read()


_SLOW_CHECKPOINT_STATE = r"""
import runpy, sys, time
from tensorflow.python.checkpoint import checkpoint_management

original = checkpoint_management.CheckpointManager._record_state
saves = []


def record_state_slowly(self):
    # The new checkpoint's files are written; the state file naming the latest
    # checkpoint is not yet. From the third save on, hang here to be killed.
    saves.append(self._latest_checkpoint)
    if len(saves) >= 3:
        print("WRITING", self._latest_checkpoint, file=sys.stderr, flush=True)
        time.sleep(600)
    original(self)


checkpoint_management.CheckpointManager._record_state = record_state_slowly
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path(sys.argv.pop(1), run_name="__main__")
"""


def _resume_in_process(job, **overrides):
    from pss_tf.training import runtime
    from pss_tf.training.trainer import Trainer

    config = smoke_config(
        job, resume=True, epochs=1, steps_per_epoch=400, eval_winners_per_epoch=0, final_top_k=1, **overrides
    )
    runtime.configure(config)
    return Trainer(config)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["between_steps", "during_a_checkpoint_write"])
def test_a_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path, moment):
    job = tmp_path / "job"
    args = [f"--flagfile={SMOKE_FLAGS}", f"--job_dir={job}", *LONG_RUN]
    log = tmp_path / "train.log"
    if moment == "between_steps":
        process = start_tool("train.py", *args, log=log)
        _wait_for_checkpoint(job, 10, [process])
    else:
        script = tmp_path / "slow_state.py"
        script.write_text(_SLOW_CHECKPOINT_STATE)
        process = start_tool(str(script), os.path.join(os.path.dirname(SMOKE_FLAGS), "..", "tools", "train.py"), *args, log=log)
        writing = wait_for_line(log, "WRITING", process).split()[-1]
    process.kill()
    process.wait(timeout=60)
    last = checkpoint_step(job)
    assert last is not None and last % 5 == 0
    if moment == "during_a_checkpoint_write":
        # The half-written checkpoint's files exist, but nothing points at it.
        assert int(writing.rsplit("-", 1)[1]) == last + 5 and os.path.exists(writing + ".index")
    pools_step = json.load(open(job / "pools.json"))["step"]
    assert pools_step <= last  # Written after its checkpoint: at most one behind.

    trainer = _resume_in_process(job, max_steps=last + 4)
    assert trainer.step == last
    # Restoring rewrote pools.json from the checkpoint's own pools.
    assert json.load(open(job / "pools.json")) == {**trainer.pools.to_dict(), "step": last}
    result = trainer.run()
    assert not result.finished and result.steps == last + 4
    assert json.load(open(job / "pools.json")) == {**trainer.pools.to_dict(), "step": last + 4}
    assert json.load(open(job / "records.json")) == trainer.records.to_dict()


@pytest.mark.slow
def test_a_diverging_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from pss_tf.training import runtime
    from pss_tf.training.trainer import Trainer

    job = tmp_path / "job"
    # The warm-up starts the learning rate at 0 (a good first step), then reaches
    # absurd values: the run must stop at the first bad step, its checkpoint unwritten.
    config = smoke_config(job, learning_rate=1e30, warmup_epochs=1.0, checkpoint_every_steps=1)
    runtime.configure(config)
    trainer = Trainer(config)
    with pytest.raises(TrainingDiverged, match=r"at step (\d+)") as raised:
        trainer.run()
    step = raised.value.step
    assert f"at step {step}" in str(raised.value) and "learning rate" in str(raised.value)
    assert f"ckpt-{step - 1}" in str(raised.value)
    assert checkpoint_step(job) == step - 1 >= 1
    # The last good checkpoint holds finite weights and resumes.
    resumed = Trainer(config.replace(resume=True))
    assert resumed.step == step - 1
    assert all(np.isfinite(v.numpy()).all() for v in resumed.supernet.weights)
    for name in ("pools.json", "records.json"):
        assert json.load(open(job / name)) is not None


def test_the_command_line_reports_divergence_without_a_traceback(tmp_path):
    result = run_tool(
        "train.py", f"--flagfile={SMOKE_FLAGS}", f"--job_dir={tmp_path / 'job'}", "--learning_rate=1e30",
        "--warmup_epochs=1", "--noprogress",
    )
    assert result.returncode == 1
    assert re.search(r"error: the .* at step \d+; nothing of that step was saved", result.stderr), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["building the model", "opening the data streams"])
def test_a_run_that_fails_during_start_up_leaves_the_directory_free(tmp_path, monkeypatch, where):
    from pss_tf.training import runtime, trainer

    def fail(*args, **kwargs):
        raise RuntimeError(f"failed while {where}")

    monkeypatch.setattr(trainer, "supernet_for_run" if where == "building the model" else "make_evaluator", fail)
    job = tmp_path / "job"
    config = smoke_config(job, epochs=1, steps_per_epoch=2)
    with pytest.raises(RuntimeError, match=where):
        runtime.run(config)
    assert not job.exists() or not os.listdir(job)
    monkeypatch.undo()
    assert runtime.run(config).finished  # A fresh run is accepted; before the fix run.json refused it.


def test_internal_errors_show_their_traceback(tmp_path):
    """Only errors about the user's input (ConfigError) become one-line messages."""
    script = tmp_path / "internal.py"
    script.write_text(
        "import runpy, sys\n"
        "import pss_tf.training.trainer as trainer\n"
        "class Broken:\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        raise ValueError(\"an internal fault, not the user's\")\n"
        "trainer.Trainer = Broken\n"
        "tool = sys.argv[1]\n"
        "sys.argv = [tool] + sys.argv[2:]\n"
        "runpy.run_path(tool, run_name='__main__')\n"
    )
    tool = os.path.join(os.path.dirname(SMOKE_FLAGS), "..", "tools", "train.py")
    result = subprocess.run(
        [sys.executable, str(script), tool, f"--flagfile={SMOKE_FLAGS}", f"--job_dir={tmp_path / 'job'}"],
        capture_output=True, text=True, env=subprocess_env(), timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: an internal fault" in result.stderr
    assert "error: an internal fault" not in result.stderr
