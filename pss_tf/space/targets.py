"""Target grids: the resource budgets a supernet is trained for.

Each metric type (FLOPs, CPU latency, ...) has a grid `start, start + step, ...,
stop`. A subnet belongs to the target its metric value rounds to (design note
section 2), and every pool, winner and cached table is keyed by that target, so
the rounding lives in one place and returns canonical floats that compare equal
wherever they are computed.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import math
import numbers

from pss_tf import checks

import numpy as np

# Grids with more decimals than this are not meaningful budgets; capping keeps
# `round` away from the noise digits of binary floats.
_MAX_DECIMALS = 10
# The mantissas of the steps `TargetGrid.spanning` chooses from.
_ROUND_STEPS = (1.0, 2.0, 2.5, 5.0)


def _decimals_of(value: float) -> int:
    """Decimal places needed to write `value` exactly as typed (0.1 -> 1, 300.0 -> 0)."""
    exponent = decimal.Decimal(repr(float(value))).normalize().as_tuple().exponent
    return min(max(0, -exponent), _MAX_DECIMALS)


@dataclasses.dataclass(frozen=True)
class TargetGrid:
    """The targets `start, start + step, ...` up to and including `stop` when on the grid.

    `snap` maps a metric value to its target with
    `round((value - offset) / step) * step + offset`, `offset = start % step`.
    Rounding is half-to-even (Python's `round`, numpy's `rint`), so a value exactly
    half way between two targets goes to the even multiple of `step`.
    """

    start: float
    stop: float
    step: float

    def __post_init__(self):
        for name in ("start", "stop", "step"):
            object.__setattr__(self, name, checks.number(name, getattr(self, name), error=ValueError))
        checks.number("step", self.step, above=0.0, error=ValueError)
        if self.start > self.stop:
            raise ValueError(f"start: {self.start} is larger than stop {self.stop}")

    @functools.cached_property
    def decimals(self) -> int:
        """Decimal places of the grid's values; targets are rounded to these."""
        return max(_decimals_of(self.start), _decimals_of(self.step))

    @functools.cached_property
    def offset(self) -> float:
        offset = round(self.start % self.step, self.decimals)
        # 0.3 % 0.1 is 0.0999...; after rounding that is a whole step, i.e. no offset.
        return 0.0 if offset >= self.step else offset

    @functools.cached_property
    def targets(self) -> tuple[float, ...]:
        """All targets in increasing order, as canonical (rounded) floats."""
        count = int(math.floor((self.stop - self.start) / self.step + 1e-9)) + 1
        return tuple(round(self.start + i * self.step, self.decimals) for i in range(count))

    def index(self, value: float) -> int | None:
        """Position in `targets` of the target `value` rounds to; None outside the grid."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"value: must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            return None
        offset = self.offset
        target = round((value - offset) / self.step) * self.step + offset
        position = round((target - self.start) / self.step)
        return position if 0 <= position < len(self.targets) else None

    def snap(self, value: float) -> float | None:
        """The target `value` rounds to, or None when that lies outside [start, stop]."""
        position = self.index(value)
        return None if position is None else self.targets[position]

    def index_array(self, values) -> np.ndarray:
        """`index` over an array; -1 marks values outside the grid."""
        values = np.asarray(values, dtype=np.float64)
        offset = self.offset
        with np.errstate(invalid="ignore"):
            target = np.rint((values - offset) / self.step) * self.step + offset
            position = np.rint((target - self.start) / self.step)
            inside = np.isfinite(position) & (position >= 0) & (position < len(self.targets))
        return np.where(inside, position, -1).astype(np.int64)

    def snap_array(self, values) -> np.ndarray:
        """`snap` over an array; NaN marks values outside the grid."""
        positions = self.index_array(values)
        table = np.append(np.asarray(self.targets, dtype=np.float64), np.nan)
        return table[positions]  # Position -1 picks the trailing NaN.

    def __contains__(self, target) -> bool:
        """Whether `target` is itself one of the grid's targets."""
        try:
            return self.snap(target) == target
        except ValueError:
            return False

    def to_dict(self) -> dict:
        return {"start": self.start, "stop": self.stop, "step": self.step}

    @classmethod
    def spanning(cls, low: float, high: float, count: int) -> "TargetGrid":
        """About `count` round targets whose rounding bins cover `[low, high]`.

        The step is a round number (1, 2, 2.5 or 5 times a power of ten) and the
        targets its multiples, so labels stay short (`flops_0p75m`); of those steps,
        the one giving the count nearest `count` wins (ties: the step nearest the
        even spacing `(high - low) / (count - 1)`). `low` and `high` snap to the first and last target, so a space's
        smallest and largest subnets each belong to one.
        """
        low, high = float(low), float(high)
        count = checks.integer("count", count, 1, error=ValueError)
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise ValueError(f"low, high: expected finite low <= high, got {low!r}, {high!r}")
        raw = (high - low) / max(count - 1, 1) or abs(high) or 1.0
        exponent = math.floor(math.log10(raw))
        steps = [m * 10.0**e for e in range(exponent - 1, exponent + 2) for m in _ROUND_STEPS]

        def grid(step):
            step = round(step, _decimals_of(step))
            first, last = round(low / step), round(high / step)
            if first == 0 < low:
                first, last = 1, max(last, 1)
            return cls(round(first * step, _MAX_DECIMALS), round(last * step, _MAX_DECIMALS), step)

        grids = [grid(step) for step in steps]
        return min(grids, key=lambda g: (abs(len(g.targets) - count), abs(math.log(g.step / raw))))

    @classmethod
    def from_dict(cls, data: dict) -> "TargetGrid":
        return cls(**data)
