"""tools/search.py's options and checks: bad input is refused before any heavy work, writing nothing."""

import os
import sys

import pytest
from support import run_tool

from pss_tf import config_flags
from pss_tf.errors import ConfigError
from pss_tf.latency import SpaceSpec
from pss_tf.latency.build import build_table
from pss_tf.run.job import Job
from pss_tf.search import driver
from pss_tf.search.evolution import EvolutionSearch
from pss_tf.search.options import SearchOptions
from pss_tf.search.prior import seeds
from pss_tf.space.config import SearchSpace

# The smoke space (MobileNetV1, small input, 24..32 px, widths 0.35..0.5, 4 classes)
# spans about 4.0 .. 12.2 M MACs.
SMALL = ("--population=4", "--generations=2", "--parents=2", "--mutations=2", "--crossovers=2")


def parse(*args) -> SearchOptions:
    """The options tools/search.py builds from these flags."""
    from absl import flags

    flag_values = flags.FlagValues()
    config_flags.define_flags(SearchOptions, flag_values)
    flag_values([sys.argv[0], *args])
    return config_flags.from_flags(SearchOptions, flag_values)


def listing(path) -> list[str]:
    found = []
    for root, _, files in os.walk(path):
        found += [os.path.relpath(os.path.join(root, name), path) for name in files]
    return sorted(found)


def tiny_table(path) -> str:
    """A latency table of a one-width, one-resolution space: it cannot cover the smoke space."""
    spec = SpaceSpec(SearchSpace("mobilenet_v1", 16, 16, 8, 0.25, 0.25), True, 3, 4)
    setup = {"unit": "ms", "device": {"cpu": "test"}, "runtime": {"name": "ai-edge-litert", "version": "0.0-test"},
             "threads": 1, "channel_step": 0}
    result = build_table(str(path), spec, setup, lambda variant: 0.01, lambda: 0.001, progress=False)
    assert not result.interrupted
    return str(path)


@pytest.fixture(scope="module")
def job(job_copy):
    return job_copy()


@pytest.mark.parametrize(
    "flags, field, message",
    [
        (("--budgets=1",), "budgets", "1 flops is below the cheapest subnet of the space"),
        (("--budgets=100",), "budgets", "is above the most expensive subnet of the space"),
        (("--budgets=13", "--alpha=0.95"), "budgets", "or a smaller alpha"),
        (("--budgets=7,abc",), "budgets", "expected a list of float"),
        (("--budgets=7,nan",), "budgets", "budgets must be positive numbers"),
        (("--budgets=7,7",), "budgets", "named twice"),
        ((), "budgets", "name at least one budget"),
        (("--budgets=7", "--alpha=0"), "alpha", "must lie in (0, 1]"),
        (("--budgets=7", "--alpha=1.5"), "alpha", "must lie in (0, 1]"),
        (("--budgets=7", "--metric=latency_cpu"), "metric", "trained pools for flops, not latency_cpu"),
        (("--budgets=7", "--population=0"), "population", "at least 1"),
        (("--budgets=7", "--mutation_prob=2"), "mutation_prob", "must lie in [0, 1]"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_written(job, flags, field, message):
    before = listing(job)
    with pytest.raises(ConfigError) as error:
        driver.plan(parse(f"--job_dir={job}", *flags))
    assert error.value.field == field
    assert message in error.value.message
    assert listing(job) == before


def test_prior_without_training_records_is_refused(job_copy):
    job = job_copy(records=False)
    before = listing(job)
    with pytest.raises(ConfigError) as error:
        driver.plan(parse(f"--job_dir={job}", "--budgets=7", "--init=uniform,prior"))
    assert error.value.field == "job_dir"
    assert "has no training records" in error.value.message and "`init` uniform or conditional" in error.value.message
    # The baselines need no records.
    the_plan = driver.plan(parse(f"--job_dir={job}", "--budgets=7,10", "--init=uniform,conditional"))
    assert [(t.budget.value, t.init) for t in the_plan.tasks] == [
        (7.0, "uniform"), (7.0, "conditional"), (10.0, "uniform"), (10.0, "conditional")
    ]
    assert the_plan.fitness_data == "train_subset"
    assert listing(job) == before


def test_conditional_init_rebuilds_a_missing_sampler_cache_in_memory(job_copy):
    job = job_copy()
    cached = driver.plan(parse(f"--job_dir={job}", "--budgets=7", "--init=conditional")).tasks[0].proposal
    os.remove(os.path.join(job, "sampler_flops.npz"))
    before = listing(job)
    rebuilt = driver.plan(parse(f"--job_dir={job}", "--budgets=7", "--init=conditional")).tasks[0].proposal
    assert rebuilt.to_dict() == cached.to_dict()  # The run's sampler: same fingerprint, same targets.
    assert listing(job) == before


def test_latency_table_that_does_not_cover_the_space_is_refused(job_copy, tmp_path):
    lut = tiny_table(tmp_path / "tiny.json")
    job = job_copy(targets={"metrics": ["flops", "latency_cpu"], "latency_cpu_lut": lut})
    before = listing(job)
    with pytest.raises(ConfigError) as error:
        driver.plan(parse(f"--job_dir={job}", "--metric=latency_cpu", "--budgets=1", "--init=uniform"))
    assert error.value.field == "metric"
    assert "latency_cpu metric cannot be rebuilt" in error.value.message
    assert "has no entry for block" in error.value.message
    # A FLOPs search of that run does not need the table.
    driver.plan(parse(f"--job_dir={job}", "--budgets=7", "--init=uniform"))
    assert listing(job) == before


def test_a_saved_search_resumes_only_with_the_same_settings(job_copy):
    job = job_copy()
    args = (f"--job_dir={job}", "--budgets=7", "--init=prior", *SMALL)
    the_plan = driver.plan(parse(*args))
    (task,) = the_plan.tasks
    assert task.saved is None
    assert task.seeds == seeds(Job(job).pools(), task.budget, the_plan.job.space)  # Pool members in the window.
    search = EvolutionSearch(task.proposal, lambda config: float(config.resolution), population=4, generations=2,
                             parents=2, mutations=2, crossovers=2, seeds=task.seeds)
    search.step()
    driver._save(task, search, the_plan, None)
    assert driver.plan(parse(*args)).tasks[0].saved["search"]["generation"] == 1
    for flag, field in (("--population=5", "population"), ("--seed=1", "seed"), ("--alpha=0.7", "alpha"),
                        ("--fitness_examples=8", "fitness_examples")):
        with pytest.raises(ConfigError) as error:
            driver.plan(parse(*args, flag))
        assert error.value.field == field
        assert f"differs from the search saved in {task.state_file}" in error.value.message
    # Resumable options may change.
    driver.plan(parse(*args, "--noprogress", f"--out={os.path.dirname(task.state_file)}"))


def test_the_tool_reports_bad_input_as_a_flag(job):
    before = listing(job)
    result = run_tool("search.py", f"--job_dir={job}", "--budgets=1")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: --budgets: 1 flops is below the cheapest subnet" in result.stderr
    assert listing(job) == before
