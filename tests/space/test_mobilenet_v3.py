"""MobileNetV3-Large and -Small (torchvision's layout) in the cost model and the space.

Figures at 224 px with 1000 classes: torchvision's trainable parameters, and its
MACs of convs, squeeze-and-excite convs and the two linear layers
(`count_flops(pools=False)`); the default count adds every average pool.
"""

import random

import numpy as np
import pytest

from pss_tf.latency.variants import Variant, subnet_variants
from pss_tf.search.genes import GeneSpace
from pss_tf.space import architectures, kinds
from pss_tf.space.config import SearchSpace, SubnetConfig
from pss_tf.space.cost import count_flops, count_flops_array, count_params, count_params_array, count_trainable_params

FIGURES = {  # model: (trainable parameters, MACs without pools)
    "mobilenet_v3_large": (5_483_032, 216_589_760),
    "mobilenet_v3_small": (2_542_856, 56_510_400),
}


@pytest.mark.parametrize("model", ["mobilenet_v3_large", "mobilenet_v3_large_layerwise",
                                   "mobilenet_v3_small", "mobilenet_v3_small_layerwise"])
def test_full_width_figures_are_torchvisions(model):
    trainable, macs = FIGURES[model.replace("_layerwise", "")]
    full = SubnetConfig.uniform(model, 224, 1.0)
    assert count_trainable_params(full) == trainable
    assert count_flops(full, pools=False) * 1e6 == macs


def test_the_default_count_adds_every_average_pool():
    full = SubnetConfig.uniform("mobilenet_v3_large", 224, 1.0)
    # By hand: the head's pool (7x7x960) and each squeeze-and-excite's pool over its
    # block's output map: 72 channels at 28 px, 2 x 120 at 28, 480 and 672 at 14,
    # 672 and 2 x 960 at 7.
    pools = 49 * 960 + 784 * (72 + 240) + 196 * (480 + 672) + 49 * (672 + 1920)
    assert round((count_flops(full) - count_flops(full, pools=False)) * 1e6) == pools == 644_448
    # BN channels: the two moving statistics Keras counts too.
    bn_channels = (count_params(full) - count_trainable_params(full)) // 2
    assert count_params(full) == count_trainable_params(full) + 2 * bn_channels


def test_large_table_groups_genes_and_blocks():
    arch = architectures.get_architecture("mobilenet_v3_large")
    # Output groups: the stem's (shared with the first, residual block), 5 stages, the last conv;
    # then the 14 expanded widths (the first block has no expand conv).
    assert arch.base_channels[:7] == (16, 24, 40, 80, 112, 160, 960)
    assert arch.base_channels[7:] == (64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960)
    assert arch.num_stages == 7 and arch.num_groups == 21
    assert arch.gene_of == (0, 1, 2, 3, 4, 5, 6, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 5)
    assert arch.head_hidden == 1280 and arch.head_activation == kinds.HARD_SWISH
    stem, first, *rest, last = arch.blocks
    assert (stem.kind, stem.stride, stem.act) == ("stem", 2, "hard_swish")
    assert (first.expansion, first.residual, first.in_stage, first.out_stage, first.se) == (1, True, 0, 0, False)
    assert [b.kernel for b in rest] == [3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5]
    assert [b.se for b in rest].count(True) == 8
    assert [b.stride for b in rest] == [2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1]
    assert (last.kind, last.out_stage, last.act) == ("pointwise", 6, "hard_swish")
    layerwise = architectures.get_architecture("mobilenet_v3_large_layerwise")
    assert layerwise.num_stages == layerwise.num_groups == 21 and layerwise.base_channels == arch.base_channels


def test_small_first_block_is_strided_with_squeeze_and_excite_and_no_expand_conv():
    arch = architectures.get_architecture("mobilenet_v3_small")
    assert arch.base_channels[:7] == (16, 16, 24, 40, 48, 96, 576)
    first = arch.blocks[1]
    assert (first.stride, first.residual, first.expansion, first.se, first.hidden_stage) == (2, False, 1, True, None)
    assert arch.head_hidden == 1024


def test_a_stage_multiplier_scales_its_outputs_and_its_blocks_expanded_widths():
    widths = [1.0] * 7
    widths[2] = 0.5  # The 40-channel stage: its output and the expanded widths 72, 120, 120.
    half = SubnetConfig("mobilenet_v3_large", 224, tuple(widths))
    assert half.channels[2] == 24 and half.channels[9:12] == (40, 64, 64)  # make_divisible(36) = 40, (60) = 64
    full = SubnetConfig.uniform("mobilenet_v3_large", 224, 1.0)
    assert half.channels[:2] == full.channels[:2] and half.channels[3:9] == full.channels[3:9]
    assert count_flops(half) < count_flops(full)


def test_squeeze_and_excite_follows_its_blocks_expanded_width():
    widths = [1.0] * 21
    widths[9] = 0.5  # Block 4's expanded width 72 -> 40 (layer-wise): its SE squeeze 24 -> 16.
    config = SubnetConfig("mobilenet_v3_large_layerwise", 224, tuple(widths))
    full = SubnetConfig.uniform("mobilenet_v3_large_layerwise", 224, 1.0)
    assert config.channels[9] == 40
    # By hand, block 4 (24 -> 72 -> 40 channels, 5x5 stride 2, 56 -> 28 px), without pools:
    # expand 24*h*56^2, depthwise 25*h*28^2, SE 2*h*squeeze, project h*40*28^2.
    def block4(h, squeeze):
        return 24 * h * 3136 + 25 * h * 784 + 2 * h * squeeze + h * 40 * 784
    removed = block4(72, 24) - block4(40, 16)
    assert round((count_flops(full, pools=False) - count_flops(config, pools=False)) * 1e6) == removed
    params = lambda h, s: 24 * h + 2 * h + 25 * h + 2 * h + 2 * h * s + s + h + h * 40
    assert count_trainable_params(full) - count_trainable_params(config) == params(72, 24) - params(40, 16)


def test_a_base_width_scales_every_width_as_torchvision():
    arch = architectures.get_architecture("mobilenet_v3_large_1.5x")
    assert arch.base_channels[:7] == (24, 40, 64, 120, 168, 240, 1440)  # last conv: 6 x the scaled 160
    assert arch.head_hidden == 1920


@pytest.mark.parametrize("model", ["mobilenet_v3_large", "mobilenet_v3_small_layerwise"])
def test_vectorised_counts_equal_scalar_counts(model):
    space = SearchSpace(model, 128, 224, 8, 0.35, 1.0)
    rng = random.Random(0)
    configs = [space.random_config(rng) for _ in range(50)]
    resolutions = np.array([c.resolution for c in configs])
    widths = np.array([c.widths for c in configs])
    np.testing.assert_array_equal(count_flops_array(model, resolutions, widths), [count_flops(c) for c in configs])
    np.testing.assert_array_equal(count_params_array(model, widths), [count_params(c) for c in configs])


def test_variant_keys_name_kernel_squeeze_and_excite_and_activation():
    keys = [v.key for v in subnet_variants(SubnetConfig.uniform("mobilenet_v3_large", 224, 1.0))]
    assert keys[0] == "stem+hs/224x224/3-3-16/s2"
    assert keys[1] == "inverted_residual+add+relu/112x112/16-16-16/s1"
    assert keys[4] == "inverted_residual+k5+se+relu/56x56/24-72-40/s2"
    assert keys[7] == "inverted_residual+hs/28x28/40-240-80/s2"
    assert keys[-2] == "pointwise+hs/7x7/160-160-960/s1"
    assert keys[-1] == "head+hs/7x7/960-1280-1000/s1"
    for key in keys:
        assert Variant.from_key(key).key == key
    with pytest.raises(ValueError, match="se"):
        Variant("separable", 14, 64, 64, 64, se=True)


def test_search_genes_of_a_stage_move_its_expanded_widths_together():
    space = SearchSpace("mobilenet_v3_large", 224, 224, 8, 0.5, 1.0, width_bins=4)
    genes = GeneSpace(space)
    config = space.random_config(random.Random(1))
    assert genes.decode(genes.encode(config)) == config
    assert len(genes.levels) == 7
