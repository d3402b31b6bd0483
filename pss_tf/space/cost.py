"""Analytic cost model: multiply-accumulates (MACs) and parameter counts.

Convention (design note section 2): every conv counts k*k*cin/groups*cout*oh*ow,
plus the global average pool (h*w*c) and the classifier (cin*classes); the
average pools of squeeze-and-excite count the same way, a max pool counts
nothing. `pools=False` leaves the average pools out: convs, squeeze-and-excite
convs and linear layers only, torchvision's published figures. Convs use 'same'
padding, so a stride-s layer maps size n to ceil(n / s).

Each block kind computes its own costs (`pss_tf.space.kinds`). The same
arithmetic runs on Python ints (one config) and on numpy arrays (a batch of
configs, for the conditional sampler), so the two can never disagree.

Parameters are counted two ways, always named: `trainable` (conv and classifier
weights and biases, BN's gamma and beta: what papers quote) and `all weights` (those plus
BN's moving mean and variance: what `keras.Model.count_params()` says and the
files hold). No resource metric or target counts parameters; `flops` is MACs.
"""

from __future__ import annotations

import functools

import numpy as np

from pss_tf.space import architectures, kinds
from pss_tf.space.config import SubnetConfig


def _blocks(arch: architectures.Architecture, channels, in_channels: int):
    """(spec, kind, table, cin, cout) of every block."""
    table = arch.channel_table(channels)
    for block in arch.blocks:
        cin = in_channels if block.in_stage is None else table[block.in_stage]
        yield block, kinds.get(block.kind), table, cin, table[block.out_stage]


def _macs(arch: architectures.Architecture, resolution, channels, in_channels: int, num_classes: int, pools=True):
    """MACs of one subnet (ints) or many (arrays), summed over the architecture."""
    size = resolution
    total = 0
    for block, kind, table, cin, cout in _blocks(arch, channels, in_channels):
        macs, size = kind.macs(block, table, cin, cout, size, pools)
        total = total + macs
    last = arch.channel_table(channels)[arch.blocks[-1].out_stage]
    return total + kinds.get(architectures.HEAD).head_macs(size, last, arch.head_hidden, num_classes, pools)


# Weights per BN channel: gamma and beta are trained; the moving mean and variance are not.
BN_TRAINABLE, BN_ALL_WEIGHTS = 2, 4


def _params(arch: architectures.Architecture, channels, in_channels: int, num_classes: int, bn: int = BN_ALL_WEIGHTS):
    """Weights of one subnet: conv kernels and biases, `bn` per BN channel (4: gamma,
    beta and the two moving statistics, `keras.Model.count_params`; 2: the trainable
    ones), the classifier's (and a hidden linear layer's) kernel and bias."""
    total = 0
    for block, kind, table, cin, cout in _blocks(arch, channels, in_channels):
        total = total + kind.params(block, table, cin, cout, bn)
    last = arch.channel_table(channels)[arch.blocks[-1].out_stage]
    return total + kinds.get(architectures.HEAD).head_params(last, arch.head_hidden, num_classes)


@functools.lru_cache(maxsize=1 << 16)
def count_flops(
    config: SubnetConfig, num_classes: int = 1000, small_input: bool = False, in_channels: int = 3,
    pools: bool = True,
) -> float:
    """MACs of `config`, in millions (`pools=False`: without the average pools)."""
    arch = architectures.get_architecture(config.model, small_input)
    return _macs(arch, config.resolution, config.channels, in_channels, num_classes, pools) / 1e6


@functools.lru_cache(maxsize=1 << 16)
def count_params(
    config: SubnetConfig, num_classes: int = 1000, small_input: bool = False, in_channels: int = 3
) -> int:
    """All weights of the extracted subnet: its trainable ones and BN's moving statistics
    (`keras.Model.count_params()`; MobileNetV2 1.5x: 6,909,528). `count_trainable_params`
    counts what papers quote as parameters (ResNet-50: 25,557,032)."""
    arch = architectures.get_architecture(config.model, small_input)
    return int(_params(arch, config.channels, in_channels, num_classes, bn=BN_ALL_WEIGHTS))


@functools.lru_cache(maxsize=1 << 16)
def count_trainable_params(
    config: SubnetConfig, num_classes: int = 1000, small_input: bool = False, in_channels: int = 3
) -> int:
    """Trainable weights of the extracted subnet (BN's moving statistics left out): the
    parameter count papers quote (ResNet-50: 25,557,032; MobileNetV2 1.5x: 6,858,152)."""
    arch = architectures.get_architecture(config.model, small_input)
    return int(_params(arch, config.channels, in_channels, num_classes, bn=BN_TRAINABLE))


def param_counts(config: SubnetConfig, num_classes: int = 1000, small_input: bool = False, in_channels: int = 3) -> dict:
    """Both parameter counts of a subnet, named as the tools and the manifest report them."""
    kwargs = dict(num_classes=num_classes, small_input=small_input, in_channels=in_channels)
    return {"trainable": count_trainable_params(config, **kwargs), "all_weights": count_params(config, **kwargs)}


def count_flops_array(
    model: str,
    resolutions: np.ndarray,
    widths: np.ndarray,
    num_classes: int = 1000,
    small_input: bool = False,
    in_channels: int = 3,
) -> np.ndarray:
    """`count_flops` for many configs at once: resolutions (n,), widths (n, stages)."""
    arch = architectures.get_architecture(model, small_input)
    resolutions = np.asarray(resolutions, dtype=np.int64)
    macs = _macs(arch, resolutions, arch.channels_array(widths), in_channels, num_classes)
    return np.asarray(macs, dtype=np.float64) / 1e6


def count_params_array(
    model: str, widths: np.ndarray, num_classes: int = 1000, small_input: bool = False, in_channels: int = 3
) -> np.ndarray:
    """`count_params` (all weights) for many configs at once."""
    arch = architectures.get_architecture(model, small_input)
    return np.asarray(_params(arch, arch.channels_array(widths), in_channels, num_classes, bn=BN_ALL_WEIGHTS))
