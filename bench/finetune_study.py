"""What fine-tuning buys: every winner of a run fine-tuned several ways.

    python bench/finetune_study.py --job_dir=runs/fashion_mnist --epochs=1,3

For each number of epochs and each setting (`inherited`: from the supernet's
weights on the labels; `distill`: from them with the max net as teacher;
`scratch`: re-initialised and trained on the labels, the same epochs), every
winner of the run goes through tools/finetune.py (`pss_tf.finetune.driver`)
with otherwise default options, into OUT/<setting>_e<epochs>/. Prints and
writes (OUT/study.json, OUT/study.md, OUT/study.png) each winner's validation
top-1 before and after, the mean gain of each setting over the inherited
winners with its standard error across winners, and minutes per winner.
Resumable: finished fine-tunings are reused, an interrupted one resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SETTINGS = {
    "inherited": {},
    "distill": {"distill": True},
    "scratch": {"from_scratch": True},
}


def run_setting(job_dir: str, out: str, setting: str, epochs: int, progress: bool) -> list[dict]:
    from pss_tf.finetune import driver
    from pss_tf.finetune.options import FinetuneOptions

    options = FinetuneOptions(
        job_dir=job_dir, subnets=("winners",), epochs=epochs, out=os.path.join(out, f"{setting}_e{epochs}"),
        progress=progress, **SETTINGS[setting],
    )
    result = driver.execute(driver.plan(options), log=lambda line: print(f"[{setting} e{epochs}] {line}", flush=True))
    if not result.finished:
        raise SystemExit("stopped; the same command resumes")
    return result.entries


def finished_settings(job_dir: str, out: str, keys: list[str]) -> dict:
    """{setting key: entries} of the settings in which every winner of the run is fine-tuned."""
    from pss_tf.run.job import JobDir
    from pss_tf.run.outputs import finished_entries

    winners = [entry["name"] for entry, _ in JobDir(job_dir).read_winners()]
    rows = {}
    for key in keys:
        entries = finished_entries(os.path.join(out, key))
        if set(winners) <= set(entries):
            rows[key] = [entries[name] for name in winners]
    return rows


def summarise(rows: dict) -> dict:
    """Mean gain (points) over the inherited winners and its standard error, per setting."""
    summary = {}
    for key, entries in rows.items():
        gains = [100 * (e["val_top1_after"] - e["val_top1_before"]) for e in entries]
        minutes = [e["wall_seconds"] / 60 for e in entries]
        se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
        summary[key] = {"mean_gain": statistics.fmean(gains), "se_gain": se, "winners": len(gains),
                        "mean_minutes": statistics.fmean(minutes), "mean_after": 100 * statistics.fmean(
                            e["val_top1_after"] for e in entries)}
    return summary


def markdown(rows: dict, summary: dict) -> str:
    keys = list(rows)
    names = [e["name"] for e in rows[keys[0]]]
    lines = ["| winner | inherited | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for i, name in enumerate(names):
        before = 100 * rows[keys[0]][i]["val_top1_before"]
        cells = [f"{100 * rows[k][i]['val_top1_after']:.2f}" for k in keys]
        lines.append(f"| {name} | {before:.2f} | " + " | ".join(cells) + " |")
    lines.append("| mean gain (points) | | " + " | ".join(
        f"{summary[k]['mean_gain']:+.2f} ± {summary[k]['se_gain']:.2f}" for k in keys) + " |")
    lines.append("| minutes per winner | | " + " | ".join(f"{summary[k]['mean_minutes']:.1f}" for k in keys) + " |")
    return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pss_tf.io_utils import save_figure

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, s in summary.items():
        ax.errorbar(s["mean_minutes"], s["mean_gain"], yerr=s["se_gain"], fmt="o", capsize=3)
        ax.annotate(key, (s["mean_minutes"], s["mean_gain"]), textcoords="offset points", xytext=(5, 5),
                    fontsize="small")
    ax.axhline(0.0, color="0.6", linestyle="--")
    ax.set_xlabel("minutes per winner")
    ax.set_ylabel("validation top-1 gain over the inherited winner (points)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job_dir", required=True)
    parser.add_argument("--out", default="", help="default JOB_DIR/finetune_study")
    parser.add_argument("--epochs", default="1,3")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--noprogress", dest="progress", action="store_false")
    parser.add_argument("--report_only", action="store_true",
                        help="summarise the settings already finished (an interrupted study so far); train nothing")
    args = parser.parse_args(argv)
    epochs = [int(e) for e in args.epochs.split(",") if e]
    settings = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown or not settings:
        parser.error(f"--settings: expected some of {list(SETTINGS)}, got {args.settings!r}")
    if not epochs or min(epochs) < 1:
        parser.error(f"--epochs: positive ints, got {args.epochs!r}")
    from common import machine_state

    from pss_tf.io_utils import atomic_write_json, atomic_write_text

    out = args.out or os.path.join(args.job_dir, "finetune_study")
    machine = machine_state()
    if args.report_only:
        rows = finished_settings(args.job_dir, out, [f"{s}_e{e}" for e in epochs for s in settings])
        if not rows:
            parser.error(f"--report_only: no finished setting under {out}")
    else:
        rows = {f"{s}_e{e}": run_setting(args.job_dir, out, s, e, args.progress) for e in epochs for s in settings}
    summary = summarise(rows)
    table = markdown(rows, summary)
    atomic_write_json(os.path.join(out, "study.json"), {"summary": summary, "rows": rows, "machine": machine,
                                                        "command": " ".join(sys.argv)})
    atomic_write_text(os.path.join(out, "study.md"), table + "\n")
    plot(summary, os.path.join(out, "study.png"))
    print(table)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
