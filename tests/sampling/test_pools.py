"""PoolManager: EMA scores, eviction, softmax sampling and exact persistence."""

import json
import math
import os
import random

import numpy as np
import pytest

from pss_tf.sampling import pools as pools_module
from pss_tf.sampling.pools import PoolManager
from pss_tf.space.config import SubnetConfig

KEY = ("flops", 300.0)


def config(resolution: int, width: float = 1.0) -> SubnetConfig:
    return SubnetConfig.uniform("mobilenet_v1", resolution, width)


A, B, C, D, E = (config(r) for r in (128, 136, 144, 152, 160))


def pool_of(capacity, *members):
    manager = PoolManager(capacity=capacity)
    for member, score in members:
        manager.update(KEY, member, score)
    return manager


def _pools_file(capacity: int, members: list) -> str:
    """A pools.json of one 300M-MACs pool holding `members` as written."""
    return json.dumps(
        {
            "format": "pss_tf.pools",
            "version": 1,
            "capacity": capacity,
            "ema_momentum": 0.9,
            "pools": [{"metric": "flops", "target": 300.0, "members": members}],
        }
    )


class TestUpdate:
    def test_newcomer_starts_at_its_score(self):
        manager = pool_of(50, (A, -2.5))
        assert manager.score(KEY, A) == -2.5

    def test_ema_arithmetic_is_exact(self):
        manager = pool_of(50, (A, 1.0), (A, 2.0))
        assert manager.score(KEY, A) == 0.9 * 1.0 + 0.1 * 2.0
        manager.update(KEY, A, 3.0)
        assert manager.score(KEY, A) == 0.9 * (0.9 * 1.0 + 0.1 * 2.0) + 0.1 * 3.0
        manager = pool_of(50, (A, -2.5), (A, -1.5))
        assert manager.score(KEY, A) == 0.9 * -2.5 + 0.1 * -1.5
        assert manager.score(KEY, A) == pytest.approx(-2.4)

    def test_other_momentum(self):
        manager = PoolManager(ema_momentum=0.75)
        manager.update(KEY, A, 4.0)
        manager.update(KEY, A, 8.0)
        assert manager.score(KEY, A) == 5.0

    def test_eviction_of_the_lowest(self):
        manager = pool_of(3, (A, 1.0), (B, 2.0), (C, 3.0))
        assert manager.is_full(KEY)
        assert manager.update(KEY, E, 1.5) == A
        assert manager.members(KEY) == [(B, 2.0), (C, 3.0), (E, 1.5)]
        assert manager.size(KEY) == 3

    def test_newcomer_lowest_is_evicted_itself(self):
        manager = pool_of(3, (A, 1.0), (B, 2.0), (C, 3.0))
        assert manager.update(KEY, D, 0.5) == D
        assert manager.members(KEY) == [(A, 1.0), (B, 2.0), (C, 3.0)]

    def test_ties_evict_the_newest(self):
        manager = pool_of(2, (A, 1.0), (B, 1.0))
        assert manager.update(KEY, C, 1.0) == C  # Newcomer loses a tie.
        manager = pool_of(2, (A, 1.0), (B, 1.0))
        assert (
            manager.update(KEY, C, 2.0) == B
        )  # Among tied incumbents the later one goes.
        assert manager.members(KEY) == [(A, 1.0), (C, 2.0)]

    def test_updating_a_member_never_evicts(self):
        manager = pool_of(2, (A, 1.0), (B, 2.0))
        assert manager.update(KEY, B, -100.0) is None
        assert manager.size(KEY) == 2
        assert [c for c, _ in manager.members(KEY)] == [A, B]  # Order kept.

    def test_capacity_holds_over_many_updates(self):
        manager = PoolManager(capacity=5)
        rng = random.Random(0)
        configs = [config(128 + 8 * i) for i in range(13)]
        for _ in range(500):
            manager.update(KEY, rng.choice(configs), rng.gauss(0, 1))
            assert manager.size(KEY) <= 5
        assert manager.size(KEY) == 5

    def test_keys_are_normalised(self):
        manager = PoolManager()
        manager.update(("flops", 300), A, 1.0)
        manager.update(("flops", 300.0), B, 1.0)
        manager.update(("latency_cpu", 12.5), C, 1.0)
        assert manager.keys() == [("flops", 300.0), ("latency_cpu", 12.5)]
        assert manager.size(("flops", 300)) == 2
        assert manager.fill() == {("flops", 300.0): 2, ("latency_cpu", 12.5): 1}
        assert manager.size(("flops", 310)) == 0 and not manager.is_full(("flops", 310))

    @pytest.mark.parametrize("score", [float("nan"), float("inf"), "1.0", None])
    def test_bad_scores(self, score):
        with pytest.raises(ValueError, match="score"):
            PoolManager().update(KEY, A, score)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="key"):
            PoolManager().update("flops", A, 1.0)
        with pytest.raises(ValueError, match="config"):
            PoolManager().update(KEY, A.to_dict(), 1.0)
        with pytest.raises(ValueError, match="capacity"):
            PoolManager(capacity=0)
        with pytest.raises(ValueError, match="ema_momentum"):
            PoolManager(ema_momentum=1.0)


class TestRanking:
    def test_winner_top_k_winners(self):
        manager = pool_of(50, (A, 1.0), (B, 3.0), (C, 2.0), (D, 3.0))
        manager.update(("flops", 200.0), E, -1.0)
        assert manager.winner(KEY) == (B, 3.0)  # Tie with D: earliest joined wins.
        assert manager.top_k(KEY, 3) == [(B, 3.0), (D, 3.0), (C, 2.0)]
        assert manager.top_k(KEY, 10) == [(B, 3.0), (D, 3.0), (C, 2.0), (A, 1.0)]
        assert manager.winners() == {KEY: (B, 3.0), ("flops", 200.0): (E, -1.0)}

    def test_empty_pool(self):
        with pytest.raises(ValueError, match="empty"):
            PoolManager().winner(KEY)
        with pytest.raises(ValueError, match="empty"):
            PoolManager().sample(KEY, 1.0, random.Random(0))
        assert PoolManager().top_k(KEY, 5) == []
        assert PoolManager().winners() == {}


def exact_softmax(scores, temperature):
    z = np.asarray(scores, dtype=np.float64) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


class TestSampling:
    SCORES = [0.0, -0.5, -1.0, -2.0, -3.0]

    def manager(self):
        return pool_of(50, *zip((A, B, C, D, E), self.SCORES))

    @pytest.mark.parametrize("temperature", [0.1, 1.0, 3.0])
    def test_probabilities_are_the_softmax(self, temperature):
        probabilities = self.manager().probabilities(KEY, temperature)
        np.testing.assert_allclose(
            probabilities, exact_softmax(self.SCORES, temperature), rtol=1e-12
        )
        assert math.fsum(probabilities) == pytest.approx(1.0, abs=1e-15)

    def test_sample_frequencies_match_softmax(self):
        manager, rng, draws = self.manager(), random.Random(0), 20_000
        members = [A, B, C, D, E]
        counts = np.zeros(5)
        for _ in range(draws):
            counts[members.index(manager.sample(KEY, 1.0, rng))] += 1
        expected = exact_softmax(self.SCORES, 1.0) * draws
        chi_square = ((counts - expected) ** 2 / expected).sum()
        assert (
            chi_square < 18.47
        )  # 99.9% quantile of chi-square with 4 degrees of freedom.
        np.testing.assert_allclose(counts / draws, expected / draws, atol=0.01)

    def test_low_temperature_is_argmax(self):
        manager, rng = self.manager(), random.Random(0)
        assert manager.probabilities(KEY, 1e-3)[0] == 1.0
        for temperature in (1e-3, 1e-6, 1e-300):
            assert manager.probabilities(KEY, temperature)[1:] == pytest.approx(
                [0.0] * 4, abs=1e-200
            )
            assert {manager.sample(KEY, temperature, rng) for _ in range(200)} == {A}

    def test_high_temperature_is_uniform(self):
        manager, rng = self.manager(), random.Random(0)
        np.testing.assert_allclose(
            manager.probabilities(KEY, 1e9), [0.2] * 5, atol=1e-9
        )
        counts = {m: 0 for m in (A, B, C, D, E)}
        for _ in range(10_000):
            counts[manager.sample(KEY, 1e6, rng)] += 1
        assert all(abs(n / 10_000 - 0.2) < 0.02 for n in counts.values())

    def test_large_scores_do_not_overflow(self):
        manager = pool_of(50, (A, 1e300), (B, -1e300))
        assert manager.probabilities(KEY, 1e-3) == [1.0, 0.0]
        assert manager.probabilities(KEY, 1e308) == pytest.approx([0.5, 0.5], abs=1e-7)

    def test_sampling_is_reproducible(self):
        manager = self.manager()
        first = [manager.sample(KEY, 0.5, random.Random(7)) for _ in range(3)]
        rng_a, rng_b = random.Random(3), random.Random(3)
        assert [manager.sample(KEY, 0.5, rng_a) for _ in range(50)] == [
            manager.sample(KEY, 0.5, rng_b) for _ in range(50)
        ]
        assert len(set(first)) == 1

    @pytest.mark.parametrize("temperature", [0, -1.0, float("nan")])
    def test_bad_temperature(self, temperature):
        with pytest.raises(ValueError, match="temperature"):
            self.manager().sample(KEY, temperature, random.Random(0))


def messy_manager() -> PoolManager:
    """Pools whose scores stress float round-trips, in a non-sorted member order."""
    manager = PoolManager(capacity=4, ema_momentum=0.9)
    rng = random.Random(1)
    configs = [
        SubnetConfig(
            "mobilenet_v1",
            128 + 8 * (i % 13),
            tuple(round(rng.uniform(0.75, 1.0), 3) for _ in range(14)),
        )
        for i in range(9)
    ]
    for step in range(60):
        key = (
            ("flops", float(rng.choice([300, 120, 570])))
            if step % 5
            else ("latency_cpu", 12.5)
        )
        manager.update(key, rng.choice(configs), -rng.expovariate(0.7) / 3)
    manager.update(("flops", 200.0), configs[0], 0.1 + 0.2)
    manager.update(("flops", 200.0), configs[1], 5e-324)
    manager.update(("flops", 200.0), configs[2], -1 / 3)
    return manager


class TestPersistence:
    def test_exact_round_trip(self, tmp_path):
        manager = messy_manager()
        path = tmp_path / "pools.json"
        manager.save(path)
        restored = PoolManager.load(path)
        assert restored.capacity == 4 and restored.ema_momentum == 0.9
        assert restored.keys() == manager.keys()
        for key in manager.keys():
            original, loaded = manager.members(key), restored.members(key)
            assert [c for c, _ in loaded] == [c for c, _ in original]
            assert [s.hex() for _, s in loaded] == [s.hex() for _, s in original]
        assert restored.to_dict() == manager.to_dict()

    def test_identical_behaviour_after_restore(self, tmp_path):
        manager = messy_manager()
        manager.save(tmp_path / "pools.json")
        restored = PoolManager.load(tmp_path / "pools.json")
        rng_a, rng_b = random.Random(11), random.Random(11)
        for step in range(300):
            key = manager.keys()[step % len(manager.keys())]
            drawn_a = manager.sample(key, 0.05 + step / 100, rng_a)
            drawn_b = restored.sample(key, 0.05 + step / 100, rng_b)
            assert drawn_a == drawn_b
            score = rng_a.gauss(-1, 0.5)
            rng_b.gauss(-1, 0.5)
            assert manager.update(key, drawn_a, score) == restored.update(
                key, drawn_b, score
            )
        assert manager.to_dict() == restored.to_dict()

    def test_save_replaces_the_old_file(self, tmp_path):
        path = tmp_path / "pools.json"
        pool_of(50, (A, 1.0)).save(path)
        messy_manager().save(path)
        assert PoolManager.load(path).to_dict() == messy_manager().to_dict()
        assert os.listdir(tmp_path) == ["pools.json"]

    def test_failed_serialisation_keeps_the_old_file(self, tmp_path, monkeypatch):
        path = tmp_path / "pools.json"
        pool_of(50, (A, 1.0)).save(path)
        before = path.read_bytes()
        broken = messy_manager()
        monkeypatch.setattr(broken, "to_dict", lambda: {"pools": object()})
        with pytest.raises(TypeError):
            broken.save(path)
        assert path.read_bytes() == before
        assert os.listdir(tmp_path) == ["pools.json"]

    def test_failed_write_keeps_the_old_file(self, tmp_path, monkeypatch):
        path = tmp_path / "pools.json"
        pool_of(50, (A, 1.0)).save(path)
        before = path.read_bytes()

        def failing_fsync(fd):
            raise OSError("disk full")

        monkeypatch.setattr(pools_module.os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="disk full"):
            messy_manager().save(path)
        assert path.read_bytes() == before
        assert os.listdir(tmp_path) == ["pools.json"]

    @pytest.mark.parametrize(
        "content, message",
        [
            ("{not json", "pools.json"),
            ("[]", "JSON object"),
            ('{"format": "other", "version": 1}', "format"),
            (
                json.dumps(
                    {
                        "format": "pss_tf.pools",
                        "version": 1,
                        "capacity": 2,
                        "ema_momentum": 0.9,
                    }
                ),
                "missing",
            ),
            (_pools_file(2, [{"config": A.to_dict()}]), r"members\[0\]"),
            (
                _pools_file(
                    1,
                    [
                        {"config": A.to_dict(), "score": 1.0},
                        {"config": B.to_dict(), "score": 2.0},
                    ],
                ),
                "at most 1",
            ),
            (
                _pools_file(
                    5,
                    [
                        {"config": A.to_dict(), "score": 1.0},
                        {"config": A.to_dict(), "score": 2.0},
                    ],
                ),
                "twice",
            ),
            (
                _pools_file(
                    5, [{"config": {**A.to_dict(), "model": "resnet"}, "score": 1.0}]
                ),
                "model",
            ),
            (
                '{"format": "pss_tf.pools", "version": 1, "capacity": 5, "ema_momentum": 0.9, "pools": '
                '[{"metric": "flops", "target": 300.0, "members": [{"config": {"model": "mobilenet_v1", '
                '"resolution": 224, "widths": [1,1,1,1,1,1,1,1,1,1,1,1,1,1]}, "score": NaN}]}]}',
                "score",
            ),
        ],
    )
    def test_malformed_file_names_the_file(self, tmp_path, content, message):
        path = tmp_path / "pools.json"
        path.write_text(content)
        with pytest.raises(ValueError, match=message) as info:
            PoolManager.load(path)
        assert str(path) in str(info.value)
