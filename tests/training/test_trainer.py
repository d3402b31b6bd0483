"""The training step, the trainer's outputs, resume and bad input.

Runs use the smoke settings (synthetic data, tiny MobileNetV1) so the whole
file stays within a few minutes on 2 CPU cores.
"""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from support import (
    SMOKE_FLAGS,
    free_ports,
    run_tool,
    smoke_config,
    subprocess_env,
    tiny_step,
)

from pss_tf import SearchSpace, build_supernet
from pss_tf.errors import ConfigError
from pss_tf.supernet import encode
from pss_tf.training.optimization import add_weight_decay, decayed_variables
from pss_tf.training.step import distillation_loss


def test_decay_applies_to_conv_and_classifier_kernels_only():
    supernet = build_supernet("mobilenet_v2", num_classes=10, small_input=True)
    names = {v.path for v in decayed_variables(supernet)}
    assert "mobilenet_v2_supernet/classifier/kernel" in names
    assert any(n.endswith("/expand/kernel") for n in names)
    assert any(n.endswith("/project/kernel") for n in names)
    assert not any("/dw/" in n or "gamma" in n or "beta" in n or "bias" in n for n in names)
    # stem + 16 expand (all blocks but the first) + 17 project + last conv + classifier
    assert len(names) == 1 + 16 + 17 + 1 + 1
    variables = [tf.Variable([1.0, 2.0]), tf.Variable([3.0])]
    grads = add_weight_decay([tf.constant([0.5, 0.5]), tf.constant([1.0])], variables, variables[:1], 0.1)
    np.testing.assert_allclose(grads[0], [0.6, 0.7])
    np.testing.assert_allclose(grads[1], [1.0])


def test_distillation_loss_is_kl_divergence():
    teacher = tf.constant([[2.0, 0.0, -1.0]])
    student = tf.constant([[0.5, 0.5, 0.0]])
    p = tf.nn.softmax(teacher).numpy()[0]
    q = tf.nn.softmax(student).numpy()[0]
    assert float(distillation_loss(teacher, student)[0]) == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-5)
    assert float(distillation_loss(teacher, teacher)[0]) == pytest.approx(0.0, abs=1e-6)


def test_one_trace_serves_every_subnet_and_score_comes_from_the_chosen_forward():
    supernet, step = tiny_step(tf.distribute.get_strategy())
    space = SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 0.5)
    images = tf.random.stateless_uniform([8, 32, 32, 3], seed=[1, 2], minval=-1, maxval=1)
    labels = tf.constant([0, 1, 2, 3, 0, 1, 2, 3])
    max_vector, min_vector = tf.constant(encode(space.max_config())), tf.constant(encode(space.min_config()))
    import random

    rng = random.Random(0)
    for _ in range(4):
        config = space.random_config(rng)
        # The score is the chosen subnet's cross-entropy before the update.
        logits = supernet(images, config, training=True)
        expected = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        ).numpy()
        out = step((images, labels), max_vector, tf.constant(encode(config)), min_vector)
        assert float(out["chosen_ce"]) == pytest.approx(float(expected), rel=1e-4)
        assert float(out["loss"]) == pytest.approx(
            float(out["max_ce"] + out["chosen_kd"] + out["min_kd"]), rel=1e-6
        )
    assert step.tracing_count == 1


def test_fixed_subnets_given_as_configs_step_as_their_encodings():
    """The max and min nets given to the step as `SubnetConfig`s (static shapes: full widths
    read their weights unsliced, the images' own resolution skips the resize) give what
    their encoded vectors give, and the step still traces once for all drawn subnets."""
    import keras

    space = SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 1.0)
    images = tf.random.stateless_uniform([8, 32, 32, 3], seed=[5, 6], minval=-1, maxval=1)
    labels = tf.constant([0, 1, 2, 3, 0, 1, 2, 3])
    chosen = [tf.constant(encode(space.random_config(random.Random(s)))) for s in (1, 2)]
    results = []
    for fixed in ((space.max_config(), space.min_config()),
                  (tf.constant(encode(space.max_config())), tf.constant(encode(space.min_config())))):
        keras.utils.set_random_seed(0)
        supernet, step = tiny_step(tf.distribute.get_strategy())
        losses = [step((images, labels), fixed[0], vector, fixed[1]) for vector in chosen]
        results.append(([float(out["loss"]) for out in losses], [v.numpy() for v in supernet.trainable_variables]))
        assert step.tracing_count == 1
    (losses_static, weights_static), (losses_encoded, weights_encoded) = results
    np.testing.assert_allclose(losses_static, losses_encoded, rtol=1e-6)
    for a, b in zip(weights_static, weights_encoded):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


_MIRRORED_SCRIPT = r"""
import sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
keras.config.set_floatx("float64")  # exact arithmetic isolates the algorithm from rounding
from support import tiny_step
from pss_tf import SearchSpace
from pss_tf.models.supernet import encode

space = SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 0.5)
images = tf.random.stateless_uniform([8, 32, 32, 3], seed=[3, 4], minval=-1, maxval=1, dtype=tf.float64)
labels = tf.constant([0, 1, 2, 3, 3, 2, 1, 0])
vectors = [tf.constant(encode(c)) for c in (space.max_config(), space.random_config(), space.min_config())]
results = []
for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])):
    keras.utils.set_random_seed(0)
    supernet, step = tiny_step(strategy, synchronized_bn=True)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    batch = next(iter(strategy.experimental_distribute_dataset(data)))
    out = step(batch, *vectors)
    results.append(([v.numpy() for v in supernet.trainable_variables], float(out["loss"]), strategy.num_replicas_in_sync))
(one, loss_one, n1), (two, loss_two, n2) = results
assert (n1, n2) == (1, 2), (n1, n2)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
print("MAXDIFF", diff, "LOSS", loss_one, loss_two)
"""


@pytest.mark.slow
def test_two_replicas_give_the_weights_of_one_device(tmp_path):
    """One step on a global batch of 8 over 2 logical CPUs (synchronized BN) equals
    one device on the same 8 images. Run in float64, where the two differ only by
    reduction order: 1e-8. (In float32 this tiny net's BN over 4x4 maps of 8
    samples amplifies rounding to about 5e-4.)"""
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("MAXDIFF")][0].split()
    assert float(line[1]) < 1e-8, line
    assert float(line[3]) == pytest.approx(float(line[4]), rel=1e-10)


_WORKER_SCRIPT = r"""
import json, os, sys
import numpy as np
from support import smoke_config
from pss_tf.training import runtime
from pss_tf.training.trainer import Trainer

task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
config = smoke_config(sys.argv[1], strategy="multi_worker", epochs=1, steps_per_epoch=3)
runtime.configure(config)
trainer = Trainer(config)
result = trainer.run()
np.savez(os.path.join(sys.argv[2], f"worker{task}.npz"), *[v.numpy() for v in trainer.supernet.trainable_variables])
print("STEPS", result.steps, "FINISHED", result.finished)
"""


@pytest.mark.slow
def test_two_workers_train_together_and_agree(tmp_path):
    """MultiWorkerMirroredStrategy across two processes on localhost: both finish the
    same steps and hold identical weights (gradients are all-reduced)."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER_SCRIPT)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        env = subprocess_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(tmp_path / "job"), str(tmp_path)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )
        )
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        assert "STEPS 3 FINISHED True" in out
    a, b = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert len(a.files) == len(b.files) > 0
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    # Only the chief writes the job directory's files.
    assert os.path.exists(tmp_path / "job" / "winners.json")
    assert not [d for d in os.listdir(tmp_path / "job") if d.startswith(".worker")]


def _final_weights(job_dir):
    from pss_tf.run.job import Job

    return [v.numpy() for v in Job(str(job_dir)).restore_supernet().weights]


@pytest.mark.slow
def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    """Deterministic ops on the CPU: an interrupted and resumed run ends with the same
    pools (exactly) and weights (to 1e-6) as an uninterrupted one."""
    from pss_tf.training.runtime import run

    straight = run(smoke_config(tmp_path / "straight"))
    assert straight.finished and straight.steps == 8
    stopped = run(smoke_config(tmp_path / "resumed", max_steps=3))
    assert not stopped.finished and stopped.steps == 3
    assert not os.path.exists(tmp_path / "resumed" / "winners.json")
    resumed = run(smoke_config(tmp_path / "resumed", resume=True))
    assert resumed.finished and resumed.steps == 8

    pools = [json.load(open(tmp_path / d / "pools.json")) for d in ("straight", "resumed")]
    assert pools[0] == pools[1]
    winners = [json.load(open(tmp_path / d / "winners.json")) for d in ("straight", "resumed")]
    assert [w["config"] for w in winners[0]] == [w["config"] for w in winners[1]]
    for a, b in zip(_final_weights(tmp_path / "straight"), _final_weights(tmp_path / "resumed")):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_smoke_run_writes_every_output(smoke_job):
    job = smoke_job
    for name in ("run.json", "pools.json", "winners.json", "evaluations.json", "sampler_flops.npz", "checkpoints"):
        assert os.path.exists(os.path.join(job, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(job, "tensorboard")))

    from pss_tf import SubnetConfig, count_flops
    from pss_tf.sampling.pools import PoolManager

    winners = json.load(open(os.path.join(job, "winners.json")))
    assert winners and len({(w["metric"], w["target"]) for w in winners}) == len(winners)
    pools = PoolManager.load(os.path.join(job, "pools.json"))
    for entry in winners:
        assert {"metric", "target", "config", "value", "score", "val_top1"} <= set(entry)
        config = SubnetConfig.from_dict(entry["config"])
        value = count_flops(config, num_classes=4, small_input=True, in_channels=3)
        assert entry["value"] == pytest.approx(value)
        assert round((value - 4) / 8) * 8 + 4 == entry["target"]  # grid 4..12 step 8
        assert entry["name"] == f"flops_{entry['target']:g}m"
        assert 0.0 <= entry["val_top1"] <= 1.0
        assert pools.score((entry["metric"], entry["target"]), config) == entry["score"]
    evaluations = json.load(open(os.path.join(job, "evaluations.json")))
    assert [e["epoch"] for e in evaluations] == [1, 2]
    assert {"max", "min"} <= set(evaluations[-1])


def _scalars(tensorboard_dir) -> dict:
    """{tag: [steps]} of every scalar in a run's TensorBoard event files."""
    steps = {}
    for name in sorted(os.listdir(tensorboard_dir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(tensorboard_dir, name)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


@pytest.mark.slow
def test_the_smoke_runs_files_are_complete_after_the_tool_exits(smoke_job):
    """tools/train.py ends without the interpreter's teardown: every event, the last
    checkpoint and its index are on disk when the process is gone."""
    scalars = _scalars(os.path.join(smoke_job, "tensorboard"))
    assert scalars["train/loss"] == list(range(2, 41, 2))  # --log_every_steps=2 over 40 steps
    assert scalars["val_top1/max"] == scalars["val_top1/min"] == [20, 40]
    latest = tf.train.latest_checkpoint(os.path.join(smoke_job, "checkpoints"))
    assert latest.endswith("ckpt-40")
    assert tf.train.load_checkpoint(latest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 40
    assert json.load(open(os.path.join(smoke_job, "records.json")))


@pytest.mark.slow
def test_run_closes_its_summary_writer(tmp_path, monkeypatch):
    """run() leaves no summary writer open for the caller's exit to flush."""
    writers = []
    create = tf.summary.create_file_writer

    def recorded(*args, **kwargs):
        writers.append(create(*args, **kwargs))
        return writers[-1]

    monkeypatch.setattr(tf.summary, "create_file_writer", recorded)
    from pss_tf.training.runtime import run

    result = run(smoke_config(tmp_path / "job", epochs=1))
    assert result.finished and len(writers) == 1
    assert writers[0]._closed  # The writer's own record of close(); a flush leaves it open.
    assert _scalars(tmp_path / "job" / "tensorboard")["val_top1/max"] == [4]


def test_a_second_run_into_a_run_directory_is_refused_and_touches_nothing(smoke_job):
    before = {p: os.path.getmtime(os.path.join(smoke_job, p)) for p in ("run.json", "pools.json", "winners.json")}
    again = run_tool("train.py", f"--flagfile={SMOKE_FLAGS}", f"--job_dir={smoke_job}")
    assert again.returncode == 2
    assert "--job_dir" in again.stderr and "--resume" in again.stderr, again.stderr
    assert before == {p: os.path.getmtime(os.path.join(smoke_job, p)) for p in before}


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(model="resnet18"), "model"),
        (dict(flops_targets=(12, 4, 2)), "flops_targets"),
        (dict(flops_targets=(4, 12, 0)), "flops_targets"),
        (dict(min_width=0.0), "min_width"),
        (dict(max_width=1.5), "max_width"),
        (dict(dataset="fashion_mnist", data_dir="/nonexistent/fmnist"), "data_dir"),
        (dict(metrics=("flops", "energy")), "metrics"),
        (dict(resume=True), "resume"),
    ],
)
def test_bad_settings_fail_early_name_the_field_and_write_nothing(tmp_path, changes, field):
    job = tmp_path / "job"
    from pss_tf.training.trainer import Trainer

    with pytest.raises(ConfigError) as raised:
        Trainer(smoke_config(job, **changes))
    assert raised.value.field == field
    assert "--" not in str(raised.value)  # Library messages name fields; the tools name flags.
    assert not job.exists()


def test_bad_flag_on_the_command_line_names_it(tmp_path):
    result = run_tool("train.py", f"--flagfile={SMOKE_FLAGS}", f"--job_dir={tmp_path / 'j'}", "--flops_targets=12,4,2")
    assert result.returncode == 2
    assert "--flops_targets" in result.stderr and "inverted" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "j").exists()


@pytest.mark.slow
def test_uniform_baseline_records_scores_in_pools(tmp_path):
    from pss_tf.training.runtime import run

    result = run(smoke_config(tmp_path / "uniform", sampler="uniform", epochs=1))
    assert result.finished and result.winners
    assert all(w["metric"] == "flops" for w in result.winners)
