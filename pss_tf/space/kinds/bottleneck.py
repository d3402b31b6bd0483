"""ResNet's bottleneck (torchvision's, stride in the 3x3): 1x1, 3x3 and 1x1 convs
through two inner widths of their own, plus an identity or strided 1x1
projection shortcut."""

from __future__ import annotations

from pss_tf.space.kinds.base import RELU, BlockKind, bn_weights, ceil_div, register


class BottleneckKind(BlockKind):
    name = "bottleneck"
    keras_block = "pss_tf.models.kinds.bottleneck:BottleneckBlock"
    kernel = 3  # The middle conv's.
    activation = RELU
    has_inner = True

    def inner(self, spec, table, cin):
        return spec.hidden_group(table)

    def macs(self, spec, table, cin, cout, size, pools=True):
        first, second = spec.hidden_group(table)
        k = spec.kernel
        total = cin * first * size * size
        size = ceil_div(size, spec.stride)
        total = total + k * k * first * second * size * size + second * cout * size * size
        if not spec.residual:  # The projection shortcut.
            total = total + cin * cout * size * size
        return total, size

    def params(self, spec, table, cin, cout, bn=4):
        first, second = spec.hidden_group(table)
        k = spec.kernel
        total = cin * first + bn_weights(first, bn) + k * k * first * second + bn_weights(second, bn)
        total = total + second * cout + bn_weights(cout, bn)
        if not spec.residual:
            total = total + cin * cout + bn_weights(cout, bn)
        return total

    def check_variant(self, variant):
        if variant.hidden2 < 1:
            raise ValueError(f"hidden2: a bottleneck's second inner width (a positive int), got {variant.hidden2!r}")
        return {"expand": False}


BOTTLENECK = register(BottleneckKind())
