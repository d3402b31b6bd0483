"""Accuracy of the latency predictor: predicted against measured whole subnets.

    python bench/latency_predictor.py --lut=luts/mobilenet_v1_cpu2.json --model=mobilenet_v1 --n=60

Draws `--n` random subnets of the space (plus the min and max nets), extracts
each from a supernet with `Supernet.extract`, converts it with the standard
`TFLiteConverter.from_keras_model` path on a fixed batch-1 input at its own
resolution, and times it with the table's thread count and the same protocol
as the table (longer repeats). Prints one JSON object: Spearman rank
correlation, mean and max absolute percentage error, and a least-squares fit
`measured = a * predicted + b` with its error on held-out subnets. Refuses a
table measured with another runtime version or thread count.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from common import machine_state


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):  # Ties share their mean rank.
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a, b) -> float:
    return float(np.corrcoef(_ranks(np.asarray(a)), _ranks(np.asarray(b)))[0, 1])


def errors(predicted, measured) -> dict:
    predicted, measured = np.asarray(predicted), np.asarray(measured)
    pct = np.abs(predicted - measured) / measured * 100
    return {
        "spearman": round(spearman(predicted, measured), 4),
        "mape_pct": round(float(pct.mean()), 2),
        "max_ape_pct": round(float(pct.max()), 2),
        "mean_bias_pct": round(float(((predicted - measured) / measured * 100).mean()), 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lut", required=True)
    parser.add_argument("--model", default="mobilenet_v1", choices=["mobilenet_v1", "mobilenet_v2"])
    parser.add_argument("--space", default="", help="tools/build_lut.py --space text (default: ImageNet space)")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--min_repeat_s", type=float, default=0.05)
    parser.add_argument("--out", default=None, help="also write every subnet's figures here (JSON)")
    parser.add_argument("--allow_mismatch", action="store_true", help="time even if the table's set-up differs")
    parser.add_argument(
        "--wait_while_running", default="", help="as tools/build_lut.py: pause (and re-time) while such processes run"
    )
    args = parser.parse_args()

    from pss_tf.latency import LatencyMetric, LatencyTable, SpaceSpec
    from pss_tf.latency import measure
    from pss_tf.latency.build import busy_check, wait_until_quiet
    from pss_tf.targets import TargetGrid

    busy = busy_check(args.wait_while_running)
    spec = SpaceSpec.parse(args.space, args.model)
    table = LatencyTable.load(args.lut, "--lut")
    problems = table.compatibility(measure.runtime_info()["version"], table.threads)
    if problems and not args.allow_mismatch:
        print(f"error: --lut: {args.lut} was {'; '.join(problems)}", file=sys.stderr)
        return 2
    metric = LatencyMetric(
        args.model, TargetGrid(0, 1, 1), table, spec.num_classes, spec.small_input, spec.in_channels, table_path=args.lut
    )
    space = spec.space
    rng = random.Random(args.seed)
    configs = [space.min_config(), space.max_config()] + [space.random_config(rng) for _ in range(args.n)]
    predicted = [metric.value(c) for c in configs]  # Fails early if the table lacks a block.

    from pss_tf import build_supernet

    supernet = build_supernet(
        args.model, num_classes=spec.num_classes, small_input=spec.small_input, in_channels=spec.in_channels
    )
    protocol = measure.Protocol(warmup_s=0.2, repeats=args.repeats, min_repeat_s=args.min_repeat_s)
    timer = measure.Timer(table.threads, protocol)
    rows, started = [], time.perf_counter()
    for i, (config, prediction) in enumerate(zip(configs, predicted)):
        content = measure.to_tflite(measure.fixed_input_model(supernet.extract(config), config.resolution), direct=False)
        while True:
            wait_until_quiet(busy)
            timing = timer.time(content)
            if busy is None or not busy():
                break
        rows.append({
            "config": config.to_dict(), "predicted_ms": round(prediction, 4),
            "measured_ms": round(timing.median_ms, 4), "spread_ms": round(timing.spread_ms, 4),
        })
        print(f"[{i + 1}/{len(configs)}] {config}: predicted {prediction:.3f} ms, measured {timing.median_ms:.3f} ms",
              file=sys.stderr, flush=True)
    measured = np.array([r["measured_ms"] for r in rows])
    predicted = np.array(predicted)
    # Fit `measured = a * predicted + b` on half the subnets, judge it on the other half.
    half = len(rows) // 2
    a, b = np.polyfit(predicted[:half], measured[:half], 1)
    result = {
        "benchmark": "latency_predictor",
        "lut": os.path.abspath(args.lut),
        "model": args.model,
        "space": str(spec),
        "subnets": len(rows),
        **machine_state(),
        "threads": table.threads,
        "runtime": table.runtime,
        "device": table.header.get("device"),
        "table_channel_step": table.channel_step,
        "sum_of_blocks": errors(predicted, measured),
        "fit_on_first_half": {"scale": round(float(a), 4), "offset_ms": round(float(b), 4)},
        "fitted_on_second_half": errors(a * predicted[half:] + b, measured[half:]),
        "raw_on_second_half": errors(predicted[half:], measured[half:]),
        "measured_ms_range": [round(float(measured.min()), 3), round(float(measured.max()), 3)],
        "median_spread_pct": round(statistics.median(r["spread_ms"] / r["measured_ms"] * 100 for r in rows), 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**result, "rows": rows}, f, indent=1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
