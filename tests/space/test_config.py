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
        (dict(model="resnet18", resolution=224, widths=(1.0,) * 14), "model"),
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


def test_resolution_ends_are_drawn_half_as_often_as_the_release():
    """The release draws make_divisible(uniform(128, 224), 8): 128 and 224 get half an
    interval each. 0.5 reproduces it; 1.0 draws uniformly."""
    space = SearchSpace("mobilenet_v1")
    probabilities = space.resolution_probabilities
    assert probabilities[0] == probabilities[-1] == pytest.approx(probabilities[1] / 2)
    assert sum(probabilities) == pytest.approx(1.0)
    release = np.array([max(128, int(v + 4) // 8 * 8) for v in np.random.default_rng(0).uniform(128, 224, 200_000)])
    resolutions, _ = space.sample_arrays(np.random.default_rng(1), 200_000)
    for r, p in zip(space.resolutions, probabilities):
        assert np.mean(release == r) == pytest.approx(p, abs=0.003)
        assert np.mean(resolutions == r) == pytest.approx(p, abs=0.003)
    uniform = SearchSpace("mobilenet_v1", resolution_end_weight=1.0)
    assert len(set(uniform.resolution_probabilities)) == 1
    rng = random.Random(0)
    drawn = [space.random_config(rng).resolution for _ in range(20_000)]
    assert drawn.count(128) / len(drawn) == pytest.approx(probabilities[0], abs=0.01)
    with pytest.raises(ValueError, match="resolution_end_weight"):
        SearchSpace("mobilenet_v1", resolution_end_weight=0.0)
