"""Analytic cost model: multiply-accumulates (MACs) and parameter counts.

Convention (design note section 2): every conv counts k*k*cin/groups*cout*oh*ow,
plus the global average pool (h*w*c) and the classifier (cin*classes). Convs use
'same' padding, so a stride-s layer maps size n to ceil(n / s).

The same arithmetic runs on Python ints (one config) and on numpy arrays (a batch
of configs, for the conditional sampler), so the two can never disagree.

Parameters are counted two ways, always named: `trainable` (conv and classifier
weights, BN's gamma and beta: what papers quote) and `all weights` (those plus
BN's moving mean and variance: what `keras.Model.count_params()` says and the
files hold). No resource metric or target counts parameters; `flops` is MACs.
"""

from __future__ import annotations

import functools

import numpy as np

from pss_tf.space import architectures
from pss_tf.space.config import SubnetConfig


def _ceil_div(size, stride):
    return -(-size // stride)


def _macs(arch: architectures.Architecture, resolution, channels, in_channels: int, num_classes: int):
    """MACs of one subnet (ints) or many (arrays), summed over the architecture."""
    channels = arch.channel_table(channels)
    size = resolution
    total = 0
    for block in arch.blocks:
        cout = channels[block.out_stage]
        if block.kind in architectures.STEMS:
            size = _ceil_div(size, block.stride)
            total = total + block.kernel**2 * in_channels * cout * size * size
            continue
        if block.kind == architectures.MAX_POOL:  # No multiply-accumulates (torchvision's count).
            size = _ceil_div(size, block.stride)
            continue
        cin = channels[block.in_stage]
        if block.kind == architectures.POINTWISE:
            total = total + cin * cout * size * size
            continue
        if block.kind == architectures.BOTTLENECK:
            first, second = block.hidden_group(channels)
            total = total + cin * first * size * size
            size = _ceil_div(size, block.stride)
            total = total + architectures.CONV_KERNEL**2 * first * second * size * size + second * cout * size * size
            if not block.residual:  # The projection shortcut.
                total = total + cin * cout * size * size
            continue
        hidden = block.hidden(channels, cin)
        if block.kind == architectures.INVERTED_RESIDUAL and block.expansion != 1:
            total = total + cin * hidden * size * size
        size = _ceil_div(size, block.stride)
        total = total + architectures.DEPTHWISE_KERNEL**2 * hidden * size * size
        total = total + hidden * cout * size * size
    last = channels[arch.blocks[-1].out_stage]
    return total + size * size * last + last * num_classes


# Weights per BN channel: gamma and beta are trained; the moving mean and variance are not.
BN_TRAINABLE, BN_ALL_WEIGHTS = 2, 4


def _params(arch: architectures.Architecture, channels, in_channels: int, num_classes: int, trainable: bool):
    """Weights of one subnet: conv kernels, per BN channel gamma and beta (and, unless
    `trainable`, the two moving statistics), classifier kernel and bias."""
    bn = BN_TRAINABLE if trainable else BN_ALL_WEIGHTS
    channels = arch.channel_table(channels)
    total = 0
    for block in arch.blocks:
        cout = channels[block.out_stage]
        if block.kind in architectures.STEMS:
            total = total + block.kernel**2 * in_channels * cout + bn * cout
            continue
        if block.kind == architectures.MAX_POOL:
            continue
        cin = channels[block.in_stage]
        if block.kind == architectures.POINTWISE:
            total = total + cin * cout + bn * cout
            continue
        if block.kind == architectures.BOTTLENECK:
            first, second = block.hidden_group(channels)
            total = total + cin * first + bn * first + architectures.CONV_KERNEL**2 * first * second + bn * second
            total = total + second * cout + bn * cout
            if not block.residual:
                total = total + cin * cout + bn * cout
            continue
        hidden = block.hidden(channels, cin)
        if block.kind == architectures.INVERTED_RESIDUAL and block.expansion != 1:
            total = total + cin * hidden + bn * hidden
        total = total + architectures.DEPTHWISE_KERNEL**2 * hidden + bn * hidden
        total = total + hidden * cout + bn * cout
    last = channels[arch.blocks[-1].out_stage]
    return total + last * num_classes + num_classes


@functools.lru_cache(maxsize=1 << 16)
def count_flops(
    config: SubnetConfig, num_classes: int = 1000, small_input: bool = False, in_channels: int = 3
) -> float:
    """MACs of `config`, in millions."""
    arch = architectures.get_architecture(config.model, small_input)
    return _macs(arch, config.resolution, config.channels, in_channels, num_classes) / 1e6


@functools.lru_cache(maxsize=1 << 16)
def count_params(
    config: SubnetConfig, num_classes: int = 1000, small_input: bool = False, in_channels: int = 3
) -> int:
    """All weights of the extracted subnet: its trainable ones and BN's moving statistics
    (`keras.Model.count_params()`; MobileNetV2 1.5x: 6,909,528). `count_trainable_params`
    counts what papers quote as parameters (ResNet-50: 25,557,032)."""
    arch = architectures.get_architecture(config.model, small_input)
    return int(_params(arch, config.channels, in_channels, num_classes, trainable=False))


@functools.lru_cache(maxsize=1 << 16)
def count_trainable_params(
    config: SubnetConfig, num_classes: int = 1000, small_input: bool = False, in_channels: int = 3
) -> int:
    """Trainable weights of the extracted subnet (BN's moving statistics left out): the
    parameter count papers quote (ResNet-50: 25,557,032; MobileNetV2 1.5x: 6,858,152)."""
    arch = architectures.get_architecture(config.model, small_input)
    return int(_params(arch, config.channels, in_channels, num_classes, trainable=True))


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
    return np.asarray(_params(arch, arch.channels_array(widths), in_channels, num_classes, trainable=False))
