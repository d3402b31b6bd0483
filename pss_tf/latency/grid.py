"""Coarse tables: measure a channel grid, interpolate the rest.

The ImageNet MobileNetV1 space has about 15k block variants, mostly because
the deep blocks pair 17 to 33 input widths with as many output widths. Within
one (kind, input size, stride) group latency varies smoothly with the widths,
so a coarse table measures only widths on a grid (multiples of
`channel_step`, plus each stage's smallest and largest width) and fills every
other variant by bilinear interpolation in (cin, cout) between the four
measured neighbours (linear where only one width varies). docs/PERFORMANCE.md
reports what this costs in accuracy against exactly measured tables.

Spaces whose blocks have inner widths of their own (layer-wise spaces,
ResNet-50) interpolate slot by slot instead, multilinearly over the widths of
the multipliers the slot reads (`variants.slot_points`): a bottleneck's
input, output and two inner widths, or a ResNet stage's one multiplier.
"""

from __future__ import annotations

import collections

import numpy as np

from pss_tf.latency.variants import Variant, slot_genes, slot_points, slots, space_variants, stage_channels
from pss_tf.space import architectures
from pss_tf.space.config import SearchSpace


def grid_channels(values: np.ndarray, step: int) -> set[int]:
    """The widths of one stage that a coarse table measures."""
    values = [int(v) for v in values]
    return {v for v in values if v % step == 0} | {min(values), max(values)}


def grid_variants(
    space: SearchSpace, channel_step: int, small_input: bool = False, in_channels: int = 3, num_classes: int = 1000
) -> list[Variant]:
    """The variants a coarse table measures for `space` (all of them if step is 0)."""
    on_grid = _on_grid(space, channel_step)
    chosen = {}
    for slot in slots(space.model, small_input, in_channels, num_classes):
        chosen.update(dict.fromkeys(v for v, _ in _grid_points(slot, space.model, slot_points(slot, space), on_grid)))
    return list(chosen)


def _on_grid(space: SearchSpace, channel_step: int) -> list[set[int]]:
    """Per channel group, the widths a coarse table measures (all of them if step is 0)."""
    return [grid_channels(c, channel_step) if channel_step else set(map(int, c)) for c in stage_channels(space)]


def _grid_points(slot, model: str, points: list, on_grid: list[set[int]]) -> list:
    """The (variant, coordinates) of a slot's `points` whose genes' widths all lie on the grid."""
    _, representative = slot_genes(slot, model)
    return [(v, c) for v, c in points if all(w in on_grid[g] for w, g in zip(c, representative))]


def _group(v: Variant) -> tuple:
    return (v.kind, v.size, v.stride, v.residual, v.hidden // v.cin, v.hidden % v.cin, v.options)


def _bracket(axis: np.ndarray, value: int) -> tuple[int, int, float]:
    """Indices of the measured widths around `value` and the weight of the upper one."""
    upper = int(np.searchsorted(axis, value))
    if upper < len(axis) and axis[upper] == value:
        return upper, upper, 0.0
    if upper == 0 or upper == len(axis):
        raise KeyError(value)  # Outside the measured range: no extrapolation.
    low, high = axis[upper - 1], axis[upper]
    return upper - 1, upper, (value - low) / (high - low)


def interpolate_space(
    measured: dict[str, float], space: SearchSpace, channel_step: int, small_input: bool = False,
    in_channels: int = 3, num_classes: int = 1000,
) -> dict[str, float]:
    """Latencies of the variants of `space` missing from `measured`, interpolated
    (`interpolate` for spaces whose inner widths follow their inputs, else slot by
    slot from the slot's own grid points, `grid_variants` with `channel_step`)."""
    if not architectures.get_architecture(space.model).has_inner_groups:
        return interpolate(measured, space_variants(space, small_input, in_channels, num_classes))
    on_grid = _on_grid(space, channel_step)
    result = {}
    for slot in slots(space.model, small_input, in_channels, num_classes):
        points = slot_points(slot, space)
        known = collections.defaultdict(dict)  # The slot's own grid: a full product of widths per size.
        for v, coordinates in _grid_points(slot, space.model, points, on_grid):
            if v.key in measured:
                known[v.size][coordinates] = measured[v.key]
        for v, coordinates in points:
            if v.key in measured or v.key in result or not known[v.size]:
                continue
            try:
                result[v.key] = float(_multilinear(known[v.size], coordinates))
            except KeyError:
                continue
    return result


def _multilinear(points: dict[tuple, float], query: tuple) -> float:
    """Interpolates measured `points` (coordinates -> ms) at `query`, one axis at a
    time; KeyError where a needed neighbour was not measured."""
    if not query:
        return points[()]
    axis = np.array(sorted({p[0] for p in points}))
    low, high, t = _bracket(axis, query[0])

    def along(index):
        return _multilinear({p[1:]: ms for p, ms in points.items() if p[0] == axis[index]}, query[1:])

    value = along(low)
    return value if t == 0 else (1 - t) * value + t * along(high)


def interpolate(measured: dict[str, float], wanted) -> dict[str, float]:
    """Latencies of the `wanted` variants missing from `measured`, interpolated.

    Variants without measured neighbours on all sides are left out (the table
    then reports them missing).
    """
    groups = collections.defaultdict(dict)
    for key, ms in measured.items():
        v = Variant.from_key(key)
        groups[_group(v)][(v.cin, v.cout)] = ms
    result = {}
    for v in wanted:
        if v.key in measured:
            continue
        points = groups.get(_group(v))
        if not points:
            continue
        try:
            result[v.key] = _interpolate_point(points, v.cin, v.cout)
        except KeyError:
            continue
    return result


def _interpolate_point(points: dict[tuple[int, int], float], cin: int, cout: int) -> float:
    if all(a == b for a, b in points):  # Residual blocks: one width, cin == cout.
        axis = np.array(sorted(a for a, _ in points))
        i, j, t = _bracket(axis, cin)
        return (1 - t) * points[(axis[i], axis[i])] + t * points[(axis[j], axis[j])]
    cins = np.array(sorted({a for a, _ in points}))
    couts = np.array(sorted({b for _, b in points}))
    i0, i1, s = _bracket(cins, cin)
    j0, j1, t = _bracket(couts, cout)
    corners = [points[(cins[i], couts[j])] for i in (i0, i1) for j in (j0, j1)]  # KeyError if a corner is missing.
    low = (1 - t) * corners[0] + t * corners[1]
    high = (1 - t) * corners[2] + t * corners[3]
    return float((1 - s) * low + s * high)
