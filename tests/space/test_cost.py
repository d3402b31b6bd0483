import json
import os
import random

import keras
import numpy as np
import pytest

from pss_tf import SearchSpace, SubnetConfig, build_supernet, count_flops, count_params
from pss_tf.space import architectures
from pss_tf.space.cost import count_flops_array, count_params_array, count_trainable_params, param_counts


@pytest.mark.parametrize(
    "model, resolution, width, expected",
    [
        ("mobilenet_v1", 224, 1.0, 568.79),
        ("mobilenet_v1", 128, 0.75, 106.78),
        ("mobilenet_v1", 160, 0.5, 76.54),
        ("mobilenet_v2", 224, 1.0, 300.84),
        # As in the release, the last conv keeps 1280 channels.
        ("mobilenet_v2", 128, 0.75, 69.15),
        # pss_tf's extension slims it with a ninth multiplier: 960 channels here.
        ("mobilenet_v2_slim_last_conv", 128, 0.75, 67.60),
        ("mobilenet_v2_slim_last_conv", 224, 1.0, 300.84),
    ],
)
def test_reference_flops(model, resolution, width, expected):
    assert round(count_flops(SubnetConfig.uniform(model, resolution, width)), 2) == expected


@pytest.mark.parametrize("model", ["mobilenet_v1", "mobilenet_v2"])
def test_flops_equal_the_release_count_on_random_configs(model):
    """The release's own counter (utils/comm.py calc_subnet_flops, run on its code) gave
    these; its MobileNetV2 configs carry a ninth multiplier, below 1 here, which the
    release samples but its network ignores."""
    path = os.path.join(os.path.dirname(__file__), "..", "fixtures", f"release_{model.replace('mobilenet_', 'mb')}_flops.json")
    with open(path) as f:
        reference = json.load(f)
    stages = architectures.get_architecture(model).num_stages
    assert len(reference["configs"]) >= 20
    ninths = [c["widths"][8] for c in reference["configs"] if model == "mobilenet_v2"]
    assert sum(w < 1 for w in ninths) >= (20 if model == "mobilenet_v2" else 0)
    for entry in reference["configs"]:
        config = SubnetConfig(model, entry["resolution"], tuple(entry["widths"][:stages]))
        assert count_flops(config, reference["num_classes"]) == pytest.approx(entry["release_mflops"], rel=1e-3)


def test_a_ninth_multiplier_for_mobilenet_v2_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="mobilenet_v2_slim_last_conv"):
        SubnetConfig("mobilenet_v2", 224, (1.0,) * 8 + (0.75,))


def test_reference_params_equal_keras_applications_totals():
    assert count_params(SubnetConfig.uniform("mobilenet_v1", 224, 1.0)) == 4_253_864
    assert count_params(SubnetConfig.uniform("mobilenet_v2", 224, 1.0)) == 3_538_984
    # keras.applications.MobileNet(alpha=1.5) and MobileNetV2(alpha=1.5), weights=None, 224 px.
    assert count_params(SubnetConfig.uniform("mobilenet_v1_1.5x", 224, 1.0)) == 8_734_984
    assert count_params(SubnetConfig.uniform("mobilenet_v2_1.5x", 224, 1.0)) == 6_909_528


@pytest.mark.parametrize(
    "model, trainable, all_weights",
    [
        # torchvision's resnet50(): 25,557,032 parameters; its state_dict adds 53,120 BN running statistics.
        ("resnet50", 25_557_032, 25_610_152),
        # keras.applications.MobileNetV2(alpha=1.5, weights=None): trainable and total params.
        ("mobilenet_v2_1.5x", 6_858_152, 6_909_528),
    ],
)
def test_both_parameter_counts_match_the_reference_networks(model, trainable, all_weights):
    config = SubnetConfig.uniform(model, 224, 1.0)
    assert count_trainable_params(config) == trainable
    assert count_params(config) == all_weights
    assert param_counts(config) == {"trainable": trainable, "all_weights": all_weights}


@pytest.mark.parametrize("model", architectures.MODEL_NAMES + ("mobilenet_v1_1.5x", "mobilenet_v2_1.5x"))
def test_vectorised_counts_equal_scalar_counts(model):
    space = SearchSpace(model, min_width=0.3)
    rng = random.Random(0)
    configs = [space.random_config(rng) for _ in range(300)]
    resolutions = np.array([c.resolution for c in configs])
    widths = np.array([c.widths for c in configs])
    flops = count_flops_array(model, resolutions, widths, num_classes=10, small_input=True)
    params = count_params_array(model, widths, num_classes=10, small_input=True)
    for i, config in enumerate(configs):
        assert flops[i] == count_flops(config, 10, small_input=True)
        assert params[i] == count_params(config, 10, small_input=True)


def _count_by_layers(model: keras.Model, resolution: int, in_channels: int) -> tuple[float, int]:
    """MACs and weights read off an extracted Keras model's layers and real output shapes."""
    probe = keras.Model(model.input, [layer.output for layer in model.layers[1:]])
    outputs = probe(np.zeros((1, resolution, resolution, in_channels), np.float32))
    macs = 0
    layers = model.layers[1:]
    for i, (layer, out) in enumerate(zip(layers, outputs)):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            k = layer.kernel.shape
            macs += k[0] * k[1] * out.shape[1] * out.shape[2] * out.shape[3]
        elif isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.shape
            macs += k[0] * k[1] * k[2] * k[3] * out.shape[1] * out.shape[2]
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            macs += int(np.prod(outputs[i - 1].shape[1:]))  # one add per input element
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.kernel.shape[0] * layer.kernel.shape[1]
    params = sum(int(np.prod(w.shape)) for w in model.weights)
    return macs / 1e6, params


@pytest.mark.parametrize(
    "model, small_input",
    [("mobilenet_v1", False), ("mobilenet_v2", True), ("resnet50_0.5x", False), ("resnet50_layerwise", True)],
)
def test_counts_equal_an_independent_count_over_extracted_layers(model, small_input):
    in_channels = 1 if small_input else 3
    supernet = build_supernet(model, num_classes=10, small_input=small_input, in_channels=in_channels)
    space = (
        SearchSpace(model, 24, 40, 8, 0.35, 1.0) if small_input else SearchSpace(model, 96, 136, 8, 0.5, 1.0)
    )
    rng = random.Random(7)
    for _ in range(3):
        config = space.random_config(rng)
        macs, params = _count_by_layers(supernet.extract(config), config.resolution, in_channels)
        kwargs = dict(num_classes=10, small_input=small_input, in_channels=in_channels)
        assert count_flops(config, **kwargs) == pytest.approx(macs, rel=1e-12)
        assert count_params(config, **kwargs) == params
