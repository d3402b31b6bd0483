"""Block variants: the units a latency lookup table is measured in.

A variant is one block at one concrete shape: its kind, input size, input,
inner and output widths, stride, and whether it ends in a residual add. Two
subnets that share a variant run exactly the same ops there, so its latency is
measured once and looked up for every subnet (design note section 2). Besides
the architecture's blocks, every subnet ends in a `HEAD` variant: global
average pool plus classifier.

`subnet_variants` lists the variants of one config; `space_variants` lists
exactly the variants a search space can produce (resolutions, and the channel
counts its width codes round to), which is what a table must cover.

Where a block's inner width is a channel group of its own (layer-wise spaces,
ResNet-50), the variant carries it as a width of its own: `hidden` (and a
bottleneck's second inner width, `hidden2`), and an inverted residual says
whether it has an expand conv (`expand`), which its widths alone no longer
tell. A slot's variants are enumerated over the multipliers (genes) it reads,
so groups one gene ties together (ResNet-50's stages) vary together.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np

from pss_tf.space import architectures, kinds
from pss_tf.space.config import SearchSpace, SubnetConfig, make_divisible_array

HEAD = architectures.HEAD
_EXPAND = kinds.inverted_residual.EXPAND_FLAG


def _ceil_div(size, stride):
    return -(-size // stride)


@dataclasses.dataclass(frozen=True, order=True)
class Variant:
    """One block at one shape. `size` is the (square) input size; `hidden2` is a
    bottleneck's second inner width (0 for every other kind); `expand` whether an
    inverted residual has its expand conv (default: when `hidden` differs from `cin`).
    `kernel`, `se` and `activation` are the block's departures from its kind's
    defaults (0, False, ""; MobileNetV3's 5x5, squeeze-and-excite, hard-swish),
    and a head with a hidden layer of `hidden` units names its `activation`.
    Each kind checks its own fields and writes its key flags (`pss_tf.space.kinds`)."""

    kind: str
    size: int
    cin: int
    cout: int
    hidden: int
    stride: int = 1
    residual: bool = False
    hidden2: int = 0
    expand: bool | None = None
    kernel: int = 0
    se: bool = False
    activation: str = ""

    def __post_init__(self):
        if self.kind not in kinds.names():
            raise ValueError(f"kind: unknown block kind {self.kind!r}; expected one of {list(kinds.names())}")
        kind = kinds.get(self.kind)
        for name in ("size", "cin", "cout", "hidden", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name}: must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))
        if isinstance(self.hidden2, bool) or int(self.hidden2) != self.hidden2 or self.hidden2 < 0:
            raise ValueError(f"hidden2: a bottleneck's second inner width (a positive int; 0 otherwise), got {self.hidden2!r}")
        object.__setattr__(self, "hidden2", int(self.hidden2))
        object.__setattr__(self, "residual", bool(self.residual))
        if isinstance(self.kernel, bool) or int(self.kernel) != self.kernel or self.kernel < 0:
            raise ValueError(f"kernel: must be a positive int (0: the kind's), got {self.kernel!r}")
        # Defaults are stored as 0 / "", so a variant and its key's parse are equal.
        object.__setattr__(self, "kernel", 0 if self.kernel == kind.kernel else int(self.kernel))
        if self.activation and self.activation not in kinds.ACTIVATIONS:
            raise ValueError(f"activation: expected one of {list(kinds.ACTIVATIONS)}, got {self.activation!r}")
        object.__setattr__(self, "activation", "" if self.activation == kind.activation else self.activation)
        object.__setattr__(self, "se", bool(self.se))
        if self.se and not kind.accepts_se:
            raise ValueError(f"se: a {self.kind} block has no squeeze-and-excite")
        for name, value in kind.check_variant(self).items():
            object.__setattr__(self, name, value)

    @property
    def key(self) -> str:
        """The table key, e.g. `separable/14x14/512-512-512/s1` (cin-hidden-cout);
        a bottleneck's inner widths read `64.64`; flags after the kind (`+add`,
        `+expand`, `+k5`, `+se`, `+hs`) mark what the widths do not show."""
        flags = (["add"] if self.residual else []) + kinds.get(self.kind).variant_flags(self)
        kind = "+".join([self.kind] + flags)
        hidden = f"{self.hidden}.{self.hidden2}" if self.hidden2 else f"{self.hidden}"
        return f"{kind}/{self.size}x{self.size}/{self.cin}-{hidden}-{self.cout}/s{self.stride}"

    @classmethod
    def from_key(cls, key: str) -> "Variant":
        try:
            kind, size, widths, stride = key.split("/")
            kind, *flags = kind.split("+")
            if len(set(flags)) != len(flags):
                raise ValueError
            fields = {}
            for flag in flags:
                if flag in ("add", _EXPAND):
                    continue
                parsed = kinds.parse_flag(flag)
                if parsed is None:
                    raise ValueError
                fields.update(parsed)
            height, width = size.split("x")
            cin, hidden, cout = widths.split("-")
            hidden, _, hidden2 = hidden.partition(".")
            if height != width or not stride.startswith("s"):
                raise ValueError
            return cls(
                kind, int(height), int(cin), int(cout), int(hidden), int(stride[1:]), "add" in flags,
                int(hidden2 or 0), True if _EXPAND in flags else None, **fields,
            )
        except ValueError:
            raise ValueError(f"key: {key!r} is not a block variant key like 'separable/14x14/512-512-512/s1'") from None

    @property
    def options(self) -> tuple[int, bool, str]:
        """(kernel, se, activation): the departures from the kind's defaults."""
        return self.kernel, self.se, self.activation

    @property
    def output_size(self) -> int:
        return 1 if self.kind == HEAD else _ceil_div(self.size, self.stride)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One position of a subnet's block sequence: what varies there and how.

    `in_stage`/`out_stage` index the config's channel groups (None: fixed at
    `fixed_cin`/`fixed_cout`); `expansion` makes the hidden width unless
    `hidden_stage` names its group(s) (`BlockSpec.hidden_stage`). `size_of`
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
    hidden_stage: int | tuple[int, int] | None = None
    kernel: int = 0
    se: bool = False
    activation: str = ""
    fixed_hidden: int = 0  # A head's hidden layer (MobileNetV3).

    def size(self, resolution):
        for stride in self.strides_before:
            resolution = _ceil_div(resolution, stride)
        return resolution

    @property
    def hidden_stages(self) -> tuple[int, ...]:
        """The groups of the slot's own inner widths (none, one, or a bottleneck's two)."""
        if self.hidden_stage is None:
            return ()
        return self.hidden_stage if isinstance(self.hidden_stage, tuple) else (self.hidden_stage,)

    def hidden(self, cin):
        """The inner width that follows the input (slots without inner groups)."""
        if self.fixed_hidden:
            return self.fixed_hidden
        return cin * self.expansion if self.kind == architectures.INVERTED_RESIDUAL else cin

    @property
    def options(self) -> tuple[int, bool, str]:
        """(kernel, se, activation) as its variants store them (a kind's defaults as 0, "")."""
        kind = kinds.get(self.kind)
        kernel = 0 if self.kernel == kind.kernel else self.kernel
        return kernel, self.se, "" if self.activation == kind.activation else self.activation

    @property
    def expand(self) -> bool | None:
        """Whether an inverted residual slot has its expand conv (None: other kinds)."""
        return self.expansion != 1 if self.kind == architectures.INVERTED_RESIDUAL else None

    def variant(self, size: int, cin: int, cout: int, inner=()) -> Variant:
        """The variant at these widths; `inner`: the widths of `hidden_stages`."""
        hidden, hidden2 = (tuple(inner) + (0,))[:2] if inner else (self.hidden(cin), 0)
        return Variant(
            self.kind, size, cin, cout, hidden, self.stride, self.residual, hidden2, self.expand,
            self.kernel, self.se, self.activation,
        )


def slots(model: str, small_input: bool = False, in_channels: int = 3, num_classes: int = 1000) -> tuple[Slot, ...]:
    """The block sequence of every subnet of `model`, head included.

    Widths no multiplier scales (the image channels, MobileNetV2's 1280-channel
    last conv, the classes) become the slot's fixed widths.
    """
    arch = architectures.get_architecture(model, small_input)
    table = arch.full_channels

    def stage_or_fixed(stage):
        """(stage, fixed width): a multiplier's stage, or None and the fixed width."""
        if stage is None or stage < arch.num_groups:
            return stage, 0
        return None, table[stage]

    result, strides = [], []
    for block in arch.blocks:
        out_stage, fixed_cout = stage_or_fixed(block.out_stage)
        if block.in_stage is None:  # A stem: it reads the image.
            in_stage, fixed_cin = None, in_channels
        else:
            in_stage, fixed_cin = stage_or_fixed(block.in_stage)
        result.append(
            Slot(
                block.kind, block.stride, in_stage, out_stage, block.expansion, block.residual, tuple(strides),
                fixed_cin=fixed_cin, fixed_cout=fixed_cout, hidden_stage=block.hidden_stage,
                kernel=block.kernel, se=block.se, activation=block.act,
            )
        )
        strides.append(block.stride)
    in_stage, fixed_cin = stage_or_fixed(arch.blocks[-1].out_stage)
    result.append(Slot(
        HEAD, 1, in_stage, None, 1, False, tuple(strides), fixed_cin=fixed_cin, fixed_cout=num_classes,
        activation=arch.head_activation if arch.head_hidden else "", fixed_hidden=arch.head_hidden,
    ))
    return tuple(result)


def _variant(slot: Slot, resolution: int, channels) -> Variant:
    cin = slot.fixed_cin if slot.in_stage is None else int(channels[slot.in_stage])
    cout = slot.fixed_cout if slot.out_stage is None else int(channels[slot.out_stage])
    inner = tuple(int(channels[g]) for g in slot.hidden_stages)
    return slot.variant(slot.size(resolution), cin, cout, inner)


def subnet_variants(
    config: SubnetConfig, small_input: bool = False, in_channels: int = 3, num_classes: int = 1000
) -> list[Variant]:
    """The variants `config` runs, in order (stem first, head last)."""
    return [_variant(s, config.resolution, config.channels) for s in slots(config.model, small_input, in_channels, num_classes)]


def stage_channels(space: SearchSpace) -> list[np.ndarray]:
    """Every channel count each channel group can take in `space` (sorted, unique)."""
    base = architectures.get_architecture(space.model).base_channels
    return [np.unique(make_divisible_array(b * space.width_values)) for b in base]


@functools.lru_cache(maxsize=64)
def gene_levels(space: SearchSpace) -> list[list[dict[int, int]]]:
    """Per gene (multiplier), its distinct levels: `{group: channels}` of the groups it
    scales, thinnest first. Groups of one gene (ResNet-50's stages) take their widths together."""
    arch = architectures.get_architecture(space.model)
    rows = np.stack([make_divisible_array(b * space.width_values) for b in arch.base_channels], axis=1)
    levels = []
    for gene in range(arch.num_stages):
        groups = arch.groups_of(gene)
        unique = np.unique(rows[:, list(groups)], axis=0)
        levels.append([dict(zip(groups, (int(c) for c in row))) for row in unique])
    return levels


def slot_genes(slot: Slot, model: str) -> tuple[list[int], list[int]]:
    """The genes a slot reads (input, output, inner, without repeats) and, for each,
    the first of its groups the slot reads: the group whose width is the gene's coordinate."""
    arch = architectures.get_architecture(model)
    groups = [g for g in (slot.in_stage, slot.out_stage, *slot.hidden_stages) if g is not None]
    genes = list(dict.fromkeys(arch.genes[g] for g in groups))
    return genes, [next(g for g in groups if arch.genes[g] == gene) for gene in genes]


def slot_points(slot: Slot, space: SearchSpace) -> list[tuple[Variant, tuple[int, ...]]]:
    """Every variant the slot takes over `space`, each with its coordinates: the
    channels of one group (the first the slot reads) of every gene the slot reads,
    the grid a coarse table interpolates on. Sizes outermost, then the genes in
    the order the slot reads them (input, output, inner)."""
    genes, representative = slot_genes(slot, space.model)
    levels = gene_levels(space)
    sizes = sorted({slot.size(r) for r in space.resolutions})
    points = []
    for size in sizes:
        for combo in itertools.product(*(levels[gene] for gene in genes)):
            channels = {}
            for level in combo:
                channels.update(level)
            cin = slot.fixed_cin if slot.in_stage is None else channels[slot.in_stage]
            cout = slot.fixed_cout if slot.out_stage is None else channels[slot.out_stage]
            inner = tuple(channels[g] for g in slot.hidden_stages)
            points.append((slot.variant(size, cin, cout, inner), tuple(channels[g] for g in representative)))
    return points


def slot_variants(slot: Slot, space: SearchSpace) -> list[Variant]:
    """The variants one slot can take over `space`."""
    return [v for v, _ in slot_points(slot, space)]


def space_variants(
    space: SearchSpace, small_input: bool = False, in_channels: int = 3, num_classes: int = 1000
) -> list[Variant]:
    """Exactly the distinct variants the subnets of `space` can run, stem first."""
    found = {}
    for slot in slots(space.model, small_input, in_channels, num_classes):
        found.update(dict.fromkeys(slot_variants(slot, space)))
    return list(found)
