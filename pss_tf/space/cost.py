"""Analytic cost model: multiply-accumulates (MACs) and parameter counts.

Convention (design note section 2): every conv counts k*k*cin/groups*cout*oh*ow,
plus the global average pool (h*w*c) and the classifier (cin*classes). Convs use
'same' padding, so a stride-s layer maps size n to ceil(n / s).

The same arithmetic runs on Python ints (one config) and on numpy arrays (a batch
of configs, for the conditional sampler), so the two can never disagree.
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


def _params(arch: architectures.Architecture, channels, in_channels: int, num_classes: int):
    """Weights of one subnet: conv kernels, 4 per BN channel (gamma, beta and the two
    moving statistics), classifier kernel and bias. Matches `keras.Model.count_params`."""
    channels = arch.channel_table(channels)
    total = 0
    for block in arch.blocks:
        cout = channels[block.out_stage]
        if block.kind in architectures.STEMS:
            total = total + block.kernel**2 * in_channels * cout + 4 * cout
            continue
        if block.kind == architectures.MAX_POOL:
            continue
        cin = channels[block.in_stage]
        if block.kind == architectures.POINTWISE:
            total = total + cin * cout + 4 * cout
            continue
        if block.kind == architectures.BOTTLENECK:
            first, second = block.hidden_group(channels)
            total = total + cin * first + 4 * first + architectures.CONV_KERNEL**2 * first * second + 4 * second
            total = total + second * cout + 4 * cout
            if not block.residual:
                total = total + cin * cout + 4 * cout
            continue
        hidden = block.hidden(channels, cin)
        if block.kind == architectures.INVERTED_RESIDUAL and block.expansion != 1:
            total = total + cin * hidden + 4 * hidden
        total = total + architectures.DEPTHWISE_KERNEL**2 * hidden + 4 * hidden
        total = total + hidden * cout + 4 * cout
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
    """Number of weights of the extracted subnet (trainable and BN statistics)."""
    arch = architectures.get_architecture(config.model, small_input)
    return int(_params(arch, config.channels, in_channels, num_classes))


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
    """`count_params` for many configs at once."""
    arch = architectures.get_architecture(model, small_input)
    return np.asarray(_params(arch, arch.channels_array(widths), in_channels, num_classes))
