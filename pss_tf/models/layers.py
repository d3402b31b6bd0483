"""Slimmable Keras layers: shared weights, active channel count chosen at call time.

Each layer owns the weights of its widest version. `call` takes the number of
output channels to compute (`out_channels`, a Python int or a scalar tensor)
and uses only the first channels of every weight, so one set of variables
serves every subnet and one traced `tf.function` serves every width. Input
channel counts are read off the input tensor. (Channel counts are what a
config's width multipliers turn into: `SubnetConfig.channels`.)

`sliced_weights` gives the weights of one width as numpy arrays, in the order
the equivalent standard Keras layer takes them, for extraction.

These layers need the TensorFlow backend: slicing with tensor bounds and convs
with dynamic channel counts are plain TF ops.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

_PACKAGE = "pss_tf"


def conv_initializer():
    """He initialisation on fan-out, as the release: N(0, sqrt(2 / (k * k * out_channels)))."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def depthwise_initializer():
    """The release's rule for a depthwise conv of C channels, whose PyTorch
    `out_channels` is C: N(0, sqrt(2 / (k * k * C))), i.e. fan-in of the
    (k, k, C, 1) kernel."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_in", distribution="untruncated_normal")


def resize_images(images, size, align_corners: bool = True):
    """Bilinear resize of a batch to `size` x `size` (an int or a scalar tensor).

    `align_corners=True` is the release's `F.interpolate(..., align_corners=True)`;
    False is TensorFlow's half-pixel sampling.
    """
    if isinstance(size, (int, np.integer)) and images.shape[1] == size and images.shape[2] == size:
        # Resizing to the same size samples every pixel at its own place (either
        # grid): skipped, so a pass at the images' resolution does no resize.
        return tf.cast(images, tf.float32)
    shape = tf.stack([size, size])
    if align_corners:
        images = tf.cast(images, tf.float32)
        return tf.raw_ops.ResizeBilinear(images=images, size=shape, align_corners=True, half_pixel_centers=False)
    return tf.image.resize(images, shape, method="bilinear")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BilinearResize(keras.layers.Layer):
    """`resize_images` as a layer: the first layer of an extracted subnet."""

    def __init__(self, size, align_corners=True, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.align_corners = bool(align_corners)

    def call(self, images):
        return ops.cast(resize_images(images, self.size, self.align_corners), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, align_corners=self.align_corners)
        return config


def _all_sum(context, value):
    """A cross-replica sum whose gradient is the cross-replica sum of gradients.

    Spelled out because the collective all-reduce some strategies use has no
    gradient, which would silently drop the global-statistics terms of BN.
    """

    @tf.custom_gradient
    def all_sum(x):
        return context.all_reduce(tf.distribute.ReduceOp.SUM, x), lambda dy: context.all_reduce(
            tf.distribute.ReduceOp.SUM, dy
        )

    return all_sum(value)


def dimension(tensor, axis: int):
    """A dimension of `tensor`: a Python int when static, else a scalar tensor."""
    size = tensor.shape[axis]
    return size if size is not None else tf.shape(tensor)[axis]


def input_channels(inputs):
    """Static channel count if known, else a scalar tensor."""
    return dimension(inputs, -1)


def leading(variable, *counts):
    """`variable[:counts[0], :counts[1], ...]`, None keeping a whole axis.

    When every count is a Python int equal to its axis (a subnet given with
    static widths, at full width), the variable is used whole: no slice op,
    and its gradient is the pass's gradient itself rather than a slice's
    gradient scattered into a zero tensor of the variable's shape. Tensor
    counts (the encoded configs of a traced step) always slice.
    """
    shape = variable.shape
    if all(c is None or (isinstance(c, (int, np.integer)) and int(c) == shape[i]) for i, c in enumerate(counts)):
        return ops.convert_to_tensor(variable)
    return variable[tuple(slice(None) if c is None else slice(None, c) for c in counts)]


PADDINGS = ("same", "symmetric")


def check_padding(padding: str) -> str:
    """`padding` if it names a padding mode (see `conv_padding`), else ValueError."""
    if padding not in PADDINGS:
        raise ValueError(f"padding: expected one of {list(PADDINGS)}, got {padding!r}")
    return padding


def conv_padding(padding: str, kernel_size: int, stride: int) -> tuple[int, str]:
    """(explicit pixels to pad on every side, TensorFlow padding) of a conv.

    "same" is TensorFlow's: a stride-2 conv on an even size pads only the
    bottom and right. "symmetric" is the release's PyTorch `padding=k // 2`:
    the same output size, but k // 2 zeros on every side, so the same weights
    see the same pixels as in PyTorch. The two differ only for strided convs;
    stride 1 with an odd kernel is "same" either way.
    """
    check_padding(padding)
    if padding == "symmetric" and stride > 1 and kernel_size > 1:
        return kernel_size // 2, "VALID"
    return 0, "SAME"


def pad_spatial(inputs, pixels: int):
    """Zero-pads NHWC `inputs` by `pixels` on every side of H and W."""
    if not pixels:
        return inputs
    return tf.pad(inputs, [[0, 0], [pixels, pixels], [pixels, pixels], [0, 0]])


def _numpy(variable, *index) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(variable))[index]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SlimConv2D(keras.layers.Layer):
    """A 2D convolution (no bias) over the first channels of its kernel.

    Args:
        filters: the widest output channel count.
        kernel_size: square kernel side.
        strides: square stride.
        in_channels: the widest input channel count (the kernel's third dimension).
        kernel_initializer: initializer of the full kernel.
        padding: "same" (TensorFlow's) or "symmetric" (the release's), see `conv_padding`.
    """

    def __init__(self, filters, kernel_size, strides=1, in_channels=None, kernel_initializer=None, padding="same",
                 **kwargs):
        super().__init__(**kwargs)
        self.padding = check_padding(padding)
        if in_channels is None:
            raise ValueError("in_channels: SlimConv2D needs the widest input channel count")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.in_channels = int(in_channels)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or conv_initializer())

    def build(self, input_shape=None):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, self.in_channels, self.filters),
            initializer=self.kernel_initializer,
        )

    def call(self, inputs, out_channels=None):
        out_channels = self.filters if out_channels is None else out_channels
        kernel = ops.cast(leading(self.kernel, None, None, input_channels(inputs), out_channels), self.compute_dtype)
        pixels, mode = conv_padding(self.padding, self.kernel_size, self.strides)
        return tf.nn.conv2d(pad_spatial(inputs, pixels), kernel, strides=self.strides, padding=mode)

    def sliced_weights(self, in_channels: int, out_channels: int) -> list[np.ndarray]:
        return [_numpy(self.kernel, slice(None), slice(None), slice(in_channels), slice(out_channels))]

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            in_channels=self.in_channels,
            padding=self.padding,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SlimDepthwiseConv2D(keras.layers.Layer):
    """A depthwise convolution that keeps its input's channel count (no bias).

    Args:
        kernel_size: square kernel side.
        strides: square stride.
        channels: the widest channel count.
        kernel_initializer: initializer of the full (k, k, channels, 1) kernel.
        padding: "same" (TensorFlow's) or "symmetric" (the release's), see `conv_padding`.
    """

    def __init__(self, kernel_size, strides=1, channels=None, kernel_initializer=None, padding="same", **kwargs):
        super().__init__(**kwargs)
        self.padding = check_padding(padding)
        if channels is None:
            raise ValueError("channels: SlimDepthwiseConv2D needs the widest channel count")
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.channels = int(channels)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or depthwise_initializer())

    def build(self, input_shape=None):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, self.channels, 1),
            initializer=self.kernel_initializer,
        )

    def call(self, inputs):
        kernel = ops.cast(leading(self.kernel, None, None, input_channels(inputs)), self.compute_dtype)
        strides = (1, self.strides, self.strides, 1)
        pixels, mode = conv_padding(self.padding, self.kernel_size, self.strides)
        return tf.nn.depthwise_conv2d(pad_spatial(inputs, pixels), kernel, strides=strides, padding=mode)

    def sliced_weights(self, channels: int) -> list[np.ndarray]:
        return [_numpy(self.kernel, slice(None), slice(None), slice(channels))]

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            strides=self.strides,
            channels=self.channels,
            padding=self.padding,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def _split_slices(x, slices):
    """(N * b, H, W, C) -> (N, b, H, W, C): slice i of the batch on row i (no copy)."""
    return tf.reshape(x, tf.concat([[slices, -1], tf.shape(x)[1:]], axis=0))


def _fused_training_batch_norm(x, gamma, beta, epsilon, flat=False):
    """Training batch norm of NHWC `x` over (N, H, W) by the fused kernel; scale and offset in float32.

    With `flat`, the kernel sees `x` as (N * H * W, 1, 1, C): the same statistics
    over the same values, summed in another order. oneDNN's forward-training
    kernel held to AVX2 is several times faster on that shape (32x56x56x128:
    about 9 ms against 65 ms; docs/PERFORMANCE.md, "Batch norm on AVX2").
    """
    if flat:
        shape = tf.shape(x)
        y = _fused_training_batch_norm(tf.reshape(x, tf.stack([-1, 1, 1, shape[3]])), gamma, beta, epsilon)
        return tf.reshape(y, shape)
    outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x, ops.cast(gamma, "float32"), ops.cast(beta, "float32"), epsilon=epsilon, is_training=True
    )
    return outputs


def _fused_ghost_batch_norm(x, slices, gamma, beta, epsilon, flat=False):
    """Per-slice training batch norm of `x` (N * b, H, W, C) by fused kernels.

    `gamma` and `beta` are (N, C): each slice's own (masked) parameters. With a
    static N, each slice is a contiguous block of the batch and gets a fused
    kernel of its own. With a dynamic N, the slices are laid side by side as
    channels, (N * b, H, W, C) -> (b, H, W, N * C) via (N, b, H, W, C) and a
    transpose, so that channel n * C + c holds channel c of slice n, and one
    kernel with the flattened (N * C) gamma and beta normalises every slice with
    its own statistics.

    Timed on the 2-core CPU (training forward and backward, float32, batch 32,
    56x56x128, N = 4): per-slice kernels 60 ms, the transposed layout 86 ms,
    the moments path 160 ms; the per-slice kernels were also the fastest at
    7x7x1024 and for N = 8 (tests/models/test_parallel.py checks both layouts
    against the moments path).
    """
    if isinstance(slices, int):
        return _ghost_per_slice_kernels(x, slices, gamma, beta, epsilon, flat)
    return _ghost_side_by_side(x, slices, gamma, beta, epsilon, flat)


def _ghost_per_slice_kernels(x, slices: int, gamma, beta, epsilon, flat):
    """A static N: one fused kernel per contiguous slice of the batch."""
    outputs = [
        _fused_training_batch_norm(part, gamma[i], beta[i], epsilon, flat)
        for i, part in enumerate(tf.split(x, slices, axis=0))
    ]
    return tf.concat(outputs, axis=0)


def _ghost_side_by_side(x, slices, gamma, beta, epsilon, flat):
    """Any N: the slices side by side as channels, one kernel over (b, H, W, N * C)."""
    shape = tf.shape(x)
    height, width, channels = shape[1], shape[2], shape[3]
    side_by_side = tf.transpose(_split_slices(x, slices), [1, 2, 3, 0, 4])  # (b, H, W, N, C)
    side_by_side = tf.reshape(side_by_side, tf.stack([-1, height, width, slices * channels]))
    y = _fused_training_batch_norm(side_by_side, tf.reshape(gamma, [-1]), tf.reshape(beta, [-1]), epsilon, flat)
    y = tf.reshape(y, tf.stack([-1, height, width, slices, channels]))
    return tf.reshape(tf.transpose(y, [3, 0, 1, 2, 4]), shape)


# The fused kernel raises a smaller epsilon to 1.001e-5 (cuDNN's minimum): for the
# release's 1e-5 that is 0.1% of epsilon, far below the batch variances it is added
# to, so training still fuses. Calibration and inference use the exact epsilon.
_FUSED_MIN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SlimBatchNormalization(keras.layers.Layer):
    """Batch normalisation over the first channels of its parameters.

    Training uses batch statistics and leaves the moving statistics alone: they
    would mix every subnet's statistics and fit none. Before a subnet is
    evaluated or exported its statistics are re-estimated: `reset_statistics()`,
    then calls with `calibration_rate=1/(t+1)` for batch t, which normalise with
    the batch statistics and fold them into a cumulative average of the first
    channels of the moving statistics.

    With `synchronized=True`, batch statistics are taken over the global batch
    (all replicas of a tf.distribute strategy), so training on N replicas
    computes what one device computes on the whole batch.

    In a group pass (`slice_channels`, see `_call_slices`) the batch holds
    several subnets' slices: statistics are per slice and each slice's missing
    channels are zeroed after the normalisation.

    With `flat_kernel=True`, training's fused kernel sees the maps as
    (N * H * W, 1, 1, C) (see `_fused_training_batch_norm`): the same function,
    rounded differently, and much faster with oneDNN on AVX2-only CPUs. Off by
    default here; a run chooses it for its machine (`--batch_norm_kernel`,
    `pss_tf.cpu_kernels.flat_batch_norm`).
    """

    def __init__(self, channels, epsilon=1e-5, synchronized=False, flat_kernel=False, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.epsilon = float(epsilon)
        self.synchronized = bool(synchronized)
        self.flat_kernel = bool(flat_kernel)

    def build(self, input_shape=None):
        shape = (self.channels,)
        self.gamma = self.add_weight(name="gamma", shape=shape, initializer="ones")
        self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros")
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=shape, initializer="zeros", trainable=False, aggregation="mean"
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=shape, initializer="ones", trainable=False, aggregation="mean"
        )

    def reset_statistics(self):
        self.moving_mean.assign(ops.zeros_like(self.moving_mean))
        self.moving_variance.assign(ops.ones_like(self.moving_variance))

    def call(self, inputs, training=None, calibration_rate=None, slice_channels=None):
        """Normalises `inputs`, or with `slice_channels` the slices of a group pass.

        `slice_channels` (an int32 vector of N counts) says that the batch holds
        N equal consecutive slices, each run by its own subnet, and how many of
        this layer's channels each slice's subnet has (see `_call_slices`).
        """
        if slice_channels is not None:
            return self._call_slices(inputs, slice_channels, training, calibration_rate)
        channels = input_channels(inputs)
        gamma = leading(self.gamma, channels)
        beta = leading(self.beta, channels)
        if training and calibration_rate is None and self._can_fuse(inputs):
            # One fused kernel (and one for its gradient) instead of about ten
            # element-wise ops: BN was half of a training step's op time.
            return _fused_training_batch_norm(inputs, gamma, beta, self.epsilon, self.flat_kernel)
        if training or calibration_rate is not None:
            mean, variance = self._statistics(inputs, axes=[0, 1, 2])
            if calibration_rate is not None:
                self._fold_into_statistics(mean, variance, channels, calibration_rate)
        else:
            mean, variance = self._moving_statistics(channels)
        return self._normalize(inputs, mean, variance, gamma, beta)

    # --- group passes (several subnets on slices of one batch) -------------------

    def _call_slices(self, inputs, slice_channels, training, calibration_rate):
        """Batch norm of a group pass: per-slice statistics and channel masks.

        Slice i (rows i*b to (i+1)*b - 1 of the batch, b = batch / N) belongs to
        subnet i, which has only the first `slice_channels[i]` channels; this
        layer runs at the widest of them (the input's channel count). For the
        pass to equal N separate subnet passes, gradients included:

        * training statistics are per slice (ghost batch norm): each subnet
          normalises with the statistics of its own slice, summed over replicas
          when synchronized (replica r's slice i joins every other replica's
          slice i);
        * after the normalisation, the channels a slice's subnet lacks are
          zeroed on that slice's rows. The mask is folded into per-slice copies
          of gamma and beta (zero for a missing channel), so the zeroing costs
          no pass over the activations and those channels' gamma and beta get
          exactly zero gradient from that slice. Without it beta would make the
          zeroed inputs of a missing channel non-zero again.

        Since every layer's inputs were masked by the batch norm before them,
        and convs without bias, ReLU6, residual adds, pooling and the
        classifier's matmul keep zeros zero, every masked channel stays zero.
        """
        if calibration_rate is not None:
            raise ValueError(
                "calibration_rate: BN calibration estimates the statistics of one subnet; "
                "calibrate each subnet of a group with its own single-subnet calls"
            )
        if len(inputs.shape) != 4:
            raise ValueError(f"inputs: a group pass normalises NHWC feature maps, got rank {len(inputs.shape)}")
        channels = input_channels(inputs)
        slice_channels = tf.convert_to_tensor(slice_channels, tf.int32)
        slices = dimension(slice_channels, 0)
        # (N, C) masks: row i keeps the first slice_channels[i] channels.
        mask = tf.sequence_mask(slice_channels, channels, dtype=self.gamma.dtype)
        gamma = self.gamma[:channels][None, :] * mask
        beta = self.beta[:channels][None, :] * mask
        if training and self._can_fuse(inputs):
            return _fused_ghost_batch_norm(inputs, slices, gamma, beta, self.epsilon, self.flat_kernel)
        x = _split_slices(inputs, slices)  # (N, b, H, W, C)
        if training:
            mean, variance = self._statistics(x, axes=[1, 2, 3], keepdims=True)
        else:
            mean, variance = self._moving_statistics(channels)
        # (N, C) parameters broadcast over each slice's (b, H, W).
        y = self._normalize(x, mean, variance, gamma[:, None, None, None, :], beta[:, None, None, None, :])
        return tf.reshape(y, tf.shape(inputs))

    # --- shared by both paths -------------------------------------------------

    def _statistics(self, inputs, axes, keepdims=False):
        """Batch mean and variance over `axes`, in at least float32 whatever the compute dtype."""
        stats_dtype = "float64" if self.compute_dtype == "float64" else "float32"
        return self._batch_moments(ops.cast(inputs, stats_dtype), axes, keepdims)

    def _moving_statistics(self, channels):
        return leading(self.moving_mean, channels), leading(self.moving_variance, channels)

    def _normalize(self, inputs, mean, variance, gamma, beta):
        dtype = self.compute_dtype
        return ops.batch_normalization(
            inputs,
            ops.cast(mean, dtype),
            ops.cast(variance, dtype),
            axis=-1,
            offset=ops.cast(beta, dtype),
            scale=ops.cast(gamma, dtype),
            epsilon=self.epsilon,
        )

    def _can_fuse(self, inputs) -> bool:
        """Whether training may use the fused kernel: local statistics of NHWC
        maps in a dtype it supports (float64 checks keep the exact path)."""
        return (
            self._cross_replica_context() is None
            and len(inputs.shape) == 4
            and inputs.dtype in (tf.float32, tf.float16, tf.bfloat16)
            and self.epsilon >= _FUSED_MIN_EPSILON
        )

    def _cross_replica_context(self):
        """The replica context to sum statistics over, or None for local ones."""
        if not self.synchronized:
            return None
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return None
        return context

    def _batch_moments(self, x, axes, keepdims=False):
        context = self._cross_replica_context()
        if context is None:
            return tf.nn.moments(x, axes=axes, keepdims=keepdims)
        # Two passes (global mean, then squared deviations from it) rather than
        # E[x^2] - E[x]^2, which cancels badly in float32.
        count = _all_sum(context, tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype))
        mean = _all_sum(context, tf.reduce_sum(x, axes, keepdims=True)) / count
        variance = _all_sum(context, tf.reduce_sum(tf.square(x - mean), axes, keepdims=True)) / count
        if not keepdims:
            mean, variance = tf.squeeze(mean, axes), tf.squeeze(variance, axes)
        return mean, variance

    def _fold_into_statistics(self, mean, variance, channels, rate):
        for variable, batch_value in ((self.moving_mean, mean), (self.moving_variance, variance)):
            full = ops.convert_to_tensor(variable)
            old = full[:channels]
            updated = old + (batch_value - old) * ops.cast(rate, old.dtype)
            variable.assign(tf.concat([updated, full[channels:]], axis=0))

    def sliced_weights(self, channels: int) -> list[np.ndarray]:
        """gamma, beta, moving mean and variance of the first `channels` (Keras' order)."""
        return [_numpy(v, slice(channels)) for v in (self.gamma, self.beta, self.moving_mean, self.moving_variance)]

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=self.channels, epsilon=self.epsilon, synchronized=self.synchronized, flat_kernel=self.flat_kernel
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SlimDense(keras.layers.Layer):
    """A fully connected layer over the first input features and output units.

    Args:
        units: output units.
        in_features: the widest input feature count.
        kernel_initializer: initializer of the full kernel (the release: N(0, 0.01)).
    """

    def __init__(self, units, in_features=None, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if in_features is None:
            raise ValueError("in_features: SlimDense needs the widest input feature count")
        self.units = int(units)
        self.in_features = int(in_features)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.01)
        )

    def build(self, input_shape=None):
        self.kernel = self.add_weight(
            name="kernel", shape=(self.in_features, self.units), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs, out_units=None):
        out_units = self.units if out_units is None else out_units
        kernel = ops.cast(leading(self.kernel, input_channels(inputs), out_units), self.compute_dtype)
        return ops.matmul(inputs, kernel) + ops.cast(leading(self.bias, out_units), self.compute_dtype)

    def sliced_weights(self, in_features: int, out_units: int | None = None) -> list[np.ndarray]:
        out_units = self.units if out_units is None else out_units
        return [_numpy(self.kernel, slice(in_features), slice(out_units)), _numpy(self.bias, slice(out_units))]

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            in_features=self.in_features,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
