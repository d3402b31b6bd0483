"""The readers of a job directory's files that only tools and studies read back."""

import json

import pytest

from pss_tf.errors import ConfigError
from pss_tf.run.job import JobDir


def test_evaluations_read_back_as_written_and_none_before_the_first(tmp_path):
    job = JobDir(str(tmp_path))
    assert job.read_evaluations() == []
    evaluations = [{"epoch": 1, "step": 8, "max": {"top1": 0.25, "top5": 0.75}},
                   {"epoch": 2, "step": 16, "max": {"top1": 0.5, "top5": 1.0}}]
    job.write_evaluations(evaluations)
    assert job.read_evaluations() == evaluations
    (tmp_path / "evaluations.json").write_text(json.dumps({"epoch": 1}))
    with pytest.raises(ConfigError) as raised:
        job.read_evaluations()
    assert raised.value.field == "job_dir" and "expected a list of per-epoch results" in raised.value.message
