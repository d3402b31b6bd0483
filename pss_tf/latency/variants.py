"""Block variants: the units a latency lookup table is measured in.

A variant is one block at one concrete shape: its kind, input size, input,
hidden and output widths, stride, and whether it ends in a residual add. Two
subnets that share a variant run exactly the same ops there, so its latency is
measured once and looked up for every subnet (design note section 2). Besides
the architecture's blocks, every subnet ends in a `HEAD` variant: global
average pool plus classifier.

`subnet_variants` lists the variants of one config; `space_variants` lists
exactly the variants a search space can produce (resolutions, and the channel
counts its width codes round to), which is what a table must cover.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pss_tf.space import architectures
from pss_tf.space.config import SearchSpace, SubnetConfig, make_divisible_array

HEAD = architectures.HEAD
KINDS = (
    architectures.STEM,
    architectures.SEPARABLE,
    architectures.INVERTED_RESIDUAL,
    architectures.POINTWISE,
    HEAD,
)


def _ceil_div(size, stride):
    return -(-size // stride)


@dataclasses.dataclass(frozen=True, order=True)
class Variant:
    """One block at one shape. `size` is the (square) input size."""

    kind: str
    size: int
    cin: int
    cout: int
    hidden: int
    stride: int = 1
    residual: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: unknown block kind {self.kind!r}; expected one of {list(KINDS)}")
        for name in ("size", "cin", "cout", "hidden", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name}: must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "residual", bool(self.residual))

    @property
    def key(self) -> str:
        """The table key, e.g. `separable/14x14/512-512-512/s1` (cin-hidden-cout)."""
        kind = f"{self.kind}+add" if self.residual else self.kind
        return f"{kind}/{self.size}x{self.size}/{self.cin}-{self.hidden}-{self.cout}/s{self.stride}"

    @classmethod
    def from_key(cls, key: str) -> "Variant":
        try:
            kind, size, widths, stride = key.split("/")
            residual = kind.endswith("+add")
            height, width = size.split("x")
            cin, hidden, cout = (int(v) for v in widths.split("-"))
            if height != width or not stride.startswith("s"):
                raise ValueError
            return cls(kind.removesuffix("+add"), int(height), cin, cout, hidden, int(stride[1:]), residual)
        except ValueError:
            raise ValueError(f"key: {key!r} is not a block variant key like 'separable/14x14/512-512-512/s1'") from None

    @property
    def output_size(self) -> int:
        return 1 if self.kind == HEAD else _ceil_div(self.size, self.stride)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One position of a subnet's block sequence: what varies there and how.

    `in_stage`/`out_stage` index the config's channels (None: fixed at
    `fixed_cin`/`fixed_cout`); `expansion` makes the hidden width. `size_of`
    maps a resolution to this slot's input size.
    """

    kind: str
    stride: int
    in_stage: int | None
    out_stage: int | None
    expansion: int
    residual: bool
    strides_before: tuple[int, ...]
    fixed_cin: int = 0
    fixed_cout: int = 0

    def size(self, resolution):
        for stride in self.strides_before:
            resolution = _ceil_div(resolution, stride)
        return resolution

    def hidden(self, cin):
        return cin * self.expansion if self.kind == architectures.INVERTED_RESIDUAL else cin


def slots(model: str, small_input: bool = False, in_channels: int = 3, num_classes: int = 1000) -> tuple[Slot, ...]:
    """The block sequence of every subnet of `model`, head included.

    Widths no multiplier scales (the image channels, MobileNetV2's 1280-channel
    last conv, the classes) become the slot's fixed widths.
    """
    arch = architectures.get_architecture(model, small_input)
    if arch.has_inner_groups:  # A variant's hidden width follows its input here; there it does not.
        raise ValueError(
            f"model: latency tables of spaces whose blocks have inner widths of their own ({model}) are not built yet"
        )
    table = arch.full_channels

    def stage_or_fixed(stage):
        """(stage, fixed width): a multiplier's stage, or None and the fixed width."""
        if stage is None or stage < arch.num_groups:
            return stage, 0
        return None, table[stage]

    result, strides = [], []
    for block in arch.blocks:
        out_stage, fixed_cout = stage_or_fixed(block.out_stage)
        if block.kind in architectures.STEMS:
            in_stage, fixed_cin = None, in_channels
        else:
            in_stage, fixed_cin = stage_or_fixed(block.in_stage)
        result.append(
            Slot(
                block.kind, block.stride, in_stage, out_stage, block.expansion, block.residual, tuple(strides),
                fixed_cin=fixed_cin, fixed_cout=fixed_cout,
            )
        )
        strides.append(block.stride)
    in_stage, fixed_cin = stage_or_fixed(arch.blocks[-1].out_stage)
    result.append(Slot(HEAD, 1, in_stage, None, 1, False, tuple(strides), fixed_cin=fixed_cin, fixed_cout=num_classes))
    return tuple(result)


def _variant(slot: Slot, resolution: int, channels) -> Variant:
    cin = slot.fixed_cin if slot.in_stage is None else int(channels[slot.in_stage])
    cout = slot.fixed_cout if slot.out_stage is None else int(channels[slot.out_stage])
    return Variant(slot.kind, slot.size(resolution), cin, cout, slot.hidden(cin), slot.stride, slot.residual)


def subnet_variants(
    config: SubnetConfig, small_input: bool = False, in_channels: int = 3, num_classes: int = 1000
) -> list[Variant]:
    """The variants `config` runs, in order (stem first, head last)."""
    return [_variant(s, config.resolution, config.channels) for s in slots(config.model, small_input, in_channels, num_classes)]


def stage_channels(space: SearchSpace) -> list[np.ndarray]:
    """Every channel count each stage can take in `space` (sorted, unique)."""
    base = architectures.get_architecture(space.model).base_channels
    return [np.unique(make_divisible_array(b * space.width_values)) for b in base]


def slot_variants(
    slot: Slot, space: SearchSpace, channels: list[np.ndarray] | None = None
) -> list[Variant]:
    """The variants one slot can take over `space` (sorted)."""
    channels = stage_channels(space) if channels is None else channels
    sizes = sorted({slot.size(r) for r in space.resolutions})
    cins = [slot.fixed_cin] if slot.in_stage is None else channels[slot.in_stage].tolist()
    if slot.out_stage is None:
        pairs = [(cin, slot.fixed_cout) for cin in cins]
    elif slot.in_stage == slot.out_stage:  # One multiplier drives both widths.
        pairs = [(c, c) for c in cins]
    else:
        pairs = [(cin, cout) for cin in cins for cout in channels[slot.out_stage].tolist()]
    return [
        Variant(slot.kind, size, cin, cout, slot.hidden(cin), slot.stride, slot.residual)
        for size in sizes
        for cin, cout in pairs
    ]


def space_variants(
    space: SearchSpace, small_input: bool = False, in_channels: int = 3, num_classes: int = 1000
) -> list[Variant]:
    """Exactly the distinct variants the subnets of `space` can run, stem first."""
    channels = stage_channels(space)
    found = {}
    for slot in slots(space.model, small_input, in_channels, num_classes):
        found.update(dict.fromkeys(slot_variants(slot, space, channels)))
    return list(found)
