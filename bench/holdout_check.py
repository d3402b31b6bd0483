"""Held-out fitness against validation on a class-sorted image folder.

Writes Fashion-MNIST images as an image folder listed class by class
(`train/<class>/*.png`, `val/<class>/*.png`), trains configs/fashion_mnist.flags
on it with `--holdout_examples`, once per `--selections` (stratified: today's
default; last: what runs did before), searches one budget with the prior and
prints, per selection, the searched subnet's top-1 on the held-out images and
on validation, the held-out set's class counts and any warnings the tools
printed. Resumable: finished runs and searches are reused.

    python bench/holdout_check.py --out=/tmp/holdout_check
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def write_folder(root: str, train: int, val: int, seed: int) -> None:
    """`train` and `val` Fashion-MNIST images (from its train and test files) as sorted PNG folders."""
    import tensorflow as tf

    from pss_tf.data.fashion_mnist import FASHION_MNIST_DIR, load_fashion_mnist_arrays

    if os.path.exists(os.path.join(root, "done")):
        return
    rng = np.random.default_rng(seed)
    for split, source, count in (("train", "train", train), ("val", "val", val)):
        images, labels = load_fashion_mnist_arrays(FASHION_MNIST_DIR, source)
        for i in np.sort(rng.choice(len(labels), count, replace=False)):
            directory = os.path.join(root, split, f"class_{labels[i]}")
            os.makedirs(directory, exist_ok=True)
            tf.io.write_file(os.path.join(directory, f"{i:05d}.png"), tf.io.encode_png(images[i]))
    open(os.path.join(root, "done"), "w").close()


def warnings_in(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if "warning:" in line]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train_examples", type=int, default=4000)
    parser.add_argument("--val_examples", type=int, default=1000)
    parser.add_argument("--holdout_examples", type=int, default=500)
    parser.add_argument("--budget", type=float, default=7.3)
    parser.add_argument("--selections", default="stratified,last")
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from common import run_tool

    from pss_tf.run.job import Job
    from pss_tf.run.outputs import read_searched

    folder = os.path.join(args.out, "folder")
    write_folder(folder, args.train_examples, args.val_examples, args.seed)
    report = {"command": " ".join(sys.argv), "runs": {}}
    for selection in args.selections.split(","):
        job_dir = os.path.join(args.out, selection)
        log = os.path.join(args.out, f"{selection}.log")
        if not os.path.exists(os.path.join(job_dir, "winners.json")):
            output = run_tool(
                "train.py", "--flagfile=configs/fashion_mnist.flags", "--dataset=imagefolder", f"--data_dir={folder}",
                f"--job_dir={job_dir}", f"--holdout_examples={args.holdout_examples}",
                f"--holdout_selection={selection}", f"--seed={args.seed}", "--noprogress",
            )
            with open(log, "w") as f:
                f.write(output)
        with open(log) as f:
            training_output = f.read()
        search_output = run_tool(
            "search.py", f"--job_dir={job_dir}", f"--budgets={args.budget}", "--init=prior",
            f"--population={args.population}", f"--generations={args.generations}", f"--seed={args.seed}",
            "--noprogress",
        )
        entry, = read_searched(os.path.join(job_dir, "search"))
        job = Job(job_dir)
        counts = job.data.class_counts()
        winners = [winner for winner, _ in job.winners()]
        report["runs"][selection] = {
            "search_top1_held_out": entry["search_top1"],
            "val_top1": entry["val_top1"],
            "subnet_macs_m": entry["value"],
            "held_out_class_counts": counts["held_out"].tolist(),
            "training_class_counts": counts["training"].tolist(),
            "best_winner_val_top1": max(w["val_top1"] for w in winners),
            "warnings": warnings_in(training_output) + warnings_in(search_output),
        }
    text = json.dumps(report, indent=1)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
