"""The checks of numbers that settings and library arguments share.

A setting is a number of the right kind (an int is not a bool, a float is
finite) inside its range. `Bounds` is a range as options declare it
(`pss_tf.config_flags.option(..., minimum=1)`), so that the flag's help states
it and the config's validation checks it; `number` and `integer` check one
value. Errors name the field: `ConfigError(field, message)` for settings, or
`error=ValueError` for a library argument (the message then reads
`field: message` just the same).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from pss_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Bounds:
    """A closed (`minimum`, `maximum`) or open (`above`, `below`) range; None: unbounded."""

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None

    def __post_init__(self):
        if self.minimum is not None and self.above is not None:
            raise TypeError("Bounds: give minimum or above, not both")
        if self.maximum is not None and self.below is not None:
            raise TypeError("Bounds: give maximum or below, not both")

    @property
    def empty(self) -> bool:
        return self == Bounds()

    def contains(self, value) -> bool:
        return (
            (self.minimum is None or value >= self.minimum)
            and (self.maximum is None or value <= self.maximum)
            and (self.above is None or value > self.above)
            and (self.below is None or value < self.below)
        )

    def describe(self) -> str:
        """The range in words: "at least 1", "positive", "in (0, 1]"."""
        low = self.minimum if self.minimum is not None else self.above
        high = self.maximum if self.maximum is not None else self.below
        if low is not None and high is not None:
            opening = "[" if self.minimum is not None else "("
            closing = "]" if self.maximum is not None else ")"
            return f"in {opening}{low:g}, {high:g}{closing}"
        if self.above == 0:
            return "positive"
        if low is not None:
            return f"at least {low:g}" if self.minimum is not None else f"above {low:g}"
        if high is not None:
            return f"at most {high:g}" if self.maximum is not None else f"below {high:g}"
        return "any"


def _fail(error, field: str, message: str):
    if issubclass(error, ConfigError):
        raise error(field, message)
    raise error(f"{field}: {message}")


def is_finite_number(value) -> bool:
    """A finite real number that is not a bool (for checks with their own message)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def is_integer(value, minimum: int | None = None) -> bool:
    """An integral number that is not a bool, at least `minimum` (for checks with their own message)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Integral)
        and (minimum is None or value >= minimum)
    )


def number(field: str, value, bounds: Bounds = Bounds(), *, error=ConfigError, **limits) -> float:
    """`value` as a float: a finite real number (not a bool) inside `bounds` (or
    the same given as keywords: `number("alpha", a, above=0, maximum=1)`)."""
    bounds = Bounds(**limits) if limits else bounds
    if not is_finite_number(value):
        _fail(error, field, f"must be a finite number, got {value!r}")
    if not bounds.contains(value):
        _fail(error, field, f"must {requirement(bounds, False)}, got {value!r}")
    return float(value)


def integer(field: str, value, minimum: int | None = None, *, maximum: int | None = None, error=ConfigError) -> int:
    """`value` as an int: an integral number (not a bool), at least `minimum` and at most `maximum`."""
    bounds = Bounds(minimum=minimum, maximum=maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not bounds.contains(value):
        _fail(error, field, f"must {requirement(bounds, True)}, got {value!r}")
    return int(value)


def requirement(bounds: Bounds, is_int: bool) -> str:
    """What a value must be, after "must": "be an int of at least 1", "lie in (0, 1]"."""
    kind = "an int" if is_int else "a finite number"
    text = bounds.describe()
    if text.startswith("in "):
        return f"be {kind} {text}" if is_int else f"lie {text}"
    if text == "any":
        return f"be {kind}"
    if text == "positive":
        return "be a positive int" if is_int else "be a positive number"
    return f"be {kind} of {text}" if text.startswith("at ") else f"be {kind} {text}"


def probability(field: str, value, *, error=ConfigError) -> float:
    """A number in [0, 1]."""
    return number(field, value, Bounds(minimum=0.0, maximum=1.0), error=error)


def generator(field: str, value, *, error=ValueError):
    """A numpy random Generator (the search's draws take one)."""
    import numpy as np

    if not isinstance(value, np.random.Generator):
        _fail(error, field, f"must be a numpy Generator, got {type(value).__name__}")
    return value


def declared(field: str, value, bounds: Bounds, is_int: bool) -> None:
    """A declared option's value (`pss_tf.config_flags`): of its kind and inside its bounds."""
    if is_int:
        integer(field, value, bounds.minimum, maximum=bounds.maximum)
    else:
        number(field, value, bounds)
