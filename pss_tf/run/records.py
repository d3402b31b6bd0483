"""What training saw: the lowest training losses, with their subnets.

The prior of the search (PSE-Net, after BCNet) estimates how much each width of
each stage costs in loss from the subnets that trained best. Keeping every
step's record would grow without bound, so `TrainingRecords` keeps only the
`capacity` lowest losses (BCNet keeps a heap of the lowest ones too) plus a count
of everything recorded. The trainer calls `add` every step, so it is O(log
capacity) and usually O(1): a loss above the worst kept one is turned away after
one comparison.

A config seen again keeps its *latest* loss and step, not its lowest: the latest
loss describes the supernet as it is now, while the lowest of many visits is
mostly the luckiest batch, which would favour the pool members PSS revisits
often. A retained config whose latest loss got worse stays until a better
newcomer evicts it (the worst retained loss goes first).
"""

from __future__ import annotations

import heapq
import os
from typing import NamedTuple

from pss_tf import checks, io_utils
from pss_tf.space.config import SubnetConfig

_FORMAT = "pss_tf.search.records"
_VERSION = 1


class Record(NamedTuple):
    config: SubnetConfig
    step: int
    loss: float


def _check_step(step) -> int:
    return checks.integer("step", step, 0, error=ValueError)


def _check_loss(loss) -> float:
    if not checks.is_finite_number(loss):
        raise ValueError(
            f"loss: must be a finite number, got {loss!r} (a NaN or infinite training loss "
            f"says nothing about the subnet; skip it)"
        )
    return float(loss)


class TrainingRecords:
    """The lowest `capacity` training losses seen, one per config, and a count of all.

    Args:
        capacity: most configs kept. When a new config would make more, the one
            with the highest loss goes; among equal losses the most recently
            updated goes, so a newcomer never displaces an incumbent it ties.

    Attributes:
        count: records ever added (accepted or not).
        last_step: the largest step ever added, or -1 before the first.
    """

    def __init__(self, capacity: int = 1000):
        self.capacity = checks.integer("capacity", capacity, 1, error=ValueError)
        self.count = 0
        self.last_step = -1
        # config -> (loss, step, sequence number of its last update).
        self._entries: dict[SubnetConfig, tuple[float, int, int]] = {}
        # Max-heap by (loss, sequence) through negation; entries whose sequence no
        # longer matches `_entries` are stale and skipped lazily.
        self._heap: list[tuple[float, int, SubnetConfig]] = []
        self._sequence = 0

    def add(self, config: SubnetConfig, step: int, loss: float) -> bool:
        """Records that `config` trained at `step` with `loss`; returns whether it is kept."""
        if not isinstance(config, SubnetConfig):
            raise ValueError(f"config: must be a SubnetConfig, got {type(config).__name__}")
        step = _check_step(step)
        loss = _check_loss(loss)
        self.count += 1
        if step > self.last_step:
            self.last_step = step
        entries = self._entries
        if config not in entries and len(entries) >= self.capacity and loss >= self._worst()[0]:
            return False
        sequence = self._sequence
        self._sequence += 1
        entries[config] = (loss, step, sequence)
        heapq.heappush(self._heap, (-loss, -sequence, config))
        if len(entries) > self.capacity:
            _, _, worst = self._worst()
            del entries[worst]
            heapq.heappop(self._heap)
        if len(self._heap) > 2 * self.capacity + 64:
            self._heap = [(-loss, -seq, c) for c, (loss, _, seq) in entries.items()]
            heapq.heapify(self._heap)
        return config in entries

    def _worst(self) -> tuple[float, int, SubnetConfig]:
        """(loss, step, config) of the kept config with the highest loss (most recent on ties)."""
        heap, entries = self._heap, self._entries
        while True:
            neg_loss, neg_sequence, config = heap[0]
            entry = entries.get(config)
            if entry is not None and entry[2] == -neg_sequence:
                return entry[0], entry[1], config
            heapq.heappop(heap)

    # Reading.

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, config) -> bool:
        return config in self._entries

    def get(self, config: SubnetConfig) -> Record | None:
        entry = self._entries.get(config)
        return None if entry is None else Record(config, entry[1], entry[0])

    def records(self) -> list[Record]:
        """The kept records, lowest loss first (equal losses: least recently updated first)."""
        items = sorted(self._entries.items(), key=lambda item: (item[1][0], item[1][2]))
        return [Record(config, step, loss) for config, (loss, step, _) in items]

    @property
    def worst_loss(self) -> float | None:
        """The highest kept loss, which a newcomer must beat once the records are full."""
        return self._worst()[0] if self._entries else None

    # Persistence.

    def to_dict(self) -> dict:
        """JSON form; entries in the order of their last update, oldest first."""
        items = sorted(self._entries.items(), key=lambda item: item[1][2])
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "capacity": self.capacity,
            "count": self.count,
            "last_step": self.last_step,
            "entries": [{"config": c.to_dict(), "step": step, "loss": loss} for c, (loss, step, _) in items],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingRecords":
        io_utils.check_header(data, _FORMAT, _VERSION, {"capacity", "count", "last_step", "entries"})
        records = cls(data["capacity"])
        entries = data["entries"]
        if not isinstance(entries, list) or len(entries) > records.capacity:
            raise ValueError(f"entries: expected a list of at most {records.capacity} entries")
        count, last_step = data["count"], data["last_step"]
        if not checks.is_integer(count, len(entries)):
            raise ValueError(f"count: must be an int of at least {len(entries)} (the entries), got {count!r}")
        checks.integer("last_step", last_step, -1, error=ValueError)
        for i, entry in enumerate(entries):
            try:
                config = SubnetConfig.from_dict(entry["config"])
                step = _check_step(entry["step"])
                loss = _check_loss(entry["loss"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"entries[{i}]: {e}") from None
            if config in records._entries:
                raise ValueError(f"entries[{i}]: {config} appears twice")
            if step > last_step:
                raise ValueError(f"entries[{i}]: step {step} is after last_step {last_step}")
            records._entries[config] = (loss, step, i)
            records._heap.append((-loss, -i, config))
        heapq.heapify(records._heap)
        records._sequence = len(entries)
        records.count = count
        records.last_step = last_step
        return records

    def save(self, path: str | os.PathLike) -> None:
        """Writes the records as JSON, atomically: a failed save leaves the old file."""
        io_utils.atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainingRecords":
        data = io_utils.read_json(path, "records file")
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"records file {os.fspath(path)}: {e}") from None

    def __repr__(self) -> str:
        return f"TrainingRecords({len(self)}/{self.capacity} kept of {self.count})"
