"""The PSS-Net release's latency metrics, from its own lookup tables.

The release chose its CPU and GPU latency pools with tables it measured
(`scripts/lut/mbv{1,2}_{cpu,gpu}.pkl`): pickled dicts from a block's shape, a
namedtuple `BlockCfg(block_type, in_size, cin, cout, cmid, kernel_size,
stride, padding)` of the release's `utils.comm` (pickled as `__main__.BlockCfg`),
to microseconds. A subnet's latency is the sum
over its blocks. `ReleaseLatencyMetric` reads those files (restricted
unpickling: the namedtuple is the only global allowed, mapped to a local
stand-in) and sums the same blocks, so imported -C, -G and -M supernets keep
their pools and targets.

One difference, on purpose: for MobileNetV2 the release's table charges the
last 1x1 conv and the classifier at a ninth multiplier that its network never
applies (`docs/FIDELITY.md`). pss_tf has no ninth multiplier and charges them
at the 1280 channels the network runs.
"""

from __future__ import annotations

import collections
import os
import pickle

import numpy as np

from pss_tf import checks
from pss_tf.errors import ConfigError
from pss_tf.safe_pickle import load_pickle
from pss_tf.space import architectures
from pss_tf.space.config import SubnetConfig
from pss_tf.space.metrics import Metric
from pss_tf.space.targets import TargetGrid

BlockCfg = collections.namedtuple(
    "BlockCfg", "block_type in_size cin cout cmid kernel_size stride padding", defaults=[None, None, None, None]
)

_MODEL_FILES = {"mobilenet_v1": "mbv1", "mobilenet_v2": "mbv2"}
_DEVICES = ("cpu", "gpu")  # a metric's name ends in the device whose table it sums


class _PickledBlockCfg(BlockCfg):
    """What a table's `BlockCfg` global stands for while reading: a namedtuple pickles all
    eight fields, so anything else (a table damaged or forged) is refused, not padded with defaults."""

    __slots__ = ()

    def __new__(cls, *fields):
        if len(fields) != len(BlockCfg._fields):
            raise pickle.UnpicklingError(f"a BlockCfg of {len(fields)} fields, not {len(BlockCfg._fields)}")
        block_type, in_size, cin, cout, *optional = fields
        if not isinstance(block_type, str) or not all(_is_count(v) for v in (in_size, cin, cout)) or not all(
            v is None or _is_count(v) for v in optional
        ):
            raise pickle.UnpicklingError(f"not a BlockCfg: {fields!r}")
        return BlockCfg.__new__(BlockCfg, *fields)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def lut_file(lut_dir: str, model: str, metric: str) -> str:
    """Where the release keeps the table of `metric` (release_latency_cpu/gpu) for `model`."""
    if model not in _MODEL_FILES:
        raise ConfigError("model", f"the release has latency tables for {sorted(_MODEL_FILES)} only, not {model!r}")
    device = metric.rsplit("_", 1)[-1]
    return os.path.join(lut_dir, f"{_MODEL_FILES[model]}_{device}.pkl")


def read_release_lut(path: str) -> dict[tuple, float]:
    """A release latency table as {block tuple: microseconds}."""
    # The release's files name `__main__.BlockCfg` (written by a script that had
    # imported it; train.py imports it into __main__ to read them).
    table = load_pickle(path, {("__main__", "BlockCfg"): _PickledBlockCfg, ("utils.comm", "BlockCfg"): _PickledBlockCfg})
    if not isinstance(table, dict) or not table:
        raise ConfigError(None, f"{path}: not a PSS-Net latency table (expected a dict of BlockCfg -> latency)")
    for key, value in table.items():
        if not isinstance(key, BlockCfg) or not checks.is_finite_number(value) or value < 0:
            raise ConfigError(None, f"{path}: not a PSS-Net latency table (entry {key!r}: {value!r})")
    return {tuple(k): float(v) for k, v in table.items()}


def _halve(size: int) -> int:
    """Output size of the release's 3x3 stride-2 conv with padding 1."""
    return (size + 2 - 3) // 2 + 1


def _block_columns(model: str, size, c) -> list[tuple]:
    """The release's `create_model_block_list` keys, with `size` and the channels `c` either ints
    (one subnet) or arrays (many): BlockCfg fields in order, 1000 classes as in its tables."""
    blocks = [("Conv2d", size, 3, c[0], None, 3, 2, 1)]
    size = _halve(size)
    if model == "mobilenet_v1":
        strides = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
        for i, stride in enumerate(strides):
            blocks.append(("MBV1Block", size, c[i], c[i + 1], None, None, stride, None))
            if stride == 2:
                size = _halve(size)
        last = c[13]
    elif model == "mobilenet_v2":
        blocks.append(("MBV2Block", size, c[0], c[1], c[0], None, 1, None))
        # (stage, repeats, first stride) of stages 2..7.
        for stage, repeats, first_stride in ((2, 2, 2), (3, 3, 2), (4, 4, 2), (5, 3, 1), (6, 3, 2), (7, 1, 1)):
            for r in range(repeats):
                cin = c[stage - 1] if r == 0 else c[stage]
                stride = first_stride if r == 0 else 1
                blocks.append(("MBV2Block", size, cin, c[stage], cin * 6, None, stride, None))
                if stride == 2:
                    size = _halve(size)
        last = 1280  # the network's last conv: no multiplier in the release's network (module docstring)
        blocks.append(("Conv2d", size, c[7], last, None, 1, 1, 0))
    else:
        raise ConfigError("model", f"the release has latency tables for {sorted(_MODEL_FILES)} only, not {model!r}")
    blocks.append(("Linear", 1, last, 1000, None, None, None, None))
    return blocks


def release_blocks(config: SubnetConfig) -> list[tuple]:
    """The release's `create_model_block_list` keys of `config`, as plain tuples (1000 classes, as its tables)."""
    return _block_columns(config.model, config.resolution, config.channels)


class ReleaseLatencyMetric(Metric):
    """Latency in microseconds summed from one of the release's tables."""

    unit = "us"
    label_suffix = "us"

    def __init__(self, name: str, model: str, table: dict[tuple, float], path: str, grid: TargetGrid | None = None):
        super().__init__(name, model, grid)
        self.table = table
        self.path = path

    @classmethod
    def load(cls, name: str, model: str, lut_dir: str | None, grid: TargetGrid | None = None) -> "ReleaseLatencyMetric":
        if name.rsplit("_", 1)[-1] not in _DEVICES:
            raise ConfigError("metrics", f"{name!r} names no device of the release's tables {list(_DEVICES)}")
        if not lut_dir:
            raise ConfigError(
                "release_luts",
                f"the {name} metric needs the release's latency tables: give the directory holding "
                f"{os.path.basename(lut_file('.', model, name))} (the release's scripts/lut)",
            )
        path = lut_file(lut_dir, model, name)
        if not os.path.exists(path):
            raise ConfigError("release_luts", f"{path} is missing (the release's scripts/lut/{os.path.basename(path)})")
        return cls(name, model, read_release_lut(path), path, grid)

    def value(self, config: SubnetConfig) -> float:
        self._check_model(config)
        total = 0.0
        for block in release_blocks(config):
            try:
                total += self.table[block]
            except KeyError:
                raise ConfigError(
                    "release_luts", f"{self.path} has no entry for {BlockCfg(*block)} (block of {config})"
                ) from None
        return total

    def values(self, resolutions: np.ndarray, widths: np.ndarray) -> np.ndarray:
        """`value` of many configs: each block's distinct shapes are looked up once
        (the conditional sampler bins 1e5 to 1e6 subnets)."""
        resolutions = np.asarray(resolutions, dtype=np.int64)
        channels = architectures.get_architecture(self.model).channels_array(widths)
        total = np.zeros(len(resolutions), np.float64)
        for block in _block_columns(self.model, resolutions, channels):
            # in_size, cin, cout, cmid (0 for None) packed 16 bits each into one int64 per config.
            code = np.zeros(resolutions.shape, np.int64)
            for v in block[1:5]:
                code = (code << 16) + (0 if v is None else np.asarray(v, np.int64) + 1)
            codes, inverse = np.unique(code, return_inverse=True)
            latencies = np.empty(len(codes))
            for j, packed in enumerate(codes.tolist()):
                fields = [(packed >> shift) & 0xFFFF for shift in (48, 32, 16, 0)]
                latencies[j] = self._lookup((block[0], *[None if f == 0 else f - 1 for f in fields], *block[5:]))
            total += latencies[inverse.reshape(-1)]
        return total

    def _lookup(self, block: tuple) -> float:
        try:
            return self.table[block]
        except KeyError:
            raise ConfigError("release_luts", f"{self.path} has no entry for {BlockCfg(*block)}") from None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "lut": os.path.basename(self.path), "entries": len(self.table)}
