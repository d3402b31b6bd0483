"""PrioritizedSampler and UniformSampler: the per-step choice of subnet."""

import collections
import json
import os
import pathlib
import random as random_module
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pss_tf.sampling.conditional_sampler import ConditionalSampler
from pss_tf.sampling.pools import PoolManager
from pss_tf.sampling.samplers import Draw, PrioritizedSampler, UniformSampler
from pss_tf.sampling.schedules import ExponentialSchedule
from pss_tf.space.config import SearchSpace, SubnetConfig
from pss_tf.space.metrics import FlopsMetric
from pss_tf.space.targets import TargetGrid

SPACE = SearchSpace("mobilenet_v1")
FLOPS = FlopsMetric("mobilenet_v1", TargetGrid(110, 570, 10))
# A second metric type with fewer targets, standing in for e.g. latency_cpu.
COARSE = FlopsMetric("mobilenet_v1", TargetGrid(100, 600, 50), name="flops_coarse")
EPOCHS = 10
P_FRESH = ExponentialSchedule(1.0, 0.01, EPOCHS)
TEMPERATURE = ExponentialSchedule(1.0, 0.01, EPOCHS)


@pytest.fixture(scope="module")
def samplers():
    return {
        "flops": ConditionalSampler.build(SPACE, FLOPS, 20_000, 0),
        "flops_coarse": ConditionalSampler.build(SPACE, COARSE, 20_000, 0),
    }


def full_pools(samplers, capacity=3, seed=0):
    """Pools at capacity for every reachable key, with random scores.

    A target whose bin holds a single subnet only ever yields that subnet, so such
    pools are topped up with arbitrary (off-target) configs.
    """
    pools = PoolManager(capacity=capacity)
    rng = np.random.default_rng(seed)
    fillers = iter(SubnetConfig.uniform("mobilenet_v1", 224, w / 1000) for w in range(750, 1001))
    for name, sampler in samplers.items():
        for target in sampler.targets:
            for _ in range(10 * capacity):
                pools.update((name, target), sampler.sample(target, rng), -float(rng.uniform(1, 5)))
            while not pools.is_full((name, target)):
                pools.update((name, target), next(fillers), -float(rng.uniform(1, 5)))
    return pools


@pytest.fixture(scope="module")
def filled_pools(samplers):
    """Full pools shared by the tests that only read them."""
    return full_pools(samplers)


def loss_of(config):
    """A deterministic stand-in for a subnet's training loss."""
    return 2.0 + 0.01 * config.resolution - sum(config.widths) / 10


class TestPrioritizedSampler:
    def test_empty_pools_give_fresh_subnets_of_the_chosen_target(self, samplers):
        sampler = PrioritizedSampler(PoolManager(), samplers, P_FRESH, TEMPERATURE, seed=0)
        metrics = {"flops": FLOPS, "flops_coarse": COARSE}
        for _ in range(300):
            draw = sampler.draw(epoch=EPOCHS)  # p_e = 0.01, but no pool is full.
            assert isinstance(draw, Draw) and draw.fresh
            name, target = draw.key
            assert metrics[name].target(draw.config) == target
            assert target in samplers[name].targets

    def test_keys_are_chosen_uniformly_over_all_reachable_targets(self, samplers, filled_pools):
        sampler = PrioritizedSampler(filled_pools, samplers, P_FRESH, TEMPERATURE, seed=1)
        num_flops, num_coarse = len(samplers["flops"].targets), len(samplers["flops_coarse"].targets)
        assert len(sampler.keys) == num_flops + num_coarse
        draws = 6000
        # Late in training, so that most draws come cheaply from the pools.
        counts = collections.Counter(sampler.draw(EPOCHS).key for _ in range(draws))
        # The metric type is picked in proportion to its number of targets...
        share = sum(n for (name, _), n in counts.items() if name == "flops_coarse") / draws
        assert share == pytest.approx(num_coarse / (num_flops + num_coarse), abs=0.02)
        # ... and the target uniformly: chi-square over all keys.
        expected = draws / len(sampler.keys)
        chi_square = sum((counts[k] - expected) ** 2 / expected for k in sampler.keys)
        assert chi_square < 86.7  # 99.9% quantile, 49 degrees of freedom.

    def test_fresh_fraction_follows_p_e_once_pools_are_full(self, samplers, filled_pools):
        pools = filled_pools
        sampler = PrioritizedSampler(pools, samplers, P_FRESH, TEMPERATURE, seed=2)
        for epoch, p in ((0, 1.0), (EPOCHS / 2, 0.1), (EPOCHS, 0.01)):
            draws = [sampler.draw(epoch) for _ in range(3000)]
            fresh = np.mean([d.fresh for d in draws])
            assert fresh == pytest.approx(p, abs=0.02)
            for draw in draws:
                if not draw.fresh:
                    assert pools.score(draw.key, draw.config) is not None  # A member of that pool.

    def test_late_pool_draws_favour_the_best(self, samplers, filled_pools):
        pools = filled_pools
        never_fresh = ExponentialSchedule(1e-9, 1e-9, EPOCHS)
        cold = PrioritizedSampler(pools, samplers, never_fresh, ExponentialSchedule(0.01, 0.01, EPOCHS), seed=3)
        draws = [cold.draw(EPOCHS) for _ in range(500)]
        assert not any(d.fresh for d in draws)
        winners = pools.winners()
        # Scores are uniform in [-5, -1]; at t = 0.01 the best member nearly always dominates.
        assert np.mean([d.config == winners[d.key][0] for d in draws]) > 0.9

    def test_resume_continues_identically(self, samplers):
        def run(sampler, pools, steps, epoch0):
            out = []
            for step in range(steps):
                epoch = epoch0 + step / 20
                draw = sampler.draw(epoch)
                pools.update(draw.key, draw.config, -loss_of(draw.config))
                out.append(draw)
            return out

        pools = full_pools(samplers, capacity=2)
        sampler = PrioritizedSampler(pools, samplers, P_FRESH, TEMPERATURE, seed=4)
        run(sampler, pools, 100, 0)
        state = json.loads(json.dumps(sampler.get_state()))
        saved_pools = json.loads(json.dumps(pools.to_dict()))
        expected = run(sampler, pools, 150, 5)
        assert any(d.fresh for d in expected) and not all(d.fresh for d in expected)

        restored_pools = PoolManager.from_dict(saved_pools)
        resumed = PrioritizedSampler(restored_pools, samplers, P_FRESH, TEMPERATURE, seed=999)
        resumed.set_state(state)
        assert run(resumed, restored_pools, 150, 5) == expected
        assert restored_pools.to_dict() == pools.to_dict()

    def test_same_seed_same_draws_and_mapping_order_is_irrelevant(self, samplers):
        reordered = dict(reversed(list(samplers.items())))
        a = PrioritizedSampler(PoolManager(), samplers, P_FRESH, TEMPERATURE, seed=5)
        b = PrioritizedSampler(PoolManager(), reordered, P_FRESH, TEMPERATURE, seed=5)
        assert [a.draw(1) for _ in range(50)] == [b.draw(1) for _ in range(50)]

    def test_validation(self, samplers):
        with pytest.raises(ValueError, match="samplers"):
            PrioritizedSampler(PoolManager(), {}, P_FRESH, TEMPERATURE)
        with pytest.raises(ValueError, match="samplers"):
            PrioritizedSampler(PoolManager(), {"latency": samplers["flops"]}, P_FRESH, TEMPERATURE)


class TestUniformSampler:
    def test_draws_cover_the_space_and_carry_their_pool_key(self):
        sampler = UniformSampler(SPACE, [FLOPS, COARSE], seed=0)
        metrics = {"flops": FLOPS, "flops_coarse": COARSE}
        draws = [sampler.draw() for _ in range(2000)]
        for draw in draws:
            assert draw.fresh and SPACE.contains(draw.config)
            name, target = draw.key  # Both grids cover the whole MobileNetV1 space.
            assert metrics[name].target(draw.config) == target
        share = np.mean([d.key[0] == "flops_coarse" for d in draws])
        assert share == pytest.approx(11 / (11 + 47), abs=0.03)
        # Uniform widths: stage multipliers average the middle of [0.75, 1].
        assert np.mean([d.config.widths for d in draws]) == pytest.approx(0.875, abs=0.005)
        assert {d.config.resolution for d in draws} == set(SPACE.resolutions)

    def test_key_is_none_outside_the_grid(self):
        narrow = FlopsMetric("mobilenet_v1", TargetGrid(200, 300, 10))
        keys = [UniformSampler(SPACE, {"flops": narrow}, seed=s).draw().key for s in range(200)]
        assert None in keys
        assert any(k is not None for k in keys)

    def test_resume_continues_identically(self):
        sampler = UniformSampler(SPACE, [FLOPS], seed=7)
        for _ in range(10):
            sampler.draw()
        state = json.loads(json.dumps(sampler.get_state()))
        expected = [sampler.draw() for _ in range(50)]
        resumed = UniformSampler(SPACE, [FLOPS], seed=123)
        resumed.set_state(state)
        assert [resumed.draw() for _ in range(50)] == expected

    def test_validation(self):
        with pytest.raises(ValueError, match="metrics"):
            UniformSampler(SPACE, [], seed=0)
        with pytest.raises(ValueError, match="metrics"):
            UniformSampler(SPACE, [FLOPS, FLOPS], seed=0)
        with pytest.raises(ValueError, match="metrics"):
            UniformSampler(SearchSpace("mobilenet_v2"), [FLOPS], seed=0)


def test_sampling_side_imports_and_runs_without_tensorflow():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None  # Any `import tensorflow` now raises ImportError.
        sys.modules["keras"] = None
        import pss_tf.space.targets, pss_tf.space.metrics, pss_tf.sampling.schedules, pss_tf.sampling.pools
        import pss_tf.sampling.conditional_sampler, pss_tf.sampling.samplers
        from pss_tf.space.config import SearchSpace, SubnetConfig
        space = SearchSpace("mobilenet_v2")
        metric = pss_tf.space.metrics.FlopsMetric("mobilenet_v2", pss_tf.space.targets.TargetGrid(60, 300, 10))
        sampler = pss_tf.sampling.conditional_sampler.ConditionalSampler.build(space, metric, 2000)
        schedule = pss_tf.sampling.schedules.ExponentialSchedule(1.0, 0.01, 10)
        pools = pss_tf.sampling.pools.PoolManager()
        draw = pss_tf.sampling.samplers.PrioritizedSampler(pools, {"flops": sampler}, schedule, schedule).draw(0)
        pools.update(draw.key, draw.config, -1.0)
        pss_tf.sampling.samplers.UniformSampler(space, [metric]).draw()
        assert sys.modules["tensorflow"] is None and sys.modules["keras"] is None
        print("ok")
        """
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    # Without the kernel switch that importing pss_tf in this process set: the child's import decides afresh.
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


class TestParallelDraws:
    """Parallel subnets share the step's resolution: every draw honours it."""

    def test_conditional_draws_at_a_fixed_resolution(self, samplers):
        sampler = samplers["flops"]
        rng = np.random.default_rng(0)
        for resolution in (128, 176, 224):
            targets = sampler.targets_at(resolution)
            assert targets and set(targets) <= set(sampler.targets)
            for target in targets:
                config = sampler.sample(target, rng, resolution=resolution)
                assert config.resolution == resolution and FLOPS.target(config) == target
        # Small targets are out of reach at the largest resolution, large ones at the smallest.
        assert min(sampler.targets_at(224)) > min(sampler.targets_at(128))
        assert max(sampler.targets_at(128)) < max(sampler.targets_at(224))
        with pytest.raises(ValueError, match="resolution"):
            sampler.sample(300.0, rng, resolution=130)

    def test_pool_draws_keep_to_the_resolution(self, samplers):
        pools = full_pools(samplers, capacity=6)
        rng = random_module.Random(0)
        key = next(k for k in pools.keys() if len({c.resolution for c, _ in pools.members(k)}) > 1)
        for config, _ in pools.members(key):
            drawn = pools.sample(key, 1.0, rng, resolution=config.resolution)
            assert drawn.resolution == config.resolution
        members = [c for c, _ in pools.members(key) if c.resolution == config.resolution]
        probabilities = pools.probabilities(key, 1.0, config.resolution)
        assert len(probabilities) == len(members) and sum(probabilities) == pytest.approx(1.0)
        with pytest.raises(ValueError, match="no member of resolution"):
            pools.sample(key, 1.0, rng, resolution=999)

    @pytest.mark.parametrize("use_pools", [True, False])
    def test_prioritized_draws_at_the_step_resolution(self, samplers, use_pools):
        sampler = PrioritizedSampler(
            full_pools(samplers), samplers, P_FRESH, TEMPERATURE, seed=3, use_pools=use_pools
        )
        resolutions = collections.Counter()
        fresh = 0
        for _ in range(300):
            resolution = sampler.draw_resolution()
            resolutions[resolution] += 1
            draw = sampler.draw(EPOCHS, resolution=resolution)  # p_e = 0.01: mostly pool draws.
            assert draw.config.resolution == resolution and draw.key in sampler.keys_at(resolution)
            fresh += draw.fresh
        assert fresh == 300 if not use_pools else fresh < 150
        # The step's resolution follows the space's end-weighted distribution.
        assert resolutions[128] < resolutions[176]

    def test_uniform_draws_at_the_step_resolution(self):
        sampler = UniformSampler(SPACE, [FLOPS], seed=0)
        for _ in range(50):
            resolution = sampler.draw_resolution()
            assert sampler.draw(0, resolution=resolution).config.resolution == resolution
