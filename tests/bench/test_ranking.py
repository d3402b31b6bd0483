"""bench/ranking.py: its rank correlations, its choice of subnets, and one tiny end-to-end run."""

import json
import math
import os
import subprocess
import sys

import pytest
from support import ROOT, load_script, subprocess_env

from pss_tf.search.genes import network_key
from pss_tf.space.config import SearchSpace
from pss_tf.space.cost import count_flops

SCRIPT = os.path.join(ROOT, "bench", "ranking.py")


ranking = load_script(SCRIPT, "bench_ranking")


def test_subnets_spread_over_the_macs_range_reproducibly():
    space = SearchSpace("mobilenet_v1", 20, 28, 4, 0.25, 0.5)

    def cost(config):
        return count_flops(config, num_classes=10, small_input=True, in_channels=1)

    chosen = ranking.choose_subnets(space, cost, 8, 500, seed=3)
    again = ranking.choose_subnets(space, cost, 8, 500, seed=3)
    assert chosen == again
    assert len({network_key(c) for c in chosen}) == 8
    macs = [cost(c) for c in chosen]
    assert macs == sorted(macs)
    import random

    rng = random.Random(3)
    drawn = sorted(cost(space.random_config(rng)) for _ in range(500))
    assert macs[0] == drawn[0] and macs[-1] == drawn[-1]  # The cheapest and the dearest draw.
    assert ranking.choose_subnets(space, cost, 8, 500, seed=4) != chosen


@pytest.mark.slow
def test_trains_subnets_alone_and_resumes(smoke_job, tmp_path):
    out, png, work = tmp_path / "ranking.json", tmp_path / "ranking.png", tmp_path / "work"
    command = [
        sys.executable, SCRIPT, f"--job_dir={smoke_job}", "--subnets=2", "--draws=50", "--epochs=1",
        f"--out={out}", f"--png={png}", f"--work_dir={work}", "--noprogress",
    ]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "note: a rank correlation over fewer than 8 subnets says little" in first.stdout
    result = json.loads(out.read_text())
    assert png.stat().st_size > 0
    assert result["recipe"]["epochs"] == 1 and result["recipe"]["run_epochs"] == 2
    assert result["recipe"]["total_steps"] == result["recipe"]["steps_per_epoch"] == 20
    assert len(result["subnets"]) == 2
    for subnet in result["subnets"]:
        assert 0.0 <= subnet["standalone_top1"] <= 1.0 and 0.0 <= subnet["supernet_top1"] <= 1.0
        assert subnet["steps"] == 20 and subnet["train_seconds"] > 0
    assert abs(result["kendall_tau_b"]) in (0.0, 1.0) or math.isnan(result["kendall_tau_b"])
    # Everything is done: a re-run trains nothing and writes the same numbers.
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 trained earlier" in second.stdout
    assert [s["standalone_top1"] for s in json.loads(out.read_text())["subnets"]] == [
        s["standalone_top1"] for s in result["subnets"]
    ]
    # Trained alone: by tools/finetune.py from scratch, with the run's recipe.
    entries = json.loads((work / "finetune" / "finetuned.json").read_text())
    assert [e["mode"] for e in entries] == ["from_scratch"] * 2 and not any(e["distill"] for e in entries)
    assert [e["val_top1_after"] for e in entries] == [s["standalone_top1"] for s in result["subnets"]]
    # Other training settings are refused, naming the setting.
    third = subprocess.run(command[:-1] + ["--epochs=2"], cwd=ROOT, capture_output=True, text=True,
                           env=subprocess_env(), timeout=600)
    assert third.returncode != 0 and "--epochs: " in third.stderr and "epochs=1, not 2" in third.stderr


def test_bad_input_is_refused_before_any_work(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                              env=subprocess_env(), timeout=300)

    assert "--subnets: at least 2" in run(f"--job_dir={tmp_path}", "--subnets=1").stderr
    assert "is not a directory" in run(f"--job_dir={tmp_path / 'missing'}").stderr
    assert "holds no training run" in run(f"--job_dir={tmp_path}").stderr
