"""What the fine-tuning tests share: a small supernet of the smoke space, and a
warm-started smoke run (shared by both pytest-xdist workers too).

It starts from the session's smoke run (4 RGB classes) with another class count
and another channel count (3 grey classes), seeds its pools from the source's,
and must leave the source untouched: the chain a user follows from a trained
supernet to their own data and then to fine-tuned subnets.
"""

import json
import os
import shutil

import pytest
from support import SMOKE_FLAGS, run_tool, shared_dir, smoke_space, tree_digest

WARM_TRAINING = (
    "--synthetic_classes=3", "--synthetic_channels=1", "--epochs=2", "--steps_per_epoch=10",
    "--flops_targets=4,12,8", "--eval_winners_per_epoch=0", "--final_top_k=1", "--init_pools", "--noprogress",
)


@pytest.fixture(scope="module")
def supernet():
    """A seeded MobileNetV1 supernet of the smoke space (4 classes, small input), built at its
    max net; one per test module, whose tests may change its BN statistics."""
    import tensorflow as tf

    from pss_tf import build_supernet

    tf.keras.utils.set_random_seed(0)
    net = build_supernet("mobilenet_v1", num_classes=4, small_input=True)
    net(tf.zeros([1, 32, 32, 3]), smoke_space().max_config())
    return net


@pytest.fixture(scope="session")
def warm_job(smoke_job, tmp_path_factory) -> str:
    """The warm-started run's directory; read only."""
    with shared_dir(tmp_path_factory, "warm_job") as path:
        if not (path / "winners.json").exists():
            shutil.rmtree(path, ignore_errors=True)
            before = tree_digest(smoke_job)
            result = run_tool("train.py", f"--flagfile={SMOKE_FLAGS}", f"--job_dir={path}", f"--init_from={smoke_job}",
                              *WARM_TRAINING)
            assert result.returncode == 0, result.stderr[-3000:]
            assert tree_digest(smoke_job) == before, "the warm start wrote into its source"
            output = result.stdout + result.stderr
            assert "the classifier starts afresh" in output and "summed over its colour channels" in output
            with open(path / "run.json") as f:
                assert json.load(f)["init_source"]["path"] == os.path.abspath(smoke_job)
    return str(path)
