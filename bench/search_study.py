"""Does the prior help? Three inits of the search, several seeds, a few budgets.

    python bench/search_study.py run --job_dir=RUN --budgets=4,6,9 --seeds=0,1,2 --inits=uniform,conditional,prior
    python bench/search_study.py report --job_dir=RUN

`run` searches a finished run that was trained with --holdout_examples (its
records.json exists, so the prior can be fitted) through `pss_tf.search.driver`:
for each seed, one driver run over every (budget, init), written to
RUN/search_study/seed<k>/ (searched.json, the plots and one state file per
search), so each seed's searches resume on their own: Ctrl-C stops after the
current generation, and the same command continues where it stopped (seeds
already finished are read back, not searched again). Fitness is held-out top-1
after BN calibration, as in tools/search.py.

Default sizes (population 12, 8 generations, 4 parents, 4 mutations, 4
crossovers, mutation probability 0.1; 1,000 held-out examples and 2
calibration batches per evaluation) cap a search at 96 evaluations: 3 budgets x
3 inits x 3 seeds = 27 searches, at most 2,592 evaluations, about 22 to 43 minutes
at 0.5 to 1 s per evaluation on 2 cores (fewer in practice: the inits of one
seed share a fitness cache, so a network two inits both propose is evaluated
once), plus one validation pass per search.

`report` reads every RUN/search_study/seed*/searched.json and writes

* docs/search_study.png: best held-out top-1 against the number of evaluations,
  one panel per budget, one line per init (mean over seeds, shaded min to max);
* docs/search_study.json: per budget and init, the final best per seed, their
  mean, the evaluations used, the mean curve, and how many evaluations each
  init (the prior in particular) needs to reach the uniform init's final mean
  best accuracy (null if it never does);
* a Markdown table on stdout: the searched subnets (seed 0, prior) against the
  pool winner of the nearest target at or below each budget (winners.json; a
  winner can cost a little more than its target, and the table marks one that
  costs more than the budget "(over)").

Curves are per generation, as the searches' histories record them
(`best_per_generation` against the cumulative `evaluations_per_generation`):
a generation's candidates are evaluated as one batch, so the best is known at
generation boundaries. Between boundaries a seed's curve holds its last value,
and after its last generation its final value; the mean is drawn where every
seed has finished its first generation.
"""

import argparse
import glob
import json
import math
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

STUDY_DIR = "search_study"
RUN_FILE = "study_run.json"
INITS = ("uniform", "conditional", "prior")


def seed_dir(job_dir: str, seed: int) -> str:
    return os.path.join(job_dir, STUDY_DIR, f"seed{seed}")


def _numbers(text: str, kind, what: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: --{what}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise SystemExit(f"error: --{what}: name at least one")
    if len(set(values)) != len(values):
        raise SystemExit(f"error: --{what}: a value is named twice in {text!r}")
    return values


# --- run ----------------------------------------------------------------------------


def _options(args, seed: int):
    from pss_tf.search.options import EvolutionOptions, FitnessOptions, SearchOptions

    return SearchOptions(
        job_dir=args.job_dir,
        metric=args.metric,
        budgets=tuple(args.budget_values),
        init=tuple(args.init_values),
        seed=seed,
        out=seed_dir(args.job_dir, seed),
        progress=args.progress,
        evolution=EvolutionOptions(
            alpha=args.alpha,
            population=args.population,
            generations=args.generations,
            parents=args.parents,
            mutations=args.mutations,
            mutation_prob=args.mutation_prob,
            crossovers=args.crossovers,
        ),
        fitness=FitnessOptions(calibration_batches=args.calibration_batches, fitness_examples=args.fitness_examples),
    )


def _check_run(args) -> None:
    """What the study needs of the run, before any plan: a held-out part of the training data."""
    from pss_tf.errors import ConfigError
    from pss_tf.run.job import Job

    if not os.path.isdir(args.job_dir):
        raise SystemExit(f"error: --job_dir: {args.job_dir} is not a directory (train a run with tools/train.py first)")
    try:
        job = Job(args.job_dir)
    except ConfigError as e:
        raise SystemExit(f"error: --job_dir: {e}") from None
    if not job.data.holdout_examples:
        raise SystemExit(
            f"error: --job_dir: {args.job_dir} holds no training examples out; the study scores candidates on held-out "
            "data only: train the run with --holdout_examples=N (e.g. 5000)"
        )


def run(args) -> int:
    from common import machine_state

    from pss_tf.errors import ConfigError
    from pss_tf.io_utils import atomic_write_json
    from pss_tf.search import driver

    _check_run(args)
    plans = []
    for seed in args.seed_values:  # Every check of every seed before any search starts.
        options = _options(args, seed)
        try:
            plans.append((seed, driver.plan(options)))
        except ConfigError as e:
            name = {"out": "job_dir"}.get(e.field, e.field) if e.field else None
            again = f"remove {seed_dir(args.job_dir, seed)} to search it anew"
            message = e.message.replace("choose another `out`", again)
            raise SystemExit(f"error: seed {seed}: {'--' + name + ': ' if name else ''}{message}") from None
    searches = len(args.budget_values) * len(args.init_values)
    print(
        f"{len(plans)} seeds x {searches} searches, at most {args.population * args.generations} evaluations each "
        f"({len(plans) * searches * args.population * args.generations} in all)",
        flush=True,
    )
    start = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)

    for seed, the_plan in plans:
        log(f"seed {seed}: {the_plan.out_dir}")
        if all(t.saved is not None and t.saved.get("result") is not None for t in the_plan.tasks):
            log(f"seed {seed}: every search finished earlier")
            driver.execute(the_plan, log=log)  # Rewrites searched.json from the states alone.
            continue
        before = sum(_evaluated(t.saved) for t in the_plan.tasks)
        started = time.perf_counter()
        result = driver.execute(the_plan, log=log)
        wall = time.perf_counter() - started
        made = sum(_evaluated(t.saved) for t in the_plan.tasks) - before
        record = os.path.join(the_plan.out_dir, RUN_FILE)
        previous = {}
        if os.path.exists(record):
            with open(record) as f:
                previous = json.load(f)
        commands = previous.get("commands", []) + [
            # Search evaluations are each search's own; a network that two inits of the
            # seed propose is evaluated once (the fitness cache), so time per evaluation
            # made is at most wall_s / search_evaluations.
            {"wall_s": round(wall, 1), "search_evaluations": made, "finished": result.finished,
             "machine": machine_state()}
        ]
        atomic_write_json(
            record,
            {
                "seed": seed,
                "settings": the_plan.options.search_settings(),
                "budgets": list(args.budget_values),
                "inits": list(args.init_values),
                "fitness_data": the_plan.fitness_data,
                "fitness_examples": the_plan.fitness_examples,
                "calibration_batches": the_plan.calibration_batches,
                "wall_s": round(sum(c["wall_s"] for c in commands), 1),
                "search_evaluations": sum(c["search_evaluations"] for c in commands),
                "commands": commands,
            },
        )
        if not result.finished:
            print(f"stopped during seed {seed}; the same command resumes (states in {result.out_dir})", flush=True)
            return 130
        log(
            f"seed {seed} done: {made} search evaluations in {wall:.0f} s by this command "
            f"({wall / max(made, 1):.2f} s per search evaluation, validation passes included)"
        )
    print(f"done; `python bench/search_study.py report --job_dir={args.job_dir}` draws the results", flush=True)
    return 0


def _evaluated(saved) -> int:
    """Evaluations a saved search state holds (0 for none)."""
    return len(((saved or {}).get("search") or {}).get("cache", []))


# --- report -------------------------------------------------------------------------


def step_value(entry: dict, evaluations: int):
    """A search's best fitness after `evaluations` evaluations (None before its first generation)."""
    best = None
    for value, count in zip(entry["best_per_generation"], entry["evaluations_per_generation"]):
        if count > evaluations:
            break
        best = value
    return best


def curve(entries: list[dict]) -> dict:
    """Mean, min and max over seeds of the best-so-far, at every generation boundary of any seed
    where every seed has a value."""
    points = sorted({c for e in entries for c in e["evaluations_per_generation"]})
    out = {"evaluations": [], "mean": [], "min": [], "max": []}
    for point in points:
        values = [step_value(e, point) for e in entries]
        if any(v is None for v in values):
            continue
        out["evaluations"].append(point)
        out["mean"].append(math.fsum(values) / len(values))
        out["min"].append(min(values))
        out["max"].append(max(values))
    return out


def first_reach(mean_curve: dict, target: float):
    """The first evaluation count at which the mean curve reaches `target` (None if never)."""
    for count, value in zip(mean_curve["evaluations"], mean_curve["mean"]):
        if value >= target - 1e-12:
            return count
    return None


def read_study(job_dir: str, metric: str) -> tuple[dict, dict]:
    """{(budget, init): {seed: entry}} of every seed directory, and {seed: study_run.json}."""
    from pss_tf.run.outputs import read_searched

    found, runs = {}, {}
    for path in sorted(glob.glob(os.path.join(job_dir, STUDY_DIR, "seed*", "searched.json"))):
        directory = os.path.dirname(path)
        match = re.fullmatch(r"seed(\d+)", os.path.basename(directory))
        if not match:
            continue
        seed = int(match.group(1))
        for entry in read_searched(directory):
            if entry["metric"] == metric:
                found.setdefault((entry["budget"], entry["init"]), {})[seed] = entry
        record = os.path.join(directory, RUN_FILE)
        if os.path.exists(record):
            with open(record) as f:
                runs[seed] = json.load(f)
    return found, runs


def summarise(found: dict) -> dict:
    """The study's numbers per budget and init (see the module doc)."""
    budgets = {}
    for budget in sorted({b for b, _ in found}):
        inits = [i for i in INITS if (budget, i) in found] + sorted(
            {i for b, i in found if b == budget and i not in INITS}
        )
        per_init = {}
        for init in inits:
            seeds = dict(sorted(found[(budget, init)].items()))
            entries = list(seeds.values())
            finals = [e["search_top1"] for e in entries]
            per_init[init] = {
                "seeds": list(seeds),
                "final_best": finals,
                "mean_final_best": math.fsum(finals) / len(finals),
                "min_final_best": min(finals),
                "max_final_best": max(finals),
                "evaluations": [e["evaluations"] for e in entries],
                "generations": [e["generations"] for e in entries],
                "val_top1": [e["val_top1"] for e in entries],
                "value": [e["value"] for e in entries],
                "curve": curve(entries),
            }
        summary = {"inits": per_init}
        uniform = per_init.get("uniform")
        if uniform is not None:
            target = uniform["mean_final_best"]
            summary["uniform_final_mean_best"] = target
            for init, data in per_init.items():
                data["evaluations_to_reach_uniform_final_mean"] = first_reach(data["curve"], target)
            prior = per_init.get("prior")
            needed = prior["evaluations_to_reach_uniform_final_mean"] if prior else None
            summary["prior_evaluations_to_reach_uniform_final_mean"] = needed
            reached = uniform["evaluations_to_reach_uniform_final_mean"]
            summary["uniform_evaluations_to_reach_its_final_mean"] = reached
            summary["evaluations_saved_by_prior"] = None if needed is None or reached is None else reached - needed
        budgets[f"{budget:g}"] = summary
    return budgets


def nearest_winner(winners: list[dict], budget: float):
    """The pool winner of the largest target at or below `budget` (None if every target is above it)."""
    below = [w for w in winners if w["target"] <= budget + 1e-9]
    return max(below, key=lambda w: w["target"]) if below else None


def comparison(found: dict, winners: list[dict], seed: int = 0, init: str = "prior") -> list[dict]:
    rows = []
    for budget in sorted({b for b, _ in found}):
        entry = found.get((budget, init), {}).get(seed)
        winner = nearest_winner(winners, budget)
        row = {"budget": budget, "searched": None, "winner": None}
        if entry is not None:
            row["searched"] = {
                "config": entry["config"], "value": entry["value"], "search_top1": entry["search_top1"],
                "val_top1": entry["val_top1"], "evaluations": entry["evaluations"],
            }
        if winner is not None:
            row["winner"] = {
                "target": winner["target"], "config": winner["config"], "value": winner["value"],
                "val_top1": winner["val_top1"],
            }
        if winner is not None:
            row["winner"]["fits_budget"] = winner["value"] <= budget
        if entry is not None and winner is not None:
            row["val_top1_gain"] = entry["val_top1"] - winner["val_top1"]
        rows.append(row)
    return rows


def markdown(rows: list[dict], unit: str, seed: int, init: str) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}"

    header = (
        f"| budget ({unit}) | searched ({init}, seed {seed}) {unit} | held-out top-1 (%) | val top-1 (%) "
        f"| winner target | winner {unit} | winner val top-1 (%) | gain (points) |"
    )
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        s, w = row["searched"], row["winner"]
        gain = row.get("val_top1_gain")
        lines.append(
            f"| {row['budget']:g} | {'n/a' if s is None else format(s['value'], '.2f')} "
            f"| {pct(s and s['search_top1'])} | {pct(s and s['val_top1'])} "
            f"| {'none below' if w is None else format(w['target'], 'g')} "
            f"| {'n/a' if w is None else format(w['value'], '.2f') + ('' if w['fits_budget'] else ' (over)')} "
            f"| {pct(w and w['val_top1'])} "
            f"| {'n/a' if gain is None else format(100 * gain, '+.2f')} |"
        )
    return "\n".join(lines)


def plot(budgets: dict, path: str, unit: str, data_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pss_tf.io_utils import save_figure

    names = list(budgets)
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.6 * max(len(names), 1), 3.9), dpi=120, squeeze=False)
    colours = {"uniform": "C0", "conditional": "C1", "prior": "C2"}
    for ax, name in zip(axes[0], names):
        for init, data in budgets[name]["inits"].items():
            c = data["curve"]
            if not c["evaluations"]:
                continue
            x = c["evaluations"]
            colour = colours.get(init)
            line = ax.step(x, [100 * v for v in c["mean"]], where="post", color=colour,
                           label=f"{init} ({len(data['seeds'])} seeds)")[0]
            # A dot where the search ended (the last step is a vertical jump).
            ax.plot(x[-1], 100 * c["mean"][-1], "o", color=line.get_color(), markersize=4)
            ax.fill_between(x, [100 * v for v in c["min"]], [100 * v for v in c["max"]], step="post",
                            color=colour, alpha=0.18, linewidth=0)
        target = budgets[name].get("uniform_final_mean_best")
        if target is not None:
            ax.axhline(100 * target, color="0.5", linestyle=":", linewidth=1.0)
        ax.set_title(f"budget {name} {unit}")
        ax.set_xlabel("evaluations")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"best {data_name} top-1 (%)")
    axes[0][-1].legend(fontsize="small", title="init (mean, min-max)", title_fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)


def report(args) -> int:
    from pss_tf.errors import ConfigError
    from pss_tf.io_utils import atomic_write_json
    from pss_tf.run.job import JobDir
    from pss_tf.run.metrics import metric_class

    if not os.path.isdir(args.job_dir):
        raise SystemExit(f"error: --job_dir: {args.job_dir} is not a directory")
    found, runs = read_study(args.job_dir, args.metric)
    if args.budgets:
        keep = set(_numbers(args.budgets, float, "budgets"))
        found = {k: v for k, v in found.items() if k[0] in keep}
    if not found:
        raise SystemExit(
            f"error: no finished {args.metric} searches under {os.path.join(args.job_dir, STUDY_DIR)}; "
            f"run `python bench/search_study.py run --job_dir={args.job_dir} ...` first"
        )
    try:
        winners = [e for e, _ in JobDir(args.job_dir).read_winners() if e["metric"] == args.metric]
    except ConfigError as e:
        print(f"warning: {e}; the table has no winners", file=sys.stderr)
        winners = []
    unit = metric_class(args.metric).unit
    budgets = summarise(found)
    some = next(iter(next(iter(found.values())).values()))
    data_name = "held-out" if some.get("fitness_data") == "holdout" else "training-subset"
    rows = comparison(found, winners, args.table_seed, "prior")
    summary = {
        "job_dir": os.path.abspath(args.job_dir),
        "metric": args.metric,
        "unit": unit,
        "fitness_data": some.get("fitness_data"),
        "fitness_examples": some.get("fitness_examples"),
        "calibration_batches": some.get("calibration_batches"),
        "alpha": some.get("alpha"),
        "runs": {str(seed): run for seed, run in sorted(runs.items())},
        "note": "curves are per generation (a generation is evaluated as one batch); a seed holds its last value "
        "between its generation boundaries; the mean needs every seed's first generation",
        "budgets": budgets,
        "searched_vs_winners": rows,
    }
    atomic_write_json(args.json, summary)
    plot(budgets, args.png, unit, data_name)
    print(markdown(rows, unit, args.table_seed, "prior"))
    print()
    for name, data in budgets.items():
        parts = [
            f"{init} {100 * d['mean_final_best']:.2f}% ({', '.join(str(e) for e in d['evaluations'])} evaluations)"
            for init, d in data["inits"].items()
        ]
        line = f"budget {name} {unit}: final mean best {data_name} top-1: " + "; ".join(parts)
        if "prior_evaluations_to_reach_uniform_final_mean" in data:
            needed = data["prior_evaluations_to_reach_uniform_final_mean"]
            reached = "never reaches it" if needed is None else f"reaches it after {needed} evaluations"
            own = data["uniform_evaluations_to_reach_its_final_mean"]
            line += f"; the uniform mean reaches its final value after {own} evaluations, the prior's mean {reached}"
        print(line)
    print(f"wrote {args.json}\nwrote {args.png}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="search every (seed, budget, init); resumable")
    one.add_argument("--job_dir", required=True, help="a finished run trained with --holdout_examples")
    one.add_argument("--budgets", required=True, help="comma-separated budgets in the metric's unit")
    one.add_argument("--seeds", default="0,1,2")
    one.add_argument("--inits", default=",".join(INITS))
    one.add_argument("--metric", default="flops")
    one.add_argument("--alpha", type=float, default=0.8)
    one.add_argument("--population", type=int, default=12)
    one.add_argument("--generations", type=int, default=8)
    one.add_argument("--parents", type=int, default=4)
    one.add_argument("--mutations", type=int, default=4)
    one.add_argument("--crossovers", type=int, default=4)
    one.add_argument("--mutation_prob", type=float, default=0.1)
    one.add_argument("--fitness_examples", type=int, default=1000)
    one.add_argument("--calibration_batches", type=int, default=2)
    one.add_argument("--noprogress", dest="progress", action="store_false", help="log lines instead of bars")
    two = sub.add_parser("report", help="the plot, the JSON summary and the table")
    two.add_argument("--job_dir", required=True)
    two.add_argument("--metric", default="flops")
    two.add_argument("--budgets", default="", help="only these budgets (default: every one searched)")
    two.add_argument("--table_seed", type=int, default=0, help="the seed whose prior searches the table shows")
    two.add_argument("--json", default=os.path.join(ROOT, "docs", "search_study.json"))
    two.add_argument("--png", default=os.path.join(ROOT, "docs", "search_study.png"))
    args = parser.parse_args()
    if args.command == "run":
        args.budget_values = _numbers(args.budgets, float, "budgets")
        args.seed_values = _numbers(args.seeds, int, "seeds")
        if any(s < 0 for s in args.seed_values):
            parser.error("--seeds: seeds must be >= 0")
        args.init_values = [i.strip() for i in args.inits.split(",") if i.strip()]
        unknown = [i for i in args.init_values if i not in INITS]
        if unknown or not args.init_values or len(set(args.init_values)) != len(args.init_values):
            parser.error(f"--inits: comma-separated, each once, from {list(INITS)}; got {args.inits!r}")
        return run(args)
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
