"""Expected training loss per resolution and per (stage, channel level).

BCNet estimates the expected loss of width w in layer i as the mean loss of the
recorded subnets that used w in layer i. Those marginal means confound stages:
among the lowest losses, subnets wide in one stage tend to be wide in all, so
every stage's wide widths look equally good. `ExpectedLoss` fits one additive
model instead,

    loss ~ b + r[resolution] + sum_s w_s[level of stage s] (+ c * step),

by ridge regression on one-hot indicators, which separates the stages; with
independent stages it gives BCNet's means. The ridge penalty shrinks rarely seen
levels towards the average, and the optional step term keeps "trained later,
hence lower loss" from being credited to the subnets drawn late in training.
The records hold only the lowest losses, so a level that never appears among
them most likely trains badly: like BCNet (which gives unseen widths a large
loss), an unseen level gets the worst estimate of its gene.

Widths are grouped by channel level (`GeneSpace.levels`): width codes with the
same channel count build the same network, so they share one estimate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from pss_tf import checks
from pss_tf.errors import ConfigError
from pss_tf.run.records import TrainingRecords
from pss_tf.search.genes import GeneSpace
from pss_tf.space.config import SubnetConfig


@dataclasses.dataclass(frozen=True)
class ExpectedLoss:
    """The fitted tables.

    Attributes:
        resolution: (R,) expected loss at each resolution, other genes at their average.
        widths: per stage, (levels,) expected loss at each channel level.
        resolution_counts, width_counts: observations behind every entry.
        mean: mean observed loss.
        spread: standard deviation of the observed losses (1.0 when they are all
            equal); the prior measures loss differences in this unit.
        observations: observations used; skipped: ones outside the space.
    """

    resolution: np.ndarray
    widths: tuple[np.ndarray, ...]
    resolution_counts: np.ndarray
    width_counts: tuple[np.ndarray, ...]
    mean: float
    spread: float
    observations: int
    skipped: int

    def gene_tables(self) -> list[np.ndarray]:
        """Expected loss per level of every gene, resolution first."""
        return [self.resolution, *self.widths]

    @classmethod
    def fit(
        cls,
        genes: GeneSpace,
        configs: Iterable[SubnetConfig],
        losses: Iterable[float],
        steps: Iterable[int] | None = None,
        ridge: float = 1.0,
    ) -> "ExpectedLoss":
        """Fits the additive model to observed (config, loss[, step]).

        Configs whose resolution or channel counts the space cannot make are
        skipped (and counted), e.g. records of a run over a wider space.

        Args:
            ridge: penalty on every effect, in units of observations: a level seen
                `ridge` times gets about half its raw effect.
        """
        if not isinstance(genes, GeneSpace):
            raise ValueError(f"genes: must be a GeneSpace, got {type(genes).__name__}")
        checks.number("ridge", ridge, above=0.0, error=ValueError)
        configs, losses = list(configs), np.asarray(list(losses), dtype=np.float64)
        if len(configs) != len(losses):
            raise ValueError(f"losses: {len(losses)} losses for {len(configs)} configs")
        step_array = None if steps is None else np.asarray(list(steps), dtype=np.float64)
        if step_array is not None and len(step_array) != len(configs):
            raise ValueError(f"steps: {len(step_array)} steps for {len(configs)} configs")
        if not np.all(np.isfinite(losses)):
            raise ValueError("losses: must all be finite")

        rows, keep = [], []
        for i, config in enumerate(configs):
            levels = genes.level_of(config)
            if levels is not None:
                rows.append(levels)
                keep.append(i)
        skipped = len(configs) - len(keep)
        if not keep:
            raise ConfigError(
                "records",
                f"none of the {len(configs)} observations lies in the search space "
                f"{genes.space.to_dict()}; the prior needs training records of this space"
            )
        levels = np.asarray(rows, dtype=np.int64)
        y = losses[keep]
        sizes = genes.level_sizes()
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        n, width = len(y), int(offsets[-1])

        design = np.zeros((n, width))
        for g in range(len(sizes)):
            design[np.arange(n), offsets[g] + levels[:, g]] = 1.0
        counts = design.sum(axis=0)
        if step_array is not None:
            s = step_array[keep]
            if s.std() > 0:
                design = np.concatenate([design, ((s - s.mean()) / s.std())[:, None]], axis=1)

        # Centring removes the intercept from the penalty; effects of unseen levels
        # (all-zero columns) come out exactly 0, i.e. the average loss.
        mean = float(y.mean())
        centred = design - design.mean(axis=0)
        gram = centred.T @ centred + ridge * np.eye(centred.shape[1])
        effects = np.linalg.solve(gram, centred.T @ (y - mean))
        # Report each level at the other genes' average, i.e. mean + its effect
        # relative to its own gene's weighted average effect.
        tables = []
        for g in range(len(sizes)):
            block = effects[offsets[g] : offsets[g + 1]]
            weights = counts[offsets[g] : offsets[g + 1]]
            average = float(block @ weights / weights.sum())
            table = mean + block - average
            # Only the lowest losses are kept, so a level absent from them most
            # likely trains badly: it gets its gene's worst seen estimate.
            table[weights == 0] = table[weights > 0].max()
            tables.append(table)
        spread = float(y.std())
        return cls(
            resolution=tables[0],
            widths=tuple(tables[1:]),
            resolution_counts=counts[: offsets[1]].astype(np.int64),
            width_counts=tuple(counts[offsets[g] : offsets[g + 1]].astype(np.int64) for g in range(1, len(sizes))),
            mean=mean,
            spread=spread if spread > 0 else 1.0,
            observations=n,
            skipped=skipped,
        )

    @classmethod
    def from_records(
        cls,
        genes: GeneSpace,
        records: TrainingRecords,
        extra: Iterable[tuple[SubnetConfig, float]] = (),
        ridge: float = 1.0,
        use_steps: bool = True,
    ) -> "ExpectedLoss":
        """Fits to the kept training records plus `extra` (config, loss) pairs.

        Extra observations (e.g. pool members, loss = -score) have no step of
        their own; they count as seen at the records' last step, since a pool
        score is a recent moving average.
        """
        if not isinstance(records, TrainingRecords):
            raise ValueError(f"records: must be TrainingRecords, got {type(records).__name__}")
        kept = records.records()
        configs = [r.config for r in kept]
        losses = [r.loss for r in kept]
        steps = [r.step for r in kept]
        for config, loss in extra:
            configs.append(config)
            losses.append(loss)
            steps.append(max(records.last_step, 0))
        if not configs:
            raise ConfigError("records", "no training records were kept; the prior needs them (train with records on)")
        return cls.fit(genes, configs, losses, steps if use_steps else None, ridge)
