"""The inverted residual block of MobileNetV2 and MobileNetV3: a 1x1 expand conv
(absent when the expanded width is the input's), a depthwise conv, optionally
squeeze-and-excite, a linear 1x1 projection, and a residual add where input and
output share a channel group.

The expanded (hidden) width is `expansion` x the active input's, or a channel
group of its own (`BlockSpec.hidden_stage`). Squeeze-and-excite (MobileNetV3,
torchvision's `SqueezeExcitation`): global average pool, 1x1 conv with bias to
`squeeze_channels(hidden)`, ReLU, 1x1 conv with bias back to the hidden width,
hard sigmoid, and the product with the block's features; its width follows the
block's active hidden width.
"""

from __future__ import annotations

from pss_tf.space.channels import make_divisible, make_divisible_array
from pss_tf.space.kinds.base import BlockKind, bn_weights, ceil_div, register

EXPAND_FLAG = "expand"  # Key flag: an expand conv where the widths do not show one.


def squeeze_channels(hidden):
    """Squeeze-and-excite's inner width: `make_divisible(hidden // 4)` (ints or arrays)."""
    if hasattr(hidden, "shape"):
        return make_divisible_array(hidden // 4)
    return make_divisible(hidden // 4)


class InvertedResidualKind(BlockKind):
    name = "inverted_residual"
    keras_block = "pss_tf.models.kinds.inverted_residual:InvertedResidualBlock"
    kernel = 3
    accepts_se = True

    def inner(self, spec, table, cin):
        return spec.hidden(table, cin), 0

    def macs(self, spec, table, cin, cout, size, pools=True):
        hidden = spec.hidden(table, cin)
        k = spec.kernel
        total = 0
        if spec.expansion != 1:
            total = total + cin * hidden * size * size
        size = ceil_div(size, spec.stride)
        total = total + k * k * hidden * size * size
        if spec.se:
            squeeze = squeeze_channels(hidden)
            if pools:
                total = total + size * size * hidden
            total = total + 2 * hidden * squeeze
        return total + hidden * cout * size * size, size

    def params(self, spec, table, cin, cout, bn=4):
        hidden = spec.hidden(table, cin)
        k = spec.kernel
        total = 0
        if spec.expansion != 1:
            total = total + cin * hidden + bn_weights(hidden, bn)
        total = total + k * k * hidden + bn_weights(hidden, bn)
        if spec.se:
            squeeze = squeeze_channels(hidden)
            total = total + 2 * hidden * squeeze + squeeze + hidden
        return total + hidden * cout + bn_weights(cout, bn)

    def check_variant(self, variant):
        super().check_variant(variant)
        expand = (variant.hidden != variant.cin) if variant.expand is None else bool(variant.expand)
        if not expand and variant.hidden != variant.cin:
            raise ValueError(f"expand: an inverted residual without an expand conv has hidden == cin, got {variant.hidden}")
        return {"expand": expand}

    def variant_flags(self, variant):
        flags = [EXPAND_FLAG] if variant.expand and variant.hidden == variant.cin else []
        return flags + super().variant_flags(variant)


INVERTED_RESIDUAL = register(InvertedResidualKind())
