"""ResNet's bottleneck (`pss_tf.space.kinds.bottleneck`)."""

from __future__ import annotations

import keras
import tensorflow as tf

from pss_tf.models.kinds.base import BN_EPSILON, SlimBlock, activation as static_activation, bn, conv
from pss_tf.models.layers import SlimBatchNormalization, SlimConv2D, check_padding
from pss_tf.space import kinds
from pss_tf.space.kinds.bottleneck import BOTTLENECK


@keras.saving.register_keras_serializable(package="pss_tf")
class BottleneckBlock(SlimBlock):
    """ResNet's bottleneck (torchvision's, stride in the 3x3): 1x1, 3x3 and 1x1
    convs with batch norms, and a shortcut, the identity when `residual` (input
    and output share a channel group) or a strided 1x1 projection with its own
    batch norm; ReLU after the add. Its two inner widths are called
    `hidden_channels`, a pair (a stage's shared group, or two of their own)."""

    kind = BOTTLENECK.name
    config_fields = ("in_channels", "filters", "strides", "hidden", "residual", "bn_epsilon", "synchronized_bn", "padding")
    REDUCE, REDUCE_BN, CONV, CONV_BN, EXPAND, EXPAND_BN = "reduce", "reduce_bn", "conv", "conv_bn", "expand", "expand_bn"
    PROJECT, PROJECT_BN = "project", "project_bn"  # part names

    def __init__(self, in_channels, filters, strides, hidden, residual, bn_epsilon=BN_EPSILON, synchronized_bn=False,
                 padding="same", **kwargs):
        super().__init__(**kwargs)
        self.padding = check_padding(padding)
        self.in_channels = int(in_channels)
        self.filters = int(filters)
        self.strides = int(strides)
        self.hidden = tuple(int(h) for h in hidden)
        self.residual = bool(residual)
        self.bn_epsilon = float(bn_epsilon)
        self.synchronized_bn = bool(synchronized_bn)
        first, second = self.hidden
        bn_options = dict(epsilon=bn_epsilon, synchronized=synchronized_bn)
        self.reduce = SlimConv2D(first, 1, 1, in_channels, name=self.REDUCE)
        self.reduce_bn = SlimBatchNormalization(first, name=self.REDUCE_BN, **bn_options)
        self.conv = SlimConv2D(second, BOTTLENECK.kernel, strides, first, padding=padding, name=self.CONV)
        self.conv_bn = SlimBatchNormalization(second, name=self.CONV_BN, **bn_options)
        self.expand = SlimConv2D(filters, 1, 1, second, name=self.EXPAND)
        self.expand_bn = SlimBatchNormalization(filters, name=self.EXPAND_BN, **bn_options)
        if not self.residual:
            self.project = SlimConv2D(filters, 1, strides, in_channels, name=self.PROJECT)
            self.project_bn = SlimBatchNormalization(filters, name=self.PROJECT_BN, **bn_options)

    @classmethod
    def from_spec(cls, spec, base_channels, image_channels, name, **common):
        return cls(base_channels[spec.in_stage], base_channels[spec.out_stage], spec.stride,
                   spec.hidden_group(base_channels), spec.residual, name=name, **common)

    def part_widths(self, in_channels, out_channels, hidden=None):
        first, second = self.hidden if hidden is None else hidden
        parts = [
            (self.reduce, (in_channels, first)), (self.reduce_bn, (first,)),
            (self.conv, (first, second)), (self.conv_bn, (second,)),
            (self.expand, (second, out_channels)), (self.expand_bn, (out_channels,)),
        ]
        if not self.residual:
            parts += [(self.project, (in_channels, out_channels)), (self.project_bn, (out_channels,))]
        return parts

    def call(self, inputs, out_channels, training=None, calibration_rate=None, slice_channels=None,
             hidden_channels=None):
        first, second = self.hidden if hidden_channels is None else hidden_channels
        slices_first = slices_second = slices_out = None
        if slice_channels is not None:
            _, slices_out, (slices_first, slices_second) = slice_channels
        bn_args = dict(training=training, calibration_rate=calibration_rate)
        x = tf.nn.relu(self.reduce_bn(self.reduce(inputs, out_channels=first), slice_channels=slices_first, **bn_args))
        x = tf.nn.relu(self.conv_bn(self.conv(x, out_channels=second), slice_channels=slices_second, **bn_args))
        x = self.expand_bn(self.expand(x, out_channels=out_channels), slice_channels=slices_out, **bn_args)
        shortcut = inputs
        if not self.residual:
            shortcut = self.project(inputs, out_channels=out_channels)
            shortcut = self.project_bn(shortcut, slice_channels=slices_out, **bn_args)
        return tf.nn.relu(x + shortcut)

    @classmethod
    def static(cls, x, out_channels, *, stride, hidden, residual, name, bn_epsilon=BN_EPSILON, keras_module=keras,
               padding="same"):
        K = keras_module
        inputs = x
        first, second = hidden
        relu = kinds.RELU
        x = conv(K, x, first, 1, 1, f"{name}_{cls.REDUCE}")
        x = static_activation(K, bn(K, x, bn_epsilon, f"{name}_{cls.REDUCE_BN}"), relu, f"{name}_{cls.REDUCE}")
        x = conv(K, x, second, BOTTLENECK.kernel, stride, f"{name}_{cls.CONV}", padding)
        x = static_activation(K, bn(K, x, bn_epsilon, f"{name}_{cls.CONV_BN}"), relu, f"{name}_{cls.CONV}")
        x = bn(K, conv(K, x, out_channels, 1, 1, f"{name}_{cls.EXPAND}"), bn_epsilon, f"{name}_{cls.EXPAND_BN}")
        if not residual:
            inputs = conv(K, inputs, out_channels, 1, stride, f"{name}_{cls.PROJECT}", padding)
            inputs = bn(K, inputs, bn_epsilon, f"{name}_{cls.PROJECT_BN}")
        x = K.layers.Add(name=f"{name}_add")([inputs, x])
        return static_activation(K, x, relu, name)

    @classmethod
    def static_variant(cls, x, variant, name, keras_module=keras, padding="same"):
        return cls.static(
            x, variant.cout, stride=variant.stride, hidden=(variant.hidden, variant.hidden2),
            residual=variant.residual, name=name, keras_module=keras_module, padding=padding,
        )

    def apply_static(self, x, out_channels, name, keras_module=keras, hidden=None):
        return self.static(
            x, out_channels, stride=self.strides, hidden=self.hidden if hidden is None else hidden,
            residual=self.residual, name=name, bn_epsilon=self.bn_epsilon, keras_module=keras_module,
            padding=self.padding,
        )
