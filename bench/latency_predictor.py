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
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from common import machine_state
from scipy import stats


def spearman(a, b) -> float:
    return float(stats.spearmanr(a, b).statistic)


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
    parser.add_argument("--n", type=int, default=60, help="random subnets the predictor is judged on")
    parser.add_argument("--calibration_n", type=int, default=30,
                        help="other random subnets to fit `measured = scale * predicted + offset` on")
    parser.add_argument("--write_calibration", action="store_true",
                        help="store that fit in the table; LatencyMetric then applies it")
    parser.add_argument("--passes", type=int, default=3, help="timings per subnet, minutes apart; fastest kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--min_repeat_s", type=float, default=0.05)
    parser.add_argument("--out", default=None, help="also write every subnet's figures here (JSON)")
    parser.add_argument("--plot", default=None, help="also draw predicted against measured here (PNG)")
    parser.add_argument("--allow_mismatch", action="store_true", help="time even if the table's set-up differs")
    parser.add_argument(
        "--wait_while_running", default="", help="as tools/build_lut.py: pause (and re-time) while such processes run"
    )
    args = parser.parse_args()
    for name in ("passes", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: must be at least 1, got {getattr(args, name)}")
    for name in ("n", "calibration_n"):
        if getattr(args, name) < 0:
            parser.error(f"--{name}: must not be negative, got {getattr(args, name)}")

    from pss_tf.latency import LatencyMetric, LatencyTable, SpaceSpec, measure
    from pss_tf.latency.build import busy_check, when_quiet

    busy = busy_check(args.wait_while_running)
    spec = SpaceSpec.parse(args.space, args.model)
    table = LatencyTable.load(args.lut, "lut")
    problems = table.compatibility(measure.runtime_info()["version"], table.threads)
    if problems and not args.allow_mismatch:
        print(f"error: --lut: {args.lut} was {'; '.join(problems)}", file=sys.stderr)
        return 2
    metric = LatencyMetric(
        args.model, None, table, spec.num_classes, spec.small_input, spec.in_channels, table_path=args.lut
    )
    space = spec.space
    rng = random.Random(args.seed)
    configs = [space.min_config(), space.max_config()] + [space.random_config(rng) for _ in range(args.n)]
    rng = random.Random(args.seed + 1)
    calibration = [space.random_config(rng) for _ in range(args.calibration_n)]
    raw = metric.with_calibration(None)
    predicted = np.array([raw.value(c) for c in configs + calibration])  # Fails early on a missing block.

    from pss_tf import build_supernet

    supernet = build_supernet(
        args.model, num_classes=spec.num_classes, small_input=spec.small_input, in_channels=spec.in_channels
    )
    started = time.perf_counter()
    from tqdm import tqdm

    contents = [
        measure.to_tflite(supernet.extract(c, resize=False, batch_size=1), direct=False)
        for c in tqdm(configs + calibration, desc="extract + convert", unit="subnet", file=sys.stderr)
    ]
    protocol = measure.Protocol(warmup_s=0.2, repeats=args.repeats, min_repeat_s=args.min_repeat_s)
    timer = measure.Timer(table.threads, protocol)
    timings = [[] for _ in contents]
    for p in range(args.passes):
        for i, content in enumerate(tqdm(contents, desc=f"timing, pass {p + 1}/{args.passes}", unit="subnet",
                                         file=sys.stderr)):
            timings[i].append(when_quiet(lambda: timer.time(content).median_ms, busy))
    measured = np.array([min(t) for t in timings])
    spread = np.array([(max(t) - min(t)) / min(t) * 100 for t in timings])
    n = len(configs)
    scale, offset = np.polyfit(predicted[n:], measured[n:], 1) if calibration else (1.0, 0.0)
    rows = [
        {"config": c.to_dict(), "set": "judged" if i < n else "calibration", "predicted_ms": round(float(p), 4),
         "measured_ms": round(float(m), 4), "passes_ms": [round(x, 4) for x in t]}
        for i, (c, p, m, t) in enumerate(zip(configs + calibration, predicted, measured, timings))
    ]
    result = {
        "benchmark": "latency_predictor",
        "lut": os.path.abspath(args.lut),
        "model": args.model,
        "space": str(spec),
        "subnets_judged": n,
        "subnets_calibration": len(calibration),
        **machine_state(),
        "threads": table.threads,
        "runtime": table.runtime,
        "device": table.header.get("device"),
        "table_channel_step": table.channel_step,
        "passes": args.passes,
        "sum_of_blocks": errors(predicted[:n], measured[:n]),
        "calibration_fit": {"scale": round(float(scale), 4), "offset_ms": round(float(offset), 4)},
        "calibrated": errors(scale * predicted[:n] + offset, measured[:n]),
        "measured_ms_range": [round(float(measured[:n].min()), 3), round(float(measured[:n].max()), 3)],
        "median_pass_spread_pct": round(float(np.median(spread)), 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.write_calibration and calibration:
        table.header["calibration"] = {
            "scale": round(float(scale), 6),
            "offset_ms": round(float(offset), 6),
            "subnets": len(calibration),
            "fitted_by": f"bench/latency_predictor.py --calibration_n={len(calibration)} --seed={args.seed}",
        }
        table.save(args.lut)
        result["calibration_written_to"] = args.lut
    if args.out:
        from pss_tf.io_utils import atomic_write_json

        atomic_write_json(args.out, {**result, "rows": rows})
    if args.plot:
        from plot_latency_predictor import plot

        plot({**result, "rows": rows}, args.plot)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
