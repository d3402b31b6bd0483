"""Which examples of a split a run sets aside, or looks at when it looks at a few.

A split read in file order may be sorted by class: an image folder lists its
files class by class. "The last N" or "the first N" examples of such a split
hold one or two classes, so a held-out set or a limited evaluation taken that
way measures almost nothing. Every subset pss_tf takes of an indexed split is
therefore a seeded draw that does not depend on the file order, stratified by
class where the labels are known without decoding images:

* each class contributes its share of the split (largest remainders), and
* the drawn order interleaves the classes, so every prefix of the draw is
  stratified too: a smaller `limit` on the same draw stays representative.

The random keys come from a fixed integer hash of (seed, salt, index), not from
a library generator whose stream may change between versions: a run's
held-out set must stay what it never trained on for as long as the run exists.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

HOLDOUT_SELECTIONS = ("stratified", "last")

# Salts that keep the draws of one seed apart.
HOLDOUT_SALT = 11
SUBSET_SALT = 12
_INTERLEAVE_SALT = 1 << 20

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective, well-mixed hash of uint64 values."""
    z = values.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _MASK64


def uniform_keys(seed: int, salt: int, count: int) -> np.ndarray:
    """`count` floats in [0, 1), one per index, a pure function of (seed, salt, index)."""
    base = _splitmix64(np.asarray([(int(seed) & 0xFFFFFFFF) << 32 | (int(salt) & 0xFFFFFFFF)], np.uint64))[0]
    with np.errstate(over="ignore"):
        hashed = _splitmix64(np.arange(count, dtype=np.uint64) + base)
    return (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _quotas(class_sizes: np.ndarray, count: int, keys: np.ndarray) -> np.ndarray:
    """Examples per class: proportional shares, remainders to the largest fractions (ties by `keys`)."""
    total = int(class_sizes.sum())
    exact = class_sizes * (count / total)
    quotas = np.floor(exact).astype(np.int64)
    missing = count - int(quotas.sum())
    if missing:
        fractions = exact - quotas
        order = np.lexsort((keys, -fractions))  # Largest fraction first.
        quotas[order[:missing]] += 1
    return quotas


def stratified_draw(num_examples: int, count: int, seed: int, salt: int, labels: np.ndarray | None = None) -> np.ndarray:
    """`count` distinct indices of [0, num_examples) in draw order (read-only).

    With `labels`, every class gets its proportional share and every prefix of
    the returned order is stratified within one example per class; without,
    a uniform random draw. Draws are remembered (a run asks for its held-out set
    from the trainer, the pipelines and the search; at ImageNet size one draw
    takes about half a second).
    """
    if not 0 <= count <= num_examples:
        raise ValueError(f"count: must lie in [0, {num_examples}], got {count}")
    if labels is None:
        labels = np.zeros(num_examples, np.int64)
    labels = np.asarray(labels)
    if labels.shape != (num_examples,):
        raise ValueError(f"labels: expected shape ({num_examples},), got {labels.shape}")
    key = (num_examples, count, seed, salt, hashlib.sha256(np.ascontiguousarray(labels, np.int64)).hexdigest())
    if key not in _DRAWS:
        if len(_DRAWS) >= _REMEMBERED_DRAWS:
            _DRAWS.pop(next(iter(_DRAWS)))
        drawn = _draw(num_examples, count, seed, salt, labels)
        drawn.setflags(write=False)
        _DRAWS[key] = drawn
    return _DRAWS[key]


_REMEMBERED_DRAWS = 16
_DRAWS: dict[tuple, np.ndarray] = {}


def _draw(num_examples: int, count: int, seed: int, salt: int, labels: np.ndarray) -> np.ndarray:
    keys = uniform_keys(seed, salt, num_examples)
    classes, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    quotas = _quotas(sizes, count, uniform_keys(seed, salt + _INTERLEAVE_SALT, len(classes)))
    # Within each class, the members with the smallest keys; then a position key
    # (rank + jitter) / quota that merges the classes evenly.
    by_class = np.lexsort((keys, inverse))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    chosen, positions = [], []
    jitter = uniform_keys(seed, salt + 2 * _INTERLEAVE_SALT, num_examples)
    for c, (start, quota) in enumerate(zip(starts, quotas)):
        if quota:
            members = by_class[start : start + quota]
            chosen.append(members)
            positions.append((np.arange(quota) + jitter[members]) / quota)
    if not chosen:
        return np.zeros(0, np.int64)
    chosen, positions = np.concatenate(chosen), np.concatenate(positions)
    return chosen[np.argsort(positions, kind="stable")].astype(np.int64)


def complement(num_examples: int, excluded: np.ndarray) -> np.ndarray:
    """The indices of [0, num_examples) not in `excluded`, ascending."""
    keep = np.ones(num_examples, bool)
    keep[np.asarray(excluded, np.int64)] = False
    return np.flatnonzero(keep).astype(np.int64)


def class_counts(labels: np.ndarray, indices: np.ndarray, num_classes: int) -> np.ndarray:
    """Examples per class among `indices`."""
    return np.bincount(np.asarray(labels)[np.asarray(indices, np.int64)], minlength=num_classes)[:num_classes]


@dataclasses.dataclass(frozen=True)
class Holdout:
    """The training examples a run keeps out of training (for the search's fitness).

    `selection`: `stratified` (a seeded draw, every class its share; the
    default) or `last` (the split's last `examples` in file order: what runs
    recorded before `holdout_selection` existed held out, kept so that their
    held-out set stays what they never trained on).
    """

    examples: int = 0
    selection: str = "stratified"
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.examples, bool) or not isinstance(self.examples, (int, np.integer)) or self.examples < 0:
            raise ValueError(f"holdout_examples: must be an int >= 0, got {self.examples!r}")
        if self.selection not in HOLDOUT_SELECTIONS:
            raise ValueError(f"holdout_selection: must be one of {HOLDOUT_SELECTIONS}, got {self.selection!r}")

    def __bool__(self) -> bool:
        return self.examples > 0

    def held_out(self, num_examples: int, labels: np.ndarray | None) -> np.ndarray:
        """The held-out indices, in the order the search reads them."""
        if self.selection == "last":
            return np.arange(num_examples - self.examples, num_examples, dtype=np.int64)
        return stratified_draw(num_examples, self.examples, self.seed, HOLDOUT_SALT, labels)

    def training(self, num_examples: int, labels: np.ndarray | None) -> np.ndarray:
        """The indices training streams (and BN calibration) visit, ascending."""
        if not self.examples:
            return np.arange(num_examples, dtype=np.int64)
        return complement(num_examples, self.held_out(num_examples, labels))


# A held-out set whose class proportions differ from validation's (total
# variation distance) by more than FAR_MIX and more than FAR_MIX_SAMPLING times
# what a random draw of its size would differ by is reported: a class-sorted
# slice is far above both, a random draw of any size below.
FAR_MIX = 0.1
FAR_MIX_SAMPLING = 3.0


def sampling_distance(shares: np.ndarray, examples: int) -> float:
    """The expected total variation distance between `shares` and the class mix of
    a random draw of `examples` from it (normal approximation)."""
    shares = np.asarray(shares, np.float64)
    return 0.5 * float(np.sqrt(2.0 / np.pi) * np.sqrt(shares * (1.0 - shares) / max(examples, 1)).sum())


def _named(classes, names, most: int = 10) -> str:
    shown = ", ".join(names[c] for c in classes[:most])
    return shown + (f" and {len(classes) - most} more" if len(classes) > most else "")


def class_balance_warnings(counts: dict, names) -> dict[str, str]:
    """What is wrong with a run's splits: `{kind: message}` (empty: nothing).

    Kinds: `untrained` (a class with no training example), `held_out_small`,
    `held_out_missing` (held-out set without some classes), `held_out_mix`
    (its class mix far from validation's).

    `counts`: examples per class of `training` (the part trained on),
    `validation` and, if the run holds examples out, `held_out` (or the part
    of it a search scores on); `names`: a name per class.
    """
    warnings = {}
    training, validation = np.asarray(counts["training"]), np.asarray(counts["validation"])
    num_classes = len(training)
    never = np.flatnonzero(training == 0)
    if len(never):
        warnings["untrained"] = (
            f"the training examples hold no example of {len(never)} of the {num_classes} classes "
            f"({_named(never, names)}): the run never trains on them, and its subnets cannot predict them"
        )
    held = counts.get("held_out")
    if held is None:
        return warnings
    held = np.asarray(held)
    total = int(held.sum())
    missing = np.flatnonzero(held == 0)
    if total < num_classes:
        warnings["held_out_small"] = (
            f"the held-out set has {total} examples for {num_classes} classes, too few to hold each class once; "
            f"hold out several per class (holdout_examples)"
        )
    elif len(missing):
        warnings["held_out_missing"] = (
            f"the held-out set ({total} examples) holds no example of {len(missing)} of the {num_classes} classes "
            f"({_named(missing, names)}): fitness measured on it ignores them"
        )
    if total and validation.sum():
        held_share, val_share = held / total, validation / validation.sum()
        distance = 0.5 * float(np.abs(held_share - val_share).sum())
        if distance > max(FAR_MIX, FAR_MIX_SAMPLING * sampling_distance(val_share, total)):
            over, under = int(np.argmax(held_share - val_share)), int(np.argmin(held_share - val_share))
            warnings["held_out_mix"] = (
                f"the held-out set's class mix is far from the validation split's (total variation {distance:.2f}): "
                f"class {names[over]} is {held_share[over]:.1%} of it against {val_share[over]:.1%} of validation, "
                f"class {names[under]} {held_share[under]:.1%} against {val_share[under]:.1%}"
            )
    return warnings
