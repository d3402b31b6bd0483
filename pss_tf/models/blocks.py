"""The supernets' building blocks: a slimmable block and its static counterpart.

Each block class has two faces:

* the slimmable layer (`call`): shared weights, output channel count chosen
  at call time, used for training and BN calibration;
* its static counterpart (`static`): the same computation written with
  standard Keras layers at fixed channel counts. Extraction (`Supernet.extract`),
  the latency tables (`pss_tf.latency.measure`) and the quantization-aware
  rebuild in tf_keras (`pss_tf.export.qat`) all build blocks through it, so a
  latency table times exactly the blocks that ship.

`static(x, ...)` applies the layers to a Keras tensor and names them
`{name}_{part}`; `sliced_weights` returns `{part: [arrays]}` for the same
parts, so extraction copies weights by name. `keras_module` is `keras` or
`tf_keras`, whose layers take the same arguments.

`padding` ("same" or "symmetric", `pss_tf.models.layers.conv_padding`) is an
architecture option that every face follows: "symmetric" pads a strided 3x3
conv by one pixel on every side, as the release's PyTorch convs do.

A group pass (`Supernet.call` with several configs) calls a block with
`slice_channels=(inputs, outputs)`: int32 vectors of the channels each slice's
subnet has at the block's input and output. The block then runs at the widest
widths (`out_channels` is the widest output; the input is already as wide as
its widest slice) and hands each batch norm the per-slice counts of the
channels it normalises; the input counts are needed because a depthwise batch
norm, and MobileNetV2's expansion (`expansion` x the *active* input), follow
the input's width, which differs between slices. In a layer-wise space an
inverted residual block's hidden width is a channel group of its own: the block
is called with `hidden_channels` (and a third, per-slice entry in
`slice_channels`), and `hidden` reaches `sliced_weights` and `apply_static`;
a ResNet bottleneck always is, with the pair of its two inner widths.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pss_tf.models.layers import (
    SlimBatchNormalization,
    SlimConv2D,
    SlimDense,
    SlimDepthwiseConv2D,
    check_padding,
    conv_padding,
    input_channels,
    pad_spatial,
)
from pss_tf.space import architectures

BN_EPSILON = 1e-5  # The release (PyTorch's default).
DEPTHWISE_KERNEL = architectures.DEPTHWISE_KERNEL
STEM_KERNEL = architectures.STEM_KERNEL
POOL_KERNEL = architectures.POOL_KERNEL
CONV_KERNEL = architectures.CONV_KERNEL


def _pad(K, x, kernel_size, stride, padding, name):
    """The explicit zero padding a "symmetric" strided conv needs (`conv_padding`), and its Keras padding."""
    pixels, mode = conv_padding(padding, kernel_size, stride)
    if pixels:
        x = K.layers.ZeroPadding2D(pixels, name=f"{name}_pad")(x)
    return x, mode.lower()


def _conv(K, x, filters, kernel_size, stride, name, padding="same"):
    x, mode = _pad(K, x, kernel_size, stride, padding, name)
    return K.layers.Conv2D(filters, kernel_size, strides=stride, padding=mode, use_bias=False, name=name)(x)


def _depthwise(K, x, stride, name, padding="same"):
    x, mode = _pad(K, x, DEPTHWISE_KERNEL, stride, padding, name)
    return K.layers.DepthwiseConv2D(
        DEPTHWISE_KERNEL, strides=stride, padding=mode, use_bias=False, name=name
    )(x)


def _bn(K, x, epsilon, name):
    return K.layers.BatchNormalization(epsilon=epsilon, name=name)(x)


def _activation(K, x, activation, name):
    """The static face of `ACTIVATIONS[activation]`."""
    return K.layers.ReLU(max_value=6.0 if activation == architectures.RELU6 else None, name=name)(x)


ACTIVATIONS = {architectures.RELU6: tf.nn.relu6, architectures.RELU: tf.nn.relu}


class SlimBlock(keras.layers.Layer):
    """Base of the blocks: its slim sublayers are built and walked together, and
    its constructor arguments (`config_fields`) make up its config."""

    kind: str = ""
    config_fields: tuple[str, ...] = ()

    def slim_layers(self) -> list[keras.layers.Layer]:
        """The block's slimmable layers, in the order they run."""
        return [layer for layer, _ in self.part_widths(self.in_channels, self.filters)]

    def part_widths(self, in_channels: int, out_channels: int, hidden: int | None = None):
        """Each slim layer with the widths its `sliced_weights` takes when the block
        runs from `in_channels` to `out_channels` (and through `hidden` expanded
        channels, where that is a channel group of its own): the one place that pairs them."""
        raise NotImplementedError

    def sliced_weights(self, in_channels: int, out_channels: int, hidden: int | None = None) -> dict:
        """{part: arrays} at these widths. A part is a slim layer's own name, which is
        the class constant that `static` also names its Keras layer by
        (`{block}_{part}`), so the two faces cannot disagree on a name."""
        parts = self.part_widths(in_channels, out_channels, hidden)
        return {layer.name: layer.sliced_weights(*widths) for layer, widths in parts}

    @staticmethod
    def _slice_channels(slice_channels, expansion: int = 1):
        """(hidden, outputs) per-slice channel counts of a group pass, or (None, None)
        for one subnet: the hidden counts are the third entry when the block's
        hidden width is a group of its own, else `expansion` x the input counts."""
        if slice_channels is None:
            return None, None
        inputs, outputs, *hidden = slice_channels
        if hidden:
            return hidden[0], outputs
        return (None if inputs is None else inputs * expansion), outputs

    def build(self, input_shape=None):
        for layer in self.slim_layers():
            layer.build()

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in self.config_fields})
        return config


@keras.saving.register_keras_serializable(package="pss_tf")
class ConvBNReLU(SlimBlock):
    """Conv, batch norm, ReLU6 (ReLU in ResNet): the stem (3x3; ResNet's 7x7) and
    MobileNetV2's last 1x1 conv."""

    config_fields = (
        "filters", "kernel_size", "strides", "in_channels", "bn_epsilon", "synchronized_bn", "padding", "activation"
    )
    CONV, BN = "conv", "bn"  # part names (sublayers, static layers and extracted weights)

    def __init__(self, filters, kernel_size, strides, in_channels, bn_epsilon=BN_EPSILON, synchronized_bn=False,
                 padding="same", activation=architectures.RELU6, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.padding = check_padding(padding)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.in_channels = int(in_channels)
        self.bn_epsilon = float(bn_epsilon)
        self.synchronized_bn = bool(synchronized_bn)
        self.conv = SlimConv2D(filters, kernel_size, strides, in_channels, padding=padding, name=self.CONV)
        self.bn = SlimBatchNormalization(filters, bn_epsilon, synchronized_bn, name=self.BN)

    def part_widths(self, in_channels, out_channels, hidden=None):
        return [(self.conv, (in_channels, out_channels)), (self.bn, (out_channels,))]

    def call(self, inputs, out_channels, training=None, calibration_rate=None, slice_channels=None):
        _, slices_out = self._slice_channels(slice_channels)
        x = self.conv(inputs, out_channels=out_channels)
        x = self.bn(x, training=training, calibration_rate=calibration_rate, slice_channels=slices_out)
        return ACTIVATIONS[self.activation](x)

    @classmethod
    def static(cls, x, out_channels, *, kernel_size, stride, name, bn_epsilon=BN_EPSILON, keras_module=keras,
               padding="same", activation=architectures.RELU6):
        K = keras_module
        x = _conv(K, x, out_channels, kernel_size, stride, f"{name}_{cls.CONV}", padding)
        return _activation(K, _bn(K, x, bn_epsilon, f"{name}_{cls.BN}"), activation, f"{name}_relu")

    def apply_static(self, x, out_channels, name, keras_module=keras, hidden=None):
        return self.static(
            x, out_channels, kernel_size=self.kernel_size, stride=self.strides, name=name,
            bn_epsilon=self.bn_epsilon, keras_module=keras_module, padding=self.padding, activation=self.activation,
        )


@keras.saving.register_keras_serializable(package="pss_tf")
class MaxPoolBlock(SlimBlock):
    """ResNet's 3x3 max pool after the stem: no weights, widths pass through. Its
    inputs follow a ReLU, so zero padding ("symmetric") equals PyTorch's."""

    kind = architectures.MAX_POOL
    config_fields = ("strides", "padding")

    def __init__(self, strides, padding="same", **kwargs):
        super().__init__(**kwargs)
        self.padding = check_padding(padding)
        self.strides = int(strides)

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
        x, mode = _pad(keras_module, x, POOL_KERNEL, stride, padding, name)
        return keras_module.layers.MaxPooling2D(POOL_KERNEL, stride, padding=mode, name=name)(x)

    def apply_static(self, x, out_channels, name, keras_module=keras, hidden=None):
        return self.static(x, stride=self.strides, name=name, keras_module=keras_module, padding=self.padding)



@keras.saving.register_keras_serializable(package="pss_tf")
class SeparableBlock(SlimBlock):
    """MobileNetV1 block: 3x3 depthwise on the input channels, then 1x1 pointwise."""

    kind = architectures.SEPARABLE
    config_fields = ("in_channels", "filters", "strides", "bn_epsilon", "synchronized_bn", "padding")
    DEPTHWISE, DEPTHWISE_BN, POINTWISE, POINTWISE_BN = "dw", "dw_bn", "pw", "pw_bn"  # part names

    def __init__(self, in_channels, filters, strides, bn_epsilon=BN_EPSILON, synchronized_bn=False, padding="same",
                 **kwargs):
        super().__init__(**kwargs)
        self.padding = check_padding(padding)
        self.in_channels = int(in_channels)
        self.filters = int(filters)
        self.strides = int(strides)
        self.bn_epsilon = float(bn_epsilon)
        self.synchronized_bn = bool(synchronized_bn)
        self.depthwise = SlimDepthwiseConv2D(DEPTHWISE_KERNEL, strides, in_channels, padding=padding,
                                             name=self.DEPTHWISE)
        self.depthwise_bn = SlimBatchNormalization(in_channels, bn_epsilon, synchronized_bn, name=self.DEPTHWISE_BN)
        self.pointwise = SlimConv2D(filters, 1, 1, in_channels, name=self.POINTWISE)
        self.pointwise_bn = SlimBatchNormalization(filters, bn_epsilon, synchronized_bn, name=self.POINTWISE_BN)

    def part_widths(self, in_channels, out_channels, hidden=None):
        return [
            (self.depthwise, (in_channels,)), (self.depthwise_bn, (in_channels,)),
            (self.pointwise, (in_channels, out_channels)), (self.pointwise_bn, (out_channels,)),
        ]

    def call(self, inputs, out_channels, training=None, calibration_rate=None, slice_channels=None):
        slices_in, slices_out = self._slice_channels(slice_channels)
        bn_args = dict(training=training, calibration_rate=calibration_rate)
        x = tf.nn.relu6(self.depthwise_bn(self.depthwise(inputs), slice_channels=slices_in, **bn_args))
        x = self.pointwise(x, out_channels=out_channels)
        return tf.nn.relu6(self.pointwise_bn(x, slice_channels=slices_out, **bn_args))

    @classmethod
    def static(cls, x, out_channels, *, stride, name, bn_epsilon=BN_EPSILON, keras_module=keras, padding="same"):
        K = keras_module
        x = _depthwise(K, x, stride, f"{name}_{cls.DEPTHWISE}", padding)
        x = _activation(
            K, _bn(K, x, bn_epsilon, f"{name}_{cls.DEPTHWISE_BN}"), architectures.RELU6, f"{name}_{cls.DEPTHWISE}_relu"
        )
        x = _conv(K, x, out_channels, 1, 1, f"{name}_{cls.POINTWISE}")
        return _activation(
            K, _bn(K, x, bn_epsilon, f"{name}_{cls.POINTWISE_BN}"), architectures.RELU6, f"{name}_{cls.POINTWISE}_relu"
        )

    def apply_static(self, x, out_channels, name, keras_module=keras, hidden=None):
        return self.static(
            x, out_channels, stride=self.strides, name=name, bn_epsilon=self.bn_epsilon, keras_module=keras_module,
            padding=self.padding,
        )



@keras.saving.register_keras_serializable(package="pss_tf")
class InvertedResidualBlock(SlimBlock):
    """MobileNetV2 block: 1x1 expand to `expansion` x the active input channels,
    3x3 depthwise, linear 1x1 projection, and a residual add where the
    architecture has one."""

    kind = architectures.INVERTED_RESIDUAL
    config_fields = (
        "in_channels", "filters", "strides", "expansion", "residual", "bn_epsilon", "synchronized_bn", "padding"
    )
    EXPAND, EXPAND_BN, DEPTHWISE, DEPTHWISE_BN = "expand", "expand_bn", "dw", "dw_bn"  # part names
    PROJECT, PROJECT_BN = "project", "project_bn"

    def __init__(
        self, in_channels, filters, strides, expansion, residual, bn_epsilon=BN_EPSILON, synchronized_bn=False,
        padding="same", **kwargs
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
        hidden = self.in_channels * self.expansion
        if self.expansion != 1:
            self.expand = SlimConv2D(hidden, 1, 1, in_channels, name=self.EXPAND)
            self.expand_bn = SlimBatchNormalization(hidden, bn_epsilon, synchronized_bn, name=self.EXPAND_BN)
        self.depthwise = SlimDepthwiseConv2D(DEPTHWISE_KERNEL, strides, hidden, padding=padding, name=self.DEPTHWISE)
        self.depthwise_bn = SlimBatchNormalization(hidden, bn_epsilon, synchronized_bn, name=self.DEPTHWISE_BN)
        self.project = SlimConv2D(filters, 1, 1, hidden, name=self.PROJECT)
        self.project_bn = SlimBatchNormalization(filters, bn_epsilon, synchronized_bn, name=self.PROJECT_BN)

    def part_widths(self, in_channels, out_channels, hidden=None):
        hidden = in_channels * self.expansion if hidden is None else hidden
        parts = [(self.expand, (in_channels, hidden)), (self.expand_bn, (hidden,))] if self.expansion != 1 else []
        return parts + [
            (self.depthwise, (hidden,)), (self.depthwise_bn, (hidden,)),
            (self.project, (hidden, out_channels)), (self.project_bn, (out_channels,)),
        ]

    def call(self, inputs, out_channels, training=None, calibration_rate=None, slice_channels=None,
             hidden_channels=None):
        # Stage-wise, the hidden width (a group pass: each slice's) is `expansion` x
        # the input's; layer-wise it is `hidden_channels`, a channel group of its own.
        slices_hidden, slices_out = self._slice_channels(slice_channels, self.expansion)
        bn_args = dict(training=training, calibration_rate=calibration_rate)
        x = inputs
        if self.expansion != 1:
            if hidden_channels is None:
                hidden_channels = input_channels(inputs) * self.expansion
            x = self.expand(x, out_channels=hidden_channels)
            x = tf.nn.relu6(self.expand_bn(x, slice_channels=slices_hidden, **bn_args))
        x = tf.nn.relu6(self.depthwise_bn(self.depthwise(x), slice_channels=slices_hidden, **bn_args))
        x = self.project_bn(self.project(x, out_channels=out_channels), slice_channels=slices_out, **bn_args)
        return x + inputs if self.residual else x

    @classmethod
    def static(cls, x, out_channels, *, stride, expansion, residual, name, bn_epsilon=BN_EPSILON, keras_module=keras,
               padding="same", hidden=None):
        K = keras_module
        inputs = x
        if expansion != 1:
            x = _conv(K, x, x.shape[-1] * expansion if hidden is None else hidden, 1, 1, f"{name}_{cls.EXPAND}")
            x = _activation(
                K, _bn(K, x, bn_epsilon, f"{name}_{cls.EXPAND_BN}"), architectures.RELU6, f"{name}_{cls.EXPAND}_relu"
            )
        x = _depthwise(K, x, stride, f"{name}_{cls.DEPTHWISE}", padding)
        x = _activation(
            K, _bn(K, x, bn_epsilon, f"{name}_{cls.DEPTHWISE_BN}"), architectures.RELU6, f"{name}_{cls.DEPTHWISE}_relu"
        )
        x = _bn(K, _conv(K, x, out_channels, 1, 1, f"{name}_{cls.PROJECT}"), bn_epsilon, f"{name}_{cls.PROJECT_BN}")
        return K.layers.Add(name=f"{name}_add")([inputs, x]) if residual else x

    def apply_static(self, x, out_channels, name, keras_module=keras, hidden=None):
        return self.static(
            x, out_channels, stride=self.strides, expansion=self.expansion, residual=self.residual, name=name,
            bn_epsilon=self.bn_epsilon, keras_module=keras_module, padding=self.padding, hidden=hidden,
        )



@keras.saving.register_keras_serializable(package="pss_tf")
class BottleneckBlock(SlimBlock):
    """ResNet's bottleneck (torchvision's, stride in the 3x3): 1x1, 3x3 and 1x1
    convs with batch norms, and a shortcut, the identity when `residual` (input
    and output share a channel group) or a strided 1x1 projection with its own
    batch norm; ReLU after the add. Its two inner widths are called
    `hidden_channels`, a pair (a stage's shared group, or two of their own)."""

    kind = architectures.BOTTLENECK
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
        bn = dict(epsilon=bn_epsilon, synchronized=synchronized_bn)
        self.reduce = SlimConv2D(first, 1, 1, in_channels, name=self.REDUCE)
        self.reduce_bn = SlimBatchNormalization(first, name=self.REDUCE_BN, **bn)
        self.conv = SlimConv2D(second, CONV_KERNEL, strides, first, padding=padding, name=self.CONV)
        self.conv_bn = SlimBatchNormalization(second, name=self.CONV_BN, **bn)
        self.expand = SlimConv2D(filters, 1, 1, second, name=self.EXPAND)
        self.expand_bn = SlimBatchNormalization(filters, name=self.EXPAND_BN, **bn)
        if not self.residual:
            self.project = SlimConv2D(filters, 1, strides, in_channels, name=self.PROJECT)
            self.project_bn = SlimBatchNormalization(filters, name=self.PROJECT_BN, **bn)

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
        x = _conv(K, x, first, 1, 1, f"{name}_{cls.REDUCE}")
        x = _activation(K, _bn(K, x, bn_epsilon, f"{name}_{cls.REDUCE_BN}"), architectures.RELU, f"{name}_{cls.REDUCE}_relu")
        x = _conv(K, x, second, CONV_KERNEL, stride, f"{name}_{cls.CONV}", padding)
        x = _activation(K, _bn(K, x, bn_epsilon, f"{name}_{cls.CONV_BN}"), architectures.RELU, f"{name}_{cls.CONV}_relu")
        x = _bn(K, _conv(K, x, out_channels, 1, 1, f"{name}_{cls.EXPAND}"), bn_epsilon, f"{name}_{cls.EXPAND_BN}")
        if not residual:
            inputs = _conv(K, inputs, out_channels, 1, stride, f"{name}_{cls.PROJECT}", padding)
            inputs = _bn(K, inputs, bn_epsilon, f"{name}_{cls.PROJECT_BN}")
        x = K.layers.Add(name=f"{name}_add")([inputs, x])
        return _activation(K, x, architectures.RELU, f"{name}_relu")

    def apply_static(self, x, out_channels, name, keras_module=keras, hidden=None):
        return self.static(
            x, out_channels, stride=self.strides, hidden=self.hidden if hidden is None else hidden,
            residual=self.residual, name=name, bn_epsilon=self.bn_epsilon, keras_module=keras_module,
            padding=self.padding,
        )


def static_head(x, num_classes: int, name: str = "", keras_module=keras):
    """Global average pool and the classifier: the static form of every subnet's end."""
    prefix = f"{name}_" if name else ""
    x = keras_module.layers.GlobalAveragePooling2D(name=f"{prefix}pool")(x)
    return keras_module.layers.Dense(num_classes, name=f"{prefix}classifier")(x)


def head_weights(classifier: SlimDense, in_features: int) -> dict[str, list[np.ndarray]]:
    return {"classifier": classifier.sliced_weights(in_features)}


def make_block(
    spec: architectures.BlockSpec,
    base_channels,
    image_channels: int,
    name: str,
    bn_epsilon: float = BN_EPSILON,
    synchronized_bn: bool = False,
    padding: str = "same",
) -> SlimBlock:
    """The slimmable block for one row of an architecture table."""
    filters = base_channels[spec.out_stage]
    common = dict(bn_epsilon=bn_epsilon, synchronized_bn=synchronized_bn, padding=padding, name=name)
    if spec.kind == architectures.STEM:
        return ConvBNReLU(filters, STEM_KERNEL, spec.stride, image_channels, **common)
    if spec.kind == architectures.RESNET_STEM:
        return ConvBNReLU(
            filters, architectures.RESNET_STEM_KERNEL, spec.stride, image_channels, activation=architectures.RELU,
            **common,
        )
    if spec.kind == architectures.MAX_POOL:
        return MaxPoolBlock(spec.stride, padding=padding, name=name)
    in_channels = base_channels[spec.in_stage]
    if spec.kind == architectures.BOTTLENECK:
        return BottleneckBlock(
            in_channels, filters, spec.stride, spec.hidden_group(base_channels), spec.residual, **common
        )
    if spec.kind == architectures.POINTWISE:
        return ConvBNReLU(filters, 1, 1, in_channels, **common)
    if spec.kind == architectures.SEPARABLE:
        return SeparableBlock(in_channels, filters, spec.stride, **common)
    if spec.kind == architectures.INVERTED_RESIDUAL:
        return InvertedResidualBlock(in_channels, filters, spec.stride, spec.expansion, spec.residual, **common)
    raise ValueError(f"unknown block kind {spec.kind!r}")


def static_block(x, kind: str, out_channels: int, *, stride: int, hidden: int, residual: bool, name: str,
                 keras_module=keras, padding: str = "same", hidden2: int = 0, expand: bool | None = None):
    """The static block of `kind` from its shape alone (what a latency table entry times).

    `hidden` is the inner width: an inverted residual block's expanded width,
    with an expand conv when `expand` (None: when `hidden` differs from the
    input's width, a stage-wise block's expansion); a bottleneck's first inner
    width, `hidden2` its second. HEAD takes `out_channels` classes.
    """
    common = dict(name=name, keras_module=keras_module, padding=padding)
    if kind == architectures.STEM:
        return ConvBNReLU.static(x, out_channels, kernel_size=STEM_KERNEL, stride=stride, **common)
    if kind == architectures.RESNET_STEM:
        return ConvBNReLU.static(
            x, out_channels, kernel_size=architectures.RESNET_STEM_KERNEL, stride=stride, activation=architectures.RELU,
            **common,
        )
    if kind == architectures.POINTWISE:
        return ConvBNReLU.static(x, out_channels, kernel_size=1, stride=1, **common)
    if kind == architectures.SEPARABLE:
        return SeparableBlock.static(x, out_channels, stride=stride, **common)
    if kind == architectures.MAX_POOL:
        return MaxPoolBlock.static(x, stride=stride, **common)
    if kind == architectures.BOTTLENECK:
        return BottleneckBlock.static(x, out_channels, stride=stride, hidden=(hidden, hidden2), residual=residual, **common)
    if kind == architectures.INVERTED_RESIDUAL:
        cin = x.shape[-1]
        if expand is None:
            expand = hidden != cin
        if not expand and hidden != cin:
            raise ValueError(f"hidden: {hidden} differs from the {cin} input channels of a block without an expand conv")
        return InvertedResidualBlock.static(
            x, out_channels, stride=stride, expansion=2 if expand else 1, residual=residual,
            hidden=hidden if expand else None, **common,
        )
    if kind == architectures.HEAD:
        return static_head(x, out_channels, name, keras_module)
    raise ValueError(f"kind: cannot build block kind {kind!r}")
