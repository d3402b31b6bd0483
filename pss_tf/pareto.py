"""The Pareto front of accuracy against cost: which subnets are worth deploying.

A larger budget must never buy a worse model. Among subnets sorted by cost,
one is on the front when it is more accurate than every cheaper one (of two
equally costly subnets, the more accurate; of two equally accurate, the
cheaper). Training marks its winners with it, and the adaptive serving
signatures choose among front members only: the most accurate one that fits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def pareto_front(items: Iterable[T], cost: Callable[[T], float], accuracy: Callable[[T], float]) -> list[T]:
    """The items on the front, cheapest first."""
    ordered = sorted(items, key=lambda item: (cost(item), -accuracy(item)))
    front, best = [], float("-inf")
    for item in ordered:
        if accuracy(item) > best:
            front.append(item)
            best = accuracy(item)
    return front


def mark_pareto_front(entries: list[dict]) -> None:
    """Sets `pareto` on each winner entry: on its metric's front of val_top1 against value."""
    for metric in {e["metric"] for e in entries}:
        group = [e for e in entries if e["metric"] == metric]
        front = {id(e) for e in pareto_front(group, lambda e: e["value"], lambda e: e["val_top1"])}
        for e in group:
            e["pareto"] = id(e) in front
