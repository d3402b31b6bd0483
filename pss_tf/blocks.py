"""The supernets' building blocks, made of slimmable layers.

Every block runs at an active width given at call time (`call`) and can write
itself out as standard Keras layers carrying its sliced weights (`extract`),
so the structure of a block lives in one place for both uses.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pss_tf import architectures
from pss_tf.layers import (
    SlimBatchNormalization,
    SlimConv2D,
    SlimDepthwiseConv2D,
    _input_width,
)

BN_EPSILON = 1e-3
DEPTHWISE_KERNEL = 3


def _extract_conv(layer: SlimConv2D, x, width: int, name: str):
    in_width = x.shape[-1]
    conv = keras.layers.Conv2D(
        width, layer.kernel_size, strides=layer.strides, padding="same", use_bias=False, name=name
    )
    y = conv(x)
    conv.kernel.assign(layer.kernel[:, :, :in_width, :width])
    return y


def _extract_depthwise(layer: SlimDepthwiseConv2D, x, name: str):
    width = x.shape[-1]
    conv = keras.layers.DepthwiseConv2D(
        layer.kernel_size, strides=layer.strides, padding="same", use_bias=False, name=name
    )
    y = conv(x)
    conv.kernel.assign(layer.kernel[:, :, :width, :])
    return y


def _extract_bn(layer: SlimBatchNormalization, x, name: str):
    width = x.shape[-1]
    bn = keras.layers.BatchNormalization(epsilon=layer.epsilon, name=name)
    y = bn(x)
    bn.gamma.assign(layer.gamma[:width])
    bn.beta.assign(layer.beta[:width])
    bn.moving_mean.assign(layer.moving_mean[:width])
    bn.moving_variance.assign(layer.moving_variance[:width])
    return y


def _bn(channels: int, name: str, synchronized: bool) -> SlimBatchNormalization:
    return SlimBatchNormalization(channels, BN_EPSILON, synchronized=synchronized, name=name)


def _relu6(name: str):
    return keras.layers.ReLU(max_value=6.0, name=name)


class ConvBNReLU(keras.layers.Layer):
    """Conv, batch norm, ReLU6: the stem and MobileNetV2's last 1x1 conv."""

    def __init__(self, filters, kernel_size, strides, in_channels, synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.synchronized_bn = bool(synchronized_bn)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.in_channels = int(in_channels)
        self.conv = SlimConv2D(filters, kernel_size, strides, in_channels, name="conv")
        self.bn = _bn(filters, "bn", synchronized_bn)

    def build(self, input_shape=None):
        self.conv.build()
        self.bn.build()

    def call(self, inputs, width, training=None, calibration_rate=None):
        x = self.conv(inputs, width=width)
        x = self.bn(x, training=training, calibration_rate=calibration_rate)
        return tf.nn.relu6(x)

    def extract(self, x, width: int, name: str):
        x = _extract_conv(self.conv, x, width, f"{name}_conv")
        x = _extract_bn(self.bn, x, f"{name}_bn")
        return _relu6(f"{name}_relu")(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            in_channels=self.in_channels,
            synchronized_bn=self.synchronized_bn,
        )
        return config


class SeparableBlock(keras.layers.Layer):
    """MobileNetV1 block: 3x3 depthwise on the input width, then 1x1 pointwise."""

    def __init__(self, in_channels, filters, strides, synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.synchronized_bn = bool(synchronized_bn)
        self.in_channels = int(in_channels)
        self.filters = int(filters)
        self.strides = int(strides)
        self.depthwise = SlimDepthwiseConv2D(DEPTHWISE_KERNEL, strides, in_channels, name="dw")
        self.depthwise_bn = _bn(in_channels, "dw_bn", synchronized_bn)
        self.pointwise = SlimConv2D(filters, 1, 1, in_channels, name="pw")
        self.pointwise_bn = _bn(filters, "pw_bn", synchronized_bn)

    def build(self, input_shape=None):
        for layer in (self.depthwise, self.depthwise_bn, self.pointwise, self.pointwise_bn):
            layer.build()

    def call(self, inputs, width, training=None, calibration_rate=None):
        x = self.depthwise(inputs)
        x = tf.nn.relu6(self.depthwise_bn(x, training=training, calibration_rate=calibration_rate))
        x = self.pointwise(x, width=width)
        return tf.nn.relu6(self.pointwise_bn(x, training=training, calibration_rate=calibration_rate))

    def extract(self, x, width: int, name: str):
        x = _extract_depthwise(self.depthwise, x, f"{name}_dw")
        x = _relu6(f"{name}_dw_relu")(_extract_bn(self.depthwise_bn, x, f"{name}_dw_bn"))
        x = _extract_conv(self.pointwise, x, width, f"{name}_pw")
        return _relu6(f"{name}_pw_relu")(_extract_bn(self.pointwise_bn, x, f"{name}_pw_bn"))

    def get_config(self):
        config = super().get_config()
        config.update(
            in_channels=self.in_channels,
            filters=self.filters,
            strides=self.strides,
            synchronized_bn=self.synchronized_bn,
        )
        return config


class InvertedResidualBlock(keras.layers.Layer):
    """MobileNetV2 block: 1x1 expand to `expansion` x the active input width,
    3x3 depthwise, linear 1x1 projection, and a residual add where the
    architecture has one."""

    def __init__(self, in_channels, filters, strides, expansion, residual, synchronized_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.synchronized_bn = bool(synchronized_bn)
        self.in_channels = int(in_channels)
        self.filters = int(filters)
        self.strides = int(strides)
        self.expansion = int(expansion)
        self.residual = bool(residual)
        hidden = self.in_channels * self.expansion
        if self.expansion != 1:
            self.expand = SlimConv2D(hidden, 1, 1, in_channels, name="expand")
            self.expand_bn = _bn(hidden, "expand_bn", synchronized_bn)
        self.depthwise = SlimDepthwiseConv2D(DEPTHWISE_KERNEL, strides, hidden, name="dw")
        self.depthwise_bn = _bn(hidden, "dw_bn", synchronized_bn)
        self.project = SlimConv2D(filters, 1, 1, hidden, name="project")
        self.project_bn = _bn(filters, "project_bn", synchronized_bn)

    def _slim_layers(self):
        layers = [self.depthwise, self.depthwise_bn, self.project, self.project_bn]
        if self.expansion != 1:
            layers = [self.expand, self.expand_bn] + layers
        return layers

    def build(self, input_shape=None):
        for layer in self._slim_layers():
            layer.build()

    def call(self, inputs, width, training=None, calibration_rate=None):
        bn_args = dict(training=training, calibration_rate=calibration_rate)
        x = inputs
        if self.expansion != 1:
            x = self.expand(x, width=_input_width(inputs) * self.expansion)
            x = tf.nn.relu6(self.expand_bn(x, **bn_args))
        x = tf.nn.relu6(self.depthwise_bn(self.depthwise(x), **bn_args))
        x = self.project_bn(self.project(x, width=width), **bn_args)
        return x + inputs if self.residual else x

    def extract(self, inputs, width: int, name: str):
        x = inputs
        if self.expansion != 1:
            x = _extract_conv(self.expand, x, inputs.shape[-1] * self.expansion, f"{name}_expand")
            x = _relu6(f"{name}_expand_relu")(_extract_bn(self.expand_bn, x, f"{name}_expand_bn"))
        x = _extract_depthwise(self.depthwise, x, f"{name}_dw")
        x = _relu6(f"{name}_dw_relu")(_extract_bn(self.depthwise_bn, x, f"{name}_dw_bn"))
        x = _extract_conv(self.project, x, width, f"{name}_project")
        x = _extract_bn(self.project_bn, x, f"{name}_project_bn")
        if self.residual:
            x = keras.layers.Add(name=f"{name}_add")([inputs, x])
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            in_channels=self.in_channels,
            filters=self.filters,
            strides=self.strides,
            expansion=self.expansion,
            residual=self.residual,
            synchronized_bn=self.synchronized_bn,
        )
        return config


def make_block(
    spec: architectures.BlockSpec, base_channels, image_channels: int, name: str, synchronized_bn: bool = False
):
    """The slimmable block for one row of an architecture table."""
    filters = base_channels[spec.out_stage]
    sync = dict(synchronized_bn=synchronized_bn, name=name)
    if spec.kind == architectures.STEM:
        return ConvBNReLU(filters, 3, spec.stride, image_channels, **sync)
    in_channels = base_channels[spec.in_stage]
    if spec.kind == architectures.POINTWISE:
        return ConvBNReLU(filters, 1, 1, in_channels, **sync)
    if spec.kind == architectures.SEPARABLE:
        return SeparableBlock(in_channels, filters, spec.stride, **sync)
    if spec.kind == architectures.INVERTED_RESIDUAL:
        return InvertedResidualBlock(in_channels, filters, spec.stride, spec.expansion, spec.residual, **sync)
    raise ValueError(f"unknown block kind {spec.kind!r}")
