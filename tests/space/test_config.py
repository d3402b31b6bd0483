import json
import random

import numpy as np
import pytest

from pss_tf import SearchSpace, SubnetConfig, make_divisible
from pss_tf.space.config import make_divisible_array


@pytest.mark.parametrize(
    "value, expected",
    [(32 * 0.75, 24), (1024 * 0.78, 800), (24 * 0.35, 8), (1280 * 0.75, 960), (28.0, 32), (3.0, 8), (11.0, 16)],
)
def test_make_divisible_follows_the_design_note(value, expected):
    assert make_divisible(value) == expected
    assert make_divisible_array(np.array([value]))[0] == expected


def test_make_divisible_array_agrees_with_scalar_on_many_values():
    rng = np.random.default_rng(0)
    base = rng.choice([16, 24, 32, 64, 96, 160, 320, 1024, 1280], size=5000)
    values = base * np.round(rng.uniform(0.05, 1.0, size=5000), 3)
    assert list(make_divisible_array(values)) == [make_divisible(v) for v in values]


def test_channels_of_full_and_slim_configs():
    full = SubnetConfig.uniform("mobilenet_v1", 224, 1.0)
    assert full.channels == (32, 64, 128, 128, 256, 256) + (512,) * 6 + (1024, 1024)
    slim = SubnetConfig.uniform("mobilenet_v2", 128, 0.75)
    assert slim.channels == (24, 16, 24, 24, 48, 72, 120, 240)  # The last conv keeps 1280.
    tail = SubnetConfig.uniform("mobilenet_v2_slim_last_conv", 128, 0.75)
    assert tail.channels == (24, 16, 24, 24, 48, 72, 120, 240, 960)


def test_config_is_hashable_and_equal_by_value():
    a = SubnetConfig("mobilenet_v2", 160, [0.8] * 8)
    b = SubnetConfig("mobilenet_v2", 160, tuple([0.8] * 8))
    assert a == b and hash(a) == hash(b)
    assert len({a, b, SubnetConfig.uniform("mobilenet_v2", 168, 0.8)}) == 2
    with pytest.raises(Exception):
        a.resolution = 224


def test_json_round_trip_is_exact():
    config = SearchSpace("mobilenet_v1").random_config(random.Random(3))
    text = config.to_json()
    assert json.loads(text)["model"] == "mobilenet_v1"
    restored = SubnetConfig.from_json(text)
    assert restored == config and restored.widths == config.widths
    assert SubnetConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(model="resnet50", resolution=224, widths=(1.0,) * 14), "model"),
        (dict(model="mobilenet_v1", resolution=224, widths=(1.0,) * 13), "widths"),
        (dict(model="mobilenet_v2", resolution=224, widths=(1.0,) * 14), "widths"),
        (dict(model="mobilenet_v1", resolution=224, widths=(1.0,) * 13 + (1.2,)), r"widths\[13\]"),
        (dict(model="mobilenet_v1", resolution=224, widths=(0.0,) + (1.0,) * 13), r"widths\[0\]"),
        (dict(model="mobilenet_v1", resolution=0, widths=(1.0,) * 14), "resolution"),
        (dict(model="mobilenet_v1", resolution=224.0, widths=(1.0,) * 14), "resolution"),
        (dict(model="mobilenet_v1", resolution=True, widths=(1.0,) * 14), "resolution"),
    ],
)
def test_invalid_configs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SubnetConfig(**kwargs)


def test_from_json_rejects_missing_and_unknown_fields():
    with pytest.raises(ValueError, match="missing"):
        SubnetConfig.from_json('{"model": "mobilenet_v1", "resolution": 224}')
    with pytest.raises(ValueError, match="unknown field"):
        SubnetConfig.from_json('{"model": "mobilenet_v1", "resolution": 224, "widths": [1], "x": 1}')
    with pytest.raises(ValueError, match="JSON"):
        SubnetConfig.from_json("{not json")


def test_search_space_extremes_and_membership():
    space = SearchSpace("mobilenet_v1")
    assert space.max_config() == SubnetConfig.uniform("mobilenet_v1", 224, 1.0)
    assert space.min_config() == SubnetConfig.uniform("mobilenet_v1", 128, 0.75)
    assert space.resolutions == tuple(range(128, 225, 8))
    rng = random.Random(0)
    for _ in range(200):
        config = space.random_config(rng)
        assert space.contains(config)
        assert all(round(w, 3) == w for w in config.widths)
    assert not space.contains(SubnetConfig.uniform("mobilenet_v1", 132, 0.8))
    assert not space.contains(SubnetConfig.uniform("mobilenet_v1", 224, 0.5))
    assert not space.contains(SubnetConfig.uniform("mobilenet_v2", 224, 1.0))
    assert "widths[0]" in space.violations(SubnetConfig.uniform("mobilenet_v1", 224, 0.5))[0]


def test_search_space_sample_arrays_cover_the_ranges():
    space = SearchSpace("mobilenet_v2", 96, 160, 16, 0.5, 1.0)
    resolutions, widths = space.sample_arrays(np.random.default_rng(0), 20000)
    assert set(resolutions.tolist()) == {96, 112, 128, 144, 160}
    assert widths.shape == (20000, 8)
    assert widths.min() >= 0.5 and widths.max() <= 1.0
    assert abs(widths.mean() - 0.75) < 0.01


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(min_resolution=224, max_resolution=128), "min_resolution"),
        (dict(resolution_step=5), "resolution_step"),
        (dict(min_width=0.0), "min_width"),
        (dict(max_width=1.5), "max_width"),
        (dict(min_width=0.9, max_width=0.8), "min_width"),
    ],
)
def test_invalid_search_spaces_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SearchSpace("mobilenet_v1", **kwargs)
