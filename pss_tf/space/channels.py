"""Channel counts: how a base width times a multiplier becomes a layer's channels.

Every model, base width and subnet rounds the same way (MobileNet's
`make_divisible`), so the architectures, the cost model and the supernets agree.
"""

from __future__ import annotations

import numpy as np

CHANNEL_DIVISOR = 8


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR, min_value: int | None = None) -> int:
    """Rounds a channel count to the nearest multiple of `divisor` (half up).

    The result is at least `min_value` (default `divisor`); if rounding lost more
    than 10% of `value`, one more `divisor` is added.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def make_divisible_array(values: np.ndarray, divisor: int = CHANNEL_DIVISOR) -> np.ndarray:
    """`make_divisible` over a numpy array (same float64 arithmetic, same results)."""
    values = np.asarray(values, dtype=np.float64)
    rounded = np.maximum(divisor, np.floor((values + divisor / 2) / divisor) * divisor)
    rounded = np.where(rounded < 0.9 * values, rounded + divisor, rounded)
    return rounded.astype(np.int64)
