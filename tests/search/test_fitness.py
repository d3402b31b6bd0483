"""The search's fitness on the smoke run: SubnetEvaluator's top-1 on held-out data, cached by network."""

import contextlib
import random

import numpy as np
import pytest

from pss_tf.errors import ConfigError
from pss_tf.run.job import Job
from pss_tf.run.records import TrainingRecords
from pss_tf.search.fitness import fitness_source, make_fitness
from pss_tf.search.genes import GeneSpace, network_key
from pss_tf.space.config import SubnetConfig
from pss_tf.data.settings import calibration_stream
from pss_tf.training.evaluation import SubnetEvaluator

HOLDOUT = 40  # Of the smoke run's 256 synthetic training examples.


@pytest.fixture(scope="module")
def opened(job_copy):
    """The smoke run without and with held-out examples (same weights), and its restored supernet."""
    plain = Job(job_copy())
    held = Job(job_copy(data={"holdout_examples": HOLDOUT}))
    return plain, held, plain.restore_supernet()


def configs(space, n, seed=0):
    rng = random.Random(seed)
    return [space.random_config(rng) for _ in range(n)]


def reference(job, supernet, data, batches=2):
    """An evaluator built by hand: the run's calibration stream, `data` to score on."""
    return SubnetEvaluator(supernet, calibration_stream(job.run_config, job.data), data, batches)


@contextlib.contextmanager
def noisy_classifier(supernet, scale=8.0, seed=0):
    """The smoke supernet classifies its synthetic data perfectly; a noisy classifier
    makes subnets' accuracies differ, so that equal numbers say something."""
    kernel = supernet.classifier.kernel
    saved = kernel.numpy()
    noise = np.random.default_rng(seed).normal(0, scale * saved.std(), saved.shape)
    kernel.assign(saved + noise.astype(saved.dtype))
    try:
        yield
    finally:
        kernel.assign(saved)


def test_fitness_is_subnet_evaluator_top1_on_the_held_out_examples(opened):
    _, held, supernet = opened
    fitness = make_fitness(held, supernet, calibration_batches=2, examples=32)
    assert (fitness.data, fitness.examples) == ("holdout", 32)
    evaluator = reference(held, supernet, held.data.holdout(64, limit=32))
    chosen = configs(held.space, 6) + [held.space.max_config(), held.space.min_config()]
    with noisy_classifier(supernet):
        expected = [evaluator.evaluate(c).top1 for c in chosen]
        assert fitness(chosen) == expected
    assert all(0.0 <= v <= 1.0 for v in expected) and len(set(expected)) > 1, expected
    # Every held-out example by default.
    assert fitness_source(held, 0) == ("holdout", HOLDOUT)


def test_without_held_out_data_fitness_uses_a_training_subset(opened):
    plain, _, supernet = opened
    fitness = make_fitness(plain, supernet, examples=48)  # The run's 2 calibration batches.
    assert (fitness.data, fitness.examples, fitness.evaluator.calibration_batches) == ("train_subset", 48, 2)
    evaluator = reference(plain, supernet, plain.data.train_subset(64, 48))
    chosen = configs(plain.space, 6, seed=1)
    with noisy_classifier(supernet, seed=1):
        expected = [evaluator.evaluate(c).top1 for c in chosen]
        assert fitness(chosen) == expected
    assert len(set(expected)) > 1, expected
    # As many training examples as the validation split by default; never the validation split itself.
    assert fitness_source(plain, 0) == ("train_subset", plain.info.num_val)
    with pytest.raises(ConfigError, match="fitness_examples"):
        fitness_source(plain, -1)


def test_the_cache_evaluates_each_network_once(opened):
    plain, _, supernet = opened
    fitness = make_fitness(plain, supernet, examples=32)
    calls = []
    evaluate = fitness.evaluator.evaluate
    fitness.evaluator.evaluate = lambda config: calls.append(config) or evaluate(config)
    a, b = configs(plain.space, 2, seed=2)
    # Another spelling of `a`: the thickest multiplier of each stage's channel level.
    genes = GeneSpace(plain.space)
    levels = genes.level_of(a)
    widths = []
    for stage, level in enumerate(levels[1:]):
        codes = np.flatnonzero(genes.level_of_code[stage] == level)
        widths.append(float(genes.width_values[codes[-1]]))
    twin = SubnetConfig(a.model, a.resolution, tuple(widths))
    assert twin != a and network_key(twin) == network_key(a)

    first = fitness([a, b, a])
    assert calls == [a, b] and fitness.evaluations == 2
    assert first[0] == first[2]
    assert fitness([twin, b]) == [first[0], first[1]] and len(calls) == 2
    fitness.remember(configs(plain.space, 1, seed=3)[0], 0.5)
    assert fitness(configs(plain.space, 1, seed=3)) == [0.5] and len(calls) == 2
    assert fitness([]) == []


def test_job_records(job_copy):
    with_records = Job(job_copy())
    records = with_records.records()
    assert isinstance(records, TrainingRecords) and len(records) > 0
    assert records.to_dict() == TrainingRecords.load(with_records.dir.records_file).to_dict()
    without = Job(job_copy(records=False))
    with pytest.raises(ConfigError) as error:
        without.records()
    assert error.value.field == "job_dir"
    assert "has no training records (records.json)" in error.value.message and "`init`" in error.value.message
    with open(without.dir.records_file, "w") as f:
        f.write("{not json")
    with pytest.raises(ConfigError, match="job_dir: .*records.json"):
        without.records()
