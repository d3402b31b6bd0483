"""The `padding` architecture option: TensorFlow's "same" or the release's symmetric padding."""

import json

import numpy as np
import pytest
import tensorflow as tf

from pss_tf.errors import ConfigError
from pss_tf.models.layers import SlimConv2D, SlimDepthwiseConv2D, conv_padding
from pss_tf.models.supernet import build_supernet
from pss_tf.run.config import TrainConfig
from pss_tf.space.config import SubnetConfig


def test_conv_padding_pads_only_strided_convs_explicitly():
    assert conv_padding("symmetric", 3, 2) == (1, "VALID")
    assert conv_padding("symmetric", 3, 1) == (0, "SAME")
    assert conv_padding("symmetric", 1, 1) == (0, "SAME")
    assert conv_padding("same", 3, 2) == (0, "SAME")
    with pytest.raises(ValueError, match="padding: expected one of"):
        conv_padding("reflect", 3, 2)


@pytest.mark.parametrize("size", [8, 9])
def test_symmetric_strided_convs_equal_an_explicit_one_pixel_border(size):
    """PyTorch's padding=1: one zero row and column on every side, then a valid conv."""
    rng = np.random.default_rng(size)
    x = rng.normal(size=(1, size, size, 4)).astype(np.float32)
    conv = SlimConv2D(6, 3, 2, 4, padding="symmetric")
    conv.build()
    depthwise = SlimDepthwiseConv2D(3, 2, 4, padding="symmetric")
    depthwise.build()
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    expected = tf.nn.conv2d(padded, conv.kernel, 2, "VALID").numpy()
    np.testing.assert_allclose(conv(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    expected = tf.nn.depthwise_conv2d(padded, depthwise.kernel, (1, 2, 2, 1), "VALID").numpy()
    np.testing.assert_allclose(depthwise(x).numpy(), expected, rtol=1e-6, atol=1e-6)
    assert conv(x).shape[1] == (size + 1) // 2  # the output size of "same"
    if size % 2:  # odd sizes: "same" pads one pixel on every side too
        same = SlimConv2D(6, 3, 2, 4, padding="same")
        same.build()
        same.kernel.assign(conv.kernel)
        np.testing.assert_allclose(same(x).numpy(), conv(x).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("model, stages", [("mobilenet_v1", 14), ("mobilenet_v2", 8)])
def test_extracted_models_follow_the_supernet_padding(model, stages):
    supernet = build_supernet(model, num_classes=7, padding="symmetric")
    rng = np.random.default_rng(0)
    for variable in supernet.variables:
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape))
        elif "moving_mean" in variable.path or "beta" in variable.path:
            variable.assign(rng.normal(0, 0.2, variable.shape))
    images = rng.random((2, 150, 150, 3), dtype=np.float32)
    for resolution in (136, 128):  # 136 -> 68 -> 34 -> 17 -> 9 -> 5: odd sizes; 128: all even
        config = SubnetConfig(model, resolution, tuple(rng.uniform(0.75, 1.0, stages).round(3)))
        extracted = supernet.extract(config)
        assert sum(type(layer).__name__ == "ZeroPadding2D" for layer in extracted.layers) == 5
        np.testing.assert_allclose(
            extracted(images, training=False).numpy(), supernet(images, config, training=False).numpy(),
            rtol=1e-5, atol=1e-5,
        )
    restored = type(supernet).from_config(json.loads(json.dumps(supernet.get_config())))
    assert restored.padding == "symmetric" and restored.stem.conv.padding == "symmetric"


def test_padding_is_a_run_setting_recorded_in_run_json():
    config = TrainConfig(job_dir="/tmp/x").replace(padding="symmetric")
    assert config.to_dict()["space"]["padding"] == "symmetric"
    assert TrainConfig.from_dict(config.to_dict()).space.padding == "symmetric"
    old = config.to_dict()
    del old["space"]["padding"]  # a run.json written before the option
    assert TrainConfig.from_dict(old).space.padding == "same"
    with pytest.raises(ConfigError, match="padding"):
        TrainConfig(job_dir="/tmp/x").replace(padding="reflect").validate()
