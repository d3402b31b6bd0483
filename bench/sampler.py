"""Sampler throughput: configs per second at start-up and per training step.

    python bench/sampler.py [--lut=luts/mobilenet_v1_cpu2.json] [--samples=100000]

For each metric (FLOPs; CPU latency when --lut is given, MobileNetV1 only):
the metric's vectorised evaluation rate, the conditional sampler's build time
and rate (subnets binned per second), its `sample()` rate over all targets,
and `PrioritizedSampler.draw()` (what one training step asks for). Prints one
JSON object.
"""

import argparse
import json
import platform
import time

import numpy as np
from common import machine_state

from pss_tf import SearchSpace
from pss_tf.sampling.conditional_sampler import ConditionalSampler
from pss_tf.sampling.pools import PoolManager
from pss_tf.sampling.samplers import PrioritizedSampler
from pss_tf.sampling.schedules import ExponentialSchedule
from pss_tf.space.metrics import FlopsMetric
from pss_tf.space.targets import TargetGrid

GRIDS = {"mobilenet_v1": (110, 570, 10), "mobilenet_v2": (60, 300, 10)}


def _rate(fn, n) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def bench_metric(space, metric, samples: int, draws: int) -> dict:
    resolutions, widths = space.sample_arrays(np.random.default_rng(1), samples)
    result = {"values_per_s": round(_rate(lambda: metric.values(resolutions, widths), samples))}
    start = time.perf_counter()
    sampler = ConditionalSampler.build(space, metric, num_samples=samples, seed=0)
    build_s = time.perf_counter() - start
    result.update(build_s=round(build_s, 3), targets=len(sampler.targets))
    rng = np.random.default_rng(0)
    targets = [sampler.targets[i % len(sampler.targets)] for i in range(draws)]
    result["sample_per_s"] = round(_rate(lambda: [sampler.sample(t, rng) for t in targets], draws))
    result["fallbacks"] = sampler.fallback_count
    prioritized = PrioritizedSampler(
        PoolManager(50), {metric.name: sampler}, ExponentialSchedule(1.0, 0.01, 10), ExponentialSchedule(1.0, 0.01, 10)
    )
    result["prioritized_draw_per_s"] = round(_rate(lambda: [prioritized.draw(0.0) for _ in range(draws)], draws))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--lut", default=None, help="latency table for mobilenet_v1 (ImageNet space)")
    args = parser.parse_args()
    results = {
        "benchmark": "sampler",
        "machine": platform.processor() or platform.machine(),
        **machine_state(),
        "samples": args.samples,
        "draws": args.draws,
    }
    for model, grid in GRIDS.items():
        space = SearchSpace(model)
        results[f"{model}/flops"] = bench_metric(space, FlopsMetric(model, TargetGrid(*grid)), args.samples, args.draws)
    if args.lut:
        from pss_tf.latency.predictor import load_latency_metric

        space = SearchSpace("mobilenet_v1")
        metric = load_latency_metric(args.lut, "mobilenet_v1", TargetGrid(1, 2, 1), space)
        values = metric.values(*space.sample_arrays(np.random.default_rng(0), 20_000))
        low, high = np.percentile(values, [1, 99])
        step = round(float(high - low) / 20, 1) or 0.1
        metric = metric.with_grid(TargetGrid(round(float(low), 1), round(float(high), 1), step))
        results["mobilenet_v1/latency_cpu"] = {
            "grid": metric.grid.to_dict(),
            **bench_metric(space, metric, args.samples, args.draws),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
