"""Does a warm start pay? Fashion-MNIST classes 0-4 to classes 5-9.

    python bench/transfer_study.py --out=runs/transfer --seeds=0,1

Per seed: a supernet trained on classes 0-4 (`--classes=0,1,2,3,4`), then two
runs on classes 5-9 with the same flags and so the same number of steps: one
warm-started from it (`--init_from`, plus `--init_pools` with --init_pools),
one from scratch. All use configs/fashion_mnist.flags (extra flags after `--`
are passed to every run; --flagfile, --source_classes and --target_classes
change the setting). Prints and writes (OUT/study.json, OUT/study.md,
OUT/study.png) every target's winner top-1 and the max and min nets of both,
the mean over seeds and, with two or more seeds, the standard error of the
warm-minus-scratch difference. Resumable: finished runs are reused, an interrupted one resumes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SOURCE_CLASSES, TARGET_CLASSES = "0,1,2,3,4", "5,6,7,8,9"


def train(job_dir: str, flagfile: str, seed: int, extra: list[str], *flags: str) -> None:
    from common import run_tool

    if os.path.exists(os.path.join(job_dir, "winners.json")):
        return
    resume = ["--resume"] if os.path.exists(os.path.join(job_dir, "run.json")) else []  # an interrupted run goes on
    print(f"{'resuming' if resume else 'training'} {job_dir}", flush=True)
    run_tool("train.py", f"--flagfile={flagfile}", f"--job_dir={job_dir}", f"--seed={seed}",
             "--noprogress", *resume, *flags, *extra)


def accuracies(job_dir: str) -> dict:
    """{name: validation top-1 (%)}: each winner by its pool's label, and the max and min nets."""
    from pss_tf.run.job import JobDir

    job = JobDir(job_dir)
    found = {entry["name"]: 100 * entry["val_top1"] for entry, _ in job.read_winners()}
    last = job.read_evaluations()[-1]
    found.update({"max net": 100 * last["max"]["top1"], "min net": 100 * last["min"]["top1"]})
    return found


def report(results: dict) -> tuple[list[dict], str]:
    seeds = sorted(results)
    names = [n for n in results[seeds[0]]["scratch"] if all(n in results[s]["warm"] and n in results[s]["scratch"]
                                                            for s in seeds)]
    rows, lines = [], ["| subnet | scratch (%) | warm start (%) | difference (points) |", "|---|---|---|---|"]
    for name in names:
        warm = [results[s]["warm"][name] for s in seeds]
        scratch = [results[s]["scratch"][name] for s in seeds]
        diffs = [w - c for w, c in zip(warm, scratch)]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        rows.append({"name": name, "scratch": statistics.fmean(scratch), "warm": statistics.fmean(warm),
                     "difference": statistics.fmean(diffs), "se": se, "seeds": len(seeds)})
        lines.append(f"| {name} | {rows[-1]['scratch']:.2f} | {rows[-1]['warm']:.2f} | "
                     f"{rows[-1]['difference']:+.2f} ± {se:.2f} |")
    return rows, "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pss_tf.io_utils import save_figure

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    x = range(len(rows))
    ax.errorbar(x, [r["difference"] for r in rows], yerr=[0 if r["se"] != r["se"] else r["se"] for r in rows],
                fmt="o", capsize=3)
    ax.axhline(0.0, color="0.6", linestyle="--")
    ax.set_xticks(list(x), [r["name"] for r in rows], rotation=45, ha="right", fontsize="small")
    ax.set_ylabel("warm start minus scratch, val top-1 (points)")
    ax.set_title("warm-started from other classes against scratch", fontsize="medium")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--init_pools", action="store_true")
    parser.add_argument("--flagfile", default="configs/fashion_mnist.flags")
    parser.add_argument("--source_classes", default=SOURCE_CLASSES)
    parser.add_argument("--target_classes", default=TARGET_CLASSES)
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    from common import machine_state

    from pss_tf.io_utils import atomic_write_json, atomic_write_text

    machine = machine_state()
    results = {}
    for seed in seeds:
        source = os.path.join(args.out, f"source_s{seed}")
        warm = os.path.join(args.out, f"warm_s{seed}")
        scratch = os.path.join(args.out, f"scratch_s{seed}")
        train(source, args.flagfile, seed, extra, f"--classes={args.source_classes}")
        warm_flags = [f"--classes={args.target_classes}", f"--init_from={source}"]
        train(warm, args.flagfile, seed, extra, *warm_flags, *(["--init_pools"] if args.init_pools else []))
        train(scratch, args.flagfile, seed, extra, f"--classes={args.target_classes}")
        results[seed] = {"warm": accuracies(warm), "scratch": accuracies(scratch)}
    rows, table = report(results)
    atomic_write_json(os.path.join(args.out, "study.json"), {"rows": rows, "results": results, "machine": machine,
                                                             "command": " ".join(sys.argv)})
    atomic_write_text(os.path.join(args.out, "study.md"), table + "\n")
    plot(rows, os.path.join(args.out, "study.png"))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
