"""Helpers shared by tests and by the scripts tests run in subprocesses.

Subprocess scripts put this folder on `sys.path` and import from here, so the
smoke configuration and the tiny training step are defined once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
SMOKE_FLAGS = os.path.join(ROOT, "configs", "smoke.flags")


def smoke_config(job_dir, **overrides):
    """The TrainConfig of configs/smoke.flags, parsed by the tool's own flags.

    Overrides are leaf fields by name (`epochs=1`); progress bars are off and
    ops deterministic unless overridden.
    """
    from absl import flags

    from pss_tf import config_flags
    from pss_tf.training.config import TrainConfig

    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainConfig, flag_values)
    flag_values([sys.argv[0], f"--flagfile={SMOKE_FLAGS}", f"--job_dir={job_dir}"])
    config = config_flags.from_flags(TrainConfig, flag_values)
    return config.replace(**{"progress": False, "deterministic": True, **overrides})


def tiny_step(strategy, synchronized_bn=False, global_batch=8):
    """A small MobileNetV1 supernet (4 classes) and its sandwich step under `strategy`."""
    from pss_tf import build_supernet
    from pss_tf.training.optimization import build_optimizer, learning_rate_schedule
    from pss_tf.training.step import SandwichStep

    with strategy.scope():
        supernet = build_supernet("mobilenet_v1", num_classes=4, small_input=True, synchronized_bn=synchronized_bn)
        optimizer = build_optimizer(learning_rate_schedule(0.1, 10))
        optimizer.build(supernet.trainable_variables)
    return supernet, SandwichStep(supernet, optimizer, strategy, global_batch, weight_decay=1e-4)


def subprocess_env(**extra) -> dict:
    """The environment of a test's child process: quiet TF, this checkout importable."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([ROOT, TESTS]), **extra)


def run_tool(tool: str, *args, timeout: int = 900, **popen) -> subprocess.CompletedProcess:
    """Runs `tools/<tool>` in a fresh interpreter, output captured."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", tool), *args],
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=timeout, **popen,
    )


def start_tool(tool: str, *args, env=None) -> subprocess.Popen:
    """Starts `tools/<tool>` in the background, SIGINT at its default disposition.

    A process started in the background by a shell ignores SIGINT from birth;
    restoring the default lets a test press Ctrl-C on it.
    """
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tools", tool), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env or subprocess_env(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@contextlib.contextmanager
def shared_dir(tmp_path_factory, name: str):
    """A folder made once per test run, whichever pytest-xdist worker gets there first.

    Workers share the parent of their base temporary directories; a file lock
    makes the others wait for the first one's result instead of redoing it.
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root / name
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
