"""The supernets' building blocks, found by kind: `make_block` and `static_block`.

Every block kind is one registry entry (`pss_tf.space.kinds`: its costs and
latency key) and one Keras class (`pss_tf.models.kinds`: its slimmable layer
and static twin, see `pss_tf.models.kinds.base`). This module looks the class
up by the path the entry names, so neither the supernet, extraction nor the
latency tables branch on kinds.

`padding` ("same" or "symmetric", `pss_tf.models.layers.conv_padding`) is an
architecture option that every face follows: "symmetric" pads a strided conv
by k // 2 pixels on every side, as the release's PyTorch convs do.

A group pass (`Supernet.call` with several configs) calls a block with
`slice_channels=(inputs, outputs)`: int32 vectors of the channels each slice's
subnet has at the block's input and output. The block then runs at the widest
widths (`out_channels` is the widest output; the input is already as wide as
its widest slice) and hands each batch norm the per-slice counts of the
channels it normalises; the input counts are needed because a depthwise batch
norm, and MobileNetV2's expansion (`expansion` x the *active* input), follow
the input's width, which differs between slices. Where a block's inner width
is a channel group of its own (layer-wise spaces, MobileNetV3, ResNet), the
block is called with `hidden_channels` (and a third, per-slice entry in
`slice_channels`), and `hidden` reaches `sliced_weights` and `apply_static`.
"""

from __future__ import annotations

import functools
import importlib

import keras

from pss_tf.models.kinds.base import ACTIVATIONS, BN_EPSILON, SlimBlock  # noqa: F401 (re-exported)
from pss_tf.models.kinds.bottleneck import BottleneckBlock  # noqa: F401
from pss_tf.models.kinds.conv import ConvBNReLU  # noqa: F401
from pss_tf.models.kinds.head import head_weights, static_head  # noqa: F401
from pss_tf.models.kinds.inverted_residual import InvertedResidualBlock  # noqa: F401
from pss_tf.models.kinds.max_pool import MaxPoolBlock  # noqa: F401
from pss_tf.models.kinds.separable import SeparableBlock  # noqa: F401
from pss_tf.space import architectures, kinds


@functools.lru_cache(maxsize=None)
def keras_class(kind: str):
    """The Keras class of block kind `kind` (the `keras_block` its registry entry names)."""
    module, _, name = kinds.get(kind).keras_block.partition(":")
    return getattr(importlib.import_module(module), name)


def make_block(
    spec: architectures.BlockSpec,
    base_channels,
    image_channels: int,
    name: str,
    bn_epsilon: float = BN_EPSILON,
    synchronized_bn: bool = False,
    padding: str = "same",
) -> SlimBlock:
    """The slimmable block for one row of an architecture table."""
    common = dict(bn_epsilon=bn_epsilon, synchronized_bn=synchronized_bn, padding=padding)
    return keras_class(spec.kind).from_spec(spec, base_channels, image_channels, name, **common)


def static_block(x, variant, name: str, keras_module=keras, padding: str = "same"):
    """The static block of a latency variant (`pss_tf.latency.variants.Variant`) from
    its shape alone: what a latency table entry times. A HEAD variant's `cout` is
    its classes."""
    return keras_class(variant.kind).static_variant(x, variant, name, keras_module=keras_module, padding=padding)
