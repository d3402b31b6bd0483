"""The supernet: one Keras model that runs any subnet of its search space.

`supernet(images, config)` resizes the images to the config's resolution and
runs every block at the config's widths. The config is either a `SubnetConfig`
(static shapes, handy eagerly) or its encoding as an int32 vector
`[resolution, channels...]` (see `encode`; one count per channel group), so that one traced `tf.function`
serves every subnet.

A group pass (PSE-Net's parallel subnets, design note section 8) runs N
subnets in one forward and backward pass: `supernet(images, configs)` with the
(N, 1 + stages) int32 matrix of `encode_group` (or a list of `SubnetConfig`s)
splits the batch into N equal consecutive slices and runs subnet i on slice i.
Every layer runs at the widest width of the group; per-slice batch-norm
statistics and channel masks after every batch norm
(`SlimBatchNormalization._call_slices`) make it compute exactly what N
separate passes on the slices compute, gradients included. One traced
`tf.function` serves every group of the same N.
"""

from __future__ import annotations

from typing import Iterable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from pss_tf import checks, cpu_kernels
from pss_tf.models.blocks import ACTIVATIONS, BN_EPSILON, head_weights, make_block, static_head
from pss_tf.models.layers import (
    BilinearResize,
    SlimBatchNormalization,
    SlimDense,
    check_padding,
    dimension,
    resize_images,
)
from pss_tf.space import architectures
from pss_tf.space.config import SubnetConfig

__all__ = ["Supernet", "build_supernet", "encode", "encode_group"]


def encode(config: SubnetConfig) -> np.ndarray:
    """A config as the int32 vector `[resolution, channels...]` the supernet takes."""
    return np.asarray((config.resolution,) + config.channels, dtype=np.int32)


def encode_group(configs) -> np.ndarray:
    """The configs of a group pass as an (N, 1 + stages) int32 matrix, one `encode`d row each.

    Row i is the subnet of slice i of the batch. The subnets of one pass belong
    to one model and share one resolution (the batch is resized once); anything
    else is refused here rather than deep inside a traced step.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs: a group pass needs at least one config")
    strays = sorted({type(c).__name__ for c in configs if not isinstance(c, SubnetConfig)})
    if strays:
        raise ValueError(f"configs: expected SubnetConfig objects, got {strays}")
    models = sorted({c.model for c in configs})
    if len(models) > 1:
        raise ValueError(f"configs: the subnets of one group pass belong to one supernet; got configs of {models}")
    resolutions = sorted({c.resolution for c in configs})
    if len(resolutions) > 1:
        raise ValueError(
            "configs: the subnets of one group pass share one resolution (the batch is resized once); "
            f"got resolutions {resolutions}"
        )
    return np.stack([encode(c) for c in configs])


@keras.saving.register_keras_serializable(package="pss_tf")
class Supernet(keras.Model):
    """A MobileNet or ResNet supernet whose width and resolution are chosen per call.

    Args:
        model_name: a model family of `architectures.MODEL_NAMES`, or one at a base width (`mobilenet_v2_1.5x`).
        num_classes: classifier outputs.
        small_input: stem stride 1 instead of 2, for 28 to 64 pixel images.
        in_channels: image channels (3 for RGB, 1 for Fashion-MNIST).
        dropout_rate: dropout before the classifier, in training only.
        synchronized_bn: batch statistics over all replicas of the strategy
            (what one device would compute on the global batch).
        bn_epsilon: the epsilon of every batch norm.
        align_corners: how the input is resized to a subnet's resolution
            (`pss_tf.models.layers.resize_images`); True as in the release.
        padding: how strided 3x3 convs pad: "same" (TensorFlow's, bottom and
            right on even sizes) or "symmetric" (the release's PyTorch
            `padding=1`); see `pss_tf.models.layers.conv_padding`.
        flat_bn_kernel: training batch norm's fused kernel on (N * H * W, 1, 1, C)
            views of the maps (`SlimBatchNormalization`'s `flat_kernel`): much
            faster with oneDNN on AVX2-only CPUs, equal to rounding.
    """

    def __init__(
        self,
        model_name: str,
        num_classes: int = 1000,
        small_input: bool = False,
        in_channels: int = 3,
        dropout_rate: float = 0.0,
        synchronized_bn: bool = False,
        bn_epsilon: float = BN_EPSILON,
        align_corners: bool = True,
        padding: str = "same",
        flat_bn_kernel: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("name", f"{model_name}_supernet")
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes: must be at least 1, got {num_classes}")
        if int(in_channels) < 1:
            raise ValueError(f"in_channels: must be at least 1, got {in_channels}")
        checks.number("dropout_rate", dropout_rate, minimum=0.0, below=1.0, error=ValueError)
        self.model_name = model_name
        self.num_classes = int(num_classes)
        self.small_input = bool(small_input)
        self.in_channels = int(in_channels)
        self.dropout_rate = float(dropout_rate)
        self.synchronized_bn = bool(synchronized_bn)
        self.bn_epsilon = float(bn_epsilon)
        self.align_corners = bool(align_corners)
        self.padding = check_padding(padding)
        self.flat_bn_kernel = bool(flat_bn_kernel)
        self.architecture = architectures.get_architecture(model_name, small_input)
        base = self.architecture.full_channels
        # One attribute per block (stem, block1, ...): TF checkpoints track attributes,
        # not the items of a Python list.
        self._block_names = [self._block_name(i) for i in range(len(self.architecture.blocks))]
        for name, spec in zip(self._block_names, self.architecture.blocks):
            setattr(
                self,
                name,
                make_block(
                    spec, base, self.in_channels, name, self.bn_epsilon, synchronized_bn=self.synchronized_bn,
                    padding=self.padding,
                ),
            )
        self.dropout = keras.layers.Dropout(self.dropout_rate) if self.dropout_rate else None
        last_width = base[self.architecture.blocks[-1].out_stage]
        # MobileNetV3: a hidden linear layer of fixed width before the classifier.
        head_hidden = self.architecture.head_hidden
        self.head_hidden = SlimDense(head_hidden, last_width, name="head_hidden") if head_hidden else None
        self.classifier = SlimDense(self.num_classes, head_hidden or last_width, name="classifier")
        for layer in self.batch_norm_layers():
            layer.flat_kernel = self.flat_bn_kernel
        self._calibration_step = None
        # Why the BN statistics fit no subnet yet (an imported release checkpoint), until calibrate_bn.
        self.uncalibrated_statistics: str | None = None
        self.build()

    @property
    def feature_blocks(self) -> list:
        return [getattr(self, name) for name in self._block_names]

    @staticmethod
    def _block_name(index: int) -> str:
        return "stem" if index == 0 else f"block{index}"

    def build(self, input_shape=None):
        for block in self.feature_blocks:
            block.build()
        if self.head_hidden is not None:
            self.head_hidden.build()
        self.classifier.build()
        self.built = True

    def encode(self, config: SubnetConfig) -> np.ndarray:
        self._check_model(config)
        return encode(config)

    def encode_group(self, configs) -> np.ndarray:
        """`encode_group` for this supernet's model."""
        configs = list(configs)
        matrix = encode_group(configs)
        self._check_model(configs[0])
        return matrix

    def _check_model(self, config: SubnetConfig):
        if config.model != self.model_name:
            raise ValueError(f"config: a {config.model} config given to a {self.model_name} supernet")

    def _unpack(self, config):
        """(resolution, channel table, per-slice channel table or None).

        One subnet: fixed channels stay Python ints, so their layers keep static
        shapes. A group: `_unpack_group`.
        """
        fixed = list(self.architecture.fixed_channels)
        if isinstance(config, SubnetConfig):
            self._check_model(config)
            return config.resolution, list(config.channels) + fixed, None
        if isinstance(config, (list, tuple)) and config and isinstance(config[0], SubnetConfig):
            config = self.encode_group(config)
        config = tf.convert_to_tensor(config, dtype=tf.int32)
        stages = self.architecture.num_groups
        if config.shape.rank == 2:
            return self._unpack_group(config)
        if config.shape.rank != 1:
            raise ValueError(
                f"config: expected an encoded config [resolution, channels...] or an (N, {1 + stages}) "
                f"group of them, got shape {config.shape}"
            )
        return config[0], [config[i + 1] for i in range(stages)] + fixed, None

    def _unpack_group(self, configs):
        """A group's shared resolution, its widest channels and every slice's channels.

        Returns (resolution, widest channel table, per-slice channel table):
        each layer runs at the widest count any subnet asks of it (a scalar
        tensor; fixed channels stay ints) and its batch norms mask each slice
        to that slice's count (int32 vectors of N; fixed channels as vectors too,
        since their batch norms still need per-slice statistics).
        """
        stages = self.architecture.num_groups
        if configs.shape[1] is not None and configs.shape[1] != 1 + stages:
            raise ValueError(
                f"config: a {self.model_name} group has rows [resolution, {stages} channel counts], "
                f"got shape {configs.shape}"
            )
        if configs.shape[0] == 0:
            raise ValueError("config: a group pass needs at least one config")
        slices = dimension(configs, 0)
        resolution = configs[0, 0]
        same_resolution = tf.debugging.assert_equal(
            configs[:, 0],
            resolution,
            message="config: the subnets of one group pass must share one resolution (the batch is resized once)",
        )
        with tf.control_dependencies([same_resolution]):
            resolution = tf.identity(resolution)
        per_slice = [configs[:, i + 1] for i in range(stages)]
        per_slice += [tf.fill([slices], c) for c in self.architecture.fixed_channels]
        widest = [tf.reduce_max(c) for c in per_slice[:stages]] + list(self.architecture.fixed_channels)
        return resolution, widest, per_slice

    @staticmethod
    def _check_divisible(images, slices):
        """The batch must split into `slices` equal slices: refused at trace time when shapes are static."""
        batch = images.shape[0]
        if batch is not None and isinstance(slices, int):
            if batch % slices:
                raise ValueError(
                    f"images: a batch of {batch} does not split into {slices} equal slices, one per subnet"
                )
            return images
        check = tf.debugging.assert_equal(
            tf.shape(images)[0] % slices, 0, message="images: the batch must split into equal slices, one per subnet"
        )
        with tf.control_dependencies([check]):
            return tf.identity(images)

    def __call__(self, images, config, **kwargs):
        # Keras only takes tensors positionally; the config may be a SubnetConfig.
        return super().__call__(images, config=config, **kwargs)

    def call(self, images, config, training=None, calibration_rate=None):
        """Logits (float32 under mixed precision) of `config` on `images` of any size.

        `config` is one subnet (a `SubnetConfig` or its `encode`d vector), run
        on the whole batch, or a group of N (a list of `SubnetConfig`s or their
        `encode_group` matrix): the batch, whose size N must divide, is split
        into N equal consecutive slices, slice i runs subnet i, and the logits
        keep the batch's order. Calibration (`calibration_rate`) runs one subnet.
        """
        if self.uncalibrated_statistics and not training and calibration_rate is None:
            _warn_uncalibrated(self.uncalibrated_statistics)
        resolution, channels, slice_channels = self._unpack(config)
        if slice_channels is not None:
            if calibration_rate is not None:
                raise ValueError(
                    "calibration_rate: BN calibration estimates the statistics of one subnet; "
                    "calibrate each subnet of a group on its own"
                )
            images = self._check_divisible(images, dimension(slice_channels[0], 0))
        x = ops.cast(resize_images(images, resolution, self.align_corners), self.compute_dtype)
        for spec, block in zip(self.architecture.blocks, self.feature_blocks):
            slices = None
            if slice_channels is not None:  # the stem reads the image: no per-slice input channels
                slices_in = None if spec.in_stage is None else slice_channels[spec.in_stage]
                slices = (slices_in, slice_channels[spec.out_stage])
            hidden = {}
            if spec.hidden_stage is not None:  # Inner widths of their own (layer-wise spaces, ResNet).
                hidden = dict(hidden_channels=spec.hidden_group(channels))
                slices = None if slices is None else slices + (spec.hidden_group(slice_channels),)
            x = block(
                x,
                out_channels=channels[spec.out_stage],
                training=training,
                calibration_rate=calibration_rate,
                slice_channels=slices,
                **hidden,
            )
        x = ops.mean(x, axis=[1, 2])
        if self.head_hidden is not None:
            x = ACTIVATIONS[self.architecture.head_activation](self.head_hidden(x))
        if self.dropout is not None:
            x = self.dropout(x, training=training)
        logits = self.classifier(x)
        # Mixed precision computes in 16 bits; losses and softmax want float32.
        return ops.cast(logits, "float32") if self.compute_dtype in ("float16", "bfloat16") else logits

    # --- BN calibration -------------------------------------------------------

    def slim_layers(self) -> list[keras.layers.Layer]:
        """Every slimmable layer, blocks first, the classifier last."""
        head = [self.classifier] if self.head_hidden is None else [self.head_hidden, self.classifier]
        return [layer for block in self.feature_blocks for layer in block.slim_layers()] + head

    def batch_norm_layers(self) -> list[SlimBatchNormalization]:
        return [layer for layer in self.slim_layers() if isinstance(layer, SlimBatchNormalization)]

    def reset_bn_statistics(self):
        for layer in self.batch_norm_layers():
            layer.reset_statistics()

    def calibrate_bn(self, batches: Iterable, config: SubnetConfig, num_batches: int | None = None) -> int:
        """Re-estimates the BN statistics of `config` from training batches.

        Resets every moving statistic, then averages the batch statistics of
        `num_batches` batches (all of `batches` if None) cumulatively. Elements
        of `batches` are images or (images, labels). Returns the batches used.
        """
        if self._calibration_step is None:
            self._calibration_step = tf.function(
                lambda images, vector, rate: self(images, vector, training=False, calibration_rate=rate),
                reduce_retracing=True,
                autograph=False,
            )
        self.reset_bn_statistics()
        vector = tf.constant(self.encode(config))
        used = 0
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            self._calibration_step(images, vector, tf.constant(1.0 / (used + 1), tf.float32))
            used += 1
        if used == 0:
            raise ValueError("calibrate_bn: no calibration batches were given")
        self.uncalibrated_statistics = None
        return used

    # --- extraction -----------------------------------------------------------

    def subnet_weights(self, config: SubnetConfig) -> dict[str, list[np.ndarray]]:
        """The weights of `config` by the layer names `extract` gives them: sliced
        kernels and the *current* BN statistics (calibrate them for `config` first)."""
        self._check_model(config)
        if self.uncalibrated_statistics:
            _warn_uncalibrated(self.uncalibrated_statistics)
        channels = self.architecture.channel_table(config.channels)
        weights = {}
        in_channels = self.in_channels
        for i, (spec, block) in enumerate(zip(self.architecture.blocks, self.feature_blocks)):
            out_channels = channels[spec.out_stage]
            name = self._block_name(i)
            for part, arrays in block.sliced_weights(in_channels, out_channels, spec.hidden_group(channels)).items():
                weights[f"{name}_{part}"] = arrays
            in_channels = out_channels
        weights.update(head_weights(self.classifier, in_channels, self.head_hidden))
        return weights

    def extract(
        self,
        config: SubnetConfig,
        name: str | None = None,
        *,
        resize: bool = True,
        batch_size: int | None = None,
        keras_module=keras,
        weights: dict | None = None,
    ):
        """A standalone model of `config`, built from standard layers only.

        It carries the sliced weights and the current BN statistics (calibrate
        them for `config` first, or pass `weights` taken by `subnet_weights`
        right after calibrating) and, in inference mode, computes what
        `self(images, config)` computes.

        Args:
            resize: take images of any size and resize them to the config's
                resolution, as the supernet does; False takes images at that
                resolution (what latency tables and int8 quantization model).
            batch_size: a fixed batch size (None: any).
            keras_module: `keras`, or `tf_keras` for tools that need Keras 2
                models (quantization-aware training).
        """
        self._check_model(config)
        if resize and keras_module is not keras:
            raise ValueError("resize: the resize layer is a Keras 3 layer; build other Keras versions with resize=False")
        weights = self.subnet_weights(config) if weights is None else weights
        K = keras_module
        size = None if resize else config.resolution
        inputs = K.Input(shape=(size, size, self.in_channels), batch_size=batch_size, name="images")
        x = inputs
        if resize:
            x = BilinearResize(config.resolution, self.align_corners, name="resize")(x)
        channels = self.architecture.channel_table(config.channels)
        for i, (spec, block) in enumerate(zip(self.architecture.blocks, self.feature_blocks)):
            x = block.apply_static(
                x, channels[spec.out_stage], self._block_name(i), keras_module=K, hidden=spec.hidden_group(channels)
            )
        arch = self.architecture
        outputs = static_head(x, self.num_classes, keras_module=K, hidden=arch.head_hidden, activation=arch.head_activation)
        model = K.Model(inputs, outputs, name=name or _model_name(config))
        weighted = [layer for layer in model.layers if layer.weights]
        names = {layer.name for layer in weighted}
        missing, unused = sorted(names - set(weights)), sorted(set(weights) - names)
        problems = [f"no weights given for layer(s) {missing}"] if missing else []
        if unused:
            problems.append(f"no layer of the extracted model is named {unused}")
        if problems:
            raise ValueError("weights: " + "; ".join(problems))
        for layer in weighted:
            layer.set_weights(weights[layer.name])
        return model

    def get_config(self):
        config = super().get_config()
        config.update(
            model_name=self.model_name,
            num_classes=self.num_classes,
            small_input=self.small_input,
            in_channels=self.in_channels,
            dropout_rate=self.dropout_rate,
            synchronized_bn=self.synchronized_bn,
            bn_epsilon=self.bn_epsilon,
            align_corners=self.align_corners,
            padding=self.padding,
            flat_bn_kernel=self.flat_bn_kernel,
        )
        return config


def _warn_uncalibrated(reason: str) -> None:
    import warnings

    from pss_tf.errors import UncalibratedStatisticsWarning

    warnings.warn(
        f"{reason}; calibrate the subnet first (Job.restore_supernet(calibrate_for=config), or "
        "make_evaluator(...).calibrate(config))", UncalibratedStatisticsWarning, stacklevel=3,
    )


def _model_name(config: SubnetConfig) -> str:
    return f"{config.model}_{config.resolution}px"


def build_supernet(name: str, num_classes: int = 1000, **options) -> Supernet:
    """Builds the supernet `name` (mobilenet_v1, mobilenet_v2, mobilenet_v2_slim_last_conv, or one of
    them at a base width: mobilenet_v2_1.5x).

    Options: `small_input`, `in_channels`, `dropout_rate`, `synchronized_bn`,
    `bn_epsilon`, `align_corners`, `padding`, `flat_bn_kernel` (see `Supernet`).
    """
    architectures.parse_model(name)  # ValueError naming the model if it is none.
    return Supernet(name, num_classes=num_classes, **options)


def supernet_for_run(run_config, info, synchronized_bn: bool = False) -> Supernet:
    """The supernet a run trains (its `TrainConfig`), for its dataset's classes and channels (`info`),
    with batch norm's kernel shape chosen for this machine (`cpu_kernels.flat_batch_norm`)."""
    return Supernet(**run_config.space.supernet_arguments(
        num_classes=info.num_classes, in_channels=info.channels, dropout_rate=run_config.optimization.dropout_rate,
        synchronized_bn=synchronized_bn,
        flat_bn_kernel=cpu_kernels.flat_batch_norm(run_config.runtime.batch_norm_kernel)["flat"],
    ))
