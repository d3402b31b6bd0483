"""Static descriptions of the supernet architectures.

One table per model says which blocks exist, which width multiplier scales each
block's output and where the strides are. The cost model, the Keras supernets and
the latency lookup tables all read these tables, so the three can never disagree
about what a subnet is.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

from pss_tf.space import kinds
from pss_tf.space.channels import make_divisible, make_divisible_array

# Block kinds (`pss_tf.space.kinds`: each kind's costs and latency key, one module each).
STEM = kinds.conv.STEM.name  # 3x3 conv from the image channels, ReLU6 (MobileNets).
RESNET_STEM = kinds.conv.RESNET_STEM.name  # 7x7 conv from the image channels, ReLU (ResNet).
STEMS = tuple(k.name for k in (kinds.conv.STEM, kinds.conv.RESNET_STEM))
SEPARABLE = kinds.separable.SEPARABLE.name  # MobileNetV1: depthwise on the input width, 1x1 pointwise.
INVERTED_RESIDUAL = kinds.inverted_residual.INVERTED_RESIDUAL.name  # MobileNetV2/V3: expand, depthwise, project.
POINTWISE = kinds.conv.POINTWISE.name  # 1x1 conv (MobileNetV2's and V3's last conv).
MAX_POOL = kinds.max_pool.MAX_POOL.name  # 3x3 max pool, no weights (ResNet's after its stem).
BOTTLENECK = kinds.bottleneck.BOTTLENECK.name  # ResNet: 1x1, 3x3 (the stride), 1x1, plus a shortcut.
HEAD = kinds.head.HEAD.name  # Global average pool and the classifier, the end of every subnet.
RELU6, RELU, HARD_SWISH = kinds.RELU6, kinds.RELU, kinds.HARD_SWISH


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block of a supernet.

    `in_stage` and `out_stage` index the architecture's channel table
    (`Architecture.channel_table`): the channel groups the config's width
    multipliers scale, then the fixed channel counts no multiplier scales.
    `in_stage` is None for the stem, which reads the image. An inverted residual
    block's expanded width is `expansion` x its input's (stage-wise spaces), or
    the table entry `hidden_stage`, a group of its own (layer-wise spaces; then
    `expansion` only says whether there is an expand conv: 1 means none). A
    bottleneck's `hidden_stage` is a pair, its 1x1 and 3x3 convs' widths; its
    shortcut is the identity when `residual`, else a strided 1x1 projection.

    `kernel_size` (its main conv's; 0: the kind's default), `activation` (None:
    the kind's default) and `se` (squeeze-and-excite, kinds that accept it) are
    the block's own, so MobileNetV3's 5x5 hard-swish blocks are rows like any other.
    """

    kind: str
    stride: int
    in_stage: int | None
    out_stage: int
    expansion: int = 1
    residual: bool = False
    hidden_stage: int | tuple[int, int] | None = None
    kernel_size: int = 0
    se: bool = False
    activation: str | None = None

    def __post_init__(self):
        kind = kinds.get(self.kind)  # ValueError naming the kinds.
        if self.se and not kind.accepts_se:
            raise ValueError(f"se: a {self.kind} block has no squeeze-and-excite")
        if self.activation is not None and self.activation not in kinds.ACTIVATIONS:
            raise ValueError(f"activation: expected one of {list(kinds.ACTIVATIONS)}, got {self.activation!r}")

    @property
    def kernel(self) -> int:
        """The main conv's kernel: the block's own, else its kind's."""
        return self.kernel_size or kinds.get(self.kind).kernel

    @property
    def act(self) -> str:
        """The block's activation: its own, else its kind's."""
        return self.activation or kinds.get(self.kind).activation

    def hidden_group(self, channels):
        """The inner width(s) when they are channel groups of their own (an int, or a
        bottleneck's pair), else None."""
        if self.hidden_stage is None:
            return None
        if isinstance(self.hidden_stage, tuple):
            return tuple(channels[i] for i in self.hidden_stage)
        return channels[self.hidden_stage]

    def hidden(self, channels, in_channels):
        """The block's expanded width, given the channel table and its input width."""
        own = self.hidden_group(channels)
        return in_channels * self.expansion if own is None else own


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A supernet's shape: base channels per channel group, fixed channels, blocks.

    `base_channels` lists the channel groups a multiplier scales (a group: the
    layers whose widths must agree). `gene_of` names the multiplier (the gene)
    each group follows; None gives every group its own. ResNet-50's stage-wise
    space shares one multiplier between a stage's inner widths and its output.
    `fixed_channels` are layers no width multiplier scales (MobileNetV2's last
    1x1 conv keeps 1280 channels in the release); they follow the groups in
    the channel table. `head_hidden` is the fixed width of a hidden linear layer
    between the pool and the classifier, with `head_activation` (MobileNetV3's
    1280 or 1024 with hard-swish; 0: none).
    """

    name: str
    base_channels: tuple[int, ...]
    blocks: tuple[BlockSpec, ...]
    fixed_channels: tuple[int, ...] = ()
    gene_of: tuple[int, ...] | None = None
    head_hidden: int = 0
    head_activation: str = ""

    def __post_init__(self):
        if self.gene_of is not None and (
            len(self.gene_of) != len(self.base_channels) or set(self.gene_of) != set(range(max(self.gene_of) + 1))
        ):
            raise ValueError(f"gene_of: {self.gene_of} does not map {len(self.base_channels)} groups onto genes 0..n-1")

    @property
    def num_stages(self) -> int:
        """Width multipliers (genes) a config of this architecture has."""
        return len(self.base_channels) if self.gene_of is None else max(self.gene_of) + 1

    @property
    def num_groups(self) -> int:
        """Channel groups a multiplier scales: the entries of a config's `channels`."""
        return len(self.base_channels)

    @property
    def genes(self) -> tuple[int, ...]:
        """The gene of every channel group."""
        return tuple(range(self.num_groups)) if self.gene_of is None else self.gene_of

    def channels(self, widths) -> tuple[int, ...]:
        """The active channels of every group of a config with these multipliers."""
        return tuple(make_divisible(c * widths[g]) for c, g in zip(self.base_channels, self.genes))

    def channels_array(self, widths) -> list:
        """`channels` for a batch of multiplier rows (n, genes): one (n,) array per group."""
        widths = np.asarray(widths, dtype=np.float64)
        return [make_divisible_array(c * widths[:, g]) for c, g in zip(self.base_channels, self.genes)]

    def groups_of(self, gene: int) -> tuple[int, ...]:
        """The channel groups multiplier `gene` scales."""
        return tuple(i for i, g in enumerate(self.genes) if g == gene)

    def channel_table(self, channels) -> list:
        """Channels by table index: the multipliers' (`channels`), then the fixed ones.

        `channels` holds ints (one config) or arrays (many); fixed entries are
        broadcast to the same shape.
        """
        channels = list(channels)
        if not self.fixed_channels:
            return channels
        like = channels[0]
        fixed = [like * 0 + c if hasattr(like, "shape") else c for c in self.fixed_channels]
        return channels + fixed

    @property
    def has_inner_groups(self) -> bool:
        """Whether some block's inner width is a channel group of its own rather than
        its input's times an expansion (layer-wise spaces, ResNet-50)."""
        return any(block.hidden_stage is not None for block in self.blocks)

    @property
    def full_channels(self) -> tuple[int, ...]:
        """The widest channel table: every multiplier at 1."""
        return tuple(self.base_channels) + tuple(self.fixed_channels)


def _scaled(channels, base_width: float) -> tuple[int, ...]:
    """Base channel counts of a network `base_width` times as wide (MobileNet's rounding)."""
    return tuple(c if base_width == 1 else make_divisible(c * base_width) for c in channels)


def _mobilenet_v1(stem_stride: int, base_width: float) -> Architecture:
    outputs = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
    strides = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
    blocks = [BlockSpec(STEM, stem_stride, None, 0)]
    for i, stride in enumerate(strides):
        blocks.append(BlockSpec(SEPARABLE, stride, i, i + 1))
    return Architecture(model_name("mobilenet_v1", base_width), _scaled((32,) + outputs, base_width), tuple(blocks))


def _mobilenet_v2(stem_stride: int, base_width: float, slim_last_conv: bool = False) -> Architecture:
    """MobileNetV2. As in the release, the last 1x1 conv keeps 1280 channels and
    the classifier reads 1280 features; `slim_last_conv` gives that conv a ninth
    multiplier of its own (pss_tf's extension, `mobilenet_v2_slim_last_conv`).
    Wider than 1x, that conv widens too (1920 at 1.5x: Keras', AutoSlim's and BCNet's)."""
    # (expansion, output channels, repeats, first stride) per stage.
    stages = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )
    blocks = [BlockSpec(STEM, stem_stride, None, 0)]
    for stage, (expansion, _, repeats, first_stride) in enumerate(stages, start=1):
        for repeat in range(repeats):
            if repeat == 0:
                blocks.append(
                    BlockSpec(INVERTED_RESIDUAL, first_stride, stage - 1, stage, expansion)
                )
            else:
                # Later blocks of a stage read and write the stage's own width, so
                # their shapes always match and the residual is always active.
                blocks.append(
                    BlockSpec(INVERTED_RESIDUAL, 1, stage, stage, expansion, residual=True)
                )
    blocks.append(BlockSpec(POINTWISE, 1, 7, 8))
    base = _scaled((32,) + tuple(s[1] for s in stages), base_width)
    last = _scaled((1280,), max(base_width, 1.0))
    if slim_last_conv:
        return Architecture(model_name("mobilenet_v2_slim_last_conv", base_width), base + last, tuple(blocks))
    return Architecture(model_name("mobilenet_v2", base_width), base, tuple(blocks), fixed_channels=last)


def _mobilenet_v2_slim_last_conv(stem_stride: int, base_width: float) -> Architecture:
    return _mobilenet_v2(stem_stride, base_width, slim_last_conv=True)


def _mobilenet_v2_layerwise(stem_stride: int, base_width: float) -> Architecture:
    """MobileNetV2 with every channel group a multiplier of its own (AutoSlim's and
    BCNet's pruning space): the stem, each stage's output (shared by the blocks a
    residual joins), the last conv, then each expanding block's hidden width,
    independent of its input (base: 6 x its input's base width)."""
    stage_wise = _mobilenet_v2(stem_stride, base_width, slim_last_conv=True)
    base = list(stage_wise.base_channels)
    blocks = []
    for block in stage_wise.blocks:
        if block.kind == INVERTED_RESIDUAL and block.expansion != 1:
            base.append(base[block.in_stage] * block.expansion)
            block = dataclasses.replace(block, hidden_stage=len(base) - 1)
        blocks.append(block)
    return Architecture(model_name("mobilenet_v2_layerwise", base_width), tuple(base), tuple(blocks))


def _resnet50(stem_stride: int, base_width: float, layerwise: bool = False) -> Architecture:
    """ResNet-50 as the pruning papers use it (torchvision's layout): a 7x7 stem, a
    3x3 max pool, 16 bottlenecks (stride in the 3x3, a projection shortcut on
    each stage's first block), no conv biases, ReLU. Stage-wise (PSS's kind of
    space), a stage's multiplier scales its inner widths and its output alike;
    layer-wise, every bottleneck's two inner widths and every stage's output are
    genes of their own. `small_input` (stem stride 1) drops the max pool too."""
    # (inner width, output width, blocks, first stride) per stage.
    stages = ((64, 256, 3, 1), (128, 512, 4, 2), (256, 1024, 6, 2), (512, 2048, 3, 2))
    base = [64] + [out for _, out, _, _ in stages]  # stem, stage outputs
    gene_of = list(range(len(base)))
    blocks = [BlockSpec(RESNET_STEM, stem_stride, None, 0)]
    if stem_stride > 1:
        blocks.append(BlockSpec(MAX_POOL, 2, 0, 0))
    for stage, (inner, _, repeats, first_stride) in enumerate(stages, start=1):
        if not layerwise:
            base.append(inner)
            gene_of.append(stage)
        for repeat in range(repeats):
            if layerwise:
                base += [inner, inner]
            hidden = (len(base) - 2, len(base) - 1) if layerwise else (len(base) - 1,) * 2
            first = repeat == 0
            blocks.append(BlockSpec(
                BOTTLENECK, first_stride if first else 1, stage - 1 if first else stage, stage,
                residual=not first, hidden_stage=hidden,
            ))
    family = "resnet50_layerwise" if layerwise else "resnet50"
    return Architecture(
        model_name(family, base_width), _scaled(tuple(base), base_width), tuple(blocks),
        gene_of=None if layerwise else tuple(gene_of),
    )


def _resnet50_layerwise(stem_stride: int, base_width: float) -> Architecture:
    return _resnet50(stem_stride, base_width, layerwise=True)


# MobileNetV3 (Howard et al. 2019) in torchvision's layout: per inverted residual block
# (kernel, expanded width, output width, squeeze-and-excite, activation, stride).
_MOBILENET_V3_LARGE = (
    (3, 16, 16, False, RELU, 1),
    (3, 64, 24, False, RELU, 2),
    (3, 72, 24, False, RELU, 1),
    (5, 72, 40, True, RELU, 2),
    (5, 120, 40, True, RELU, 1),
    (5, 120, 40, True, RELU, 1),
    (3, 240, 80, False, HARD_SWISH, 2),
    (3, 200, 80, False, HARD_SWISH, 1),
    (3, 184, 80, False, HARD_SWISH, 1),
    (3, 184, 80, False, HARD_SWISH, 1),
    (3, 480, 112, True, HARD_SWISH, 1),
    (3, 672, 112, True, HARD_SWISH, 1),
    (5, 672, 160, True, HARD_SWISH, 2),
    (5, 960, 160, True, HARD_SWISH, 1),
    (5, 960, 160, True, HARD_SWISH, 1),
)
_MOBILENET_V3_SMALL = (
    (3, 16, 16, True, RELU, 2),
    (3, 72, 24, False, RELU, 2),
    (3, 88, 24, False, RELU, 1),
    (5, 96, 40, True, HARD_SWISH, 2),
    (5, 240, 40, True, HARD_SWISH, 1),
    (5, 240, 40, True, HARD_SWISH, 1),
    (5, 120, 48, True, HARD_SWISH, 1),
    (5, 144, 48, True, HARD_SWISH, 1),
    (5, 288, 96, True, HARD_SWISH, 2),
    (5, 576, 96, True, HARD_SWISH, 1),
    (5, 576, 96, True, HARD_SWISH, 1),
)
_MOBILENET_V3_STEM = 16
_MOBILENET_V3_LAST = {"mobilenet_v3_large": 1280, "mobilenet_v3_small": 1024}  # The head's hidden layer.


def _mobilenet_v3(family: str, stem_stride: int, base_width: float, layerwise: bool = False) -> Architecture:
    """MobileNetV3-Large or -Small as torchvision builds it: a 3x3 hard-swish stem to
    16, the inverted residual blocks of the table (an expand conv where the
    expanded width differs from the input's, a residual add where stride 1 keeps
    the width), a 1x1 hard-swish conv to 6x the last output, then pool, a
    hidden linear layer (1280 / 1024, hard-swish) and the classifier. Every
    width is `make_divisible(width * base_width)`; the last conv is 6x the
    scaled last output.

    Channel groups: the stem's output and each run of residual blocks' output;
    the last conv; each expand conv's width. Stage-wise (PSS's kind of space),
    one multiplier per output group (the stem's, each stage's, the last
    conv's) also scales the expanded widths of the blocks writing that group;
    layer-wise, every expanded width is a gene of its own. The head's hidden
    layer keeps its width, as MobileNetV2's last conv does in the PSS release.
    """
    table = _MOBILENET_V3_LARGE if family.startswith("mobilenet_v3_large") else _MOBILENET_V3_SMALL
    last_hidden = _MOBILENET_V3_LAST[family.replace("_layerwise", "")]
    outputs = [_scaled((_MOBILENET_V3_STEM,), base_width)[0]]  # output groups: stem, stages, then the last conv
    rows = []  # (kernel, expanded, se, activation, stride, in group, out group, residual)
    current = 0
    for kernel, expanded, out, se, activation, stride in table:
        expanded, out = _scaled((expanded, out), base_width)
        residual = stride == 1 and outputs[current] == out
        if not residual:
            outputs.append(out)
        rows.append((kernel, expanded, se, activation, stride, current, len(outputs) - 1, residual))
        current = len(outputs) - 1
    last_conv = len(outputs)
    outputs.append(6 * outputs[current])
    base, gene_of = list(outputs), list(range(len(outputs)))
    blocks = [BlockSpec(STEM, stem_stride, None, 0, activation=HARD_SWISH)]
    for kernel, expanded, se, activation, stride, in_group, out_group, residual in rows:
        hidden_stage, expansion = None, 1
        if expanded != base[in_group]:  # An expand conv to a width of its own.
            base.append(expanded)
            gene_of.append(len(gene_of) if layerwise else out_group)
            hidden_stage, expansion = len(base) - 1, max(2, round(expanded / base[in_group]))
        blocks.append(BlockSpec(
            INVERTED_RESIDUAL, stride, in_group, out_group, expansion, residual, hidden_stage,
            kernel_size=kernel, se=se, activation=activation,
        ))
    blocks.append(BlockSpec(POINTWISE, 1, current, last_conv, activation=HARD_SWISH))
    return Architecture(
        model_name(family, base_width), tuple(base), tuple(blocks), gene_of=None if layerwise else tuple(gene_of),
        head_hidden=_scaled((last_hidden,), base_width)[0], head_activation=HARD_SWISH,
    )


_BUILDERS = {
    "mobilenet_v1": _mobilenet_v1,
    "mobilenet_v2": _mobilenet_v2,
    "mobilenet_v2_slim_last_conv": _mobilenet_v2_slim_last_conv,
    "mobilenet_v2_layerwise": _mobilenet_v2_layerwise,
    "resnet50": _resnet50,
    "resnet50_layerwise": _resnet50_layerwise,
}
for _family in ("mobilenet_v3_large", "mobilenet_v3_small"):
    _BUILDERS[_family] = functools.partial(_mobilenet_v3, _family)
    _BUILDERS[f"{_family}_layerwise"] = functools.partial(_mobilenet_v3, f"{_family}_layerwise", layerwise=True)
# The model families; `<family>_<w>x` is a family at base width w (see `model_name`).
MODEL_NAMES = tuple(sorted(_BUILDERS))
_WIDER = re.compile(r"^(?P<family>[a-z0-9_]+?)_(?P<width>[0-9]+(?:\.[0-9]+)?)x$")
MAX_BASE_WIDTH = 4.0


def model_name(family: str, base_width: float = 1.0) -> str:
    """The name of `family` at `base_width`: the family's own at 1, `mobilenet_v2_1.5x` at 1.5."""
    return family if base_width == 1 else f"{family}_{base_width:g}x"


def parse_model(name: str) -> tuple[str, float]:
    """(family, base width) of a model name; ValueError naming `model` if it is none.

    A base width lies in (0, 4] and is written as `model_name` writes it
    (`mobilenet_v2_1.5x`, not `_1.50x`), so one network has one name.
    """
    if name in _BUILDERS:
        return name, 1.0
    match = _WIDER.match(name) if isinstance(name, str) else None
    if match and match["family"] in _BUILDERS:
        width = float(match["width"])
        if 0 < width <= MAX_BASE_WIDTH and width != 1 and model_name(match["family"], width) == name:
            return match["family"], width
    raise ValueError(
        f"model: unknown model {name!r}; expected one of {list(MODEL_NAMES)}, or one of them at a base width w "
        f"in (0, {MAX_BASE_WIDTH:g}] other than 1 as <model>_<w>x (mobilenet_v2_1.5x)"
    )


@functools.lru_cache(maxsize=None)
def get_architecture(name: str, small_input: bool = False) -> Architecture:
    """Returns the architecture table of `name` (a family, or a family at a base width).

    `small_input` makes the stem stride 1 instead of 2, so that 28 to 64 pixel
    images (Fashion-MNIST, CIFAR) still have a few pixels left in the last stage.
    """
    family, base_width = parse_model(name)
    return _BUILDERS[family](1 if small_input else 2, base_width)
