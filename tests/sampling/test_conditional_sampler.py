"""ConditionalSampler: binning, drawing for a target, caching."""

import os
import time

import numpy as np
import pytest

from pss_tf.sampling import conditional_sampler as sampler_module
from pss_tf.sampling.conditional_sampler import ConditionalSampler
from pss_tf.space.config import SearchSpace
from pss_tf.space.metrics import FlopsMetric
from pss_tf.space.targets import TargetGrid

# The release's grids (scripts/train/pss-mbv*-f.sh).
PAPER_GRIDS = {"mobilenet_v1": TargetGrid(110, 570, 10), "mobilenet_v2": TargetGrid(70, 300, 10)}


def flops_metric(model, **kwargs):
    return FlopsMetric(model, PAPER_GRIDS[model], **kwargs)


@pytest.fixture(scope="module", params=sorted(PAPER_GRIDS))
def paper_sampler(request):
    model = request.param
    return ConditionalSampler.build(SearchSpace(model), flops_metric(model))  # 1e5 subnets, seed 0.


@pytest.fixture(scope="module")
def small_v1():
    return ConditionalSampler.build(SearchSpace("mobilenet_v1"), flops_metric("mobilenet_v1"), 20_000, 0)


class TestBuild:
    def test_build_time_of_1e5_subnets(self):
        for model in sorted(PAPER_GRIDS):
            started = time.perf_counter()
            ConditionalSampler.build(SearchSpace(model), flops_metric(model), num_samples=100_000, seed=1)
            elapsed = time.perf_counter() - started
            print(f"{model}: built from 1e5 subnets in {elapsed:.2f} s")
            assert elapsed < 30

    def test_the_release_population_lies_strictly_inside_the_paper_grids(self, paper_sampler):
        """As the release: 1e5 i.i.d. random subnets whose targets lie strictly inside
        the grid, so the end targets (where the min and max nets lie) get no pool."""
        grid = paper_sampler.metric.grid
        assert set(paper_sampler.targets).isdisjoint(paper_sampler.unreachable_targets)
        assert sorted(paper_sampler.targets + paper_sampler.unreachable_targets) == list(grid.targets)
        assert sum(paper_sampler.bin_sizes.values()) == 100_000
        assert grid.targets[0] in paper_sampler.unreachable_targets
        assert grid.targets[-1] in paper_sampler.unreachable_targets
        if paper_sampler.space.model == "mobilenet_v2":
            # i.i.d. widths reach every inner target: pools 80..290, as the release's.
            assert paper_sampler.targets == tuple(float(t) for t in range(80, 291, 10))
        else:
            # Independent uniform widths span only about 120.8M..508.9M (of 120..560).
            assert paper_sampler.targets[0] == 120.0 and 500.0 <= paper_sampler.targets[-1] <= 520.0

    def test_extremes_reach_both_ends_of_the_grid(self):
        """pss_tf's option: the uniform-width sweep and correlated subnets reach the
        grid's ends, where the min (106.78M) and max (568.79M) nets lie."""
        space, metric = SearchSpace("mobilenet_v1"), flops_metric("mobilenet_v1")
        sampler = ConditionalSampler.build(space, metric, 100_000, 0, extremes=True)
        assert sampler.targets == tuple(float(t) for t in range(110, 571, 10))
        assert sampler.unreachable_targets == ()
        sweep = len(space.resolutions) * 251
        assert 100_000 < sum(sampler.bin_sizes.values()) <= 100_000 + 25_000 + sweep

    def test_bins_are_deterministic_given_the_seed(self):
        space, metric = SearchSpace("mobilenet_v2"), flops_metric("mobilenet_v2")
        a = ConditionalSampler.build(space, metric, 5_000, 3)
        b = ConditionalSampler.build(space, metric, 5_000, 3)
        c = ConditionalSampler.build(space, metric, 5_000, 4)
        assert a.bin_sizes == b.bin_sizes
        assert a.bin_sizes != c.bin_sizes

    def test_chunked_build_counts_every_subnet(self):
        space, metric = SearchSpace("mobilenet_v2"), flops_metric("mobilenet_v2")
        sampler = ConditionalSampler.build(space, metric, 250_001, 0)  # 3 chunks and a bit.
        assert sum(sampler.bin_sizes.values()) == 250_001
        extremes = ConditionalSampler.build(space, metric, 250_001, 0, extremes=True)
        # Every V2 subnet (69.15M..300.84M) snaps into the 70..300 grid: the random
        # ones, the 25% correlated ones (62,500) and the 13 x 251 uniform-width sweep.
        assert sum(extremes.bin_sizes.values()) == 250_001 + 62_500 + 13 * 251

    def test_validation(self):
        space, metric = SearchSpace("mobilenet_v1"), flops_metric("mobilenet_v1")
        with pytest.raises(ValueError, match="num_samples"):
            ConditionalSampler.build(space, metric, 0)
        with pytest.raises(ValueError, match="seed"):
            ConditionalSampler.build(space, metric, 10, -1)
        with pytest.raises(ValueError, match="metric"):
            ConditionalSampler.build(SearchSpace("mobilenet_v2"), metric, 10)


class TestSample:
    def test_every_reachable_target_is_hit(self, paper_sampler):
        rng = np.random.default_rng(0)
        metric, space = paper_sampler.metric, paper_sampler.space
        for target in paper_sampler.targets:
            for _ in range(5):
                config = paper_sampler.sample(target, rng)
                assert metric.target(config) == target
                assert space.contains(config)
                assert all(round(w, space.decimals) == w for w in config.widths)
        assert paper_sampler.fallback_count == 0

    def test_conditional_distribution_follows_the_target(self, small_v1):
        rng = np.random.default_rng(0)
        small = [small_v1.sample(150.0, rng) for _ in range(100)]
        large = [small_v1.sample(450.0, rng) for _ in range(100)]
        # FLOPs grow with resolution squared: a 150M subnet must be low-resolution.
        assert max(c.resolution for c in small) < min(c.resolution for c in large)
        assert len(set(small)) > 90  # Draws are varied, not a handful of stored subnets.
        # Every drawn value was seen in the target's bin of the build's subnets:
        # the first 20,000 inside the grid of the same random stream's first chunk.
        space, rng = small_v1.space, np.random.default_rng(0)
        resolutions, widths = space.sample_arrays(rng, sampler_module._BUILD_CHUNK)
        in_bin = small_v1.metric.grid.snap_array(small_v1.metric.values(resolutions, widths)) == 150.0
        assert {c.resolution for c in small} <= set(resolutions[in_bin].tolist())
        for stage in range(14):
            assert {c.widths[stage] for c in small} <= set(widths[in_bin, stage].tolist())

    def test_reproducible_given_the_generator(self, small_v1):
        draws = [[small_v1.sample(t, np.random.default_rng(42)) for t in small_v1.targets] for _ in range(2)]
        assert draws[0] == draws[1]
        other = [small_v1.sample(t, np.random.default_rng(43)) for t in small_v1.targets]
        assert other != draws[0]

    def test_fallback_returns_a_stored_subnet_of_the_target(self, small_v1, monkeypatch):
        monkeypatch.setattr(small_v1, "max_batches", 0)
        before = small_v1.fallback_count
        rng = np.random.default_rng(0)
        for target in small_v1.targets:
            assert small_v1.metric.target(small_v1.sample(target, rng)) == target
        assert small_v1.fallback_count - before == len(small_v1.targets)

    def test_accepts_equivalent_target_numbers(self, small_v1):
        rng = np.random.default_rng(0)
        assert small_v1.metric.target(small_v1.sample(300, rng)) == 300.0
        assert small_v1.metric.target(small_v1.sample(np.float64(300.0), rng)) == 300.0

    def test_bad_targets(self, small_v1):
        rng = np.random.default_rng(0)
        v2 = ConditionalSampler.build(SearchSpace("mobilenet_v2"), flops_metric("mobilenet_v2"), 5_000, 0)
        with pytest.raises(ValueError, match="unreachable"):
            v2.sample(70.0, rng)  # The grid's first target: no pool, as in the release.
        with pytest.raises(ValueError, match="not a target"):
            small_v1.sample(305.0, rng)
        with pytest.raises(ValueError, match="not a target"):
            small_v1.sample(1000.0, rng)
        with pytest.raises(ValueError, match="rng"):
            small_v1.sample(300.0, 0)


class TestPersistence:
    def test_round_trip(self, small_v1, tmp_path):
        path = tmp_path / "sampler.npz"
        small_v1.save(path)
        loaded = ConditionalSampler.load(path, flops_metric("mobilenet_v1"))
        assert loaded.targets == small_v1.targets
        assert loaded.unreachable_targets == small_v1.unreachable_targets
        assert loaded.bin_sizes == small_v1.bin_sizes
        assert loaded.space == small_v1.space
        assert loaded.fingerprint == small_v1.fingerprint
        for target in small_v1.targets:
            assert loaded.sample(target, np.random.default_rng(5)) == small_v1.sample(target, np.random.default_rng(5))
        assert os.path.getsize(path) < 1_000_000

    def test_load_checks_the_metric(self, small_v1, tmp_path):
        path = tmp_path / "sampler.npz"
        small_v1.save(path)
        with pytest.raises(ValueError, match="metric"):
            ConditionalSampler.load(path, flops_metric("mobilenet_v1", num_classes=10))

    def test_unreadable_file_names_the_file(self, tmp_path):
        path = tmp_path / "sampler.npz"
        path.write_bytes(b"not an npz")
        with pytest.raises(ValueError, match="sampler.npz"):
            ConditionalSampler.load(path, flops_metric("mobilenet_v1"))

    def test_failed_save_keeps_the_old_file(self, small_v1, tmp_path, monkeypatch):
        path = tmp_path / "sampler.npz"
        small_v1.save(path)
        before = path.read_bytes()

        def failing_savez(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(sampler_module.np, "savez_compressed", failing_savez)
        with pytest.raises(OSError, match="disk full"):
            small_v1.save(path)
        assert path.read_bytes() == before
        assert os.listdir(tmp_path) == ["sampler.npz"]


class TestBuildOrLoad:
    def test_reuses_a_matching_cache_and_rebuilds_on_change(self, tmp_path, monkeypatch):
        path = tmp_path / "cache.npz"
        space, metric = SearchSpace("mobilenet_v1"), flops_metric("mobilenet_v1")
        built = ConditionalSampler.build_or_load(path, space, metric, 5_000, 0)
        assert path.exists()

        calls = []
        real_build = ConditionalSampler.build.__func__

        def counting_build(cls, *args, **kwargs):
            calls.append(args)
            return real_build(cls, *args, **kwargs)

        monkeypatch.setattr(ConditionalSampler, "build", classmethod(counting_build))
        reused = ConditionalSampler.build_or_load(path, space, metric, 5_000, 0)
        assert calls == [] and reused.bin_sizes == built.bin_sizes

        changes = [
            (space, metric, 5_000, 1),  # Seed.
            (space, metric, 6_000, 1),  # Number of subnets.
            (space, FlopsMetric("mobilenet_v1", TargetGrid(100, 600, 20)), 6_000, 1),  # Grid.
            (space, FlopsMetric("mobilenet_v1", TargetGrid(100, 600, 20), num_classes=10), 6_000, 1),
            (SearchSpace("mobilenet_v1", min_width=0.5), metric, 6_000, 1),  # Space.
        ]
        for i, (new_space, new_metric, num_samples, seed) in enumerate(changes):
            sampler = ConditionalSampler.build_or_load(path, new_space, new_metric, num_samples, seed)
            assert len(calls) == i + 1
            assert sampler.fingerprint["num_samples"] == num_samples
            assert ConditionalSampler.load(path, new_metric).fingerprint == sampler.fingerprint
            # And the freshly written cache is reused by the next identical call.
            ConditionalSampler.build_or_load(path, new_space, new_metric, num_samples, seed)
            assert len(calls) == i + 1

    def test_corrupt_cache_is_rebuilt(self, tmp_path):
        path = tmp_path / "cache.npz"
        path.write_bytes(b"garbage")
        space, metric = SearchSpace("mobilenet_v2"), flops_metric("mobilenet_v2")
        sampler = ConditionalSampler.build_or_load(path, space, metric, 2_000)
        assert ConditionalSampler.load(path, flops_metric("mobilenet_v2")).bin_sizes == sampler.bin_sizes

    def test_no_path_means_no_cache(self, tmp_path):
        space, metric = SearchSpace("mobilenet_v2"), flops_metric("mobilenet_v2")
        sampler = ConditionalSampler.build_or_load(None, space, metric, 2_000)
        assert sampler.targets
        assert os.listdir(tmp_path) == []
