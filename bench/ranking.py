"""Can the supernet be trusted? Subnets trained alone against their accuracy inside the supernet.

    python bench/ranking.py --job_dir=runs/fmnist --subnets=8

PSE-Net's "estimator" claim: the supernet ranks subnets the
way training them alone would. For a finished run, `--subnets` configs are
chosen spread over the run's MACs range (`--draws` random configs of the run's
space drawn with `--seed`, sorted by MACs, taken at evenly spaced quantiles from
the cheapest to the dearest; the same configs for the same flags). Each is then

* evaluated inside the trained supernet: restored from the run's latest
  checkpoint, BN-calibrated on the run's calibration batches, top-1 on the
  validation split (`make_evaluator`, the run's own protocol);
* trained alone from scratch with the run's recipe by `tools/finetune.py
  --from_scratch` (the extracted standalone model re-initialised with the
  release's initialisers at its own widths; cross-entropy on the labels, no
  teacher) on the run's training stream (held-out examples excluded), with its
  batch, steps per epoch, epochs, learning rate, warm-up, Nesterov momentum and
  weight decay (run.json), then evaluated on the validation split. The same
  fine-tuning records the subnet's supernet accuracy first (BN-calibrated on the
  run's calibration batches, `make_evaluator`, the run's own protocol).

Output (atomic): a JSON file (default docs/bench/ranking_<run name>.json) with
each subnet's config, MACs, parameters, standalone and supernet top-1 and
top-5, training seconds, Kendall's tau-b and Spearman's rho between the two
accuracy lists, the recipe and the machine's state; and a PNG (default
docs/ranking_<run name>.png) of supernet top-1 against standalone top-1 with
the identity line.

Resumable: the fine-tuning keeps every finished subnet and checkpoints the one
in training under `--work_dir` (default RUN/ranking), so Ctrl-C loses at most a
few steps and the same command resumes; other training settings are refused
there, naming the flag.
`--epochs` trains for fewer (or more) epochs than the run did, for a cheaper
check; the output records it, and the run's own epochs are the default.
"""

import argparse
import json
import os
import statistics
import sys

from scipy import stats

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))



# --- choosing subnets -----------------------------------------------------------


def choose_subnets(space, cost, count: int, draws: int, seed: int) -> list:
    """`count` distinct networks at evenly spaced MACs quantiles of `draws` random configs."""
    from common import spread_over_cost

    try:
        return spread_over_cost(space, cost, count, draws, seed)
    except ValueError as e:
        raise SystemExit(f"error: --subnets: {e}; ask fewer") from None


# --- training each subnet alone ------------------------------------------------


def finetune_options(job, configs, epochs: int, work_dir: str, progress: bool):
    """tools/finetune.py's options that train `configs` alone from scratch with the run's recipe."""
    from pss_tf.finetune.options import FinetuneOptions

    opt = job.run_config.optimization
    return FinetuneOptions(
        job_dir=job.path,
        subnets=tuple(c.to_json() for c in configs),
        epochs=epochs or opt.epochs,
        steps_per_epoch=opt.steps_per_epoch,
        batch_size=opt.global_batch_size,
        learning_rate=opt.learning_rate,
        warmup_epochs=opt.warmup_epochs,
        momentum=opt.momentum,
        weight_decay=opt.weight_decay,
        from_scratch=True,
        seed=job.run_config.runtime.seed,
        out=os.path.join(work_dir, "finetune"),
        progress=progress,
    )


# --- the benchmark --------------------------------------------------------------


def _fail(message: str):
    raise SystemExit(f"error: {message}")


def run(args) -> int:
    from common import machine_state

    from pss_tf.errors import ConfigError
    from pss_tf.finetune import driver
    from pss_tf.io_utils import atomic_write_json
    from pss_tf.run.job import Job
    from pss_tf.space.cost import count_flops, param_counts

    if not os.path.isdir(args.job_dir):
        _fail(f"--job_dir: {args.job_dir} is not a directory (train a run with tools/train.py first)")
    name = os.path.basename(os.path.normpath(args.job_dir))
    out = args.out or os.path.join(ROOT, "docs", "bench", f"ranking_{name}.json")
    png = args.png or os.path.join(ROOT, "docs", f"ranking_{name}.png")
    work_dir = args.work_dir or os.path.join(args.job_dir, "ranking")
    try:
        job = Job(args.job_dir)
        costs = job.cost_kwargs()

        def flops(config):
            return count_flops(config, **costs)

        configs = choose_subnets(job.space, flops, args.subnets, args.draws, args.seed)
        the_plan = driver.plan(finetune_options(job, configs, args.epochs, work_dir, args.progress))
    except ConfigError as e:
        _fail(f"--{e.field or 'job_dir'}: {e.message}")
    recipe = {**the_plan.recipe, "run_epochs": job.run_config.optimization.epochs,
              "calibration_batches": job.run_config.evaluation.calibration_batches,
              "holdout_examples": job.data.holdout_examples}
    print(
        f"{name}: {len(configs)} subnets from {flops(configs[0]):.2f} to {flops(configs[-1]):.2f} M MACs; "
        f"{len(the_plan.finished)} trained earlier; each trains {recipe['total_steps']} steps ({recipe['epochs']} "
        f"epochs of {recipe['steps_per_epoch']}, batch {recipe['batch_size']}); outputs in {work_dir}",
        flush=True,
    )
    if args.subnets < 8:
        print("note: a rank correlation over fewer than 8 subnets says little", flush=True)
    machine = machine_state()
    result = driver.execute(the_plan, log=lambda line: print(line, flush=True))
    if not result.finished:
        print(f"stopped with {len(result.entries)} of {len(configs)} subnets trained; the same command resumes")
        return 130
    subnets = []
    for index, (config, entry) in enumerate(zip(configs, result.entries)):
        subnets.append({
            "index": index,
            "config": config.to_dict(),
            "flops": flops(config),
            "params": param_counts(config, **costs),
            "supernet_top1": entry["val_top1_before"],
            "supernet_top5": entry["val_top5_before"],
            "standalone_top1": entry["val_top1_after"],
            "standalone_top5": entry["val_top5_after"],
            "steps": entry["steps"],
            "train_seconds": entry["wall_seconds"],
        })
    standalone = [s["standalone_top1"] for s in subnets]
    inside = [s["supernet_top1"] for s in subnets]
    summary = {
        "run": name,
        "job_dir": os.path.abspath(args.job_dir),
        "checkpoint": os.path.basename(job.dir.latest_checkpoint()),
        "model": job.run_config.space.model,
        "dataset": job.run_config.data.dataset,
        "validation_examples": job.info.num_val,
        "selection": {"seed": args.seed, "draws": args.draws, "subnets": args.subnets,
                      "method": "evenly spaced MACs quantiles of the draws, min to max"},
        "recipe": recipe,
        "kendall_tau_b": float(stats.kendalltau(standalone, inside).statistic),  # tau-b: ties count in neither
        "spearman": float(stats.spearmanr(standalone, inside).statistic),
        "mean_standalone_top1": statistics.fmean(standalone),
        "mean_supernet_top1": statistics.fmean(inside),
        "train_seconds_total": round(sum(s["train_seconds"] for s in subnets), 1),
        "machine": [machine],
        "subnets": subnets,
    }
    atomic_write_json(out, summary)
    plot(summary, png)
    print(
        json.dumps(
            {k: summary[k] for k in ("run", "kendall_tau_b", "spearman", "mean_standalone_top1", "mean_supernet_top1",
                                     "train_seconds_total")}
        )
    )
    print(f"wrote {out}\nwrote {png}")
    return 0


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pss_tf.io_utils import save_figure

    subnets = summary["subnets"]
    x = [100 * s["standalone_top1"] for s in subnets]
    y = [100 * s["supernet_top1"] for s in subnets]
    fig, ax = plt.subplots(figsize=(5.6, 5.0), dpi=120)
    low, high = min(x + y), max(x + y)
    margin = max(0.5, 0.05 * (high - low))
    ax.plot([low - margin, high + margin], [low - margin, high + margin], color="0.6", linestyle="--", label="identity")
    points = ax.scatter(x, y, c=[s["flops"] for s in subnets], cmap="viridis", zorder=3)
    fig.colorbar(points, ax=ax, label="M MACs")
    ax.set_xlim(low - margin, high + margin)
    ax.set_ylim(low - margin, high + margin)
    ax.set_aspect("equal")
    ax.set_xlabel(f"trained alone, validation top-1 (%) [{summary['recipe']['epochs']} epochs]")
    ax.set_ylabel("inside the supernet, validation top-1 (%)")
    ax.set_title(
        f"{summary['run']}: {len(subnets)} subnets, Kendall tau-b {summary['kendall_tau_b']:.2f}, "
        f"Spearman {summary['spearman']:.2f}",
        fontsize="medium",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job_dir", required=True, help="a finished training run")
    parser.add_argument("--subnets", type=int, default=8, help="subnets to train alone (at least 2; 8 or more for a rank correlation that says much)")
    parser.add_argument("--draws", type=int, default=3000, help="random configs the subnets are chosen among")
    parser.add_argument("--seed", type=int, default=0, help="seed of those draws")
    parser.add_argument("--epochs", type=int, default=0, help="training epochs of each subnet (0: the run's)")
    parser.add_argument("--out", default="", help="JSON (default docs/bench/ranking_<run name>.json)")
    parser.add_argument("--png", default="", help="plot (default docs/ranking_<run name>.png)")
    parser.add_argument("--work_dir", default="", help="the fine-tuning's resumable outputs (default JOB_DIR/ranking)")
    parser.add_argument("--noprogress", dest="progress", action="store_false", help="log lines instead of bars")
    args = parser.parse_args()
    if args.subnets < 2:
        parser.error(f"--subnets: at least 2 are needed for a rank correlation, got {args.subnets}")
    if args.draws < args.subnets:
        parser.error(f"--draws: must be at least --subnets ({args.subnets}), got {args.draws}")
    if args.epochs < 0:
        parser.error(f"--epochs: must be >= 0 (0: the run's), got {args.epochs}")
    if args.seed < 0:
        parser.error(f"--seed: must be >= 0, got {args.seed}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
