"""Does the channel search beat uniform width?

    python bench/pruning_study.py --pse_job=runs/pse_fmnist --serial_job=runs/serial_fmnist \
        --uniform_widths=0.25,0.4 --seeds=0,1 --epochs=3 --out=docs/bench/pruning_study

Two supernets of one layer-wise space (`configs/pse_fashion_mnist.flags`: one trained with
PSE-Net's parallel subnets, `--mode=pse`; one serially, `--mode=sandwich --sampler=conditional
--parallel_subnets=1`, the same draws one after the other) are each searched with the prior
(tools/search.py) at the budgets of the uniform-width networks `--uniform_widths` (every
group at one multiplier: the MACs they have are the budgets, so no searched subnet is larger
than the uniform one it is compared with). Every subnet found and every uniform one is then
retrained from scratch with one recipe (tools/finetune.py `--from_scratch`, the same epochs,
batch and learning rate; seeds `--seeds`) and evaluated on the validation split.

Reported (OUT/study.json, OUT/study.md): per budget and arm, MACs and retrained top-1 (mean
and standard error over seeds); the searched-minus-uniform gap, paired by seed; and how well
each supernet ranks the subnets (their BN-calibrated accuracy inside it, inherited weights)
against their retrained accuracy: Kendall's tau-b over all the study's subnets. Resumable:
finished searches and retrainings are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ARMS = ("pse", "serial")  # Searched in the PSE-trained and in the serially trained supernet.
UNIFORM = "uniform"


def _floats(text):
    return [float(v) for v in text.split(",") if v]


def _ints(text):
    return [int(v) for v in text.split(",") if v]


def search(job_dir: str, out: str, budgets: list[float], args) -> list[dict]:
    """tools/search.py at `budgets` with the prior (its searched.json), unless already there."""
    from pss_tf.run.outputs import SEARCHED_FILE, read_searched

    if not os.path.exists(os.path.join(out, SEARCHED_FILE)):
        command = [
            sys.executable, os.path.join(ROOT, "tools", "search.py"), f"--job_dir={job_dir}", f"--out={out}",
            "--budgets=" + ",".join(f"{b:.6f}" for b in budgets), "--init=prior", f"--seed={args.search_seed}",
            f"--population={args.population}", f"--generations={args.generations}", f"--parents={args.parents}",
            f"--mutations={args.population // 2}", f"--crossovers={args.population // 2}", "--noprogress",
        ]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    return read_searched(out)


def uniform_configs(model: str, resolution: int, widths: list[float]):
    from pss_tf.space.config import SubnetConfig

    return [SubnetConfig.uniform(model, resolution, w) for w in widths]


def supernet_accuracies(job_dir: str, configs) -> dict[str, float]:
    """{config JSON: validation top-1 inside the job's supernet} (inherited weights, BN-calibrated)."""
    from pss_tf.run.job import Job
    from pss_tf.training.evaluation import make_evaluator

    job = Job(job_dir)
    supernet = job.restore_supernet()
    evaluator = make_evaluator(supernet, job.run_config, job.data)
    return {c.to_json(): float(evaluator.evaluate(c).top1) for c in configs}


def retrain(job_dir: str, out: str, configs, seed: int, epochs: int) -> dict[str, dict]:
    """{config JSON: finetuned.json entry} of every config retrained from scratch."""
    from pss_tf.finetune import driver
    from pss_tf.finetune.options import FinetuneOptions

    options = FinetuneOptions(
        job_dir=job_dir, subnets=tuple(c.to_json() for c in configs), from_scratch=True, epochs=epochs, seed=seed,
        out=out, progress=False,
    )
    result = driver.execute(driver.plan(options), log=lambda line: print(f"[seed {seed}] {line}", flush=True))
    if not result.finished:
        raise SystemExit("stopped; the same command resumes")
    return {json.dumps(e["config"], sort_keys=True): e for e in result.entries}


def _mean_se(values):
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return mean, se


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pse_job", required=True)
    parser.add_argument("--serial_job", required=True)
    parser.add_argument("--uniform_widths", type=_floats, default=[0.25, 0.4])
    parser.add_argument("--seeds", type=_ints, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--population", type=int, default=40)
    parser.add_argument("--generations", type=int, default=12)
    parser.add_argument("--parents", type=int, default=10)
    parser.add_argument("--search_seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from scipy import stats

    from pss_tf.run.job import Job
    from pss_tf.space.config import SubnetConfig
    from pss_tf.space.cost import count_flops

    os.makedirs(args.out, exist_ok=True)
    jobs = {"pse": args.pse_job, "serial": args.serial_job}
    job = Job(args.pse_job)
    space, costs = job.space, job.cost_kwargs()

    def macs(config):
        return count_flops(config, **costs)

    uniform = uniform_configs(space.model, space.max_resolution, args.uniform_widths)
    budgets = [macs(c) for c in uniform]
    arms = {UNIFORM: uniform}
    for arm in ARMS:
        found = search(jobs[arm], os.path.join(args.out, f"search_{arm}"), budgets, args)
        by_budget = {round(float(e["budget"]), 4): SubnetConfig.from_dict(e["config"]) for e in found}
        arms[arm] = [by_budget[round(b, 4)] for b in budgets]
    configs = list(dict.fromkeys(c for cs in arms.values() for c in cs))

    accuracy_path = os.path.join(args.out, "supernet_top1.json")
    inside = json.load(open(accuracy_path)) if os.path.exists(accuracy_path) else {}
    for arm, job_dir in jobs.items():
        if arm not in inside:
            inside[arm] = supernet_accuracies(job_dir, configs)
            with open(accuracy_path + ".tmp", "w") as f:
                json.dump(inside, f, indent=1)
            os.replace(accuracy_path + ".tmp", accuracy_path)

    retrained = {}  # seed -> {config JSON: entry}
    for seed in args.seeds:
        retrained[seed] = retrain(args.pse_job, os.path.join(args.out, f"retrain_s{seed}"), configs, seed, args.epochs)

    def top1(config, seed):
        return retrained[seed][config.to_json()]["val_top1_after"]

    rows = []
    for i, budget in enumerate(budgets):
        row = {"budget_macs_m": budget, "uniform_width": args.uniform_widths[i], "arms": {}}
        for arm, cs in arms.items():
            config = cs[i]
            values = [100 * top1(config, s) for s in args.seeds]
            mean, se = _mean_se(values)
            row["arms"][arm] = {
                "config": config.to_dict(), "macs_m": macs(config), "retrained_top1": values, "mean": mean, "se": se,
                "supernet_top1": {a: 100 * inside[a][config.to_json()] for a in jobs},
            }
            if arm != UNIFORM:
                gaps = [100 * (top1(config, s) - top1(uniform[i], s)) for s in args.seeds]
                row["arms"][arm]["gap_vs_uniform"] = gaps
                row["arms"][arm]["gap_mean"], row["arms"][arm]["gap_se"] = _mean_se(gaps)
        rows.append(row)
    retrained_mean = {c.to_json(): statistics.fmean(top1(c, s) for s in args.seeds) for c in configs}
    taus = {
        arm: float(stats.kendalltau([inside[arm][c.to_json()] for c in configs],
                                    [retrained_mean[c.to_json()] for c in configs]).statistic)
        for arm in jobs
    }
    minutes = statistics.fmean(e["wall_seconds"] / 60 for entries in retrained.values() for e in entries.values())
    summary = {
        "jobs": jobs, "seeds": args.seeds, "epochs": args.epochs, "subnets": len(configs), "rows": rows,
        "kendall_tau_b": taus, "minutes_per_retraining": minutes,
        "search": {"population": args.population, "generations": args.generations, "parents": args.parents,
                   "seed": args.search_seed, "init": "prior"},
    }
    with open(os.path.join(args.out, "study.json"), "w") as f:
        json.dump(summary, f, indent=1)
    lines = [
        f"Retrained from scratch, {args.epochs} epochs, seeds {args.seeds}; top-1 on the 10,000 validation images, "
        "mean ± SE over seeds; gap: searched minus uniform, paired by seed.", "",
        "| budget (M MACs) | arm | MACs (M) | retrained top-1 | gap vs uniform | top-1 in PSE supernet | in serial supernet |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for arm, a in row["arms"].items():
            gap = f"{a['gap_mean']:+.2f} ± {a['gap_se']:.2f}" if "gap_mean" in a else "-"
            name = f"uniform {row['uniform_width']:g}" if arm == UNIFORM else f"searched ({arm} supernet)"
            lines.append(
                f"| {row['budget_macs_m']:.2f} | {name} | {a['macs_m']:.2f} | {a['mean']:.2f} ± {a['se']:.2f} | {gap} | "
                f"{a['supernet_top1']['pse']:.2f} | {a['supernet_top1']['serial']:.2f} |"
            )
    lines += ["", f"Kendall tau-b, supernet top-1 against retrained top-1 over the {len(configs)} subnets: "
              + ", ".join(f"{arm} {tau:+.3f}" for arm, tau in taus.items())
              + f". Minutes per retraining: {minutes:.1f}."]
    with open(os.path.join(args.out, "study.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
