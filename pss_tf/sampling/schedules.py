"""Per-epoch schedules of the sampling hyper-parameters.

PSS decays both the fresh-sampling probability `p_e` and the softmax temperature
`t_e` exponentially over training (design note section 6): early on almost every
subnet is new and pool priorities are flat, late in training the best pool
members dominate.
"""

from __future__ import annotations

import dataclasses

from pss_tf import checks


@dataclasses.dataclass(frozen=True)
class ExponentialSchedule:
    """`v(e) = start * (end / start) ** (e / total_epochs)`.

    `epoch` may be fractional (e.g. `step / steps_per_epoch`) so the value can move
    every iteration. Past `total_epochs` the value stays at `end`, so a few extra
    epochs of fine-tuning do not push it outside the range it was designed for.
    """

    start: float
    end: float
    total_epochs: float

    def __post_init__(self):
        for name in ("start", "end", "total_epochs"):
            checks.number(name, getattr(self, name), above=0.0, error=ValueError)

    def __call__(self, epoch: float) -> float:
        checks.number("epoch", epoch, minimum=0.0, error=ValueError)
        if epoch >= self.total_epochs:
            return float(self.end)  # Exactly `end`, without the rounding of the power.
        return float(self.start * (self.end / self.start) ** (epoch / self.total_epochs))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExponentialSchedule":
        return cls(**data)
