"""Drawing a random subnet for a given target (design note section 3).

A uniformly drawn subnet rarely lands on a given target, so `ConditionalSampler`
first draws a population of random subnets, bins them by the target their
metric snaps to, and keeps for each target the empirical distribution of every
dimension: the resolution and each stage's width multiplier (both discrete,
widths at `space.decimals` places). A subnet for target T is then drawn
dimension by dimension from those distributions and rejected until it snaps
to T.

As in the release, the population is `num_samples` i.i.d. random subnets whose
targets lie strictly inside the grid (random subnets are drawn until that many
landed there), so the grid's first and last targets get no pool. With
`extremes=True` (pss_tf's option for small spaces) the population also holds
every uniform-width subnet and correlated ones, which reach the grid's ends.

Building is the slow start-up step (about a second for 1e5 subnets, vectorised),
so the tables are cached on disk and reused while the space, the metric, the
number of subnets and the seed are unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time

import numpy as np

from pss_tf import checks
from pss_tf.io_utils import atomic_write
from pss_tf.space.config import SearchSpace, SubnetConfig
from pss_tf.space.metrics import Metric

_FORMAT = "pss_tf.conditional_sampler"
# Bump when the build changes the tables it makes from the same fingerprint.
# 5: width codes index the space's own `width_values` (4 spanned floor(min) to
# ceil(max) of the scaled range, never-drawn codes included; draws are the same).
_VERSION = 5
# Subnets are drawn and binned in chunks of this size, which bounds memory for
# 1e6+ subnets. It is part of the random stream, hence of `_VERSION`.
_BUILD_CHUNK = 100_000
# Stored real subnets per target and resolution: the fallback when rejection keeps missing.
_EXEMPLARS_PER_TARGET = 32
# A target counts as reachable at a resolution when this share of its population
# has that resolution (rejection then hits within a few batches).
_MIN_SHARE_AT_RESOLUTION = 0.005
# Random draws allowed per population member before the build gives up on a grid
# that random subnets rarely reach (it then warns and keeps what it has).
_MAX_DRAWS_PER_SAMPLE = 100
# Independent uniform widths almost never make an all-thin or all-wide subnet, so
# the grid's end targets (where the min and max nets lie) get no samples. With
# `extremes`, the build adds every uniform-width subnet, and this fraction of
# `num_samples` extra subnets whose stages scatter by `_SCATTER` of the width
# range around one shared width.
_CORRELATED_FRACTION = 0.25
_SCATTER = 0.1

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Tables:
    """Per-target value counts; all arrays are indexed by grid position first.

    `exemplars[t, r, i]` holds codes (resolution code, then one width code per
    stage) of real subnets of target t and resolution code r; the first
    `exemplar_counts[t, r]` rows are valid.
    """

    resolution_values: np.ndarray  # (R,) int64
    width_values: np.ndarray  # (V,) float64
    resolution_counts: np.ndarray  # (T, R) int64
    width_counts: np.ndarray  # (T, stages, V) int64
    exemplars: np.ndarray  # (T, R, E, 1 + stages) int32
    exemplar_counts: np.ndarray  # (T, R) int64


def _fingerprint(space: SearchSpace, metric: Metric, num_samples: int, seed: int, extremes: bool) -> dict:
    return {
        "format": _FORMAT,
        "version": _VERSION,
        "space": space.to_dict(),
        "metric": metric.to_dict(),
        "num_samples": num_samples,
        "seed": seed,
        "extremes": extremes,
    }


def _canonical(data) -> str:
    return json.dumps(data, sort_keys=True)


class ConditionalSampler:
    """Draws subnets whose metric snaps to a requested target.

    Make one with `build`, `load` or `build_or_load`. Sampling takes a
    `np.random.Generator` and draws only from it, so a run is reproducible from the
    generator's state (which a checkpoint can save and restore).

    Attributes:
        targets: the reachable targets (those that received at least one subnet).
        unreachable_targets: grid targets no sampled subnet snapped to; asking
            for one raises ValueError.
        fallback_count: draws that ran out of tries and returned a stored subnet.
    """

    # Candidates evaluated per rejection round, and rounds before falling back.
    # Evaluating a batch costs about the same for 16 or 256 candidates (numpy call
    # overhead); 64 usually hits in the first round. The worst per-candidate
    # acceptance on the MobileNet FLOPs grids is about 5%, so with 4096 candidates
    # a fallback practically never happens.
    batch_size = 64
    max_batches = 64

    def __init__(self, space: SearchSpace, metric: Metric, tables: _Tables, fingerprint: dict):
        if metric.model != space.model:
            raise ValueError(f"metric: measures {metric.model} but the space is for {space.model}")
        self.space = space
        self.metric = metric
        self.fingerprint = fingerprint
        self._tables = tables
        self._resolution_cdf = _cdf(tables.resolution_counts)
        self._width_cdf = _cdf(tables.width_counts)
        sizes = tables.resolution_counts.sum(axis=1)
        grid_targets = metric.grid.targets
        self.bin_sizes = {t: int(n) for t, n in zip(grid_targets, sizes) if n}
        self.targets = tuple(self.bin_sizes)
        self.unreachable_targets = tuple(t for t, n in zip(grid_targets, sizes) if not n)
        self.fallback_count = 0

    # Building.

    @classmethod
    def build(
        cls, space: SearchSpace, metric: Metric, num_samples: int = 100_000, seed: int = 0, extremes: bool = False
    ) -> "ConditionalSampler":
        """Bins a population drawn by `space.sample_arrays` from `default_rng(seed)`:
        `num_samples` subnets strictly inside the grid, plus the uniform-width
        and correlated subnets with `extremes` (see the module docstring)."""
        num_samples = checks.integer("num_samples", num_samples, 1, error=ValueError)
        seed = checks.integer("seed", seed, 0, error=ValueError)
        if metric.model != space.model:
            raise ValueError(f"metric: measures {metric.model} but the space is for {space.model}")
        started = time.perf_counter()
        num_samples, seed = int(num_samples), int(seed)
        rng = np.random.default_rng(seed)
        builder = _TableBuilder(space, metric, inside_only=not extremes)
        drawn = 0
        while builder.kept < num_samples and drawn < _MAX_DRAWS_PER_SAMPLE * num_samples:
            resolutions, widths = space.sample_arrays(rng, _BUILD_CHUNK)
            drawn += _BUILD_CHUNK
            builder.add(resolutions, widths, limit=num_samples - builder.kept)
        if builder.kept < num_samples:
            logger.warning(
                "Only %d of %d random subnets landed inside the %s grid %s after %d draws.",
                builder.kept, num_samples, metric.name, metric.grid, drawn,
            )
        if extremes:
            builder.add(*_uniform_width_arrays(space))
            correlated = int(num_samples * _CORRELATED_FRACTION)
            for start in range(0, correlated, _BUILD_CHUNK):
                builder.add(*_correlated_arrays(space, rng, min(_BUILD_CHUNK, correlated - start)))
        fingerprint = _fingerprint(space, metric, num_samples, seed, extremes)
        sampler = cls(space, metric, builder.tables(), fingerprint)
        logger.info(
            "Built the %s sampler for %s from %d subnets in %.2f s: %d reachable targets, %d unreachable.",
            metric.name,
            space.model,
            num_samples,
            time.perf_counter() - started,
            len(sampler.targets),
            len(sampler.unreachable_targets),
        )
        return sampler

    # Sampling.

    def targets_at(self, resolution: int) -> tuple[float, ...]:
        """The targets a subnet of `resolution` reaches often enough to be drawn there:
        at least `_MIN_SHARE_AT_RESOLUTION` of the target's population has it."""
        code = self._resolution_code(resolution)
        counts = self._tables.resolution_counts[:, code]
        sizes = self._tables.resolution_counts.sum(axis=1)
        grid = self.metric.grid.targets
        return tuple(
            t for t, count, size in zip(grid, counts, sizes) if size and count >= _MIN_SHARE_AT_RESOLUTION * size
        )

    def _resolution_code(self, resolution: int) -> int:
        values = self._tables.resolution_values
        code = int(np.searchsorted(values, resolution))
        if code >= len(values) or values[code] != resolution:
            raise ValueError(f"resolution: {resolution} is not one of the space's {values.tolist()}")
        return code

    def sample(self, target: float, rng: np.random.Generator, resolution: int | None = None) -> SubnetConfig:
        """A random subnet whose metric snaps to `target` (at `resolution`, if given).

        Draws batches of candidates dimension by dimension from the target's
        distributions and returns the first that snaps to it; after `max_batches`
        misses, returns one of the stored subnets of that target instead (of that
        resolution when there is one). A resolution fixes the first dimension:
        parallel subnets must share one (`targets_at` lists the targets it reaches).
        """
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: must be a numpy Generator, got {type(rng).__name__}")
        position = self._position(target)
        tables = self._tables
        resolution_cdf = self._resolution_cdf[position]
        if resolution is not None:
            fixed = self._resolution_code(resolution)
            resolution_cdf = (np.arange(len(resolution_cdf)) >= fixed).astype(np.float64)
        width_cdf = self._width_cdf[position]
        num_stages = width_cdf.shape[0]
        for _ in range(self.max_batches):
            uniform = rng.random((self.batch_size, 1 + num_stages))
            # Inverse-CDF draws; side="right" can never pick a value of count zero.
            resolution_codes = np.searchsorted(resolution_cdf, uniform[:, 0], side="right")
            width_codes = np.stack(
                [np.searchsorted(width_cdf[s], uniform[:, 1 + s], side="right") for s in range(num_stages)],
                axis=1,
            )
            resolutions = tables.resolution_values[resolution_codes]
            widths = tables.width_values[width_codes]
            hits = np.flatnonzero(self.metric.grid.index_array(self.metric.values(resolutions, widths)) == position)
            if hits.size:
                return self._config(resolutions[hits[0]], widths[hits[0]])
        self.fallback_count += 1
        rows = range(len(tables.resolution_values)) if resolution is None else [fixed]
        stored = np.concatenate([tables.exemplars[position, r, : tables.exemplar_counts[position, r]] for r in rows])
        if not len(stored):
            raise ValueError(f"target: {target} was never reached at resolution {resolution} (see targets_at)")
        codes = stored[rng.integers(len(stored))]
        return self._config(tables.resolution_values[codes[0]], tables.width_values[codes[1:]])

    def _position(self, target: float) -> int:
        grid = self.metric.grid
        try:
            position = grid.index(target)
        except (TypeError, ValueError):
            position = None
        if position is None or not math.isclose(grid.targets[position], target, rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(f"target: {target!r} is not a target of the {self.metric.name} grid {grid}")
        if grid.targets[position] not in self.bin_sizes:
            raise ValueError(
                f"target: {self.metric.name} target {grid.targets[position]} is unreachable: none of the "
                f"{self.fingerprint['num_samples']} sampled subnets snapped to it"
            )
        return position

    def _config(self, resolution, widths) -> SubnetConfig:
        return SubnetConfig(self.space.model, int(resolution), tuple(float(w) for w in widths))

    # Persistence.

    def save(self, path: str | os.PathLike) -> None:
        """Writes the tables as a compressed .npz, atomically (temp file, then rename)."""
        arrays = {field.name: getattr(self._tables, field.name) for field in dataclasses.fields(_Tables)}
        arrays["fingerprint"] = np.array(_canonical(self.fingerprint))
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays), mode="wb")

    @classmethod
    def load(cls, path: str | os.PathLike, metric: Metric) -> "ConditionalSampler":
        """Reads a saved sampler.

        `metric` is passed in rather than stored because sampling evaluates it, and a
        metric may carry state (e.g. a latency table) that does not belong in the
        cache; it must describe the same metric the file was built with.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                fingerprint = json.loads(str(data["fingerprint"]))
                tables = _Tables(**{field.name: data[field.name] for field in dataclasses.fields(_Tables)})
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise ValueError(f"sampler file {os.fspath(path)}: unreadable ({e})") from None
        if not isinstance(fingerprint, dict) or (fingerprint.get("format"), fingerprint.get("version")) != (
            _FORMAT,
            _VERSION,
        ):
            raise ValueError(f"sampler file {os.fspath(path)}: not a version {_VERSION} {_FORMAT} file")
        if _canonical(fingerprint["metric"]) != _canonical(metric.to_dict()):
            raise ValueError(
                f"sampler file {os.fspath(path)}: built for metric {fingerprint['metric']}, not {metric.to_dict()}"
            )
        space = SearchSpace.from_dict(fingerprint["space"])
        return cls(space, metric, tables, fingerprint)

    @classmethod
    def build_or_load(
        cls,
        path: str | os.PathLike | None,
        space: SearchSpace,
        metric: Metric,
        num_samples: int = 100_000,
        seed: int = 0,
        extremes: bool = False,
    ) -> "ConditionalSampler":
        """Loads the sampler cached at `path` if it was built from the same space,
        metric, `num_samples`, `seed` and `extremes`; otherwise builds it and saves it there.

        A missing, unreadable or stale cache is rebuilt; `path=None` disables caching.
        """
        if path is not None and os.path.exists(path):
            try:
                cached = cls.load(path, metric)
            except ValueError as e:
                logger.warning("Rebuilding the sampler cache: %s", e)
            else:
                if _canonical(cached.fingerprint) == _canonical(_fingerprint(space, metric, num_samples, seed, extremes)):
                    return cached
                logger.info("Rebuilding the sampler cache %s: it was built with other settings.", path)
        sampler = cls.build(space, metric, num_samples, seed, extremes)
        if path is not None:
            sampler.save(path)
        return sampler

    def __repr__(self) -> str:
        return (
            f"ConditionalSampler({self.metric.name}, {self.space.model}, "
            f"{len(self.targets)} reachable targets, {len(self.unreachable_targets)} unreachable)"
        )


def _uniform_width_arrays(space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
    """Every config with one width for all stages, at every resolution."""
    levels = space.width_values
    resolutions = np.repeat(np.asarray(space.resolutions), len(levels))
    widths = np.tile(levels, len(space.resolutions))[:, None].repeat(space.num_stages, axis=1)
    return resolutions, widths


def _correlated_arrays(space: SearchSpace, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Configs whose stage widths scatter around one shared width per config."""
    span = space.max_width - space.min_width
    shared = rng.uniform(space.min_width, space.max_width, size=(n, 1))
    scatter = rng.uniform(-_SCATTER * span, _SCATTER * span, size=(n, space.num_stages))
    widths = space.snap_widths(np.clip(shared + scatter, space.min_width, space.max_width))
    return rng.choice(np.asarray(space.resolutions), size=n), widths


def _cdf(counts: np.ndarray) -> np.ndarray:
    """Cumulative distribution along the last axis; all-zero rows stay zero.

    Dividing the integer cumulative sum by its total makes the last entry exactly 1.0,
    so a uniform draw in [0, 1) always finds a value.
    """
    cumulative = np.cumsum(counts, axis=-1)
    totals = cumulative[..., -1:]
    return np.divide(cumulative, totals, out=np.zeros(cumulative.shape), where=totals > 0)


class _TableBuilder:
    """Accumulates the value counts of `_Tables` chunk by chunk."""

    def __init__(self, space: SearchSpace, metric: Metric, inside_only: bool = False):
        self.space = space
        self.metric = metric
        self.inside_only = inside_only
        self.kept = 0
        self.num_targets = len(metric.grid.targets)
        self.num_stages = space.num_stages
        self.resolution_values = np.asarray(space.resolutions, dtype=np.int64)
        # A width's code is its index among the space's multipliers, the very floats draws give.
        self.width_values = np.asarray(space.width_values, dtype=np.float64)
        num_codes = len(self.width_values)
        self.resolution_counts = np.zeros((self.num_targets, len(self.resolution_values)), dtype=np.int64)
        self.width_counts = np.zeros((self.num_targets, self.num_stages, num_codes), dtype=np.int64)
        num_resolutions = len(self.resolution_values)
        self.exemplars = np.zeros(
            (self.num_targets, num_resolutions, _EXEMPLARS_PER_TARGET, 1 + self.num_stages), dtype=np.int32
        )
        self.exemplar_counts = np.zeros((self.num_targets, num_resolutions), dtype=np.int64)

    def add(self, resolutions: np.ndarray, widths: np.ndarray, limit: int | None = None) -> None:
        """Bins the subnets that land on the grid (strictly inside it with
        `inside_only`), at most `limit` of them, in the order given."""
        positions = self.metric.grid.index_array(self.metric.values(resolutions, widths))
        if self.inside_only:
            inside = (positions > 0) & (positions < self.num_targets - 1)
        else:
            inside = positions >= 0
        keep = np.flatnonzero(inside)[:limit]
        positions, resolutions, widths = positions[keep], resolutions[keep], widths[keep]
        self.kept += len(keep)

        resolution_codes = np.searchsorted(self.resolution_values, resolutions)
        num_codes = len(self.width_values)
        width_codes = np.minimum(np.searchsorted(self.width_values, widths), num_codes - 1)
        if np.any(self.resolution_values[np.minimum(resolution_codes, len(self.resolution_values) - 1)] != resolutions):
            raise ValueError("space: sample_arrays drew a resolution outside space.resolutions")
        if np.any(self.width_values[width_codes] != widths):
            raise ValueError("space: sample_arrays drew widths that are not the space's width_values")

        num_resolutions = len(self.resolution_values)
        self.resolution_counts += np.bincount(
            positions * num_resolutions + resolution_codes, minlength=self.num_targets * num_resolutions
        ).reshape(self.resolution_counts.shape)
        stage_rows = positions[:, None] * self.num_stages + np.arange(self.num_stages)
        self.width_counts += np.bincount(
            (stage_rows * num_codes + width_codes).ravel(), minlength=self.width_counts.size
        ).reshape(self.width_counts.shape)
        self._add_exemplars(positions, np.concatenate([resolution_codes[:, None], width_codes], axis=1))

    def _add_exemplars(self, positions: np.ndarray, codes: np.ndarray) -> None:
        """Keeps the first subnets of each (target, resolution) bin, in the order drawn."""
        num_resolutions = len(self.resolution_values)
        bins = positions * num_resolutions + codes[:, 0]
        order = np.argsort(bins, kind="stable")
        bounds = np.searchsorted(bins[order], np.arange(self.num_targets * num_resolutions + 1))
        for flat in np.flatnonzero(np.diff(bounds)):
            t, r = divmod(int(flat), num_resolutions)
            have = self.exemplar_counts[t, r]
            take = order[bounds[flat] : bounds[flat + 1]][: _EXEMPLARS_PER_TARGET - have]
            self.exemplars[t, r, have : have + len(take)] = codes[take]
            self.exemplar_counts[t, r] += len(take)

    def tables(self) -> _Tables:
        return _Tables(
            resolution_values=self.resolution_values,
            width_values=self.width_values,
            resolution_counts=self.resolution_counts,
            width_counts=self.width_counts,
            exemplars=self.exemplars,
            exemplar_counts=self.exemplar_counts,
        )
