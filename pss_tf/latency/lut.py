"""Latency lookup tables: format, reading, writing and validation.

A table maps block-variant keys (`pss_tf.latency.variants.Variant.key`) to
milliseconds measured on one device with one runtime and thread count, which
the header records. Latencies only transfer between identical set-ups, so a
table used elsewhere is flagged (`compatibility`) and a build never mixes
set-ups in one file.

    {"format": "pss_tf.latency_table", "version": 1, "unit": "ms",
     "device": {...}, "runtime": {...}, "threads": 2, "protocol": {...},
     "invoke_overhead_ms": 0.004,      # one invoke() of a trivial model
     "channel_step": 0,                # 0: every variant measured
     "spaces": ["model=mobilenet_v1,...", ...],   # what builds covered
     "measured": {"separable/14x14/512-512-512/s1": 1.23, ...},
     "interpolated": {...},            # filled from `measured` (coarse mode)
     "calibration": {"scale": 1.1, "offset_ms": 0.2}}   # optional, see predictor

Measured values are raw per-invoke medians, overhead included; the predictor
removes the overhead once per block (`pss_tf.latency.predictor`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from pss_tf import checks
from pss_tf.errors import ConfigError
from pss_tf.io_utils import atomic_write_json, read_json
from pss_tf.latency.variants import Variant
from pss_tf.space.config import SearchSpace

FORMAT = "pss_tf.latency_table"
VERSION = 1
# Header fields that must agree before two measurement runs may share a file.
SETUP_FIELDS = ("device", "runtime", "threads")
_SPACE_FIELDS = ("min_resolution", "max_resolution", "resolution_step", "min_width", "max_width")


@dataclasses.dataclass(frozen=True)
class SpaceSpec:
    """What a table must cover: a search space plus the data's shape."""

    space: SearchSpace
    small_input: bool = False
    in_channels: int = 3
    num_classes: int = 1000

    def __str__(self) -> str:
        """The `--space` text of tools/build_lut.py that re-creates this spec."""
        s = self.space
        parts = [f"model={s.model}"] + [f"{name}={getattr(s, name):g}" for name in _SPACE_FIELDS]
        parts += [f"small_input={str(self.small_input).lower()}", f"in_channels={self.in_channels}"]
        parts.append(f"num_classes={self.num_classes}")
        return ",".join(parts)

    @classmethod
    def parse(cls, text: str, model: str | None = None) -> "SpaceSpec":
        """Reads `key=value,...` (keys of `SearchSpace`, small_input, in_channels,
        num_classes, model); missing keys keep the ImageNet defaults."""
        values = {}
        for item in filter(None, (part.strip() for part in (text or "").split(","))):
            name, sep, value = item.partition("=")
            if not sep:
                raise ConfigError("space", f"expected key=value, got {item!r}")
            values[name.strip()] = value.strip()
        unknown = set(values) - set(_SPACE_FIELDS) - {"model", "small_input", "in_channels", "num_classes"}
        if unknown:
            raise ConfigError("space", f"unknown key(s) {sorted(unknown)}")
        model = values.pop("model", model)
        if model is None:
            raise ConfigError("space", "name the model (model=mobilenet_v1, or `model`)")
        try:
            space_args = {}
            for name in _SPACE_FIELDS:
                if name in values:
                    space_args[name] = (float if "width" in name else int)(values[name])
            small = values.get("small_input", "false").lower()
            if small not in ("true", "false", "1", "0"):
                raise ValueError(f"small_input must be true or false, got {small!r}")
            spec = cls(
                SearchSpace(model, **space_args),
                small in ("true", "1"),
                int(values.get("in_channels", 3)),
                int(values.get("num_classes", 1000)),
            )
        except ValueError as e:
            raise ConfigError("space", f"{e}") from None
        if spec.in_channels < 1 or spec.num_classes < 1:
            raise ConfigError("space", "in_channels and num_classes must be positive")
        return spec


def rebuild_command(path: str, spec: SpaceSpec, threads: int, channel_step: int = 0) -> str:
    """The command that adds what `spec` needs to the table at `path`."""
    command = f"python tools/build_lut.py --out={path} --space={spec} --threads={threads}"
    return command + (f" --channel_step={channel_step}" if channel_step else "")


class LatencyTable:
    """A lookup table in memory. Build it with `tools/build_lut.py`; read it with `load`."""

    def __init__(self, header: dict, measured: dict | None = None, interpolated: dict | None = None):
        self.header = dict(header)
        self.measured = dict(measured or {})
        self.interpolated = dict(interpolated or {})

    # Header fields.

    @property
    def threads(self) -> int:
        return int(self.header["threads"])

    @property
    def runtime(self) -> dict:
        return dict(self.header.get("runtime", {}))

    @property
    def invoke_overhead_ms(self) -> float:
        return float(self.header.get("invoke_overhead_ms", 0.0))

    @property
    def channel_step(self) -> int:
        return int(self.header.get("channel_step", 0))

    # Lookups.

    def __len__(self) -> int:
        return len(self.measured) + len(self.interpolated)

    def __contains__(self, key) -> bool:
        key = key.key if isinstance(key, Variant) else key
        return key in self.measured or key in self.interpolated

    def get(self, key, default=None):
        key = key.key if isinstance(key, Variant) else key
        if key in self.measured:
            return self.measured[key]
        return self.interpolated.get(key, default)

    def entries(self) -> dict[str, float]:
        """Every key's latency, measured values winning over interpolated ones."""
        return {**self.interpolated, **self.measured}

    def missing(self, variants) -> list[Variant]:
        return [v for v in variants if v not in self]

    def check_covers(self, variants, path: str, spec: SpaceSpec, field: str = "latency_cpu_lut") -> None:
        """Raises ConfigError naming the first missing block and how to add it."""
        missing = self.missing(variants)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ConfigError(
                field,
                f"the latency table {path} has no entry for block {missing[0].key}{more}, which the "
                f"search space needs. Measure the missing blocks with:\n  "
                + rebuild_command(path, spec, self.threads, self.channel_step)
            )

    def compatibility(self, runtime_version: str | None = None, threads: int | None = None) -> list[str]:
        """Why this table may not describe a runtime/thread set-up (empty: it does)."""
        problems = []
        version = self.runtime.get("version")
        if runtime_version is not None and version != runtime_version:
            problems.append(
                f"measured with {self.runtime.get('name', 'the runtime')} {version}, not {runtime_version}"
            )
        if threads is not None and self.threads != int(threads):
            problems.append(f"measured with {self.threads} thread(s), not {threads}")
        return problems

    @property
    def padding(self) -> str:
        """How the timed blocks' strided convs padded (`pss_tf.models.layers.conv_padding`); tables
        written before the option are "same"."""
        return self.header.get("padding", "same")

    def fingerprint(self) -> str:
        """A digest of everything that changes predictions; caches key on it."""
        payload = {
            "setup": {k: self.header.get(k) for k in SETUP_FIELDS},
            "overhead": self.invoke_overhead_ms,
            "calibration": self.header.get("calibration"),
            "entries": self.entries(),
        }
        if self.padding != "same":  # (tables of "same" padding keep the digests they had)
            payload["padding"] = self.padding
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    # Persistence.

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            **{k: v for k, v in self.header.items() if k not in ("format", "version")},
            "measured": dict(sorted(self.measured.items())),
            "interpolated": dict(sorted(self.interpolated.items())),
        }

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, field: str | None = None) -> "LatencyTable":
        """Reads and checks a table; ConfigError (naming `field`, the setting that
        gave the path) if it is not one."""
        where = os.fspath(path)
        if not os.path.isfile(path):
            raise ConfigError(field, f"{where}: no such file (build one with tools/build_lut.py)")
        data = _read(path, field)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(field, f"{where}: not a latency table (format is not {FORMAT!r})")
        if data.get("version") != VERSION:
            raise ConfigError(field, f"{where}: table version {data.get('version')!r}, this pss_tf reads version {VERSION}")
        for name in SETUP_FIELDS:
            if name not in data:
                raise ConfigError(field, f"{where}: header field {name!r} is missing")
        if not checks.is_integer(data["threads"], 1):
            raise ConfigError(field, f"{where}: threads must be a positive int, got {data['threads']!r}")
        tables = {}
        for section in ("measured", "interpolated"):
            entries = data.get(section, {})
            if not isinstance(entries, dict):
                raise ConfigError(field, f"{where}: {section!r} must map block keys to milliseconds")
            for key, value in entries.items():
                Variant.from_key(key)  # Raises on a malformed key.
                if not checks.is_finite_number(value) or value < 0:
                    raise ConfigError(field, f"{where}: {section} entry {key} is not a latency in ms: {value!r}")
            tables[section] = {k: float(v) for k, v in entries.items()}
        header = {k: v for k, v in data.items() if k not in ("measured", "interpolated")}
        return cls(header, tables["measured"], tables["interpolated"])

    def __repr__(self) -> str:
        return (
            f"LatencyTable({len(self.measured)} measured, {len(self.interpolated)} interpolated, "
            f"{self.threads} threads, {self.runtime.get('name')} {self.runtime.get('version')})"
        )


def _read(path, field):
    try:
        return read_json(path, "latency table")
    except ValueError as e:
        raise ConfigError(field, str(e)) from None
