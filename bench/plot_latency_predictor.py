"""Scatter plot of predicted against measured subnet latency.

    python bench/latency_predictor.py --lut=LUT.json --out=pred.json
    python bench/plot_latency_predictor.py pred.json docs/latency_predictor.png

Reads the `--out` file of `bench/latency_predictor.py` (its rows) and draws the
judged subnets twice: the plain sum of blocks and the calibrated prediction,
with the y = x line, so a bias or a spread is visible at a glance.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pss_tf.io_utils import atomic_write

    judged = [r for r in result["rows"] if r.get("set", "judged") == "judged"]
    measured = [r["measured_ms"] for r in judged]
    raw = [r["predicted_ms"] for r in judged]
    fit = result.get("calibration_fit", {"scale": 1.0, "offset_ms": 0.0})
    calibrated = [fit["scale"] * p + fit["offset_ms"] for p in raw]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    summary = result["sum_of_blocks"]
    ax.scatter(measured, raw, s=14, marker="o", facecolors="none", edgecolors="tab:gray",
               label=f"sum of blocks (Spearman {summary['spearman']:.3f}, MAPE {summary['mape_pct']:.1f}%)")
    if "calibrated" in result:
        summary = result["calibrated"]
        ax.scatter(measured, calibrated, s=14, color="tab:blue",
                   label=f"calibrated (Spearman {summary['spearman']:.3f}, MAPE {summary['mape_pct']:.1f}%)")
    low, high = min(measured + raw) * 0.95, max(measured + raw) * 1.05
    ax.plot([low, high], [low, high], color="black", linewidth=0.8, label="predicted = measured")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured whole-subnet TFLite latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{result['model']}, {result['threads']} thread(s), {len(judged)} subnets", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", help="bench/latency_predictor.py --out file")
    parser.add_argument("png")
    args = parser.parse_args()
    with open(args.result) as f:
        result = json.load(f)
    if "rows" not in result:
        parser.error(f"{args.result}: has no rows; write it with bench/latency_predictor.py --out")
    plot(result, args.png)
    print(json.dumps({"plot": args.png, "subnets": sum(r.get("set", "judged") == "judged" for r in result["rows"])}))


if __name__ == "__main__":
    main()
