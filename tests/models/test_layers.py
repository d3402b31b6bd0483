import keras
import numpy as np
import pytest
import tensorflow as tf

from pss_tf import SubnetConfig, build_supernet
from pss_tf.models.layers import (
    SlimBatchNormalization,
    SlimConv2D,
    SlimDense,
    SlimDepthwiseConv2D,
    leading,
    resize_images,
)


def _built(layer):
    layer.build()
    return layer


def test_slim_conv_uses_the_first_channels_of_its_kernel():
    layer = _built(SlimConv2D(16, 3, strides=2, in_channels=8))
    x = tf.random.stateless_normal([2, 9, 9, 5], seed=[1, 1])
    reference = keras.layers.Conv2D(6, 3, strides=2, padding="same", use_bias=False)
    reference.build((None, 9, 9, 5))
    reference.kernel.assign(layer.kernel[:, :, :5, :6])
    expected = reference(x).numpy()
    np.testing.assert_allclose(layer(x, out_channels=6).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(layer(x, out_channels=tf.constant(6)).numpy(), expected, atol=1e-6)
    assert layer(x).shape == (2, 5, 5, 16)


def test_slim_depthwise_keeps_the_input_width():
    layer = _built(SlimDepthwiseConv2D(3, strides=1, channels=12))
    x = tf.random.stateless_normal([1, 6, 6, 7], seed=[2, 2])
    reference = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)
    reference.build((None, 6, 6, 7))
    reference.kernel.assign(layer.kernel[:, :, :7, :])
    np.testing.assert_allclose(layer(x).numpy(), reference(x).numpy(), atol=1e-6)


def test_slim_dense_slices_inputs_and_units():
    layer = _built(SlimDense(10, in_features=32))
    layer.bias.assign(np.arange(10, dtype="float32"))
    x = tf.random.stateless_normal([3, 20], seed=[3, 3])
    expected = x.numpy() @ layer.kernel.numpy()[:20, :4] + np.arange(4)
    np.testing.assert_allclose(layer(x, out_units=4).numpy(), expected, atol=1e-5)


def test_batch_norm_training_uses_batch_statistics_and_keeps_moving_ones():
    layer = _built(SlimBatchNormalization(8))
    x = tf.random.stateless_normal([4, 3, 3, 5], seed=[4, 4], mean=2.0, stddev=3.0)
    y = layer(x, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.zeros(8))
    np.testing.assert_array_equal(layer.moving_variance.numpy(), np.ones(8))


@pytest.mark.parametrize("flat_kernel", [False, True])
def test_fused_training_batch_norm_equals_the_exact_path_with_gradients(flat_kernel):
    """Training in float32 runs the fused kernel (on (N * H * W, 1, 1, C) views with
    `flat_kernel`); float64 runs the two-pass path.

    Both must give the same outputs and gradients at a runtime width.
    """
    layer = _built(SlimBatchNormalization(8, dtype="float64"))
    layer.gamma.assign(np.linspace(0.5, 2.0, 8))
    layer.beta.assign(np.linspace(-1.0, 1.0, 8))
    fused = _built(SlimBatchNormalization(8, flat_kernel=flat_kernel))
    fused.set_weights([w.astype("float32") for w in layer.get_weights()])
    x = tf.random.stateless_normal([4, 5, 5, 8], seed=[6, 6], mean=1.0, stddev=2.0, dtype=tf.float64)
    upstream = tf.random.stateless_normal([4, 5, 5, 6], seed=[7, 7], dtype=tf.float64)

    def outputs_and_gradients(bn, inputs):
        @tf.function
        def run(inputs, width):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                y = bn(inputs[..., :width], training=True)
                loss = tf.reduce_sum(y * tf.cast(upstream, y.dtype))
            return y, tape.gradient(loss, [inputs, bn.gamma, bn.beta])

        width = tf.constant(6)
        y, grads = run(inputs, width)
        traced = run.get_concrete_function(inputs, width)
        # (H, W) as each fused kernel sees them, and the output's static shape.
        layout = [op.inputs[0].shape[1:3].as_list() for op in traced.graph.get_operations()
                  if op.type == "FusedBatchNormV3"], traced.structured_outputs[0].shape.as_list()
        graph = traced.graph.as_graph_def()
        ops_used = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
        return y.numpy(), [g.numpy() for g in grads], ops_used, layout

    exact_y, exact_grads, exact_ops, _ = outputs_and_gradients(layer, x)
    fused_y, fused_grads, fused_ops, layout = outputs_and_gradients(fused, tf.cast(x, tf.float32))
    assert "FusedBatchNormV3" in fused_ops and "FusedBatchNormV3" not in exact_ops
    assert layout == ([[1, 1] if flat_kernel else [5, 5]], [4, 5, 5, None])
    np.testing.assert_allclose(fused_y, exact_y, atol=1e-5)
    for fused_grad, exact_grad in zip(fused_grads, exact_grads):
        np.testing.assert_allclose(fused_grad, exact_grad, rtol=1e-4, atol=1e-4)
    assert not fused_grads[1][6:].any() and not fused_grads[2][6:].any()  # Inactive channels get nothing.


def test_batch_norm_calibration_is_a_cumulative_average_of_batch_statistics():
    layer = _built(SlimBatchNormalization(8))
    layer.moving_mean.assign(np.full(8, 7.0, "float32"))
    layer.reset_statistics()
    batches = [tf.random.stateless_normal([4, 2, 2, 5], seed=[5, i], mean=i, stddev=1 + i) for i in range(3)]
    for t, batch in enumerate(batches):
        layer(batch, calibration_rate=1.0 / (t + 1))
    means = np.mean([b.numpy().mean(axis=(0, 1, 2)) for b in batches], axis=0)
    variances = np.mean([b.numpy().var(axis=(0, 1, 2)) for b in batches], axis=0)
    np.testing.assert_allclose(layer.moving_mean.numpy()[:5], means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy()[:5], variances, rtol=1e-5)
    # Channels the subnet does not have keep their reset values.
    np.testing.assert_array_equal(layer.moving_mean.numpy()[5:], np.zeros(3))
    np.testing.assert_array_equal(layer.moving_variance.numpy()[5:], np.ones(3))


def test_supernet_calibration_sets_statistics_of_the_subnet():
    supernet = build_supernet("mobilenet_v1", num_classes=4, small_input=True, in_channels=1)
    config = SubnetConfig.uniform("mobilenet_v1", 24, 0.5)
    batches = [(tf.random.stateless_uniform([8, 32, 32, 1], seed=[6, i], minval=-1, maxval=1), None)
               for i in range(4)]
    used = supernet.calibrate_bn(batches, config, num_batches=3)
    assert used == 3
    stem_bn = supernet.feature_blocks[0].bn
    width = config.channels[0]
    assert np.any(stem_bn.moving_mean.numpy()[:width] != 0)
    np.testing.assert_array_equal(stem_bn.moving_mean.numpy()[width:], 0)
    with pytest.raises(ValueError, match="no calibration batches"):
        supernet.calibrate_bn([], config)


def test_calibrating_on_one_batch_makes_inference_equal_batch_statistics():
    supernet = build_supernet("mobilenet_v2", num_classes=4, small_input=True, in_channels=1)
    config = SubnetConfig.uniform("mobilenet_v2", 32, 0.6)
    images = tf.random.stateless_uniform([16, 32, 32, 1], seed=[7, 7], minval=-1, maxval=1)
    supernet.calibrate_bn([images], config)
    with_batch_statistics = supernet(images, config, training=True).numpy()
    calibrated = supernet(images, config, training=False).numpy()
    np.testing.assert_allclose(calibrated, with_batch_statistics, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "layer",
    [
        SlimConv2D(16, 3, strides=2, in_channels=8, name="c"),
        SlimDepthwiseConv2D(3, strides=2, channels=8, name="d"),
        SlimBatchNormalization(8, epsilon=1e-5, name="b"),
        SlimBatchNormalization(8, flat_kernel=True, name="b"),
        SlimDense(10, in_features=8, name="f"),
    ],
)
def test_layer_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "layer, call",
    [
        (lambda: SlimConv2D(16, 3, 2, in_channels=8), lambda l, x: l(x, out_channels=10)),
        (lambda: SlimDepthwiseConv2D(3, 1, channels=8), lambda l, x: l(x)),
        (lambda: SlimBatchNormalization(8, epsilon=1e-5), lambda l, x: l(x, training=False)),
    ],
)
def test_layers_save_and_reload_with_keras_saving(tmp_path, layer, call):
    """Each layer round-trips its config (initializer included) and weights through a .keras file."""
    original = _built(layer())
    rng = np.random.default_rng(1)
    for variable in original.weights:
        variable.assign(rng.uniform(0.5, 1.5, size=variable.shape).astype("float32"))
    inputs = keras.Input((6, 6, 8))
    model = keras.Model(inputs, call(original, inputs))
    path = str(tmp_path / "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    (reloaded,) = [l for l in loaded.layers if type(l) is type(original)]
    assert reloaded.get_config() == original.get_config()
    x = tf.random.stateless_normal([2, 6, 6, 8], seed=[4, 4])
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_slim_dense_saves_and_reloads_with_keras_saving(tmp_path):
    original = _built(SlimDense(5, in_features=12, kernel_initializer=keras.initializers.RandomNormal(stddev=0.5)))
    inputs = keras.Input((12,))
    model = keras.Model(inputs, original(inputs))
    model.save(str(tmp_path / "dense.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "dense.keras"))
    (reloaded,) = [l for l in loaded.layers if isinstance(l, SlimDense)]
    assert reloaded.get_config()["kernel_initializer"]["config"]["stddev"] == 0.5
    x = tf.random.stateless_normal([3, 12], seed=[5, 5])
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_resize_with_align_corners_samples_the_release_grid():
    """align_corners=True maps output pixel i to input coordinate i (n - 1) / (m - 1),
    as PyTorch's F.interpolate(..., align_corners=True) in the release."""
    ramp = np.tile(np.arange(9, dtype=np.float32)[None, :], (9, 1))[None, :, :, None]
    out = resize_images(tf.constant(ramp), 5, align_corners=True).numpy()[0, 0, :, 0]
    np.testing.assert_allclose(out, np.arange(5) * 8 / 4, atol=1e-6)
    half_pixel = resize_images(tf.constant(ramp), 5, align_corners=False).numpy()[0, 0, :, 0]
    assert not np.allclose(half_pixel, out)
    same = resize_images(tf.constant(ramp), 9, align_corners=True).numpy()
    np.testing.assert_array_equal(same, ramp)


def test_initialisation_follows_the_release():
    """Conv kernels N(0, sqrt(2 / (k k out))), depthwise N(0, sqrt(2 / (k k C))), classifier N(0, 0.01)."""
    keras.utils.set_random_seed(0)
    conv = _built(SlimConv2D(256, 3, 1, in_channels=128))
    depthwise = _built(SlimDepthwiseConv2D(3, 1, channels=512))
    dense = _built(SlimDense(1000, in_features=1024))
    assert np.std(conv.kernel.numpy()) == pytest.approx(np.sqrt(2 / (9 * 256)), rel=0.02)
    assert np.std(depthwise.kernel.numpy()) == pytest.approx(np.sqrt(2 / (9 * 512)), rel=0.05)
    assert np.std(dense.kernel.numpy()) == pytest.approx(0.01, rel=0.02)
    # Untruncated: some draws lie beyond two standard deviations.
    assert np.mean(np.abs(conv.kernel.numpy()) > 2 * np.sqrt(2 / (9 * 256))) > 0.03


@pytest.mark.parametrize("align_corners", [True, False])
def test_resizing_to_the_same_size_is_skipped_and_equals_the_resize_kernel(align_corners):
    """A static size equal to the images' is the identity of both kernels: skipped (no op)."""
    images = tf.random.stateless_uniform([2, 12, 12, 3], seed=[8, 8], minval=-2, maxval=2)
    kernel = tf.raw_ops.ResizeBilinear(
        images=images, size=[12, 12], align_corners=align_corners, half_pixel_centers=not align_corners
    )
    np.testing.assert_array_equal(resize_images(images, 12, align_corners).numpy(), kernel.numpy())
    graph = tf.function(lambda x: resize_images(x, 12, align_corners)).get_concrete_function(images).graph
    assert not [op.type for op in graph.get_operations() if "Resize" in op.type]
    # A tensor size (an encoded config) always resizes.
    graph = tf.function(lambda x: resize_images(x, tf.constant(12), align_corners)).get_concrete_function(images).graph
    assert [op.type for op in graph.get_operations() if "Resize" in op.type]


def test_full_width_static_counts_use_the_weights_unsliced():
    """`leading`: static counts equal to the axes read the variable itself (no slice op, so
    no slice gradient); a smaller or a tensor count slices."""
    layer = _built(SlimConv2D(16, 3, strides=1, in_channels=8))
    x = tf.random.stateless_normal([2, 5, 5, 8], seed=[9, 9])

    def op_types(out_channels):
        def loss(inputs):
            with tf.GradientTape() as tape:
                y = tf.reduce_sum(layer(inputs, out_channels=out_channels) ** 2)
            return tape.gradient(y, layer.kernel)

        return [op.type for op in tf.function(loss).get_concrete_function(x).graph.get_operations()]

    assert "StridedSlice" not in op_types(16) and "StridedSliceGrad" not in op_types(16)
    assert "StridedSliceGrad" in op_types(8)
    assert "StridedSliceGrad" in op_types(tf.constant(16))
    np.testing.assert_array_equal(layer(x, out_channels=16).numpy(), layer(x, out_channels=tf.constant(16)).numpy())
    assert leading(layer.kernel, None, None, 8, 16).shape == (3, 3, 8, 16)
    assert leading(layer.kernel, None, None, 8, 6).shape == (3, 3, 8, 6)
