"""ResNet's max pool (`pss_tf.space.kinds.max_pool`)."""

from __future__ import annotations

import keras
import tensorflow as tf

from pss_tf.models.kinds.base import SlimBlock, pad
from pss_tf.models.layers import check_padding, conv_padding, pad_spatial
from pss_tf.space import kinds
from pss_tf.space.kinds.max_pool import POOL_KERNEL


@keras.saving.register_keras_serializable(package="pss_tf")
class MaxPoolBlock(SlimBlock):
    """ResNet's 3x3 max pool after the stem: no weights, widths pass through. Its
    inputs follow a ReLU, so zero padding ("symmetric") equals PyTorch's."""

    kind = kinds.max_pool.MAX_POOL.name
    config_fields = ("strides", "padding")

    def __init__(self, strides, padding="same", **kwargs):
        super().__init__(**kwargs)
        self.padding = check_padding(padding)
        self.strides = int(strides)

    @classmethod
    def from_spec(cls, spec, base_channels, image_channels, name, padding="same", **common):
        return cls(spec.stride, padding=padding, name=name)

    def part_widths(self, in_channels, out_channels, hidden=None):
        return []

    def slim_layers(self):
        return []  # No weights, and no widths of its own to pair them with.

    def call(self, inputs, out_channels, training=None, calibration_rate=None, slice_channels=None):
        pixels, mode = conv_padding(self.padding, POOL_KERNEL, self.strides)
        if pixels:
            inputs = pad_spatial(inputs, pixels)
        return tf.nn.max_pool2d(inputs, POOL_KERNEL, self.strides, mode)

    @classmethod
    def static(cls, x, *, stride, name, keras_module=keras, padding="same"):
        x, mode = pad(keras_module, x, POOL_KERNEL, stride, padding, name)
        return keras_module.layers.MaxPooling2D(POOL_KERNEL, stride, padding=mode, name=name)(x)

    @classmethod
    def static_variant(cls, x, variant, name, keras_module=keras, padding="same"):
        return cls.static(x, stride=variant.stride, name=name, keras_module=keras_module, padding=padding)

    def apply_static(self, x, out_channels, name, keras_module=keras, hidden=None):
        return self.static(x, stride=self.strides, name=name, keras_module=keras_module, padding=self.padding)
