"""MobileNetV1's depthwise-separable block (`pss_tf.space.kinds.separable`)."""

from __future__ import annotations

import keras

from pss_tf.models.kinds.base import (
    ACTIVATIONS, BN_EPSILON, SlimBlock, activation as static_activation, bn, check_activation, conv, depthwise,
)
from pss_tf.models.layers import SlimBatchNormalization, SlimConv2D, SlimDepthwiseConv2D, check_padding
from pss_tf.space import kinds
from pss_tf.space.kinds.separable import SEPARABLE


@keras.saving.register_keras_serializable(package="pss_tf")
class SeparableBlock(SlimBlock):
    """MobileNetV1 block: depthwise conv (3x3) on the input channels, then 1x1 pointwise."""

    kind = SEPARABLE.name
    config_fields = (
        "in_channels", "filters", "strides", "bn_epsilon", "synchronized_bn", "padding", "kernel_size", "activation"
    )
    DEPTHWISE, DEPTHWISE_BN, POINTWISE, POINTWISE_BN = "dw", "dw_bn", "pw", "pw_bn"  # part names

    def __init__(self, in_channels, filters, strides, bn_epsilon=BN_EPSILON, synchronized_bn=False, padding="same",
                 kernel_size=SEPARABLE.kernel, activation=SEPARABLE.activation, **kwargs):
        super().__init__(**kwargs)
        self.padding = check_padding(padding)
        self.in_channels = int(in_channels)
        self.filters = int(filters)
        self.strides = int(strides)
        self.bn_epsilon = float(bn_epsilon)
        self.synchronized_bn = bool(synchronized_bn)
        self.kernel_size = int(kernel_size)
        self.activation = check_activation(activation)
        self.depthwise = SlimDepthwiseConv2D(self.kernel_size, strides, in_channels, padding=padding,
                                             name=self.DEPTHWISE)
        self.depthwise_bn = SlimBatchNormalization(in_channels, bn_epsilon, synchronized_bn, name=self.DEPTHWISE_BN)
        self.pointwise = SlimConv2D(filters, 1, 1, in_channels, name=self.POINTWISE)
        self.pointwise_bn = SlimBatchNormalization(filters, bn_epsilon, synchronized_bn, name=self.POINTWISE_BN)

    @classmethod
    def from_spec(cls, spec, base_channels, image_channels, name, **common):
        return cls(base_channels[spec.in_stage], base_channels[spec.out_stage], spec.stride,
                   kernel_size=spec.kernel, activation=spec.act, name=name, **common)

    def part_widths(self, in_channels, out_channels, hidden=None):
        return [
            (self.depthwise, (in_channels,)), (self.depthwise_bn, (in_channels,)),
            (self.pointwise, (in_channels, out_channels)), (self.pointwise_bn, (out_channels,)),
        ]

    def call(self, inputs, out_channels, training=None, calibration_rate=None, slice_channels=None):
        slices_in, slices_out = self._slice_channels(slice_channels)
        bn_args = dict(training=training, calibration_rate=calibration_rate)
        act = ACTIVATIONS[self.activation]
        x = act(self.depthwise_bn(self.depthwise(inputs), slice_channels=slices_in, **bn_args))
        x = self.pointwise(x, out_channels=out_channels)
        return act(self.pointwise_bn(x, slice_channels=slices_out, **bn_args))

    @classmethod
    def static(cls, x, out_channels, *, stride, name, bn_epsilon=BN_EPSILON, keras_module=keras, padding="same",
               kernel_size=SEPARABLE.kernel, activation=SEPARABLE.activation):
        K = keras_module
        x = depthwise(K, x, kernel_size, stride, f"{name}_{cls.DEPTHWISE}", padding)
        x = static_activation(K, bn(K, x, bn_epsilon, f"{name}_{cls.DEPTHWISE_BN}"), activation, f"{name}_{cls.DEPTHWISE}")
        x = conv(K, x, out_channels, 1, 1, f"{name}_{cls.POINTWISE}")
        return static_activation(
            K, bn(K, x, bn_epsilon, f"{name}_{cls.POINTWISE_BN}"), activation, f"{name}_{cls.POINTWISE}"
        )

    @classmethod
    def static_variant(cls, x, variant, name, keras_module=keras, padding="same"):
        return cls.static(
            x, variant.cout, stride=variant.stride, name=name, keras_module=keras_module, padding=padding,
            kernel_size=variant.kernel or SEPARABLE.kernel, activation=variant.activation or SEPARABLE.activation,
        )

    def apply_static(self, x, out_channels, name, keras_module=keras, hidden=None):
        return self.static(
            x, out_channels, stride=self.strides, name=name, bn_epsilon=self.bn_epsilon, keras_module=keras_module,
            padding=self.padding, kernel_size=self.kernel_size, activation=self.activation,
        )
