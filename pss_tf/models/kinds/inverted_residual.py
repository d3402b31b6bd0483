"""The inverted residual block of MobileNetV2 and V3 (`pss_tf.space.kinds.inverted_residual`),
with its squeeze-and-excite."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from pss_tf.models.kinds.base import (
    ACTIVATIONS, BN_EPSILON, SlimBlock, activation as static_activation, bn, check_activation, conv, depthwise,
)
from pss_tf.models.layers import (
    SlimBatchNormalization, SlimConv2D, SlimDepthwiseConv2D, check_padding, conv_initializer, dimension,
    input_channels,
)
from pss_tf.space.kinds.inverted_residual import INVERTED_RESIDUAL, squeeze_channels


def _squeeze_width(hidden):
    """`squeeze_channels` of an int, or of an int32 tensor (one width or per-slice widths)."""
    if isinstance(hidden, (int, np.integer)):
        return squeeze_channels(int(hidden))
    quarter = hidden // 4
    rounded = tf.maximum(8, (quarter + 4) // 8 * 8)  # make_divisible on ints: the 10% rule never adds 8 here.
    return tf.where(10 * rounded < 9 * quarter, rounded + 8, rounded)


@keras.saving.register_keras_serializable(package="pss_tf")
class SlimPooledConv(keras.layers.Layer):
    """A 1x1 conv with bias on pooled features (B, C), over the first channels of its
    kernel: squeeze-and-excite's two layers. Kept as a (1, 1, in, out) kernel, so
    it initialises as a conv does and extracts into a standard `Conv2D`."""

    def __init__(self, filters, in_channels, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.in_channels = int(in_channels)

    def build(self, input_shape=None):
        self.kernel = self.add_weight(
            name="kernel", shape=(1, 1, self.in_channels, self.filters), initializer=conv_initializer()
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, inputs, out_channels=None):
        out_channels = self.filters if out_channels is None else out_channels
        kernel = ops.cast(self.kernel[0, 0, : input_channels(inputs), :out_channels], self.compute_dtype)
        return ops.matmul(inputs, kernel) + ops.cast(self.bias[:out_channels], self.compute_dtype)

    def sliced_weights(self, in_channels: int, out_channels: int) -> list[np.ndarray]:
        kernel = np.asarray(ops.convert_to_numpy(self.kernel))[:, :, :in_channels, :out_channels]
        return [kernel, np.asarray(ops.convert_to_numpy(self.bias))[:out_channels]]

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, in_channels=self.in_channels)
        return config


def _mask_slices(x, slice_channels):
    """Zeroes, on each slice's rows of (N * b, C) `x`, the channels its subnet lacks."""
    channels = dimension(x, -1)
    slices = dimension(slice_channels, 0)
    mask = tf.sequence_mask(slice_channels, channels, dtype=x.dtype)  # (N, C)
    rows = tf.reshape(x, tf.stack([slices, -1, channels]))
    return tf.reshape(rows * mask[:, None, :], tf.shape(x))


@keras.saving.register_keras_serializable(package="pss_tf")
class InvertedResidualBlock(SlimBlock):
    """MobileNetV2/V3 block: 1x1 expand to the hidden width (`expansion` x the active
    input channels, or a channel group of its own), depthwise conv (`kernel_size`),
    squeeze-and-excite when `se`, linear 1x1 projection, and a residual add where
    the architecture has one. `activation` follows the expand and depthwise convs.

    Squeeze-and-excite (torchvision's): average pool, 1x1 conv with bias to
    `squeeze_channels(hidden)` (ReLU), 1x1 conv with bias back (hard sigmoid),
    times the features. In a group pass its inner width differs by slice, and
    its first conv's outputs are masked per slice (its bias would otherwise give
    a subnet channels it lacks); the gate meets zeros on a slice's missing hidden
    channels, so nothing else needs a mask.
    """

    kind = INVERTED_RESIDUAL.name
    config_fields = (
        "in_channels", "filters", "strides", "expansion", "residual", "bn_epsilon", "synchronized_bn", "padding",
        "kernel_size", "se", "activation", "hidden_width",
    )
    EXPAND, EXPAND_BN, DEPTHWISE, DEPTHWISE_BN = "expand", "expand_bn", "dw", "dw_bn"  # part names
    PROJECT, PROJECT_BN = "project", "project_bn"
    SE_REDUCE, SE_EXPAND = "se_reduce", "se_expand"

    def __init__(
        self, in_channels, filters, strides, expansion, residual, bn_epsilon=BN_EPSILON, synchronized_bn=False,
        padding="same", kernel_size=INVERTED_RESIDUAL.kernel, se=False, activation=INVERTED_RESIDUAL.activation,
        hidden_width=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.padding = check_padding(padding)
        self.in_channels = int(in_channels)
        self.filters = int(filters)
        self.strides = int(strides)
        self.expansion = int(expansion)
        self.residual = bool(residual)
        self.bn_epsilon = float(bn_epsilon)
        self.synchronized_bn = bool(synchronized_bn)
        self.kernel_size = int(kernel_size)
        self.se = bool(se)
        self.activation = check_activation(activation)
        hidden = self.in_channels * self.expansion if hidden_width is None else int(hidden_width)
        self.hidden_width = hidden
        if self.expansion != 1:
            self.expand = SlimConv2D(hidden, 1, 1, in_channels, name=self.EXPAND)
            self.expand_bn = SlimBatchNormalization(hidden, bn_epsilon, synchronized_bn, name=self.EXPAND_BN)
        self.depthwise = SlimDepthwiseConv2D(self.kernel_size, strides, hidden, padding=padding, name=self.DEPTHWISE)
        self.depthwise_bn = SlimBatchNormalization(hidden, bn_epsilon, synchronized_bn, name=self.DEPTHWISE_BN)
        if self.se:
            squeeze = squeeze_channels(hidden)
            self.se_reduce = SlimPooledConv(squeeze, hidden, name=self.SE_REDUCE)
            self.se_expand = SlimPooledConv(hidden, squeeze, name=self.SE_EXPAND)
        self.project = SlimConv2D(filters, 1, 1, hidden, name=self.PROJECT)
        self.project_bn = SlimBatchNormalization(filters, bn_epsilon, synchronized_bn, name=self.PROJECT_BN)

    @classmethod
    def from_spec(cls, spec, base_channels, image_channels, name, **common):
        in_channels = base_channels[spec.in_stage]
        return cls(
            in_channels, base_channels[spec.out_stage], spec.stride, spec.expansion, spec.residual,
            kernel_size=spec.kernel, se=spec.se, activation=spec.act,
            hidden_width=spec.hidden(base_channels, in_channels), name=name, **common,
        )

    def part_widths(self, in_channels, out_channels, hidden=None):
        hidden = in_channels * self.expansion if hidden is None else hidden
        parts = [(self.expand, (in_channels, hidden)), (self.expand_bn, (hidden,))] if self.expansion != 1 else []
        parts += [(self.depthwise, (hidden,)), (self.depthwise_bn, (hidden,))]
        if self.se:
            squeeze = squeeze_channels(hidden)
            parts += [(self.se_reduce, (hidden, squeeze)), (self.se_expand, (squeeze, hidden))]
        return parts + [(self.project, (hidden, out_channels)), (self.project_bn, (out_channels,))]

    def call(self, inputs, out_channels, training=None, calibration_rate=None, slice_channels=None,
             hidden_channels=None):
        # Stage-wise, the hidden width (a group pass: each slice's) is `expansion` x
        # the input's; layer-wise it is `hidden_channels`, a channel group of its own.
        slices_hidden, slices_out = self._slice_channels(slice_channels, self.expansion)
        bn_args = dict(training=training, calibration_rate=calibration_rate)
        act = ACTIVATIONS[self.activation]
        x = inputs
        if self.expansion != 1:
            if hidden_channels is None:
                hidden_channels = input_channels(inputs) * self.expansion
            x = self.expand(x, out_channels=hidden_channels)
            x = act(self.expand_bn(x, slice_channels=slices_hidden, **bn_args))
        x = act(self.depthwise_bn(self.depthwise(x), slice_channels=slices_hidden, **bn_args))
        if self.se:
            x = self._squeeze_excite(x, slices_hidden)
        x = self.project_bn(self.project(x, out_channels=out_channels), slice_channels=slices_out, **bn_args)
        return x + inputs if self.residual else x

    def _squeeze_excite(self, x, slices_hidden):
        hidden = input_channels(x)
        squeezed = tf.nn.relu(self.se_reduce(ops.mean(x, axis=[1, 2]), out_channels=_squeeze_width(hidden)))
        if slices_hidden is not None:
            squeezed = _mask_slices(squeezed, _squeeze_width(tf.convert_to_tensor(slices_hidden, tf.int32)))
        gate = keras.activations.hard_sigmoid(self.se_expand(squeezed, out_channels=hidden))
        return x * gate[:, None, None, :]

    @classmethod
    def static(cls, x, out_channels, *, stride, expansion, residual, name, bn_epsilon=BN_EPSILON, keras_module=keras,
               padding="same", hidden=None, kernel_size=INVERTED_RESIDUAL.kernel, se=False,
               activation=INVERTED_RESIDUAL.activation):
        K = keras_module
        inputs = x
        if expansion != 1:
            x = conv(K, x, x.shape[-1] * expansion if hidden is None else hidden, 1, 1, f"{name}_{cls.EXPAND}")
            x = static_activation(K, bn(K, x, bn_epsilon, f"{name}_{cls.EXPAND_BN}"), activation, f"{name}_{cls.EXPAND}")
        x = depthwise(K, x, kernel_size, stride, f"{name}_{cls.DEPTHWISE}", padding)
        x = static_activation(K, bn(K, x, bn_epsilon, f"{name}_{cls.DEPTHWISE_BN}"), activation, f"{name}_{cls.DEPTHWISE}")
        if se:
            x = cls._static_squeeze_excite(K, x, name)
        x = bn(K, conv(K, x, out_channels, 1, 1, f"{name}_{cls.PROJECT}"), bn_epsilon, f"{name}_{cls.PROJECT_BN}")
        return K.layers.Add(name=f"{name}_add")([inputs, x]) if residual else x

    @classmethod
    def _static_squeeze_excite(cls, K, x, name):
        if not hasattr(K.activations, "hard_silu"):  # tf_keras: its hard_sigmoid is another function.
            raise ValueError(
                f"se: {K.__name__}'s hard sigmoid differs from torchvision's, so squeeze-and-excite blocks "
                "(MobileNetV3) cannot be rebuilt in it (quantization-aware training needs tf_keras)"
            )
        hidden = x.shape[-1]
        s = K.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
        s = K.layers.Conv2D(squeeze_channels(hidden), 1, name=f"{name}_{cls.SE_REDUCE}")(s)
        s = K.layers.ReLU(name=f"{name}_se_relu")(s)
        s = K.layers.Conv2D(hidden, 1, name=f"{name}_{cls.SE_EXPAND}")(s)
        s = K.layers.Activation("hard_sigmoid", name=f"{name}_se_gate")(s)
        return K.layers.Multiply(name=f"{name}_se_scale")([x, s])

    @classmethod
    def static_variant(cls, x, variant, name, keras_module=keras, padding="same"):
        return cls.static(
            x, variant.cout, stride=variant.stride, expansion=2 if variant.expand else 1, residual=variant.residual,
            name=name, keras_module=keras_module, padding=padding, hidden=variant.hidden if variant.expand else None,
            kernel_size=variant.kernel or INVERTED_RESIDUAL.kernel, se=variant.se,
            activation=variant.activation or INVERTED_RESIDUAL.activation,
        )

    def apply_static(self, x, out_channels, name, keras_module=keras, hidden=None):
        return self.static(
            x, out_channels, stride=self.strides, expansion=self.expansion, residual=self.residual, name=name,
            bn_epsilon=self.bn_epsilon, keras_module=keras_module, padding=self.padding, hidden=hidden,
            kernel_size=self.kernel_size, se=self.se, activation=self.activation,
        )
