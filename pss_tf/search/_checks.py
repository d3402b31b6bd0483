"""Argument checks shared by the search modules; errors name the argument."""

from __future__ import annotations

import numbers

import numpy as np


def check_probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: must lie in [0, 1], got {value!r}")
    return float(value)


def check_count(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: must be an int of at least {minimum}, got {value!r}")
    return int(value)


def check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: must be a numpy Generator, got {type(rng).__name__}")
    return rng
