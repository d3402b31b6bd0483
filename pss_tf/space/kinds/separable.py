"""MobileNetV1's depthwise-separable block: a depthwise conv on the input width,
then a 1x1 pointwise conv, each with batch norm and ReLU6."""

from __future__ import annotations

from pss_tf.space.kinds.base import BlockKind, bn_weights, ceil_div, register


class SeparableKind(BlockKind):
    name = "separable"
    keras_block = "pss_tf.models.kinds.separable:SeparableBlock"
    kernel = 3

    def macs(self, spec, table, cin, cout, size, pools=True):
        k = spec.kernel
        size = ceil_div(size, spec.stride)
        return k * k * cin * size * size + cin * cout * size * size, size

    def params(self, spec, table, cin, cout, bn=4):
        k = spec.kernel
        return k * k * cin + bn_weights(cin, bn) + cin * cout + bn_weights(cout, bn)


SEPARABLE = register(SeparableKind())
