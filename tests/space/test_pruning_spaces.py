"""Channel-pruning spaces: wider base networks (`mobilenet_v2_1.5x`) and width bins (`width_bins`).

AutoSlim and BCNet prune a network wider than the one deployed and draw every
layer's width from a fixed set: k/N of its base width. A base width is part of
the model's name, so every table, cost and file keyed by the model knows it; a
space's multipliers are its `width_values`, which the samplers, the search's
genes and the latency grid enumerate.
"""

import random

import numpy as np
import pytest

from pss_tf.errors import ConfigError
from pss_tf.latency.variants import stage_channels
from pss_tf.space import architectures
from pss_tf.sampling.conditional_sampler import ConditionalSampler
from pss_tf.search.genes import GeneSpace
from pss_tf.space.config import SearchSpace, SubnetConfig, make_divisible
from pss_tf.space.cost import count_flops, count_params
from pss_tf.space.metrics import FlopsMetric
from pss_tf.space.targets import TargetGrid

# AutoSlim's ratios i/12, i = 2..12, of MobileNetV1 at 224 px.
AUTOSLIM = SearchSpace("mobilenet_v1", 224, 224, 8, 0.16, 1.0, width_bins=12)


def test_the_values_are_the_bins_inside_the_range():
    np.testing.assert_array_equal(AUTOSLIM.width_values, np.arange(2, 13) / 12)
    assert AUTOSLIM.width_scale == 12
    assert AUTOSLIM.max_config().widths == (1.0,) * 14
    assert AUTOSLIM.min_config().widths == (2 / 12,) * 14  # The smallest bin above min_width.
    # Without bins: the release's 3-decimal grid, ends included.
    plain = SearchSpace("mobilenet_v1", 24, 32, 4, 0.35, 0.5)
    np.testing.assert_array_equal(plain.width_values, np.round(np.arange(350, 501) / 1000, 3))
    assert (plain.widest, plain.thinnest) == (0.5, 0.35)


def test_draws_take_every_bin_equally_often_and_nothing_else():
    _, widths = AUTOSLIM.sample_arrays(np.random.default_rng(0), 6000)
    values, counts = np.unique(widths, return_counts=True)
    np.testing.assert_array_equal(values, AUTOSLIM.width_values)
    expected = widths.size / len(values)  # 7,636 per bin; a binomial SD is about 83.
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts
    rng = random.Random(0)
    drawn = {w for _ in range(200) for w in AUTOSLIM.random_config(rng).widths}
    assert drawn == set(AUTOSLIM.width_values.tolist())


def test_membership_names_the_bins():
    assert AUTOSLIM.contains(SubnetConfig("mobilenet_v1", 224, (5 / 12,) * 14))
    problems = AUTOSLIM.violations(SubnetConfig("mobilenet_v1", 224, (0.4,) + (0.5,) * 13))
    assert problems == ["widths[0]: 0.4 is not a multiple of 1/12 (width_bins)"]


def test_a_range_without_bins_or_a_bad_count_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"width_bins: no multiple of 1/3 lies in \[min_width, max_width\]"):
        SearchSpace("mobilenet_v1", 224, 224, 8, 0.4, 0.6, width_bins=3)
    with pytest.raises(ConfigError, match="width_bins"):
        SearchSpace("mobilenet_v1", 224, 224, 8, 0.4, 0.6, width_bins=-1)


def test_files_of_spaces_without_bins_read_as_before():
    plain = SearchSpace("mobilenet_v2", 96, 224, 8, 0.75, 1.0)
    assert "width_bins" not in plain.to_dict()
    assert SearchSpace.from_dict(plain.to_dict()) == plain
    assert SearchSpace.from_dict(AUTOSLIM.to_dict()) == AUTOSLIM and AUTOSLIM.to_dict()["width_bins"] == 12


def test_genes_and_latency_grid_enumerate_the_bins():
    genes = GeneSpace(AUTOSLIM)
    np.testing.assert_array_equal(genes.width_values, AUTOSLIM.width_values)
    config = AUTOSLIM.random_config(random.Random(1))
    assert genes.decode(genes.encode(config)) == config
    with pytest.raises(ValueError, match="not a multiple of 1/12"):
        genes.encode(SubnetConfig("mobilenet_v1", 224, (0.5,) * 13 + (0.4,)))
    stem = stage_channels(AUTOSLIM)[0]
    np.testing.assert_array_equal(stem, sorted({make_divisible(32 * k / 12) for k in range(2, 13)}))


def test_the_conditional_sampler_draws_on_the_bins():
    metric = FlopsMetric("mobilenet_v1", TargetGrid(100, 500, 100))
    sampler = ConditionalSampler.build(AUTOSLIM, metric, 5000, 0)
    rng = np.random.default_rng(0)
    for target in sampler.targets:
        config = sampler.sample(target, rng)
        assert AUTOSLIM.contains(config), config
        assert metric.target(config) == target


def test_a_base_width_is_part_of_the_model_name():
    assert architectures.model_name("mobilenet_v2", 1.5) == "mobilenet_v2_1.5x"
    assert architectures.model_name("mobilenet_v2", 1.0) == "mobilenet_v2"
    assert architectures.parse_model("mobilenet_v1_0.5x") == ("mobilenet_v1", 0.5)
    wide = architectures.get_architecture("mobilenet_v2_1.5x")
    # make_divisible(c * 1.5) of every stage, and the last conv 1280 * 1.5 = 1920 (Keras, AutoSlim, BCNet).
    assert wide.full_channels == (48, 24, 40, 48, 96, 144, 240, 480, 1920)
    assert architectures.get_architecture("mobilenet_v2_0.5x").fixed_channels == (1280,)  # Never narrower.
    for bad in ("mobilenet_v2_1.50x", "mobilenet_v2_1x", "mobilenet_v2_5x", "resnet18_1.5x", "mobilenet_v2_x1.5"):
        with pytest.raises(ValueError, match="model: unknown model"):
            architectures.parse_model(bad)
    with pytest.raises(ConfigError, match="model: unknown model 'mobilenet_v2_1.50x'"):
        SearchSpace("mobilenet_v2_1.50x")


def test_configs_of_another_base_width_are_outside_the_space():
    space = SearchSpace("mobilenet_v2_1.5x", 224, 224, 8, 0.1, 1.0, width_bins=20)
    assert space.violations(SubnetConfig.uniform("mobilenet_v2", 224, 1.0)) == ["model: 'mobilenet_v2' is not 'mobilenet_v2_1.5x'"]
    assert SubnetConfig.uniform("mobilenet_v2_1.5x", 224, 0.5).channels == (24, 16, 24, 24, 48, 72, 120, 240)


def test_layerwise_mobilenet_v2_makes_every_channel_group_a_gene():
    arch = architectures.get_architecture("mobilenet_v2_layerwise")
    # Stem, 7 stage outputs, the last conv, then the 16 expanding blocks' hidden widths (6 x their input's base).
    assert arch.num_stages == 25 and arch.has_inner_groups and not arch.fixed_channels
    assert arch.base_channels[:9] == (32, 16, 24, 32, 64, 96, 160, 320, 1280)
    assert arch.base_channels[9:12] == (96, 144, 144)
    full = SubnetConfig.uniform("mobilenet_v2_layerwise", 224, 1.0)
    assert count_params(full) == count_params(SubnetConfig.uniform("mobilenet_v2", 224, 1.0))
    # Halving only the first expanding block's hidden width (16 -> 96 -> 24 channels, stride 2 in its
    # depthwise conv, 112 -> 56 px), by hand: 48 fewer channels in its expand, depthwise and project
    # convs and their two batch norms.
    widths = list(full.widths)
    widths[9] = 0.5
    half = SubnetConfig("mobilenet_v2_layerwise", 224, tuple(widths))
    assert half.channels[9] == 48 and half.channels[:9] == full.channels[:9]
    assert (count_flops(full) - count_flops(half)) * 1e6 == pytest.approx(48 * (16 * 112**2 + 9 * 56**2 + 24 * 56**2))
    assert count_params(full) - count_params(half) == 48 * (16 + 4 + 9 + 4 + 24)


# --- ResNet-50 --------------------------------------------------------------------------

# torchvision's ResNet-50 at 224 px, 1000 classes: its trainable parameters, and its MACs
# (convs and the classifier); pss_tf's count adds the global average pool (7 x 7 x 2048).
RESNET50_TRAINABLE = 25_557_032
RESNET50_MACS = 4_089_184_256 + 7 * 7 * 2048
RESNET50_BN_CHANNELS = 64 + 3 * (64 + 64 + 256) + 256 + 4 * (128 + 128 + 512) + 512 + 6 * (256 + 256 + 1024) + 1024 + (
    3 * (512 + 512 + 2048) + 2048
)


@pytest.mark.parametrize("model", ["resnet50", "resnet50_layerwise"])
def test_resnet50_at_full_width_has_torchvisions_figures(model):
    full = SubnetConfig.uniform(model, 224, 1.0)
    assert count_flops(full) * 1e6 == RESNET50_MACS
    # Keras counts the two moving statistics of every BN channel too; torchvision's figure does not.
    assert count_params(full) - 2 * RESNET50_BN_CHANNELS == RESNET50_TRAINABLE


def test_a_resnet50_stage_multiplier_scales_the_stages_inner_widths_and_output():
    arch = architectures.get_architecture("resnet50")
    assert arch.num_stages == 5 and arch.num_groups == 9 and arch.has_inner_groups
    half = SubnetConfig("resnet50", 224, (1.0, 0.5, 1.0, 1.0, 1.0))
    # Groups: stem, the 4 stage outputs, the 4 stages' inner widths.
    assert half.channels == (64, 128, 512, 1024, 2048, 32, 128, 256, 512)
    # Stage 1 (56 x 56 = 3136 pixels): inner width 64 -> 32, output 256 -> 128, by hand.
    def stage1_and_readers(inner, out):
        first = 64 * inner + 9 * inner * inner + inner * out + 64 * out  # the projection reads the stem
        later = 2 * (out * inner + 9 * inner * inner + inner * out)
        readers = out * 128 * 3136 + out * 512 * 784  # stage 2's first 1x1 (at 56 px) and projection (28 px)
        return (first + later) * 3136 + readers

    full = SubnetConfig.uniform("resnet50", 224, 1.0)
    removed = stage1_and_readers(64, 256) - stage1_and_readers(32, 128)
    assert round((count_flops(full) - count_flops(half)) * 1e6) == removed


def test_resnet50_layerwise_genes_are_every_inner_width_and_stage_output():
    arch = architectures.get_architecture("resnet50_layerwise")
    assert arch.num_stages == arch.num_groups == 5 + 2 * 16
    widths = [1.0] * 37
    widths[5] = 0.5  # The first bottleneck's 1x1 output only (and so its 3x3's input).
    config = SubnetConfig("resnet50_layerwise", 224, tuple(widths))
    removed = (64 * 32 + 9 * 32 * 64) * 3136  # by hand: 1x1 64 -> 32 outputs, 3x3 32 fewer inputs
    full = SubnetConfig.uniform("resnet50_layerwise", 224, 1.0)
    assert round((count_flops(full) - count_flops(config)) * 1e6) == removed
    assert count_params(full) - count_params(config) == 64 * 32 + 4 * 32 + 9 * 32 * 64


def test_resnet50_search_genes_have_one_level_per_shared_width():
    space = SearchSpace("resnet50", 224, 224, 8, 0.05, 1.0, width_bins=20)
    genes = GeneSpace(space)
    # A stage gene's levels are (output, inner) pairs: 20 bins give 20 distinct pairs in every stage.
    assert genes.level_sizes() == (1, 8, 20, 20, 20, 20)
    assert genes.levels[1][0] == (16, 8) and genes.levels[1][-1] == (256, 64)
    config = space.random_config(random.Random(3))
    assert genes.decode(genes.encode(config)) == config
    assert genes.level_of(config) is not None
