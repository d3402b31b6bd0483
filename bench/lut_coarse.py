"""What a coarse table (--channel_step) costs in accuracy, against an exact one.

    python bench/lut_coarse.py --lut=luts/mobilenet_v2_cpu2.json --model=mobilenet_v2 --channel_step=32
    python bench/lut_coarse.py --lut=luts/mobilenet_v1_cpu2_exact224.json --model=mobilenet_v1 \\
        --space=min_resolution=224,max_resolution=224 --channel_step=32

Takes an exactly measured table, keeps only the entries a coarse build would
measure, interpolates the rest as `tools/build_lut.py --channel_step` does,
and compares: every interpolated entry with its measured value, and the
predicted latency of random subnets from both tables. No measuring, so the
comparison is free of timing noise between two builds. Prints one JSON object.
"""

import argparse
import json
import random
import sys

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lut", required=True, help="an exactly measured table (channel_step 0)")
    parser.add_argument("--model", default="mobilenet_v1", choices=["mobilenet_v1", "mobilenet_v2"])
    parser.add_argument("--space", default="")
    parser.add_argument("--channel_step", type=int, default=32)
    parser.add_argument("--n", type=int, default=2000, help="random subnets compared")
    args = parser.parse_args()

    from pss_tf.latency import LatencyMetric, LatencyTable, SpaceSpec, space_variants
    from pss_tf.latency.grid import grid_variants, interpolate_space

    spec = SpaceSpec.parse(args.space, args.model)
    exact = LatencyTable.load(args.lut, "lut")
    if exact.channel_step:
        print(f"error: --lut: {args.lut} is itself coarse (channel_step {exact.channel_step})", file=sys.stderr)
        return 2
    args_v = (spec.small_input, spec.in_channels, spec.num_classes)
    needed = space_variants(spec.space, *args_v)
    exact.check_covers(needed, args.lut, spec, "lut")
    kept = {v.key: exact.get(v) for v in grid_variants(spec.space, args.channel_step, *args_v)}
    coarse = LatencyTable({**exact.header, "channel_step": args.channel_step}, kept, interpolate_space(kept, spec.space, args.channel_step, *args_v))

    filled = [(exact.get(key), ms) for key, ms in coarse.interpolated.items()]
    entry_pct = np.array([abs(c - e) / e * 100 for e, c in filled])
    metrics = [LatencyMetric(args.model, None, t, spec.num_classes, spec.small_input, spec.in_channels)
               for t in (exact, coarse)]
    rng = random.Random(0)
    configs = [spec.space.random_config(rng) for _ in range(args.n)]
    truth, approx = (np.array([m.value(c) for c in configs]) for m in metrics)
    subnet_pct = np.abs(approx - truth) / truth * 100
    from latency_predictor import spearman

    print(json.dumps({
        "benchmark": "lut_coarse",
        "lut": args.lut,
        "space": str(spec),
        "channel_step": args.channel_step,
        "variants": len(needed),
        "measured_in_coarse": len(kept),
        "interpolated": len(filled),
        "entry_error_pct": {
            "mean": round(float(entry_pct.mean()), 2),
            "median": round(float(np.median(entry_pct)), 2),
            "p95": round(float(np.percentile(entry_pct, 95)), 2),
            "max": round(float(entry_pct.max()), 2),
        },
        "subnets": args.n,
        "subnet_prediction_error_pct": {
            "mean": round(float(subnet_pct.mean()), 3),
            "max": round(float(subnet_pct.max()), 3),
        },
        "spearman_coarse_vs_exact": round(spearman(approx, truth), 5),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
