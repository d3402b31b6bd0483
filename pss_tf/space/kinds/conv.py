"""Conv, batch norm, activation: the MobileNets' 3x3 stem, ResNet's 7x7 stem
(ReLU) and the 1x1 conv that ends MobileNetV2 and MobileNetV3."""

from __future__ import annotations

from pss_tf.space.kinds.base import RELU, RELU6, BlockKind, bn_weights, ceil_div, register

KERAS_BLOCK = "pss_tf.models.kinds.conv:ConvBNReLU"


class ConvKind(BlockKind):
    keras_block = KERAS_BLOCK

    def __init__(self, name: str, kernel: int, activation: str, reads_image: bool):
        self.name, self.kernel, self.activation = name, kernel, activation
        self.reads_image = reads_image  # A stem: its input is the image.

    def macs(self, spec, table, cin, cout, size, pools=True):
        k = spec.kernel
        size = ceil_div(size, spec.stride)
        return k * k * cin * cout * size * size, size

    def params(self, spec, table, cin, cout, bn=4):
        k = spec.kernel
        return k * k * cin * cout + bn_weights(cout, bn)


STEM = register(ConvKind("stem", 3, RELU6, reads_image=True))  # The MobileNets' 3x3 stem.
RESNET_STEM = register(ConvKind("resnet_stem", 7, RELU, reads_image=True))  # ResNet's 7x7 stem.
POINTWISE = register(ConvKind("pointwise", 1, RELU6, reads_image=False))  # MobileNetV2/V3's last 1x1 conv.
