"""EvolutionSearch on a synthetic fitness: constraint, cache, determinism, resume, proposals."""

import json

import numpy as np
import pytest

from pss_tf.run.records import TrainingRecords
from pss_tf.sampling.conditional_sampler import ConditionalSampler
from pss_tf.search.budget import Budget
from pss_tf.search.evolution import EvolutionSearch
from pss_tf.search.genes import GeneSpace, network_key
from pss_tf.search.prior import Prior
from pss_tf.search.proposals import ConditionalProposal, Proposal, UniformProposal
from pss_tf.space.config import SearchSpace, SubnetConfig
from pss_tf.space.metrics import FlopsMetric
from pss_tf.space.targets import TargetGrid

SPACE = SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 0.5)
METRIC = FlopsMetric("mobilenet_v1", TargetGrid(1, 20, 1), num_classes=10, small_input=True)
GENES = GeneSpace(SPACE)
BUDGET = Budget(METRIC, 7.0)
# Per-stage value of width: a few stages matter a lot, the rest little, so the
# best subnet under the budget is far from the typical one.
STAGE_WEIGHTS = np.array([0.0, 0.05, 0.05, 0.05, 0.1, 0.1, 1.0, 0.05, 0.05, 1.0, 0.05, 0.05, 0.05, 1.5])
SMALL = dict(population=40, generations=8, parents=10, mutations=20, crossovers=20)


def fitness(config):
    """A known function of the network (resolution and channel levels), higher is better."""
    levels = GENES.level_of(config)
    fraction = np.array([levels[1 + s] / max(len(GENES.levels[s]) - 1, 1) for s in range(SPACE.num_stages)])
    return float(STAGE_WEIGHTS @ fraction + 0.2 * levels[0] / 2)


class Counting:
    """Fitness that counts its calls and the configs it saw; can interrupt after `stop_after` calls."""

    def __init__(self, stop_after=None):
        self.calls = 0
        self.seen = []
        self.stop_after = stop_after

    def __call__(self, config):
        if self.stop_after is not None and self.calls == self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.seen.append(config)
        return fitness(config)


@pytest.fixture(scope="module")
def uniform():
    return UniformProposal(SPACE, BUDGET)


@pytest.fixture(scope="module")
def prior():
    """An informative prior: training records whose loss is minus the fitness, plus noise."""
    rng = np.random.default_rng(11)
    records = TrainingRecords(capacity=1000)
    resolutions, widths = SPACE.sample_arrays(rng, 4000)
    for step, (r, w) in enumerate(zip(resolutions, widths)):
        config = SubnetConfig(SPACE.model, int(r), tuple(w.tolist()))
        records.add(config, step, 3.0 - fitness(config) + float(rng.normal(0, 0.1)))
    return Prior.from_records(SPACE, BUDGET, records)


@pytest.fixture(scope="module")
def conditional():
    return ConditionalProposal(ConditionalSampler.build(SPACE, METRIC, num_samples=20_000, seed=0), BUDGET)


def finished(proposal, seed=0, **settings):
    counting = Counting()
    search = EvolutionSearch(proposal, counting, seed=seed, **{**SMALL, **settings})
    search.run()
    return search, counting


def test_proposals_implement_the_interface(uniform, prior, conditional):
    for proposal in (uniform, prior, conditional):
        assert isinstance(proposal, Proposal)
        draws = proposal.sample(np.random.default_rng(0), 50)
        assert len(draws) == 50 and all(SPACE.contains(c) and BUDGET.contains(c) for c in draws)
        mutated = [proposal.mutate(c, 0.5, np.random.default_rng(1)) for c in draws]
        assert all(SPACE.contains(c) for c in mutated)
    assert conditional.targets == (6.0, 7.0)


@pytest.mark.parametrize("name", ["uniform", "prior", "conditional"])
def test_every_candidate_lies_in_the_space_and_the_window(name, request):
    search, counting = finished(request.getfixturevalue(name))
    assert search.generation == 8 and search.done and len(search.history) == 8
    for config in counting.seen:
        assert SPACE.contains(config)
        assert BUDGET.low <= METRIC.value(config) <= BUDGET.high
    assert all(entry["size"] == 40 for entry in search.history)
    # Parents are the best evaluated so far, best first.
    scores = sorted(search.cache.values(), reverse=True)
    assert [search.fitness_of(c) for c in search.parents] == scores[:10]
    assert search.best == (search.parents[0], scores[0])


def test_evolution_beats_its_initial_population_and_random_search(uniform):
    search, counting = finished(uniform)
    history = search.history
    assert [h["evaluations"] for h in history] == [40 * (g + 1) for g in range(8)]
    best = [h["best_fitness"] for h in history]
    assert best == sorted(best)  # The best so far never gets worse.
    assert best[-1] > best[0] + 0.3
    assert history[-1]["mean_fitness"] > history[0]["mean_fitness"] + 0.5
    # Random search with as many evaluations, for five seeds, does worse.
    for seed in range(5):
        draws = uniform.sample(np.random.default_rng(100 + seed), search.evaluations)
        assert max(fitness(c) for c in draws) < best[-1]
    assert history[-1]["best_config"] == search.best[0].to_dict()


def test_prior_init_beats_uniform_when_the_prior_is_informative(uniform, prior):
    settings = dict(generations=3, population=40, mutations=20, crossovers=20)
    gains = []
    for seed in range(3):
        with_prior, _ = finished(prior, seed=seed, **settings)
        without, _ = finished(uniform, seed=seed, **settings)
        for g in range(3):
            assert with_prior.history[g]["evaluations"] == without.history[g]["evaluations"] == 40 * (g + 1)
        gains.append([with_prior.history[g]["best_fitness"] - without.history[g]["best_fitness"] for g in range(3)])
        # The prior's initial population is better on average, not only at its best.
        assert with_prior.history[0]["mean_fitness"] > without.history[0]["mean_fitness"] + 0.3
    gains = np.array(gains)
    assert (gains[:, 0] > 0).all() and gains.mean() > 0.2


def test_the_cache_prevents_re_evaluation(uniform):
    search, counting = finished(uniform)
    assert counting.calls == search.evaluations == len(search.cache) == 8 * 40
    assert len({network_key(c) for c in counting.seen}) == counting.calls
    assert list(search.cache) == counting.seen
    for config in counting.seen[:20]:
        assert search.fitness_of(config) == fitness(config)


def test_one_network_under_two_spellings_is_evaluated_once(uniform):
    a = SubnetConfig.uniform(SPACE.model, 24, 0.42)  # 5.65 MFLOPs.
    b = SubnetConfig.uniform(SPACE.model, 24, 0.421)
    assert a != b and network_key(a) == network_key(b) and BUDGET.contains(a)
    counting = Counting()
    search = EvolutionSearch(uniform, counting, seeds=[a, b], **SMALL)
    search.step()
    assert counting.seen[0] == a and b not in counting.seen and counting.calls == 40
    assert search.fitness_of(b) == fitness(a)
    counting = Counting()
    search = EvolutionSearch(uniform, counting, seeds=[a, b], identity="config", **SMALL)
    search.step()
    assert counting.seen[:2] == [a, b]


def test_seeds_come_first_and_those_outside_the_window_are_dropped(uniform):
    inside = uniform.sample(np.random.default_rng(5), 3)
    outside = SPACE.max_config()
    counting = Counting()
    search = EvolutionSearch(uniform, counting, seeds=[outside, *inside], **SMALL)
    search.step()
    assert search.dropped_seeds == 1 and search.population[:3] == inside
    assert search.history[0]["filled"] == 37
    with pytest.raises(ValueError, match=r"^seeds\[1\]: config: .* is outside the search space"):
        EvolutionSearch(uniform, counting, seeds=[inside[0], SubnetConfig.uniform(SPACE.model, 30, 0.4)])


def test_deterministic_given_the_seed(prior):
    first, _ = finished(prior, seed=7)
    second, _ = finished(prior, seed=7)
    other, _ = finished(prior, seed=8)
    assert first.history == second.history and first.state() == second.state()
    assert list(first.cache.items()) == list(second.cache.items())
    assert first.history != other.history


@pytest.mark.parametrize("name", ["uniform", "prior", "conditional"])
def test_resume_after_k_generations_gives_the_same_result(name, request):
    proposal = request.getfixturevalue(name)
    settings = dict(SMALL, generations=6)
    whole, whole_counting = finished(proposal, seed=3, **settings)

    counting = Counting()
    search = EvolutionSearch(proposal, counting, seed=3, **settings)
    for _ in range(2):
        search.step()
    text = json.dumps(search.state())
    resumed_counting = Counting()
    resumed = EvolutionSearch.from_state(json.loads(text), proposal, resumed_counting)
    assert resumed.generation == 2 and resumed.evaluations == 80
    resumed.run()
    assert resumed.state() == whole.state()
    assert resumed.history == whole.history and resumed.best == whole.best
    assert counting.calls + resumed_counting.calls == whole_counting.calls
    assert counting.seen + resumed_counting.seen == whole_counting.seen


def test_resume_after_an_interruption_inside_a_generation(prior):
    whole, whole_counting = finished(prior, seed=4)
    # Interrupted at the 100th evaluation: generation 2 (evaluations 81..120) is half done.
    interrupted = Counting(stop_after=100)
    search = EvolutionSearch(prior, interrupted, seed=4, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        search.run()
    state = json.loads(json.dumps(search.state()))
    assert state["generation"] == 2 and len(state["cache"]) == 100
    resumed_counting = Counting()
    resumed = EvolutionSearch.from_state(state, prior, resumed_counting)
    resumed.run()
    assert resumed.state() == whole.state()
    # Nothing is evaluated twice: the 20 done before the interruption are reused.
    assert interrupted.calls + resumed_counting.calls == whole_counting.calls == whole.evaluations
    assert not set(interrupted.seen) & set(resumed_counting.seen)
    # The same object can also go on after the interruption, with the same result.
    search._fitness = Counting()
    search.run()
    assert search.state() == whole.state()


def test_batch_fitness_and_the_generation_hook(prior):
    batches = []

    def batch(configs):
        batches.append(list(configs))
        return [fitness(c) for c in configs]

    entries = []
    search = EvolutionSearch(prior, batch_fitness=batch, seed=2, **SMALL)
    search.run(on_generation=lambda s, entry: entries.append((s.generation, entry)))
    single, _ = finished(prior, seed=2)
    assert search.state() == single.state()
    assert [len(b) for b in batches] == [40] * 8
    assert [g for g, _ in entries] == list(range(1, 9))
    assert [e for _, e in entries] == search.history


def test_small_window_falls_back_and_then_says_it_is_exhausted(uniform):
    # Within 1% above the min net: about twenty networks fit.
    cheapest = METRIC.value(SPACE.min_config())
    budget = Budget(METRIC, cheapest * 1.01, alpha=1 / 1.01)
    proposal = Prior.from_records(SPACE, budget, _flat_records())
    counting = Counting()
    search = EvolutionSearch(proposal, counting, **SMALL)
    entry = search.step()
    assert 0 < entry["size"] < 40 and entry["filled"] == entry["size"]
    assert all(budget.contains(c) for c in counting.seen)
    with pytest.raises(RuntimeError, match="found no new subnet"):
        search.run()


def _flat_records():
    records = TrainingRecords(capacity=10)
    records.add(SPACE.min_config(), 0, 1.0)
    records.add(SPACE.max_config(), 1, 0.5)
    return records


def test_errors_name_the_argument(uniform, prior):
    with pytest.raises(ValueError, match="^fitness: give exactly one"):
        EvolutionSearch(uniform)
    with pytest.raises(ValueError, match="^fitness: give exactly one"):
        EvolutionSearch(uniform, fitness, batch_fitness=lambda cs: [0.0] * len(cs))
    with pytest.raises(ValueError, match="^proposal:"):
        EvolutionSearch(object(), fitness)
    for field, value in (
        ("population", 0),
        ("parents", 0),
        ("generations", 0),
        ("mutations", -1),
        ("gene_prob", 1.5),
        ("max_tries", 0),
        ("seed", -1),
        ("identity", "channels"),
    ):
        with pytest.raises(ValueError, match=f"^{field}:"):
            EvolutionSearch(uniform, fitness, **{field: value})
    with pytest.raises(ValueError, match=r"^fitness: returned nan for"):
        EvolutionSearch(uniform, lambda c: float("nan"), **SMALL).step()
    with pytest.raises(ValueError, match=r"^batch_fitness: returned 1 values for 40 configs"):
        EvolutionSearch(uniform, batch_fitness=lambda cs: [1.0], **SMALL).step()
    search, _ = finished(uniform, generations=1)
    with pytest.raises(RuntimeError, match="all 1 generations are done"):
        search.step()
    state = search.state()
    with pytest.raises(ValueError, match="^proposal: the state was searched with proposal uniform, not prior"):
        EvolutionSearch.from_state(state, prior, fitness)
    other = UniformProposal(SPACE, Budget(METRIC, 8.0))
    with pytest.raises(ValueError, match="^proposal: the state was searched with budget"):
        EvolutionSearch.from_state(state, other, fitness)
    prior_state = finished(prior, generations=1)[0].state()
    weaker = Prior(prior.genes, BUDGET, prior.expected, strength=0.5)
    with pytest.raises(ValueError, match="^proposal: the state was searched with proposal description"):
        EvolutionSearch.from_state(prior_state, weaker, fitness)
    assert EvolutionSearch.from_state(prior_state, prior, fitness).generation == 1
    with pytest.raises(ValueError, match="^state: not a version 1 pss_tf.search.evolution state"):
        EvolutionSearch.from_state({**state, "version": 2}, uniform, fitness)
    broken = json.loads(json.dumps(state))
    broken["cache"] = broken["cache"][1:]
    with pytest.raises(ValueError, match="^state: history, parents and cache disagree"):
        EvolutionSearch.from_state(broken, uniform, fitness)
