"""Conv, batch norm, activation (`pss_tf.space.kinds.conv`): the stems and the last 1x1 conv."""

from __future__ import annotations

import keras

from pss_tf.models.kinds.base import (
    ACTIVATIONS, BN_EPSILON, SlimBlock, activation as static_activation, bn, check_activation, conv,
)
from pss_tf.models.layers import SlimBatchNormalization, SlimConv2D, check_padding
from pss_tf.space import kinds


@keras.saving.register_keras_serializable(package="pss_tf")
class ConvBNReLU(SlimBlock):
    """Conv, batch norm, then ReLU6, ReLU (ResNet) or hard-swish (MobileNetV3): the
    stem (3x3; ResNet's 7x7) and the last 1x1 conv of MobileNetV2 and V3."""

    config_fields = (
        "filters", "kernel_size", "strides", "in_channels", "bn_epsilon", "synchronized_bn", "padding", "activation"
    )
    CONV, BN = "conv", "bn"  # part names (sublayers, static layers and extracted weights)

    def __init__(self, filters, kernel_size, strides, in_channels, bn_epsilon=BN_EPSILON, synchronized_bn=False,
                 padding="same", activation=kinds.RELU6, **kwargs):
        super().__init__(**kwargs)
        self.activation = check_activation(activation)
        self.padding = check_padding(padding)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.in_channels = int(in_channels)
        self.bn_epsilon = float(bn_epsilon)
        self.synchronized_bn = bool(synchronized_bn)
        self.conv = SlimConv2D(filters, kernel_size, strides, in_channels, padding=padding, name=self.CONV)
        self.bn = SlimBatchNormalization(filters, bn_epsilon, synchronized_bn, name=self.BN)

    @classmethod
    def from_spec(cls, spec, base_channels, image_channels, name, **common):
        reads_image = kinds.get(spec.kind).reads_image
        in_channels = image_channels if reads_image else base_channels[spec.in_stage]
        return cls(base_channels[spec.out_stage], spec.kernel, spec.stride, in_channels, activation=spec.act,
                   name=name, **common)

    def part_widths(self, in_channels, out_channels, hidden=None):
        return [(self.conv, (in_channels, out_channels)), (self.bn, (out_channels,))]

    def call(self, inputs, out_channels, training=None, calibration_rate=None, slice_channels=None):
        _, slices_out = self._slice_channels(slice_channels)
        x = self.conv(inputs, out_channels=out_channels)
        x = self.bn(x, training=training, calibration_rate=calibration_rate, slice_channels=slices_out)
        return ACTIVATIONS[self.activation](x)

    @classmethod
    def static(cls, x, out_channels, *, kernel_size, stride, name, bn_epsilon=BN_EPSILON, keras_module=keras,
               padding="same", activation=kinds.RELU6):
        K = keras_module
        x = conv(K, x, out_channels, kernel_size, stride, f"{name}_{cls.CONV}", padding)
        return static_activation(K, bn(K, x, bn_epsilon, f"{name}_{cls.BN}"), activation, name)

    @classmethod
    def static_variant(cls, x, variant, name, keras_module=keras, padding="same"):
        kind = kinds.get(variant.kind)
        return cls.static(
            x, variant.cout, kernel_size=variant.kernel or kind.kernel, stride=variant.stride, name=name,
            keras_module=keras_module, padding=padding, activation=variant.activation or kind.activation,
        )

    def apply_static(self, x, out_channels, name, keras_module=keras, hidden=None):
        return self.static(
            x, out_channels, kernel_size=self.kernel_size, stride=self.strides, name=name,
            bn_epsilon=self.bn_epsilon, keras_module=keras_module, padding=self.padding, activation=self.activation,
        )
