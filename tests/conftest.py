"""Shared test set-up: quiet TensorFlow logs, pss_tf's CPU kernels, the helpers module, and trained smoke jobs.

The smoke jobs are trained once per test run through tools/train.py and shared by
every test that only reads a finished run (outputs, export, search), and by
both pytest-xdist workers (`support.shared_dir`). Tests must not write into them.
"""

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Before any test module imports TensorFlow: the tests run on the CPU kernels users get
# (pss_tf.cpu_kernels), whichever module is collected first.
import pss_tf  # noqa: E402, F401
import pytest  # noqa: E402
from support import SMOKE_FLAGS, run_tool, shared_dir  # noqa: E402

# More steps than configs/smoke.flags, so that predictions are decisive enough for
# the int8-versus-float agreement checks of the export; two pools keep exports short.
SMOKE_TRAINING = (
    "--epochs=2", "--steps_per_epoch=20", "--flops_targets=4,12,8", "--eval_winners_per_epoch=0", "--final_top_k=1",
)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs of the tools (a minute or more each)")


@pytest.fixture(scope="session")
def smoke_job(tmp_path_factory) -> str:
    """A finished smoke training run (configs/smoke.flags plus SMOKE_TRAINING); read only.

    It runs with progress bars on; its standard error is kept beside it (`smoke_job_log`).
    """
    with shared_dir(tmp_path_factory, "smoke_job") as path:
        log = path.parent / "smoke_job.log"
        if not (path / "winners.json").exists() or not log.exists():
            shutil.rmtree(path, ignore_errors=True)
            result = run_tool("train.py", f"--flagfile={SMOKE_FLAGS}", f"--job_dir={path}", *SMOKE_TRAINING)
            assert result.returncode == 0, result.stderr[-3000:]
            log.write_text(result.stderr)
    return str(path)


@pytest.fixture(scope="session")
def smoke_job_log(smoke_job) -> str:
    """What the smoke job's training printed on standard error (logs and progress bars)."""
    return (Path(smoke_job).parent / "smoke_job.log").read_text()


@pytest.fixture(scope="session")
def mobilenet_v3_smoke_job(tmp_path_factory) -> str:
    """configs/smoke.flags exactly as a user runs it with --model=mobilenet_v3_small; read only.
    What it printed is beside it, in ../train.log."""
    with shared_dir(tmp_path_factory, "mobilenet_v3_smoke_job") as path:
        if not (path / "done").exists():
            shutil.rmtree(path, ignore_errors=True)
            result = run_tool(
                "train.py", f"--flagfile={SMOKE_FLAGS}", "--model=mobilenet_v3_small", f"--job_dir={path / 'job'}",
                "--noprogress",
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            (path / "train.log").write_text(result.stdout + result.stderr)
            (path / "done").write_text("")
    return str(path / "job")


@pytest.fixture(scope="session")
def mobilenet_v3_smoke_export(mobilenet_v3_smoke_job, tmp_path_factory) -> str:
    """tools/export.py of that run with float TFLite files only, and no accuracy or latency
    measurements (the cheapest export that still holds every winner); read only."""
    with shared_dir(tmp_path_factory, "mobilenet_v3_smoke_float_export") as root:
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            result = run_tool(
                "export.py", f"--job_dir={mobilenet_v3_smoke_job}", f"--export_dir={root / 'out'}",
                "--tflite_kinds=float32", "--nobundle", "--noevaluate", "--nolatency",
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            (root / "done").write_text("")
    return str(root / "out")
