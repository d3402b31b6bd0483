"""Pools of promising subnets, one per (metric name, target) (design note section 4).

A pool maps each member `SubnetConfig` to a score (minus its recent training
loss, higher is better), smoothed by an exponential moving average. Members keep
the order in which they joined; ties in score are broken by that order, so
sampling, eviction and winners depend only on the pool's contents and never on
hashing. The JSON form keeps that order and the exact float scores, so a resumed
run samples exactly as the interrupted one would have.
"""

from __future__ import annotations

import decimal
import json
import math
import os
import random

from pss_tf import checks, io_utils
from pss_tf.space.config import SubnetConfig

_FORMAT = "pss_tf.pools"
_VERSION = 1

Key = tuple[str, float]


def _make_key(key) -> Key:
    """Normalises a `(metric name, target)` pair so 300 and 300.0 name the same pool."""
    try:
        name, target = key
    except (TypeError, ValueError):
        raise ValueError(f"key: expected a (metric name, target) pair, got {key!r}") from None
    if not isinstance(name, str) or not name:
        raise ValueError(f"key: metric name must be a non-empty string, got {name!r}")
    if not checks.is_finite_number(target):
        raise ValueError(f"key: target must be a finite number, got {target!r}")
    return (name, float(target))


def _check_score(score) -> float:
    # A NaN or infinite loss would poison the moving average for good.
    return checks.number("score", score, error=ValueError)


class PoolManager:
    """The pools of one training run.

    Args:
        capacity: most members per pool (K). When an update makes a pool larger,
            the lowest-scoring member is evicted; among equally low members the one
            that joined last goes, so a newcomer never displaces an incumbent it
            merely ties with.
        ema_momentum: weight of a member's old score when it is scored again:
            `s <- momentum * s + (1 - momentum) * new`.
    """

    def __init__(self, capacity: int = 50, ema_momentum: float = 0.9):
        self.capacity = checks.integer("capacity", capacity, 1, error=ValueError)
        checks.number("ema_momentum", ema_momentum, minimum=0.0, below=1.0, error=ValueError)
        self.ema_momentum = float(ema_momentum)
        # 1 - 0.9 is 0.09999999999999998 in binary floats; taking the complement in
        # decimal gives exactly 0.1, so the update is literally `0.9 s + 0.1 new`.
        self._new_weight = float(1 - decimal.Decimal(repr(self.ema_momentum)))
        self._pools: dict[Key, dict[SubnetConfig, float]] = {}

    # Updating.

    def update(self, key, config: SubnetConfig, score: float) -> SubnetConfig | None:
        """Records `score` for `config` in pool `key`; returns the evicted config, if any."""
        key = _make_key(key)
        if not isinstance(config, SubnetConfig):
            raise ValueError(f"config: must be a SubnetConfig, got {type(config).__name__}")
        score = _check_score(score)
        pool = self._pools.setdefault(key, {})
        if config in pool:
            pool[config] = self.ema_momentum * pool[config] + self._new_weight * score
        else:
            pool[config] = score
        if len(pool) <= self.capacity:
            return None
        # min() keeps the first of equal items, so scan newest first to evict the newest.
        loser = min(reversed(pool), key=pool.__getitem__)
        del pool[loser]
        return loser

    # Reading.

    def keys(self) -> list[Key]:
        """Pool keys in the order the pools were created."""
        return list(self._pools)

    def size(self, key) -> int:
        return len(self._pools.get(_make_key(key), ()))

    def is_full(self, key) -> bool:
        return self.size(key) >= self.capacity

    def members(self, key) -> list[tuple[SubnetConfig, float]]:
        """(config, score) pairs of pool `key` in joining order."""
        return list(self._pools.get(_make_key(key), {}).items())

    def score(self, key, config: SubnetConfig) -> float | None:
        return self._pools.get(_make_key(key), {}).get(config)

    def fill(self) -> dict[Key, int]:
        """Number of members of every pool, e.g. for logging how far the pools have filled."""
        return {key: len(pool) for key, pool in self._pools.items()}

    def probabilities(self, key, temperature: float, resolution: int | None = None) -> list[float]:
        """`softmax(score / temperature)` over pool `key` (its members of
        `resolution` only, if given), in joining order."""
        checks.number("temperature", temperature, above=0.0, error=ValueError)
        scores = [score for _, score in self._non_empty(key, resolution)]
        best = max(scores)
        # Subtracting the best score keeps every exponent <= 0: no overflow at any
        # temperature, and the best member always has weight exactly 1.
        weights = [math.exp((score - best) / temperature) for score in scores]
        total = math.fsum(weights)
        return [w / total for w in weights]

    def sample(self, key, temperature: float, rng: random.Random, resolution: int | None = None) -> SubnetConfig:
        """A member of pool `key` drawn with probability `softmax(score / temperature)`.

        With `resolution`, among the members of that resolution only (parallel
        subnets share one). Uses one `rng.random()` call, so runs are
        reproducible given `rng`'s state.
        """
        members = [config for config, _ in self._non_empty(key, resolution)]
        weights = self.probabilities(key, temperature, resolution)
        return rng.choices(members, weights=weights)[0]

    def has_member_at(self, key, resolution: int) -> bool:
        return any(config.resolution == resolution for config, _ in self.members(key))

    def top_k(self, key, k: int) -> list[tuple[SubnetConfig, float]]:
        """The `k` best members, best first (equal scores: earliest joined first)."""
        members = self.members(key)
        return sorted(members, key=lambda item: -item[1])[: max(0, int(k))]

    def winner(self, key) -> tuple[SubnetConfig, float]:
        """The best member of pool `key` and its score (equal scores: earliest joined)."""
        return max(self._non_empty(key), key=lambda item: item[1])

    def winners(self) -> dict[Key, tuple[SubnetConfig, float]]:
        """The winner of every non-empty pool."""
        return {key: self.winner(key) for key, pool in self._pools.items() if pool}

    def _non_empty(self, key, resolution: int | None = None) -> list[tuple[SubnetConfig, float]]:
        members = self.members(key)
        if resolution is not None:
            members = [(config, score) for config, score in members if config.resolution == resolution]
        if not members:
            where = "" if resolution is None else f" has no member of resolution {resolution}"
            raise ValueError(f"key: pool {_make_key(key)} is empty" if not where else f"key: pool {_make_key(key)}{where}")
        return members

    # Persistence.

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "capacity": self.capacity,
            "ema_momentum": self.ema_momentum,
            "pools": [
                {
                    "metric": name,
                    "target": target,
                    "members": [{"config": config.to_dict(), "score": score} for config, score in pool.items()],
                }
                for (name, target), pool in self._pools.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PoolManager":
        io_utils.check_header(data, _FORMAT, _VERSION, {"capacity", "ema_momentum", "pools"})
        manager = cls(data["capacity"], data["ema_momentum"])
        if not isinstance(data["pools"], list):
            raise ValueError("pools: expected a list")
        for i, entry in enumerate(data["pools"]):
            where = f"pools[{i}]"
            if not isinstance(entry, dict) or {"metric", "target", "members"} - set(entry):
                raise ValueError(f"{where}: expected an object with metric, target and members")
            try:
                key = _make_key((entry["metric"], entry["target"]))
            except ValueError as e:
                raise ValueError(f"{where}.{e}") from None
            if key in manager._pools:
                raise ValueError(f"{where}: pool {key} appears twice")
            members = entry["members"]
            if not isinstance(members, list) or len(members) > manager.capacity:
                raise ValueError(f"{where}.members: expected a list of at most {manager.capacity} members")
            pool = manager._pools[key] = {}
            for j, member in enumerate(members):
                try:
                    config = SubnetConfig.from_dict(member["config"])
                    score = _check_score(member["score"])
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"{where}.members[{j}]: {e}") from None
                if config in pool:
                    raise ValueError(f"{where}.members[{j}]: {config} appears twice")
                pool[config] = score
        return manager

    def save(self, path: str | os.PathLike) -> None:
        """Writes the pools as JSON, atomically: a failed save leaves the old file."""
        # Serialise first, so that an unserialisable score never touches the file.
        io_utils.atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PoolManager":
        try:
            with open(path) as f:
                data = json.load(f)
            return cls.from_dict(data)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"pools file {os.fspath(path)}: {e}") from None

    def __repr__(self) -> str:
        return f"PoolManager(capacity={self.capacity}, ema_momentum={self.ema_momentum}, pools={len(self._pools)})"
