"""Does training several subnets per pass pay? Four modes on Fashion-MNIST at one wall-clock budget.

    python bench/mode_study.py run --mode=pss --seed=0        # one run (11 to 13 minutes on 2 cores)
    python bench/mode_study.py report                         # the plot and tables from every run so far

Modes (all from configs/fashion_mnist.flags):

    pss            serial PSS: the sandwich step, one chosen subnet per step
    pss_parallel   PSS with parallel subnets: the max net, then one masked pass of the
                   thinnest subnet of the step's resolution and N-1 pool-chosen ones
    pse            PSE-Net's mode: N subnets per masked pass, each on its labels
                   (targets drawn uniformly, fresh conditional subnets)
    pse_anchor     pse with the widest subnet of the step's resolution in every group
    uniform        the sandwich step with uniformly random subnets (the baseline)

Every run holds the last 5,000 training images out (for the search afterwards)
and gets the same wall-clock budget for its training steps: the time serial PSS
takes for `--pss_steps` steps. A calibration times 40 steps of serial PSS and 40
of the mode back to back (their ratio holds even when something else slows the
machine), and the mode trains 4 epochs of `pss_steps x t_pss / t_mode` steps. Afterwards the run's supernet is evaluated on 30
fixed subnets spread over the MACs range (BN-calibrated, validation split; the
same 30 for every run), so seeds of one mode can be compared by rank (Kendall
tau). Each run's settings, timing, winners, evaluations and the 30 accuracies go
to docs/study/<mode>_s<seed>/ as JSON, so the study can be done in parts.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, "docs", "study")
FIXED = os.path.join(STUDY, "fixed_subnets.json")
MODES = {
    "pss": {},
    "pss_parallel": {"parallel_subnets": 4},
    "pse": {"mode": "pse", "parallel_subnets": 4, "sampler": "conditional"},
    "pse_anchor": {"mode": "pse", "parallel_subnets": 4, "sampler": "conditional", "pse_anchor": True},
    "uniform": {"sampler": "uniform"},
}


def _config(job_dir, mode, seed, **changes):
    from absl import flags

    from pss_tf import config_flags
    from pss_tf.run.config import TrainConfig

    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainConfig, flag_values)
    flag_values(["study", f"--flagfile={os.path.join(ROOT, 'configs', 'fashion_mnist.flags')}", f"--job_dir={job_dir}"])
    config = config_flags.from_flags(TrainConfig, flag_values)
    # 5,000 training images are held out of every run (the same for all modes), so
    # that tools/search.py can score subnets on unseen data afterwards.
    return config.replace(seed=seed, progress=False, holdout_examples=5000, **MODES[mode], **changes)


def _seconds_per_step(mode, seed) -> float:
    """Median seconds of a training step of `mode` (steps 10 to 40 of a short run)."""
    from pss_tf.training import runtime
    from pss_tf.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as job:
        config = _config(os.path.join(job, "calibration"), mode, seed, max_steps=40)
        runtime.configure(config)
        trainer = Trainer(config)
        times, step = [], trainer.train_step

        def timed(epoch):
            start = time.perf_counter()
            losses = step(epoch)
            times.append(time.perf_counter() - start)
            return losses

        trainer.train_step = timed
        trainer.run()
    return statistics.median(times[10:])


def _fixed_subnets():
    """30 subnets of the Fashion-MNIST space, evenly spread over its MACs range (made once)."""
    from common import spread_over_cost

    from pss_tf import SubnetConfig, count_flops
    from pss_tf.io_utils import atomic_write_json

    if os.path.exists(FIXED):
        return [SubnetConfig.from_dict(c) for c in json.load(open(FIXED))["configs"]]
    space = _config("unused", "pss", 0).search_space()
    chosen = spread_over_cost(space, lambda c: count_flops(c, 10, True, 1), 30, 3000, 2024)
    atomic_write_json(FIXED, {"seed": 2024, "drawn": 3000, "configs": [c.to_dict() for c in chosen]})
    return chosen


def run(args):
    from pss_tf.io_utils import atomic_write_json
    from pss_tf.run.job import Job
    from pss_tf.training import runtime
    from pss_tf.training.evaluation import make_evaluator
    from pss_tf.training.trainer import Trainer

    name = f"{args.mode}_s{args.seed}"
    out = os.path.join(STUDY, name)
    job_dir = os.path.join(args.runs, name)
    from common import machine_state

    state = machine_state()  # The step-time ratio is only fair on an otherwise idle machine.
    pss_seconds = _seconds_per_step("pss", args.seed)
    seconds = pss_seconds if args.mode == "pss" else _seconds_per_step(args.mode, args.seed)
    if args.resume and os.path.exists(os.path.join(job_dir, "run.json")):
        # An interrupted run keeps the budget it was given; only the ratio is re-timed.
        config = Job(job_dir).run_config.replace(resume=True)
    else:
        steps_per_epoch = max(1, round(args.pss_steps * pss_seconds / seconds / 4))
        config = _config(job_dir, args.mode, args.seed, epochs=4, steps_per_epoch=steps_per_epoch)
    runtime.configure(config)
    started = time.perf_counter()
    result = Trainer(config).run()
    wall = time.perf_counter() - started
    job = Job(job_dir)
    supernet = job.restore_supernet()
    evaluator = make_evaluator(supernet, job.run_config, job.data)
    fixed = [{"config": c.to_dict(), "val_top1": evaluator.evaluate(c).top1} for c in _fixed_subnets()]
    os.makedirs(out, exist_ok=True)
    for file in ("run.json", "winners.json", "evaluations.json"):
        atomic_write_json(os.path.join(out, file), json.load(open(os.path.join(job_dir, file))))
    atomic_write_json(os.path.join(out, "fixed_subnets_top1.json"), fixed)
    atomic_write_json(
        os.path.join(out, "timing.json"),
        {"seconds_per_step": seconds, "pss_seconds_per_step": pss_seconds, "steps": result.steps,
         "budget_pss_steps": args.pss_steps, "run_wall_s": round(wall, 1), "finished": result.finished,
         "resumed": bool(args.resume), "machine_at_calibration": state},
    )
    print(json.dumps({"run": name, "steps": result.steps, "seconds_per_step": round(seconds, 3), "wall_s": round(wall)}))


def report(args):
    import matplotlib
    from scipy import stats

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pss_tf.io_utils import atomic_write, atomic_write_json

    runs = {}
    for name in sorted(os.listdir(STUDY)):
        path = os.path.join(STUDY, name)
        if os.path.isdir(path) and os.path.exists(os.path.join(path, "fixed_subnets_top1.json")):
            runs[name] = {f: json.load(open(os.path.join(path, f))) for f in ("winners.json", "timing.json", "fixed_subnets_top1.json")}
    fig, ax = plt.subplots(figsize=(7.2, 4.8), dpi=120)
    colors = {}
    for name, data in runs.items():
        mode = name.rsplit("_s", 1)[0]
        color = colors.setdefault(mode, f"C{len(colors)}")
        winners = sorted(data["winners.json"], key=lambda w: w["value"])
        front = [w for w in winners if w["pareto"]]
        marker = "o" if name.endswith("_s0") else "s"
        ax.plot([w["value"] for w in front], [100 * w["val_top1"] for w in front], marker=marker, color=color,
                label=name, alpha=0.85)
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Fashion-MNIST, equal wall-clock budget: winners' Pareto fronts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_write(os.path.join(ROOT, "docs", "mode_study_pareto.png"), lambda f: fig.savefig(f, format="png"), mode="wb")

    summary = {"runs": {}, "kendall_tau": {}}
    for name, data in runs.items():
        winners = data["winners.json"]
        summary["runs"][name] = {
            "steps": data["timing.json"]["steps"],
            "seconds_per_step": round(data["timing.json"]["seconds_per_step"], 3),
            "mean_winner_top1": round(100 * statistics.mean(w["val_top1"] for w in winners), 2),
            "winners": {f"{w['target']:g}": round(100 * w["val_top1"], 2) for w in winners},
        }
    modes = sorted({name.rsplit("_s", 1)[0] for name in runs})
    for mode in modes:
        seeds = sorted(n for n in runs if n.rsplit("_s", 1)[0] == mode)
        if len(seeds) >= 2:
            a, b = ([f["val_top1"] for f in runs[s]["fixed_subnets_top1.json"]] for s in seeds[:2])
            summary["kendall_tau"][mode] = round(float(stats.kendalltau(a, b).statistic), 3)
    summary["per_mode"] = _per_mode(runs, modes)
    atomic_write_json(os.path.join(STUDY, "summary.json"), summary)
    print(json.dumps(summary, indent=2))
    print(_markdown(summary))


def _per_mode(runs, modes) -> dict:
    """Each mode's winners averaged over its seeds, per target; steps and seconds per step likewise."""
    out = {}
    for mode in modes:
        names = sorted(n for n in runs if n.rsplit("_s", 1)[0] == mode)
        by_target = {}
        for name in names:
            for w in runs[name]["winners.json"]:
                by_target.setdefault(f"{w['target']:g}", []).append(100 * w["val_top1"])
        out[mode] = {
            "seeds": len(names),
            "steps": round(statistics.mean(runs[n]["timing.json"]["steps"] for n in names)),
            "winners_mean": {t: round(statistics.mean(v), 2) for t, v in sorted(by_target.items(), key=lambda kv: float(kv[0]))},
            "winners_spread": {t: round(max(v) - min(v), 2) for t, v in by_target.items()},
            "mean_winner_top1": round(statistics.mean(100 * w["val_top1"] for n in names for w in runs[n]["winners.json"]), 2),
        }
    return out


def _markdown(summary) -> str:
    """Per mode: mean winner top-1 over seeds at each target, and the seeds' rank agreement."""
    targets = sorted({t for m in summary["per_mode"].values() for t in m["winners_mean"]}, key=float)
    lines = ["| mode | seeds | steps | " + " | ".join(f"{t}M" for t in targets) + " | mean | Kendall tau |",
             "|---|---|---|" + "---|" * (len(targets) + 2)]
    for mode, m in summary["per_mode"].items():
        cells = [f"{m['winners_mean'][t]:.2f}" if t in m["winners_mean"] else "-" for t in targets]
        tau = summary["kendall_tau"].get(mode)
        lines.append(f"| {mode} | {m['seeds']} | {m['steps']} | " + " | ".join(cells)
                     + f" | {m['mean_winner_top1']:.2f} | {'-' if tau is None else f'{tau:.2f}'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run")
    one.add_argument("--mode", choices=sorted(MODES), required=True)
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--pss_steps", type=int, default=1200, help="budget: the time of this many serial PSS steps")
    one.add_argument("--resume", action="store_true", help="finish an interrupted run in its job directory")
    one.add_argument("--runs", default=os.path.join(ROOT, "runs", "study"), help="where the job directories go")
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "run":
        if args.pss_steps < 4:
            parser.error("--pss_steps: must be at least 4")
        if not args.resume and os.path.exists(os.path.join(args.runs, f"{args.mode}_s{args.seed}")):
            parser.error(f"--runs: {args.runs}/{args.mode}_s{args.seed} exists; remove it or pass --resume")
        run(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
