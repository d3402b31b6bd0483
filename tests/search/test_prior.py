"""Genes, budgets, expected losses and the prior built from training records."""

import subprocess
import sys

import numpy as np
import pytest
from support import subprocess_env

from pss_tf.run.records import TrainingRecords
from pss_tf.sampling.pools import PoolManager
from pss_tf.search.budget import Budget
from pss_tf.search.expected_loss import ExpectedLoss
from pss_tf.search.genes import GeneSpace, network_key
from pss_tf.search.prior import Prior, seeds
from pss_tf.space.config import SearchSpace, SubnetConfig
from pss_tf.space.metrics import FlopsMetric
from pss_tf.space.targets import TargetGrid

SPACE = SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 0.5)
METRIC = FlopsMetric("mobilenet_v1", TargetGrid(1, 20, 1), num_classes=10, small_input=True)
GENES = GeneSpace(SPACE)
BUDGET = Budget(METRIC, 7.0)  # The space spans 4.03 (min net) .. 12.17 (max net) MFLOPs.
# Stages 12 and 13 both have 1024 base channels, hence the same 20 levels. In the
# records below, stage 12 trains *better narrow* and every other stage better
# wide, stage 13 markedly so.
ODD, TWIN = 12, 13


def uniform_configs(n, seed):
    rng = np.random.default_rng(seed)
    resolutions, widths = SPACE.sample_arrays(rng, n)
    return [SubnetConfig(SPACE.model, int(r), tuple(w.tolist())) for r, w in zip(resolutions, widths)]


def true_loss(config):
    """Wider is better in every stage (much better in TWIN) but ODD, where narrower is much better."""
    levels = GENES.level_of(config)
    fraction = [levels[1 + s] / max(len(GENES.levels[s]) - 1, 1) for s in range(SPACE.num_stages)]
    return 2.0 - 0.3 * np.mean(fraction) - 0.1 * levels[0] / 2 + 0.6 * fraction[ODD] - 0.3 * fraction[TWIN]


@pytest.fixture(scope="module")
def records():
    rng = np.random.default_rng(5)
    records = TrainingRecords(capacity=1000)
    for step, config in enumerate(uniform_configs(4000, seed=4)):
        records.add(config, step, float(true_loss(config) + rng.normal(0, 0.05)))
    return records


@pytest.fixture(scope="module")
def prior(records):
    return Prior.from_records(SPACE, BUDGET, records)


def lower_half_mass(probabilities):
    return float(probabilities[: len(probabilities) // 2].sum())


def test_nothing_imports_tensorflow():
    # In a fresh interpreter: other test modules of the session import TensorFlow.
    script = (
        "import sys, pss_tf.search, pss_tf.search.evolution, pss_tf.search.prior, pss_tf.search.proposals\n"
        "loaded = [m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.')]\n"
        "assert not loaded, loaded[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-2000:]


class TestGenes:
    def test_levels_of_the_small_space(self):
        assert GENES.level_sizes() == (3, 1, 2, 3, 3, 6, 6, 11, 11, 11, 11, 11, 11, 20, 20)
        assert len(GENES.width_values) == 151 and GENES.width_values[0] == 0.35 and GENES.width_values[-1] == 0.5
        assert GENES.levels[ODD] == [(c,) for c in range(360, 520, 8)]

    def test_encode_decode_round_trip_of_space_draws(self):
        for config in uniform_configs(300, seed=0):
            genes = GENES.encode(config)
            assert GENES.decode(genes) == config
            assert GENES.level_of(config).tolist() == GENES.levels_of(genes[None])[0].tolist()

    def test_canonical_codes_are_the_thinnest_of_their_level(self):
        for s in range(SPACE.num_stages):
            codes = GENES.canonical_codes[s]
            assert (GENES.level_of_code[s, codes] == np.arange(len(codes))).all()
            assert (codes[1:] > codes[:-1]).all() and codes[0] == 0
            assert (GENES.level_of_code[s, codes[1:] - 1] == np.arange(len(codes) - 1)).all()

    def test_encode_refuses_configs_off_the_grid(self):
        with pytest.raises(ValueError, match=r"config: .* is not a multiple of 10\*\*-3"):
            GENES.encode(SubnetConfig.uniform(SPACE.model, 28, 0.4005))
        with pytest.raises(ValueError, match="config: .* is outside the search space: resolution: 30"):
            GENES.encode(SubnetConfig.uniform(SPACE.model, 30, 0.4))
        with pytest.raises(ValueError, match=r"widths\[0\]: 0.6 is outside"):
            GENES.encode(SubnetConfig.uniform(SPACE.model, 28, 0.6))

    def test_network_key_joins_multipliers_of_one_level(self):
        a = SubnetConfig.uniform(SPACE.model, 28, 0.36)
        b = SubnetConfig.uniform(SPACE.model, 28, 0.361)
        assert a != b and network_key(a) == network_key(b)
        assert METRIC.value(a) == METRIC.value(b)


class TestBudget:
    def test_window(self):
        assert (BUDGET.low, BUDGET.high) == (0.8 * 7.0, 7.0)
        inside = [c for c in uniform_configs(500, seed=1) if BUDGET.contains(c)]
        assert inside and all(5.6 <= METRIC.value(c) <= 7.0 for c in inside)

    def test_infeasible_budgets_are_refused_with_what_to_do(self):
        with pytest.raises(ValueError, match=r"budget: 3 flops is below the cheapest subnet .*4.027"):
            Budget(METRIC, 3.0).check_feasible(SPACE)
        with pytest.raises(ValueError, match=r"budget: alpha \* budget = 16 flops is above .*12.17.* at most 15.21"):
            Budget(METRIC, 20.0).check_feasible(SPACE)
        with pytest.raises(ValueError, match=r"budget: 3 flops is below"):
            Prior(GENES, Budget(METRIC, 3.0), ExpectedLoss.fit(GENES, [SPACE.max_config()], [1.0]))

    @pytest.mark.parametrize(
        "value, alpha, field", [(0, 0.8, "budget"), (float("nan"), 0.8, "budget"), (7, 0.0, "alpha"), (7, 1.5, "alpha")]
    )
    def test_bad_arguments(self, value, alpha, field):
        with pytest.raises(ValueError, match=f"^{field}:"):
            Budget(METRIC, value, alpha)


class TestExpectedLoss:
    def test_recovers_which_widths_train_better(self, records):
        expected = ExpectedLoss.from_records(GENES, records)
        assert expected.observations == 1000 and expected.skipped == 0
        odd, twin = expected.widths[ODD], expected.widths[TWIN]
        # Narrow levels of the odd stage have the lower loss, wide ones of its twin.
        assert odd[:5].mean() < odd[-5:].mean() - 0.15
        assert twin[:5].mean() > twin[-5:].mean()
        assert np.corrcoef(np.arange(20), odd)[0, 1] > 0.9

    def test_fits_a_known_additive_model_exactly(self):
        configs = uniform_configs(400, seed=7)
        losses = [1.0 + 0.01 * GENES.level_of(c)[14] - 0.2 * (c.resolution == 32) for c in configs]
        expected = ExpectedLoss.fit(GENES, configs, losses, ridge=1e-9)
        assert np.allclose(np.diff(expected.widths[TWIN]), 0.01, atol=1e-6)
        assert np.allclose(expected.resolution[2] - expected.resolution[:2], -0.2, atol=1e-6)
        assert np.allclose(expected.widths[0], expected.mean)  # One level: no effect.

    def test_unseen_levels_get_their_genes_worst_estimate(self):
        configs = [SubnetConfig.uniform(SPACE.model, 28, w) for w in (0.35, 0.4, 0.45)]
        expected = ExpectedLoss.fit(GENES, configs, [1.0, 1.1, 1.2])
        seen = expected.width_counts[ODD] > 0
        assert seen.sum() == 3 and (expected.widths[ODD][~seen] == expected.widths[ODD][seen].max()).all()
        assert expected.resolution[0] == expected.resolution[2] == expected.resolution[1]

    def test_refuses_records_outside_the_space(self):
        other = SubnetConfig.uniform("mobilenet_v1", 224, 1.0)
        with pytest.raises(ValueError, match="records: none of the 1 observations lies in the search space"):
            ExpectedLoss.fit(GENES, [other], [1.0])
        with pytest.raises(ValueError, match="records: no training records were kept"):
            ExpectedLoss.from_records(GENES, TrainingRecords())
        with pytest.raises(ValueError, match="^ridge:"):
            ExpectedLoss.fit(GENES, [SPACE.max_config()], [1.0], ridge=0)
        expected = ExpectedLoss.fit(GENES, [other, SPACE.max_config()], [1.0, 2.0])
        assert expected.skipped == 1 and expected.observations == 1


class TestPrior:
    def test_more_mass_on_the_widths_that_trained_better(self, records, prior):
        flat = Prior.from_records(SPACE, BUDGET, records, strength=0.0)
        odd, twin = prior.probabilities[1 + ODD], prior.probabilities[1 + TWIN]
        assert lower_half_mass(odd) > lower_half_mass(flat.probabilities[1 + ODD]) + 0.2
        assert lower_half_mass(odd) > lower_half_mass(twin) + 0.3
        assert odd.argmax() < 3 and twin.argmax() >= 10
        # Without the loss, both twins get the same distribution (same levels, same cost).
        assert lower_half_mass(flat.probabilities[1 + ODD]) == pytest.approx(
            lower_half_mass(flat.probabilities[1 + TWIN]), abs=0.02
        )
        for p in prior.probabilities:
            assert p.min() >= 0 and p.sum() == pytest.approx(1.0)

    def test_samples_lie_in_the_space_and_the_window(self, prior):
        assert prior.acceptance > 0.1
        samples = prior.sample(np.random.default_rng(0), 500)
        assert len(samples) == 500
        for config in samples:
            assert SPACE.contains(config)
            assert BUDGET.low <= METRIC.value(config) <= BUDGET.high
        # Widths are the canonical (thinnest) multiplier of their level.
        genes = np.array([GENES.encode(c) for c in samples])
        for s in range(SPACE.num_stages):
            assert np.isin(genes[:, 1 + s], GENES.canonical_codes[s]).all()
        # Drawn with the fitted probabilities (within sampling and window effects).
        odd_levels = GENES.levels_of(genes)[:, 1 + ODD]
        assert lower_half_mass(np.bincount(odd_levels, minlength=20) / 500) > 0.6

    def test_samples_are_deterministic_given_the_generator(self, prior, records):
        assert prior.sample(np.random.default_rng(3), 50) == prior.sample(np.random.default_rng(3), 50)
        assert prior.sample(np.random.default_rng(3), 50) != prior.sample(np.random.default_rng(4), 50)
        again = Prior.from_records(SPACE, BUDGET, records)
        assert again.lagrange == prior.lagrange
        assert all((a == b).all() for a, b in zip(again.probabilities, prior.probabilities))
        assert prior.sample(np.random.default_rng(0), 0) == []

    def test_mutation_redraws_genes_from_the_same_distributions(self, prior):
        rng = np.random.default_rng(1)
        parent = SubnetConfig.uniform(SPACE.model, 28, 0.42)
        assert prior.mutate(parent, 0.0, rng) == parent
        children = [prior.mutate(parent, 1.0, rng) for _ in range(3000)]
        assert all(SPACE.contains(c) for c in children)
        levels = np.array([GENES.level_of(c) for c in children])
        for gene in (0, 1 + ODD, 1 + TWIN):
            frequency = np.bincount(levels[:, gene], minlength=len(prior.probabilities[gene])) / len(children)
            assert np.abs(frequency - prior.probabilities[gene]).max() < 0.04
        # At gene probability 0.1, about one gene in ten changes.
        parent_genes = GENES.encode(parent)
        changed = np.mean([(GENES.encode(prior.mutate(parent, 0.1, rng)) != parent_genes).mean() for _ in range(500)])
        assert 0.05 < changed < 0.12
        with pytest.raises(ValueError, match="^gene_prob:"):
            prior.mutate(parent, 1.5, rng)
        with pytest.raises(ValueError, match="^rng:"):
            prior.mutate(parent, 0.1, 0)

    @pytest.mark.parametrize("value", [4.1, 5.0, 9.5, 12.0])
    def test_budgets_across_the_range(self, records, value):
        budget = Budget(METRIC, value)
        prior = Prior.from_records(SPACE, budget, records)
        samples = prior.sample(np.random.default_rng(0), 100)
        assert all(budget.low <= METRIC.value(c) <= budget.high for c in samples)
        assert prior.acceptance > 0.05

    def test_pools_add_observations_and_seeds(self, records):
        pools = PoolManager(capacity=5)
        members = uniform_configs(300, seed=9)
        inside = [c for c in members if BUDGET.contains(c)][:6]
        outside = [c for c in members if not BUDGET.contains(c)][:3]
        for i, config in enumerate(inside[:4] + outside[:1]):
            pools.update(("flops", 6.0), config, -1.0 - i)
        pools.update(("flops", 7.0), inside[4], -0.5)
        pools.update(("flops", 7.0), inside[0], -0.2)  # In two pools: ranked by its best score.
        pools.update(("latency_cpu", 1.0), inside[5], -3.0)
        pools.update(("latency_cpu", 1.0), outside[1], -0.1)
        # inside[2] and inside[5] tie at -3: pool order decides.
        assert seeds(pools, BUDGET) == [inside[0], inside[4], inside[1], inside[2], inside[5], inside[3]]
        assert seeds(PoolManager(), BUDGET) == []
        with pytest.raises(ValueError, match="^pools:"):
            seeds({}, BUDGET)
        with pytest.raises(ValueError, match="^budget:"):
            seeds(pools, 7.0)
        prior = Prior.from_records(SPACE, BUDGET, records, pools)
        assert prior.expected.observations == 1000 + 6

    def test_describes_itself(self, prior):
        data = prior.to_dict()
        assert data["name"] == "prior" and data["budget"]["budget"] == 7.0
        assert len(data["probabilities"]) == GENES.num_genes and data["acceptance"] == prior.acceptance
