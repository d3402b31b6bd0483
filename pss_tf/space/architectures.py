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

from pss_tf.space.channels import make_divisible

# Block kinds.
STEM = "stem"  # 3x3 conv from the image channels.
SEPARABLE = "separable"  # MobileNetV1: 3x3 depthwise on the input width, 1x1 pointwise.
INVERTED_RESIDUAL = "inverted_residual"  # MobileNetV2: 1x1 expand, 3x3 depthwise, 1x1 project.
POINTWISE = "pointwise"  # 1x1 conv (MobileNetV2's last conv).
HEAD = "head"  # Global average pool and the classifier, the end of every subnet.

STEM_KERNEL = 3
DEPTHWISE_KERNEL = 3


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block of a supernet.

    `in_stage` and `out_stage` index the architecture's channel table
    (`Architecture.channel_table`): the channels of the config's width
    multipliers, then the fixed channel counts no multiplier scales. `in_stage`
    is None for the stem, which reads the image. An inverted residual block's
    expanded width is `expansion` x its input's (stage-wise spaces), or the
    table entry `hidden_stage`, a multiplier of its own (layer-wise spaces).
    """

    kind: str
    stride: int
    in_stage: int | None
    out_stage: int
    expansion: int = 1
    residual: bool = False
    hidden_stage: int | None = None

    def hidden_group(self, channels):
        """The expanded width when it is a channel group of its own (layer-wise), else None."""
        return None if self.hidden_stage is None else channels[self.hidden_stage]

    def hidden(self, channels, in_channels):
        """The block's expanded width, given the channel table and its input width."""
        own = self.hidden_group(channels)
        return in_channels * self.expansion if own is None else own


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A supernet's shape: base channels per multiplier, fixed channels, blocks.

    `fixed_channels` are layers no width multiplier scales (MobileNetV2's last
    1x1 conv keeps 1280 channels in the release); they follow the multipliers'
    stages in the channel table.
    """

    name: str
    base_channels: tuple[int, ...]
    blocks: tuple[BlockSpec, ...]
    fixed_channels: tuple[int, ...] = ()

    @property
    def num_stages(self) -> int:
        """Width multipliers a config of this architecture has."""
        return len(self.base_channels)

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
    def layerwise(self) -> bool:
        """Whether a block's hidden width is a channel group of its own (AutoSlim's and BCNet's spaces)."""
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


_BUILDERS = {
    "mobilenet_v1": _mobilenet_v1,
    "mobilenet_v2": _mobilenet_v2,
    "mobilenet_v2_slim_last_conv": _mobilenet_v2_slim_last_conv,
    "mobilenet_v2_layerwise": _mobilenet_v2_layerwise,
}
# The model families; `<family>_<w>x` is a family at base width w (see `model_name`).
MODEL_NAMES = tuple(sorted(_BUILDERS))
# The Keras applications model each supernet's widest subnet reproduces.
KERAS_APPLICATIONS = {
    "mobilenet_v1": "MobileNet",
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v2_slim_last_conv": "MobileNetV2",
    "mobilenet_v2_layerwise": "MobileNetV2",
}
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
