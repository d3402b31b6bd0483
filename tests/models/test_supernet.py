import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from pss_tf import SearchSpace, SubnetConfig, build_supernet
from pss_tf.models.layers import BilinearResize
from pss_tf.models.supernet import encode
from pss_tf.space.cost import count_flops, count_params, count_trainable_params

STANDARD_LAYERS = (
    keras.layers.InputLayer,
    BilinearResize,  # pss_tf's one non-Keras layer: the resize (align_corners, as the release)
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.BatchNormalization,
    keras.layers.ReLU,
    keras.layers.Add,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.MaxPooling2D,
    keras.layers.Dense,
    keras.layers.Activation,  # MobileNetV3's hard-swish and its squeeze-and-excite's hard sigmoid
    keras.layers.Multiply,  # squeeze-and-excite's gate
)


def _randomise_batch_norm(supernet, seed=0):
    """Non-trivial BN parameters and statistics, so extraction must slice them right."""
    rng = np.random.default_rng(seed)
    for layer in supernet.batch_norm_layers():
        n = layer.channels
        layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
        layer.beta.assign(rng.normal(0, 0.1, n).astype("float32"))
        layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
    supernet.classifier.kernel.assign(rng.normal(0, 0.5, supernet.classifier.kernel.shape).astype("float32"))
    for layer in supernet.slim_layers():  # Squeeze-and-excite and MobileNetV3's hidden head layer.
        if hasattr(layer, "bias") and layer is not supernet.classifier:
            fan_in = layer.kernel.shape[-2]
            layer.kernel.assign(rng.normal(0, fan_in**-0.5, layer.kernel.shape).astype("float32"))
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape).astype("float32"))


@pytest.fixture(scope="module")
def supernets():
    nets = {}
    for model in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v2_layerwise", "resnet50", "resnet50_layerwise",
                  "mobilenet_v3_large", "mobilenet_v3_small_layerwise"):
        nets[model] = build_supernet(model, num_classes=1000)
        _randomise_batch_norm(nets[model])
    return nets


@pytest.mark.parametrize(
    "model, application, alpha",
    [
        ("mobilenet_v1", keras.applications.MobileNet, 1.0),
        ("mobilenet_v2", keras.applications.MobileNetV2, 1.0),
        # AutoSlim's and BCNet's 1.5x supernet (its last conv 1920): Keras widens the same way.
        ("mobilenet_v2_1.5x", keras.applications.MobileNetV2, 1.5),
        ("mobilenet_v2_layerwise", keras.applications.MobileNetV2, 1.0),  # Every group a gene, the same widest net.
    ],
)
def test_full_width_subnet_has_keras_applications_parameter_count(supernets, model, application, alpha):
    supernet = supernets[model] if model in supernets else build_supernet(model, num_classes=1000)
    extracted = supernet.extract(SubnetConfig.uniform(model, 224, 1.0))
    reference = application(alpha=alpha, weights=None, input_shape=(224, 224, 3))

    def trainable(m):
        return sum(int(np.prod(w.shape)) for w in m.trainable_weights)

    assert trainable(extracted) == trainable(reference) == count_trainable_params(SubnetConfig.uniform(model, 224, 1.0))
    assert extracted.count_params() == reference.count_params() == count_params(SubnetConfig.uniform(model, 224, 1.0))


@pytest.mark.parametrize("model", ["resnet50", "resnet50_layerwise"])
def test_full_width_resnet50_has_torchvisions_parameter_count(supernets, model):
    """torchvision's ResNet-50: 25,557,032 trainable parameters (no conv biases, a projection
    with BN on each stage's first block); every weight is the cost model's count."""
    extracted = supernets[model].extract(SubnetConfig.uniform(model, 224, 1.0), resize=False)
    assert sum(int(np.prod(w.shape)) for w in extracted.trainable_weights) == 25_557_032
    assert count_trainable_params(SubnetConfig.uniform(model, 224, 1.0), 1000) == 25_557_032
    assert extracted.count_params() == count_params(SubnetConfig.uniform(model, 224, 1.0), 1000)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in extracted.layers) == 1


@pytest.mark.parametrize(
    "model, trainable, macs",
    [("mobilenet_v3_large", 5_483_032, 216_589_760), ("mobilenet_v3_small", 2_542_856, 56_510_400),
     ("mobilenet_v3_large_layerwise", 5_483_032, 216_589_760)],
)
def test_full_width_mobilenet_v3_has_torchvisions_figures(supernets, model, trainable, macs):
    """torchvision's MobileNetV3 at 224 px: trainable parameters of the extracted model, and
    MACs of its convs, squeeze-and-excite convs and two linear layers, each counted off the
    extracted model's own layers (the cost model's `pools=False` count)."""
    supernet = supernets[model] if model in supernets else build_supernet(model, num_classes=1000)
    config = SubnetConfig.uniform(model, 224, 1.0)
    extracted = supernet.extract(config, resize=False, batch_size=1)
    assert sum(int(np.prod(w.shape)) for w in extracted.trainable_weights) == trainable
    assert extracted.count_params() == count_params(config)
    counted = 0
    for layer in extracted.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            kernel = layer.weights[0].shape
            outputs = int(np.prod(layer.output.shape[1:-1])) if len(layer.output.shape) == 4 else 1
            per_output = int(np.prod(kernel[:-1])) if not isinstance(layer, keras.layers.DepthwiseConv2D) else (
                kernel[0] * kernel[1])
            counted += per_output * layer.output.shape[-1] * outputs
    assert counted == macs == round(count_flops(config, pools=False) * 1e6)
    hard_swish = [l for l in extracted.layers if isinstance(l, keras.layers.Activation) and l.name.endswith("_hs")]
    assert len(hard_swish) > 0 and sum(l.name.endswith("_se_gate") for l in extracted.layers) == (
        8 if "large" in model else 9)


@pytest.mark.parametrize(
    "model, resolutions",
    [
        ("mobilenet_v1", (96, 160)),
        ("mobilenet_v2", (96, 160)),
        ("mobilenet_v2_layerwise", (96, 160)),
        ("resnet50", (64, 96)),  # Its max pool and projections at odd sizes too (96 -> 48 -> 24 -> 12 -> 6 -> 3).
        ("resnet50_layerwise", (64, 96)),
        ("mobilenet_v3_large", (96, 160)),
        ("mobilenet_v3_small_layerwise", (96, 160)),
    ],
)
def test_extracted_subnet_equals_supernet(supernets, model, resolutions):
    supernet = supernets[model]
    space = SearchSpace(model, resolutions[0], resolutions[1], 16, 0.35, 1.0)
    rng = random.Random(1)
    images = tf.random.stateless_uniform([2, 160, 160, 3], seed=[1, 2], minval=-1, maxval=1)
    configs = [space.max_config(), space.min_config()] + [space.random_config(rng) for _ in range(2)]
    for config in configs:
        extracted = supernet.extract(config)
        assert all(isinstance(layer, STANDARD_LAYERS) for layer in extracted.layers), [
            type(layer).__name__ for layer in extracted.layers if not isinstance(layer, STANDARD_LAYERS)
        ]
        expected = supernet(images, config, training=False).numpy()
        got = extracted(images, training=False).numpy()
        assert np.abs(expected).max() > 0.1  # the comparison is not between near-zero tensors
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        from_tensor = supernet(images, tf.constant(encode(config)), training=False).numpy()
        np.testing.assert_allclose(from_tensor, expected, atol=1e-5, rtol=0)


def test_one_trace_serves_every_subnet(supernets):
    supernet = supernets["mobilenet_v2"]
    space = SearchSpace("mobilenet_v2", 64, 128, 8, 0.35, 1.0)
    traces = []

    @tf.function
    def forward(images, vector):
        traces.append(1)
        return supernet(images, vector, training=True)

    images = tf.random.stateless_uniform([2, 128, 128, 3], seed=[3, 4])
    rng = random.Random(2)
    configs = {space.random_config(rng) for _ in range(10)}
    assert len(configs) == 10
    for config in configs:
        logits = forward(images, tf.constant(encode(config)))
        assert logits.shape == (2, 1000)
    assert len(traces) == 1
    assert forward.experimental_get_tracing_count() == 1


def test_outputs_depend_on_config_and_reuse_shared_weights(supernets):
    supernet = supernets["mobilenet_v1"]
    images = tf.random.stateless_uniform([1, 128, 128, 3], seed=[5, 6])
    a = supernet(images, SubnetConfig.uniform("mobilenet_v1", 128, 1.0))
    b = supernet(images, SubnetConfig.uniform("mobilenet_v1", 128, 0.5))
    assert not np.allclose(a, b)
    # Zeroing channels a half-width subnet never reads leaves its output unchanged.
    pw = supernet.feature_blocks[13].pointwise.kernel
    saved = pw.numpy()
    pw.assign(np.pad(saved[:, :, :512, :512], ((0, 0), (0, 0), (0, 512), (0, 512))))
    try:
        np.testing.assert_array_equal(supernet(images, SubnetConfig.uniform("mobilenet_v1", 128, 0.5)), b)
    finally:
        pw.assign(saved)


def test_small_input_option_runs_28_pixel_images():
    supernet = build_supernet("mobilenet_v1", num_classes=10, small_input=True, in_channels=1)
    assert supernet.feature_blocks[0].strides == 1
    images = tf.zeros([4, 28, 28, 1])
    logits = supernet(images, SubnetConfig.uniform("mobilenet_v1", 28, 0.5), training=True)
    assert logits.shape == (4, 10)
    default = build_supernet("mobilenet_v1", num_classes=10)
    assert default.feature_blocks[0].strides == 2


def test_config_of_another_model_is_rejected(supernets):
    with pytest.raises(ValueError, match="config"):
        supernets["mobilenet_v1"](tf.zeros([1, 32, 32, 3]), SubnetConfig.uniform("mobilenet_v2", 32, 1.0))
    with pytest.raises(ValueError, match="model"):
        build_supernet("resnet18")


def test_weights_round_trip_through_a_weights_file(tmp_path, supernets):
    supernet = supernets["mobilenet_v2"]
    path = str(tmp_path / "supernet.weights.h5")
    supernet.save_weights(path)
    clone = build_supernet("mobilenet_v2", num_classes=1000)
    clone.load_weights(path)
    for a, b in zip(supernet.weights, clone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    config = SubnetConfig.uniform("mobilenet_v2", 96, 0.6)
    images = tf.random.stateless_uniform([1, 96, 96, 3], seed=[7, 8])
    np.testing.assert_array_equal(supernet(images, config), clone(images, config))


def test_supernet_config_round_trip():
    supernet = build_supernet("mobilenet_v2", num_classes=7, small_input=True, in_channels=1, dropout_rate=0.1)
    clone = supernet.__class__.from_config(supernet.get_config())
    assert (clone.num_classes, clone.small_input, clone.in_channels, clone.dropout_rate) == (7, True, 1, 0.1)
    assert [w.shape for w in clone.weights] == [w.shape for w in supernet.weights]


def test_the_flat_batch_norm_kernel_is_an_option_of_every_batch_norm():
    default = build_supernet("mobilenet_v1", num_classes=4, small_input=True, in_channels=1)
    assert not default.flat_bn_kernel and not any(layer.flat_kernel for layer in default.batch_norm_layers())
    flat = build_supernet("mobilenet_v1", num_classes=4, small_input=True, in_channels=1, flat_bn_kernel=True)
    clone = flat.__class__.from_config(flat.get_config())
    for supernet in (flat, clone):
        assert len(supernet.batch_norm_layers()) == 27
        assert all(layer.flat_kernel for layer in supernet.batch_norm_layers())


def test_tf_checkpoint_of_the_model_alone_restores_every_weight(tmp_path, supernets):
    """Training checkpoints are TF object graphs: every block must be reachable by
    attribute, not only through the optimizer's variable list."""
    supernet = supernets["mobilenet_v1"]
    path = tf.train.Checkpoint(model=supernet).save(str(tmp_path / "ckpt"))
    saved = {name for name, _ in tf.train.list_variables(path)}
    assert "model/stem/conv/kernel/.ATTRIBUTES/VARIABLE_VALUE" in saved
    assert "model/block13/pointwise_bn/moving_variance/.ATTRIBUTES/VARIABLE_VALUE" in saved
    clone = build_supernet("mobilenet_v1", num_classes=1000)
    tf.train.Checkpoint(model=clone).restore(path).assert_existing_objects_matched()
    assert len(clone.weights) == len(supernet.weights)
    for a, b in zip(supernet.weights, clone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_supernet_saves_and_reloads_with_keras_saving(tmp_path):
    """A `.keras` file holds the supernet's config and weights; loading it needs no
    custom_objects because the classes are registered."""
    supernet = build_supernet("mobilenet_v2", num_classes=5, small_input=True, in_channels=1, bn_epsilon=1e-5)
    rng = np.random.default_rng(0)
    for variable in supernet.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.1 + (1.0 if "variance" in variable.path else 0.0))
    path = str(tmp_path / "supernet.keras")
    supernet.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(supernet)
    assert (loaded.num_classes, loaded.in_channels, loaded.bn_epsilon) == (5, 1, 1e-5)
    for a, b in zip(supernet.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    config = SubnetConfig.uniform("mobilenet_v2", 24, 0.6)
    images = tf.random.stateless_uniform([2, 28, 28, 1], seed=[1, 2])
    np.testing.assert_array_equal(supernet(images, config).numpy(), loaded(images, config).numpy())


def test_extract_options_fixed_resolution_and_batch(supernets):
    """Without the resize the model takes images at the subnet's resolution (what latency
    tables time and int8 converters see) and computes what the resizing model computes on them."""
    supernet = supernets["mobilenet_v1"]
    config = SubnetConfig.uniform("mobilenet_v1", 128, 0.5)
    resizing = supernet.extract(config)
    fixed = supernet.extract(config, resize=False, batch_size=1)
    assert fixed.inputs[0].shape == (1, 128, 128, 3)
    assert not any(isinstance(layer, BilinearResize) for layer in fixed.layers)
    images = tf.random.stateless_uniform([1, 128, 128, 3], seed=[5, 6], minval=-1, maxval=1)
    statistics = [w.copy() for w in resizing.get_layer("stem_bn").get_weights()]
    # A plain call is inference: it must not touch BN statistics.
    np.testing.assert_allclose(fixed(images).numpy(), resizing(images).numpy(), atol=1e-5)
    for before, after in zip(statistics, resizing.get_layer("stem_bn").get_weights()):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(resizing(images).numpy(), supernet(images, config, training=False).numpy(), atol=1e-5)
    assert fixed.count_params() == resizing.count_params()


@pytest.mark.parametrize(
    "model", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v2_layerwise", "resnet50_layerwise", "mobilenet_v3_large"]
)
def test_each_part_of_a_block_has_one_name_on_both_faces(supernets, model):
    """The weights a slim block hands out and the layers its static face builds carry the
    same part names, and extraction refuses weights that would land nowhere or are missing."""
    supernet = supernets[model]
    config = SubnetConfig.uniform(model, 96, 0.5)
    weights = supernet.subnet_weights(config)
    extracted = supernet.extract(config, weights=weights)
    assert {layer.name for layer in extracted.layers if layer.weights} == set(weights)
    with pytest.raises(ValueError, match=r"no layer of the extracted model is named \['stray'\]"):
        supernet.extract(config, weights={**weights, "stray": []})
    block = next(name for name in weights if name.startswith("block") and name.endswith("_bn"))
    with pytest.raises(ValueError, match=rf"no weights given for layer\(s\) \['{block}'\]"):
        supernet.extract(config, weights={k: v for k, v in weights.items() if k != block})


@pytest.mark.parametrize("choice", ["auto", "nhwc", "flat"])
def test_a_runs_supernet_takes_the_batch_norm_kernel_chosen_for_this_machine(choice):
    from types import SimpleNamespace

    from pss_tf import cpu_kernels
    from pss_tf.models.supernet import supernet_for_run
    from pss_tf.run.config import TrainConfig

    config = TrainConfig(job_dir="j").replace(batch_norm_kernel=choice, small_input=True)
    supernet = supernet_for_run(config, SimpleNamespace(num_classes=4, channels=1))
    expected = {"nhwc": False, "flat": True, "auto": cpu_kernels.flat_batch_norm("auto")["flat"]}[choice]
    assert supernet.flat_bn_kernel is expected
    assert [layer.flat_kernel for layer in supernet.batch_norm_layers()] == [expected] * 27
