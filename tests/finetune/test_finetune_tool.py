"""tools/finetune.py on a warm-started smoke run: results, modes, bad input, Ctrl-C, and export --finetuned."""

import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf
from support import run_tool, start_tool, tree_digest

from pss_tf.errors import ConfigError
from pss_tf.export import serving, tflite
from pss_tf.export.client_data import ClientData
from pss_tf.finetune import driver, training
from pss_tf.finetune.options import FinetuneOptions
from pss_tf.run import outputs
from pss_tf.run.job import Job
from pss_tf.space.config import SubnetConfig

STEPS = ("--epochs=1", "--steps_per_epoch=3", "--batch_size=16", "--noprogress")
FIELDS = {
    "name", "source", "metric", "target", "config", "value", "macs_m", "mode", "distill", "epochs", "steps",
    "learning_rate", "val_top1_before", "val_top5_before", "val_top1_after", "val_top5_after", "val_examples",
    "wall_seconds", "weights", "val_top1_after_uncalibrated", "bn_calibration_batches",
}


def finetune(job, out, *extra, expect=0):
    result = run_tool("finetune.py", f"--job_dir={job}", f"--out={out}", *STEPS, *extra, timeout=600)
    assert result.returncode == expect, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def finetuned(warm_job, tmp_path_factory):
    """Every winner of the smoke run fine-tuned from its inherited weights (3 steps)."""
    out = tmp_path_factory.mktemp("finetuned")
    before = tree_digest(warm_job)
    result = finetune(warm_job, out, "--subnets=winners")
    assert tree_digest(warm_job) == before  # The run is only read.
    return str(out), outputs.read_finetuned(str(out)), result.stdout


@pytest.mark.slow
def test_finetuning_writes_every_result(finetuned, warm_job):
    out, entries, stdout = finetuned
    winners = [e for e, _ in Job(warm_job).winners()]
    assert [e["name"] for e in entries] == sorted((w["name"] for w in winners), key=[w["name"] for w in winners].index)
    for entry, winner in zip(entries, winners):
        assert set(entry) == FIELDS
        assert entry["config"] == winner["config"] and entry["value"] == pytest.approx(winner["value"])
        assert (entry["mode"], entry["distill"], entry["epochs"], entry["steps"]) == ("inherited", False, 1, 3)
        assert entry["val_top1_before"] == pytest.approx(winner["val_top1"])  # Calibrated as training evaluated.
        assert 0.0 <= entry["val_top1_after"] <= 1.0 and entry["wall_seconds"] > 0
        assert 0.0 <= entry["val_top1_after_uncalibrated"] <= 1.0 and entry["bn_calibration_batches"] >= 1
        weights = outputs.load_weights(outputs.weights_of(out, entry))
        state = json.load(open(os.path.join(out, entry["name"], driver.STATE_FILE)))
        assert state["config"] == entry["config"] and state["recipe"]["total_steps"] == 3
        assert weights  # The fine-tuned model's layers.
    assert "| subnet | mode |" in stdout
    # The same command again finds everything finished and changes nothing.
    before = tree_digest(out)
    finetune(warm_job, out, "--subnets=winners")
    assert tree_digest(out) == before


@pytest.mark.slow
def test_from_scratch_with_distillation_and_a_config(warm_job, tmp_path):
    config = Job(warm_job).space.min_config().to_json()
    finetune(warm_job, tmp_path, f"--subnets={config}", "--from_scratch", "--distill")
    entry, = outputs.read_finetuned(str(tmp_path))
    assert (entry["mode"], entry["distill"], entry["source"]) == ("from_scratch", True, "config")
    assert entry["name"].startswith("subnet_") and entry["learning_rate"] == Job(warm_job).run_config.optimization.learning_rate


def test_bad_input_is_refused_before_any_work(warm_job, tmp_path):
    def refused(message, **changes):
        options = FinetuneOptions(job_dir=warm_job, subnets=("winners",), out=str(tmp_path / "out")).replace(**changes)
        with pytest.raises(ConfigError, match=message):
            driver.plan(options)
        assert not os.path.exists(tmp_path / "out")

    outside = Job(warm_job).space.max_config().to_json().replace('"resolution": 32', '"resolution": 64')
    refused(r"subnets: .* has no winner named 'flops_99m'; its winners are", subnets=("flops_99m",))
    refused("subnets: .*lies outside the run's search space", subnets=(outside,))
    refused("job_dir: .* holds no training run", job_dir=str(tmp_path / "nothing"))
    refused("batch_size: 100000 is larger than", batch_size=100_000)
    # A subnet directory written with other settings is refused, naming the setting.
    out = tmp_path / "other"
    name = Job(warm_job).winners()[0][0]["name"]
    os.makedirs(out / name)
    (out / name / "notes.txt").write_text("someone else's")
    options = FinetuneOptions(job_dir=warm_job, subnets=(name,), out=str(out))
    with pytest.raises(ConfigError, match=f"out: .*{name} exists but holds no state.json"):
        driver.plan(options)
    config = Job(warm_job).winners()[0][1]
    os.remove(out / name / "notes.txt")
    driver._write_state(str(out / name), type("S", (), {"name": name, "config": config})(), options.replace(epochs=5),
                        {})
    with pytest.raises(ConfigError, match="epochs: .* was fine-tuned with epochs=5, not 3"):
        driver.plan(options)


def test_a_run_without_winners_is_refused(warm_job, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(warm_job, copy, ignore=shutil.ignore_patterns("tensorboard"))
    os.remove(copy / "winners.json")
    with pytest.raises(ConfigError, match="job_dir: .* has no winners.json"):
        driver.plan(FinetuneOptions(job_dir=str(copy), subnets=("winners",)))


@pytest.mark.slow
def test_ctrl_c_saves_and_the_same_command_resumes(warm_job, tmp_path):
    name = Job(warm_job).winners()[0][0]["name"]
    args = (f"--job_dir={warm_job}", f"--out={tmp_path}", f"--subnets={name}", "--epochs=2", "--steps_per_epoch=40",
            "--batch_size=16", "--noprogress")
    process = start_tool("finetune.py", *args)
    checkpoints = tmp_path / name / training.CHECKPOINTS_DIR
    try:
        import time

        deadline = time.monotonic() + 300
        while not (checkpoints / "checkpoint").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (checkpoints / "checkpoint").exists(), "no checkpoint after the first epoch"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert "stopped; continue with the same command" in stdout
    assert not os.path.exists(tmp_path / outputs.FINETUNED_FILE)
    step = int(tf.train.load_variable(tf.train.latest_checkpoint(str(checkpoints)), "step/.ATTRIBUTES/VARIABLE_VALUE"))
    assert 40 <= step < 80
    result = run_tool("finetune.py", *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    entry, = outputs.read_finetuned(str(tmp_path))
    assert entry["steps"] == 80


@pytest.mark.slow
def test_export_carries_the_finetuned_weights(finetuned, warm_job, tmp_path):
    out, entries, _ = finetuned
    export_dir = tmp_path / "export"
    result = run_tool(
        "export.py", f"--job_dir={warm_job}", f"--export_dir={export_dir}", "--finetuned", f"--finetuned_dir={out}",
        "--finetuned_always", "--tflite_kinds=float32,int8", "--nobundle", "--nolatency",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.load(open(export_dir / "manifest.json"))
    by_name = {s["name"]: s for s in manifest["subnets"]}
    job = Job(warm_job)
    images, _ = next(ClientData(job.data).batches("val", 16))
    loaded = tf.saved_model.load(serving.serving_path(str(export_dir), f"pss_{job.run_config.space.model}", 1))
    supernet = job.restore_supernet()
    for entry in entries:
        exported = by_name[entry["name"]]
        assert exported["weights"] == "finetuned"
        assert exported["val_top1"] == entry["val_top1_after"]
        assert exported["inherited_val_top1"] == entry["val_top1_before"]
        assert exported["accuracy"]["keras"] == pytest.approx(entry["val_top1_after"])  # The same validation pass.
        assert abs(exported["accuracy"]["tflite_float32"] - entry["val_top1_after"]) <= 1 / entry["val_examples"]
        config = SubnetConfig.from_dict(entry["config"])
        model = supernet.extract(config, weights=outputs.load_weights(outputs.weights_of(out, entry)))
        expected = tf.nn.softmax(model(job.data.prepare_batch(images), training=False)).numpy()
        served = loaded.signatures[entry["name"]](images=tf.constant(images))
        np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
        inherited = tf.nn.softmax(supernet.extract(config)(job.data.prepare_batch(images), training=False)).numpy()
        assert not np.allclose(inherited, expected, atol=1e-5)  # Any other weights give other outputs.
        with open(export_dir / exported["tflite"]["float32"]["file"], "rb") as f:
            content = f.read()
        got = tflite.predict(tflite.signature_runner(content, entry["name"]), images)
        np.testing.assert_allclose(got["probabilities"], expected, atol=1e-4)
