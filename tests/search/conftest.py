"""Fixtures of the search tests: private copies of the shared smoke run.

The session's `smoke_job` is read only, so every test that searches (and so
writes OUT/search) or edits the run works on a copy, with training records
made from the run's pools when the trainer did not write any.
"""

import json
import os
import shutil

import pytest

from pss_tf.run.job import JobDir
from pss_tf.run.records import TrainingRecords
from pss_tf.sampling.pools import PoolManager


def records_from_pools(job_dir: str) -> TrainingRecords:
    """Training records of every pool member, its loss minus its score, at the run's last step."""
    job = JobDir(job_dir)
    config = job.read_run_config()
    last_step = config.optimization.epochs * config.optimization.steps_per_epoch
    records = TrainingRecords(capacity=1000)
    pools = PoolManager.load(job.pools_file)
    for key in pools.keys():
        for member, score in pools.members(key):
            records.add(member, last_step, -score)
    return records


def copy_job(source: str, target, records: bool = True, **run_changes) -> str:
    """A copy of the run in `source` at `target` (without TensorBoard events).

    `records`: make sure it has records.json (from its pools if it had none),
    or remove it. `run_changes`: `{group: {field: value}}` written into run.json.
    """
    target = str(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("tensorboard", "search*"))
    job = JobDir(target)
    if not records:
        if os.path.exists(job.records_file):
            os.remove(job.records_file)
    elif not os.path.exists(job.records_file):
        records_from_pools(target).save(job.records_file)
    if run_changes:
        with open(job.run_file) as f:
            run = json.load(f)
        for group, fields in run_changes.items():
            run[group].update(fields)
        with open(job.run_file, "w") as f:
            json.dump(run, f)
    return target


def listing(path) -> list[str]:
    """Every file under `path`, relative, sorted (to check that nothing was written)."""
    found = []
    for root, _, files in os.walk(path):
        found += [os.path.relpath(os.path.join(root, name), path) for name in files]
    return sorted(found)


@pytest.fixture(scope="module")
def job_copy(smoke_job, tmp_path_factory):
    """A function making private copies of the smoke run (see `copy_job`)."""
    root = tmp_path_factory.mktemp("jobs")
    counter = iter(range(1000))

    def make(records: bool = True, **run_changes) -> str:
        return copy_job(smoke_job, root / f"job{next(counter)}", records, **run_changes)

    return make
