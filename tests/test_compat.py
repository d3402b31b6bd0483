"""pss_tf.run.compat: the readers of pss_tf 0.1's files (run.json is covered in tests/training/test_config.py)."""

import json
import os

import tensorflow as tf

from pss_tf.run import compat
from pss_tf.run.config import TrainConfig
from pss_tf.run.job import JobDir


def test_winners_of_0_1_take_the_runs_model_and_get_their_pareto_marks(tmp_path):
    config = TrainConfig(job_dir=str(tmp_path)).replace(model="mobilenet_v2_slim_last_conv")
    widths = [0.75] * 9
    old = [
        {"metric": "flops", "target": 100.0, "name": "flops_100m", "value": 95.0, "val_top1": 0.60,
         "config": {"model": "mobilenet_v2", "resolution": 128, "widths": widths}},
        {"metric": "flops", "target": 200.0, "name": "flops_200m", "value": 190.0, "val_top1": 0.55,
         "config": {"model": "mobilenet_v2", "resolution": 160, "widths": widths}},
    ]
    entries = compat.winner_entries(json.loads(json.dumps(old)), "mobilenet_v2_slim_last_conv")
    assert [e["pareto"] for e in entries] == [True, False]
    assert {e["config"]["model"] for e in entries} == {"mobilenet_v2_slim_last_conv"}
    job = JobDir(str(tmp_path))
    job.write_run_config(config)
    with open(os.path.join(tmp_path, "winners.json"), "w") as f:
        json.dump(old, f)
    read = job.read_winners()
    assert [(e["pareto"], c.model, c.resolution) for e, c in read] == [
        (True, "mobilenet_v2_slim_last_conv", 128), (False, "mobilenet_v2_slim_last_conv", 160)
    ]


class _State(tf.train.experimental.PythonState):
    def serialize(self):
        return "{}"

    def deserialize(self, string):
        pass


def test_a_checkpoint_without_host_state_is_0_1s(tmp_path):
    old = tf.train.Checkpoint(step=tf.Variable(1)).save(str(tmp_path / "old" / "ckpt"))
    new = tf.train.Checkpoint(step=tf.Variable(1), host=_State()).save(str(tmp_path / "new" / "ckpt"))
    assert compat.checkpoint_is_0_1(old) and not compat.checkpoint_is_0_1(new)

