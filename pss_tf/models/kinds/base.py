"""What every slimmable block shares: `SlimBlock` and the static layer helpers.

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

A block class is built from its architecture row by `from_spec` and, for a
latency table, from a variant by `static_variant`; `pss_tf.models.blocks`
finds the class through the kind's registry entry.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pss_tf.models.layers import conv_padding
from pss_tf.space import kinds

BN_EPSILON = 1e-5  # The release (PyTorch's default).


def _hard_swish(x):
    return keras.activations.hard_silu(x)


# The slimmable face of each activation; `activation` below is the static face.
ACTIVATIONS = {kinds.RELU6: tf.nn.relu6, kinds.RELU: tf.nn.relu, kinds.HARD_SWISH: _hard_swish}


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return activation


def pad(K, x, kernel_size, stride, padding, name):
    """The explicit zero padding a "symmetric" strided conv needs (`conv_padding`), and its Keras padding."""
    pixels, mode = conv_padding(padding, kernel_size, stride)
    if pixels:
        x = K.layers.ZeroPadding2D(pixels, name=f"{name}_pad")(x)
    return x, mode.lower()


def conv(K, x, filters, kernel_size, stride, name, padding="same"):
    x, mode = pad(K, x, kernel_size, stride, padding, name)
    return K.layers.Conv2D(filters, kernel_size, strides=stride, padding=mode, use_bias=False, name=name)(x)


def depthwise(K, x, kernel_size, stride, name, padding="same"):
    x, mode = pad(K, x, kernel_size, stride, padding, name)
    return K.layers.DepthwiseConv2D(kernel_size, strides=stride, padding=mode, use_bias=False, name=name)(x)


def bn(K, x, epsilon, name):
    return K.layers.BatchNormalization(epsilon=epsilon, name=name)(x)


def activation(K, x, kind: str, name: str):
    """The static face of `ACTIVATIONS[kind]`, named `{name}_relu` (ReLU, ReLU6) or `{name}_hs`.

    tf_keras has no hard-swish activation: a tf_keras rebuild (quantization-aware
    training) of a hard-swish block is refused by name.
    """
    if kind == kinds.HARD_SWISH:
        if not hasattr(K.activations, "hard_silu"):
            raise ValueError(
                f"activation: {K.__name__} has no hard-swish activation, so blocks using it (MobileNetV3) "
                "cannot be rebuilt in it (quantization-aware training needs tf_keras)"
            )
        return K.layers.Activation("hard_silu", name=f"{name}_hs")(x)
    return K.layers.ReLU(max_value=6.0 if kind == kinds.RELU6 else None, name=f"{name}_relu")(x)


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

    @classmethod
    def from_spec(cls, spec, base_channels, image_channels: int, name: str, **common) -> "SlimBlock":
        """The block of architecture row `spec` at the widest `base_channels`."""
        raise NotImplementedError

    @classmethod
    def static_variant(cls, x, variant, name: str, keras_module=keras, padding: str = "same"):
        """The static block of a latency variant (`pss_tf.latency.variants.Variant`) on `x`."""
        raise NotImplementedError

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
