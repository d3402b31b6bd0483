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


def load_script(path: str, name: str):
    """A script that is not a package module (under bench/ or tools/), imported for its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smoke_config(job_dir, **overrides):
    """The TrainConfig of configs/smoke.flags, parsed by the tool's own flags.

    Overrides are leaf fields by name (`epochs=1`); progress bars are off and
    ops deterministic unless overridden.
    """
    from absl import flags

    from pss_tf import config_flags
    from pss_tf.run.config import TrainConfig

    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainConfig, flag_values)
    flag_values([sys.argv[0], f"--flagfile={SMOKE_FLAGS}", f"--job_dir={job_dir}"])
    config = config_flags.from_flags(TrainConfig, flag_values)
    return config.replace(**{"progress": False, "deterministic": True, **overrides})


def smoke_space(model: str = "mobilenet_v1"):
    """The search space of configs/smoke.flags (with `model`)."""
    return smoke_config("unused", model=model).search_space()


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
    """The environment of a test's child process: quiet TF, this checkout importable; `extra` overrides."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    env.update(extra)
    return env


def run_tool(tool: str, *args, timeout: int = 900, env=None, **popen) -> subprocess.CompletedProcess:
    """Runs `tools/<tool>` from the project root in a fresh interpreter, output captured."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", tool), *args],
        cwd=ROOT, capture_output=True, text=True, env=env or subprocess_env(), timeout=timeout, **popen,
    )


def start_tool(tool: str, *args, env=None, log=None) -> subprocess.Popen:
    """Starts `tools/<tool>` (or a script path) in the background, SIGINT at its default disposition.

    A process started in the background by a shell ignores SIGINT from birth;
    restoring the default lets a test press Ctrl-C on it. With `log` (a path),
    stderr goes to that file, which `wait_for_line` can watch while it runs.
    """
    script = tool if os.path.isabs(tool) else os.path.join(ROOT, "tools", tool)
    stderr = open(log, "w") if log else subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, script, *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
        env=env or subprocess_env(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_line(path, text: str, process: subprocess.Popen | None = None, timeout: float = 300) -> str:
    """Waits until the file at `path` holds a line containing `text`; returns that line."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            for line in open(path, errors="replace"):
                if text in line:
                    return line
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended ({process.returncode}) before printing {text!r}")
        time.sleep(0.2)
    raise AssertionError(f"{text!r} did not appear in {path} within {timeout} s")


def checkpoint_step(job_dir) -> int | None:
    """The step of a job directory's latest checkpoint (its name's number), or None."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(os.path.join(str(job_dir), "checkpoints"))
    return None if latest is None else int(latest.rsplit("-", 1)[1])


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


def write_idx(path, array, gz):
    """An IDX file of uint8 `array`, gzipped or not (Fashion-MNIST's format)."""
    import gzip

    import numpy as np

    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.tobytes())


def make_fashion_dir(root, num_train=20, num_val=10, gz_train=True, gz_val=False):
    """A small Fashion-MNIST directory of random images; returns its arrays by file prefix."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n, gz in (("train", num_train, gz_train), ("t10k", num_val, gz_val)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        suffix = ".gz" if gz else ""
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte{suffix}"), images, gz)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte{suffix}"), labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


def take_batches(ds, n) -> list:
    """The first `n` batches of a tf.data stream as NumPy arrays."""
    return list(ds.take(n).as_numpy_iterator())


def assert_same_batches(a, b):
    """Two lists of (images, labels) batches are equal, element for element."""
    import numpy as np

    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def prepare_tfds_images(data_dir, class_name, *, num_classes, splits, make_image, encoding_format="png", num_shards=2):
    """A TFDS image dataset prepared offline under `data_dir`; returns its registered name.

    `splits` maps a split to (seed, count); example i of a split is
    `make_image(rng, i)` from that seed's generator, labelled `i % num_classes`.
    The builder class is named `class_name`, which TFDS turns into the dataset's name.
    """
    import numpy as np
    import tensorflow_datasets as tfds

    def _info(self):
        image = tfds.features.Image(shape=(None, None, 3), encoding_format=encoding_format)
        features = tfds.features.FeaturesDict({"image": image, "label": tfds.features.ClassLabel(num_classes=num_classes)})
        return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(seed, count) for split, (seed, count) in splits.items()}

    def _generate_examples(self, seed, count):
        rng = np.random.default_rng(seed)
        for i in range(count):
            yield i, {"image": make_image(rng, i), "label": i % num_classes}

    members = dict(VERSION=tfds.core.Version("1.0.0"), _info=_info, _split_generators=_split_generators,
                   _generate_examples=_generate_examples)
    builder = type(class_name, (tfds.core.GeneratorBasedBuilder,), members)(data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False, num_shards=num_shards)
    )
    return builder.name


def tree_digest(root) -> dict:
    """{relative path: sha256} of every file under `root`: a run compared before and after."""
    import hashlib

    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found
