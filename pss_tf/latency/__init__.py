"""Latency as a resource metric: lookup tables measured per block variant.

    variants   what a table is keyed by: one block at one shape
    lut        the table file: format, reading, validation
    measure    timing standalone block models with the LiteRT interpreter
    grid       coarse tables: a channel grid plus interpolation
    build      measuring a table with progress, saving and resuming
    predictor  `LatencyMetric`: a subnet's latency as the sum of its blocks
    release_luts  `ReleaseLatencyMetric`: the same from the PSS-Net release's own CPU and GPU tables

Build a table with tools/build_lut.py; train against it with
`--metrics=latency_cpu --latency_cpu_lut=TABLE`, or against the release's with
`--metrics=release_latency_cpu --release_luts=PSS-Net/scripts/lut`.
"""

from pss_tf.latency.lut import LatencyTable, SpaceSpec
from pss_tf.latency.predictor import LatencyMetric
from pss_tf.latency.variants import Variant, space_variants, subnet_variants

__all__ = ["LatencyMetric", "LatencyTable", "SpaceSpec", "Variant", "space_variants", "subnet_variants"]
