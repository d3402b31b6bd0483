"""Predicted latency of a subnet: the sum of its blocks' table entries.

Each table entry is one standalone model's `invoke()` time, so it carries the
interpreter's fixed per-invoke overhead once; a subnet is invoked once, so

    latency = sum over its blocks (stem ... head) of (entry - overhead) + overhead.

A table may also carry a linear calibration against whole-subnet
measurements (`bench/latency_predictor.py --write_calibration`), which the
metric then applies: `scale * latency + offset_ms`.

`LatencyMetric` is a `Metric` like FLOPs (targets, conditional sampler, pools,
winners). Its vectorised `values` turns each block position's (input size,
cin, cout) into indices of a dense numpy array built once from the table, so
the sampler evaluates batches of configs without touching Python dicts.
"""

from __future__ import annotations

import copy
import logging

import numpy as np

from pss_tf import checks
from pss_tf.errors import ConfigError
from pss_tf.latency.lut import LatencyTable, SpaceSpec
from pss_tf.latency.variants import (
    Slot,
    Variant,
    slots,
    space_variants,
    subnet_variants,
)
from pss_tf.space import architectures
from pss_tf.space.config import SearchSpace, SubnetConfig
from pss_tf.space.metrics import Metric
from pss_tf.space.targets import TargetGrid

logger = logging.getLogger(__name__)

class _SlotTable:
    """Latencies of one slot's variants as a dense array over their coordinates:
    (size, cin, cout), plus the inner widths of a slot that has its own."""

    def __init__(self, slot: Slot, entries: dict[Variant, float]):
        mine = {_coordinates(slot, v): ms for v, ms in entries.items() if _matches(slot, v)}
        dimensions = 3 + len(slot.hidden_stages)
        self.axes = [np.array(sorted({c[d] for c in mine}), dtype=np.int64) for d in range(dimensions)]
        self.values = np.full(tuple(len(a) for a in self.axes), np.nan)
        for coordinates, ms in mine.items():
            self.values[tuple(np.searchsorted(a, c) for a, c in zip(self.axes, coordinates))] = ms

    def lookup(self, *queries) -> np.ndarray:
        """Latencies of the given rows (one array per coordinate); NaN where the table has no entry."""
        result = np.full(np.shape(queries[0]), np.nan)
        if not self.values.size:
            return result
        indices, found = [], np.ones(np.shape(queries[0]), dtype=bool)
        for axis, query in zip(self.axes, queries):
            position = np.minimum(np.searchsorted(axis, query), len(axis) - 1)
            found &= axis[position] == query
            indices.append(position)
        result[found] = self.values[tuple(i[found] for i in indices)]
        return result


def _coordinates(slot: Slot, v: Variant) -> tuple[int, ...]:
    return (v.size, v.cin, v.cout) + (v.hidden, v.hidden2)[: len(slot.hidden_stages)]


def _matches(slot: Slot, v: Variant) -> bool:
    if (v.kind, v.stride, v.residual) != (slot.kind, slot.stride, slot.residual):
        return False
    if slot.in_stage is None and v.cin != slot.fixed_cin:
        return False
    if slot.out_stage is None and v.cout != slot.fixed_cout:
        return False
    if v.expand != bool(slot.expand) or v.options != slot.options:
        return False
    return bool(slot.hidden_stages) or v.hidden == slot.hidden(v.cin)


def _calibration_terms(calibration: dict | None) -> tuple[float, float]:
    """(scale, offset_ms) of a table's calibration; None is the identity."""
    calibration = calibration or {}
    return float(calibration.get("scale", 1.0)), float(calibration.get("offset_ms", 0.0))


class LatencyMetric(Metric):
    """Predicted latency in ms from a `LatencyTable` (design note section 2).

    Args:
        model: the supernet ("mobilenet_v1" or "mobilenet_v2").
        grid: the target grid, in ms.
        table: the lookup table, measured on the deployment device.
        num_classes, small_input, in_channels: as for `FlopsMetric`; they
            decide the head and stem variants.
        name: the metric's name in pools and signatures ("latency_cpu").
        table_path: only for error messages.
    """

    unit = "ms"
    label_suffix = "ms"

    def __init__(
        self,
        model: str,
        grid: TargetGrid | None,
        table: LatencyTable,
        num_classes: int = 1000,
        small_input: bool = False,
        in_channels: int = 3,
        name: str = "latency_cpu",
        table_path: str | None = None,
    ):
        super().__init__(name, model, grid)
        if not isinstance(table, LatencyTable):
            raise ValueError(f"table: must be a LatencyTable, got {type(table).__name__}")
        self.table = table
        self.table_path = table_path
        self.num_classes = checks.integer("num_classes", num_classes, 1, error=ValueError)
        self.small_input = bool(small_input)
        self.in_channels = checks.integer("in_channels", in_channels, 1, error=ValueError)
        self._slots = slots(model, self.small_input, self.in_channels, self.num_classes)
        self._overhead = table.invoke_overhead_ms
        self._scale, self._offset = _calibration_terms(table.header.get("calibration"))
        entries = {Variant.from_key(k): ms - self._overhead for k, ms in table.entries().items()}
        shared: dict[tuple, _SlotTable] = {}
        self._tables = []
        for slot in self._slots:
            key = (
                slot.kind, slot.stride, slot.residual, slot.expansion, slot.fixed_cin, slot.fixed_cout,
                len(slot.hidden_stages), slot.options, slot.fixed_hidden,
            )
            if key not in shared:
                shared[key] = _SlotTable(slot, entries)
            self._tables.append(shared[key])
        self._architecture = architectures.get_architecture(model)

    def value(self, config: SubnetConfig) -> float:
        self._check_model(config)
        total = self._overhead
        for variant in subnet_variants(config, self.small_input, self.in_channels, self.num_classes):
            ms = self.table.get(variant)
            if ms is None:
                raise ValueError(self._missing_message(variant))
            total += ms - self._overhead
        return float(self._scale * total + self._offset)

    def values(self, resolutions: np.ndarray, widths: np.ndarray) -> np.ndarray:
        resolutions = np.asarray(resolutions, dtype=np.int64)
        channels = self._architecture.channels_array(widths)
        total = np.full(resolutions.shape, self._overhead)
        for slot, table in zip(self._slots, self._tables):
            cins = np.full_like(resolutions, slot.fixed_cin) if slot.in_stage is None else channels[slot.in_stage]
            couts = np.full_like(resolutions, slot.fixed_cout) if slot.out_stage is None else channels[slot.out_stage]
            inner = [channels[g] for g in slot.hidden_stages]
            part = table.lookup(slot.size(resolutions), cins, couts, *inner)
            if np.isnan(part).any():
                row = int(np.flatnonzero(np.isnan(part))[0])
                variant = slot.variant(
                    int(slot.size(resolutions[row])), int(cins[row]), int(couts[row]), [int(c[row]) for c in inner]
                )
                raise ValueError(self._missing_message(variant))
            total = total + part
        return self._scale * total + self._offset

    def with_calibration(self, calibration: dict | None) -> "LatencyMetric":
        """The same metric with another calibration (None: the plain sum of blocks)."""
        other = copy.copy(self)
        other._scale, other._offset = _calibration_terms(calibration)
        return other

    def _missing_message(self, variant: Variant) -> str:
        where = f" {self.table_path}" if self.table_path else ""
        return (
            f"{self.name}: the latency table{where} has no entry for block {variant.key}; "
            "measure it with tools/build_lut.py (see docs/PERFORMANCE.md)"
        )

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "table": self.table.fingerprint(),
            "calibration": [self._scale, self._offset],
            "threads": self.table.threads,
            "runtime": self.table.runtime.get("version"),
            "num_classes": self.num_classes,
            "small_input": self.small_input,
            "in_channels": self.in_channels,
        }


def load_latency_metric(
    path: str,
    model: str,
    space: SearchSpace,
    name: str = "latency_cpu",
    num_classes: int = 1000,
    small_input: bool = False,
    in_channels: int = 3,
    padding: str = "same",
) -> LatencyMetric:
    """A `LatencyMetric` from the table at `path`, checked to cover `space` and
    to have timed blocks of the run's `padding`.

    Errors name the field `{name}_lut` and, for a table that lacks blocks, the
    command that measures them. A table measured with another LiteRT version
    than the one installed here is flagged with a warning: its numbers describe
    the machine and runtime it was measured on.
    """
    field = f"{name}_lut"
    table = LatencyTable.load(path, field)
    if table.padding != padding:
        raise ConfigError(
            field,
            f"the latency table {path} timed blocks with {table.padding} padding, the run uses {padding}; "
            f"build one with tools/build_lut.py --padding={padding}",
        )
    spec = SpaceSpec(space, small_input, in_channels, num_classes)
    table.check_covers(space_variants(space, small_input, in_channels, num_classes), path, spec, field)
    from pss_tf.latency.measure import runtime_info

    for problem in table.compatibility(runtime_version=runtime_info()["version"]):
        logger.warning("%s: %s is %s; its latencies describe that set-up.", field, path, problem)
    return LatencyMetric(model, None, table, num_classes, small_input, in_channels, name=name, table_path=path)
