"""Searching a trained run for the best subnet of each budget (`tools/search.py`).

`plan(options)` does every check that needs no model, so bad input is refused
before the supernet is restored and before anything is written: the options
themselves, the run and its data, the metric (one the run trained; a latency
table that still covers the space), each budget (some subnet of the space must
fit [alpha B, B]), the training records and pools the prior needs, whether each
init can draw a candidate for each budget, and whether saved searches in the
output directory were made with the same settings.

`run(options)` then restores the supernet and runs one `EvolutionSearch` per
(budget, init), scoring candidates with `pss_tf.search.fitness` (held-out top-1
after BN calibration). After every generation the search's state is written
atomically to `OUT/state_<metric>_<budget>_<init>.json`; Ctrl-C (or SIGTERM)
stops after the current generation, and the same command resumes exactly. A
finished search measures its best subnet once on the validation split (the
run's calibration protocol, so the number compares with the pool winners'
`val_top1`). Only when every search has finished are `OUT/searched.json`
(entries of earlier commands for other budgets, inits or metrics are kept) and
the plots rewritten, each atomically: an interrupted or failed command leaves
the previous results as they were.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import numpy as np

from pss_tf import config_flags
from pss_tf.errors import ConfigError
from pss_tf.io_utils import atomic_write_json, read_json
from pss_tf.run.job import Job
from pss_tf.run.metrics import metrics_for_run
from pss_tf.run.outputs import SEARCHED_FILE, read_searched
from pss_tf.search.budget import Budget
from pss_tf.search.evolution import EvolutionSearch
from pss_tf.search.options import INITS, SearchOptions
from pss_tf.space.config import SubnetConfig
from pss_tf.space.metrics import Metric

STATE_FORMAT = "pss_tf.search.driver"
STATE_VERSION = 1


@dataclasses.dataclass
class Task:
    """One search: a budget and an init, its proposal and seeds, and its saved state if any."""

    budget: Budget
    init: str
    proposal: object
    seeds: list[SubnetConfig]
    state_file: str
    saved: dict | None = None

    @property
    def key(self) -> tuple[str, float, str]:
        return (self.budget.metric.name, self.budget.value, self.init)

    @property
    def name(self) -> str:
        """`searched_flops_7p5m_prior`: letters, digits and '_' (a signature name)."""
        return f"searched_{self.budget.metric.label(self.budget.value)}_{self.init}"

    def describe(self) -> str:
        return f"{self.budget.metric.format(self.budget.value)} ({self.init})"


@dataclasses.dataclass
class SearchPlan:
    """What `plan` found; `run` needs nothing else."""

    options: SearchOptions
    job: Job
    metric: Metric
    tasks: list[Task]
    out_dir: str
    checkpoint: str
    fitness_data: str
    fitness_examples: int
    calibration_batches: int


@dataclasses.dataclass
class SearchResult:
    out_dir: str
    finished: bool
    entries: list[dict]
    files: list[str]


def state_file(out_dir: str, metric: str, budget: float, init: str) -> str:
    return os.path.join(out_dir, f"state_{metric}_{budget:g}_{init}.json")


# --- checks -------------------------------------------------------------------------


def plan(options: SearchOptions) -> SearchPlan:
    """Every check that needs no model; raises ConfigError naming the field to fix.

    Writes nothing.
    """
    from pss_tf.search.fitness import fitness_source

    options.validate()
    job = Job(options.job_dir, options.data_dir)
    trained = job.run_config.targets.metrics
    if options.metric not in trained:
        raise ConfigError(
            "metric",
            f"the run in {job.path} trained pools for {', '.join(trained)}, not {options.metric}; search one of those "
            f"(its supernet was never trained to meet {options.metric} targets)",
        )
    info = job.info  # Checks the (possibly moved) data.
    try:
        metric = metrics_for_run(job.run_config, info.num_classes, info.channels, (options.metric,))[options.metric]
    except ConfigError as e:
        raise ConfigError("metric", f"the run's {options.metric} metric cannot be rebuilt: {e}") from None
    space = job.space
    evolution = options.evolution
    budgets = []
    for value in options.budgets:
        budget = Budget(metric, value, evolution.alpha)
        try:
            budget.check_feasible(space)
        except ConfigError as e:
            if e.field != "budget":
                raise
            raise ConfigError("budgets", e.message) from None
        budgets.append(budget)
    checkpoint = job.dir.latest_checkpoint()
    if checkpoint is None:
        raise ConfigError("job_dir", f"{job.path} has no checkpoint; train the run first")
    fitness_data, fitness_examples = fitness_source(job, options.fitness.fitness_examples)
    calibration_batches = options.fitness.calibration_batches or job.run_config.evaluation.calibration_batches

    records = pools = sampler = None
    if "prior" in options.init:
        records = job.records()
        pools = job.pools()
    if "conditional" in options.init:
        sampler = _conditional_sampler(job, metric)
    out_dir = options.out_dir
    tasks = []
    for budget in budgets:
        for init in options.init:
            proposal, seeds = _proposal(init, space, budget, records, pools, sampler)
            task = Task(budget, init, proposal, seeds, state_file(out_dir, metric.name, budget.value, init))
            task.saved = _saved_state(task, options, os.path.basename(checkpoint), fitness_data, fitness_examples)
            tasks.append(task)
    return SearchPlan(
        options, job, metric, tasks, out_dir, checkpoint, fitness_data, fitness_examples, calibration_batches
    )


def _conditional_sampler(job: Job, metric: Metric):
    """The run's conditional sampler for `metric`: its cache if it matches, else rebuilt in memory."""
    from pss_tf.sampling.conditional_sampler import ConditionalSampler

    sampling, seed = job.run_config.sampling, job.run_config.runtime.seed
    wanted = {"num_samples": sampling.sampler_samples, "seed": seed, "extremes": sampling.sampler_extremes}
    cache = job.dir.sampler_cache(metric.name)
    if os.path.exists(cache):
        try:
            sampler = ConditionalSampler.load(cache, metric)  # Checks the metric.
        except ValueError:
            sampler = None
        if (
            sampler is not None
            and sampler.space == job.space
            and all(sampler.fingerprint.get(k) == v for k, v in wanted.items())
        ):
            return sampler
    return ConditionalSampler.build(job.space, metric, **wanted)


def _proposal(init, space, budget, records, pools, sampler):
    """The proposal and seeds of one search; ConfigError when it cannot draw for the budget."""
    from pss_tf.search.prior import Prior, seeds
    from pss_tf.search.proposals import ConditionalProposal, UniformProposal

    chosen = []
    try:
        if init == "uniform":
            proposal = UniformProposal(space, budget)
        elif init == "conditional":
            proposal = ConditionalProposal(sampler, budget)
        else:
            proposal = Prior.from_records(space, budget, records, pools)
            chosen = seeds(pools, budget, space)
    except ConfigError as e:
        # The library names its argument: the run's records or pools, else the budget.
        field = "job_dir" if e.field in ("records", "pools") else "budgets"
        raise ConfigError(field, f"{budget.metric.format(budget.value)} with init {init}: {e}") from None
    try:  # One draw on a throwaway generator: can this init meet the budget at all?
        proposal.sample(np.random.default_rng(0), 1)
    except RuntimeError as e:
        others = [i for i in INITS if i != init]
        raise ConfigError(
            "init", f"{init} cannot draw a subnet for budget {budget.metric.format(budget.value)}: {e} "
            f"(try init {' or '.join(others)}, or another budget)"
        ) from None
    return proposal, chosen


def _saved_state(task: Task, options: SearchOptions, checkpoint: str, fitness_data: str, fitness_examples: int):
    """The saved state of `task`, if there is one; ConfigError when it cannot be resumed."""
    path = task.state_file
    if not os.path.exists(path):
        return None
    again = "give the same value to resume it, or choose another `out`"
    try:
        saved = read_json(path, "search state")
    except ValueError as e:
        raise ConfigError("out", f"{e}; remove it or choose another `out`") from None
    if not isinstance(saved, dict) or (saved.get("format"), saved.get("version")) != (STATE_FORMAT, STATE_VERSION):
        raise ConfigError(
            "out", f"{path} is not a version {STATE_VERSION} search state; remove it or choose another `out`"
        )
    old, new = saved.get("settings", {}), options.search_settings()
    for name in new:
        if old.get(name) != new[name]:
            raise ConfigError(
                name, f"differs from the search saved in {path} (was {old.get(name)!r}, now {new[name]!r}); {again}"
            )
    if saved.get("metric") != _plain(task.budget.metric.to_dict()):
        raise ConfigError(
            "metric", f"the run's {task.budget.metric.name} metric changed since {path} was saved; choose another `out`"
        )
    if saved.get("checkpoint") != checkpoint:
        raise ConfigError(
            "job_dir",
            f"the run's supernet changed since {path} was saved (checkpoint {saved.get('checkpoint')}, now "
            f"{checkpoint}); choose another `out`",
        )
    if saved.get("fitness") != {"fitness_data": fitness_data, "fitness_examples": fitness_examples}:
        raise ConfigError(
            "fitness_examples",
            f"the fitness data differs from the search saved in {path} ({saved.get('fitness')}); {again}",
        )
    search = saved.get("search")
    if not isinstance(search, dict) or _plain(search.get("proposal")) != _plain(task.proposal.to_dict()):
        raise ConfigError(
            "job_dir",
            f"the run's {task.init} proposal (training records, pools or sampler) changed since {path} was saved; "
            f"choose another `out`",
        )
    return saved


def _plain(data):
    """`data` as JSON would give it back (tuples as lists), for comparisons with saved states."""
    import json

    return json.loads(json.dumps(data))


# --- running ------------------------------------------------------------------------


def run(options: SearchOptions, log: Callable[[str], None] = print) -> SearchResult:
    """Plans, then runs (or resumes) every search; writes the results when all have finished."""
    the_plan = plan(options)
    return execute(the_plan, log)


def execute(the_plan: SearchPlan, log: Callable[[str], None] = print) -> SearchResult:
    from pss_tf.search.fitness import make_fitness
    from pss_tf.stop import StopRequest
    from pss_tf.training.evaluation import make_evaluator

    options, job = the_plan.options, the_plan.job
    if all(task.saved is not None and task.saved.get("result") is not None for task in the_plan.tasks):
        fitness = validation = _finished  # Every search is done: results from the states alone.
    else:
        log(f"restoring {the_plan.checkpoint}")
        supernet = job.restore_supernet()
        fitness = make_fitness(job, supernet, options.fitness.calibration_batches, options.fitness.fitness_examples)
        for task in the_plan.tasks:  # What any saved search evaluated is not evaluated again.
            for item in (task.saved or {}).get("search", {}).get("cache", []):
                fitness.remember(SubnetConfig.from_dict(item["config"]), item["fitness"])
        data = "held-out" if fitness.data == "holdout" else "training (the run kept no held-out data)"
        log(
            f"fitness: top-1 on {fitness.examples} {data} examples after BN calibration on "
            f"{fitness.evaluator.calibration_batches} training batches"
        )
        if fitness.data == "holdout":
            for warning in job.data.class_warnings(held_out_limit=fitness.examples).values():
                log(f"warning: {warning}")
        validation = make_evaluator(supernet, job.run_config, job.data)
    entries = []
    message = "stopping after this generation; its state is saved and the same command resumes"
    with StopRequest(message) as stop:
        for task in the_plan.tasks:
            if stop.requested:
                break
            search = _search(task, options, fitness)
            _run_generations(task, search, the_plan, fitness, stop, log)
            if not search.done:
                break
            result = (task.saved or {}).get("result")
            if result is None:
                config, _ = search.best
                accuracy = validation.evaluate(config)
                result = {"val_top1": accuracy.top1, "val_top5": accuracy.top5, "val_examples": accuracy.examples}
                _save(task, search, the_plan, result)
            entries.append(_entry(task, search, result, the_plan))
            log(_summary(entries[-1], the_plan.metric))
    if len(entries) < len(the_plan.tasks):  # Stopped: the states are saved, results wait for the rest.
        return SearchResult(the_plan.out_dir, False, entries, [])
    files = write_results(the_plan, entries)
    return SearchResult(the_plan.out_dir, True, entries, files)


def _finished(*args, **kwargs):
    raise AssertionError("a finished search evaluated a subnet")


def _search(task: Task, options: SearchOptions, fitness) -> EvolutionSearch:
    if task.saved is not None:
        return EvolutionSearch.from_state(task.saved["search"], task.proposal, batch_fitness=fitness)
    return EvolutionSearch(
        task.proposal, batch_fitness=fitness, seeds=task.seeds, identity="network", seed=options.seed,
        **evolution_arguments(options.evolution),
    )


def evolution_arguments(evolution) -> dict:
    """`EvolutionSearch`'s settings from `EvolutionOptions` (alpha goes to each `Budget`)."""
    return config_flags.keyword_arguments(
        EvolutionSearch, evolution, renamed={"mutation_prob": "gene_prob"}, elsewhere=(Budget,)
    )


def _run_generations(task: Task, search: EvolutionSearch, the_plan: SearchPlan, fitness, stop, log) -> None:
    """Runs generations until the search is done or a stop is requested; saves after each."""
    total = search.settings["generations"]
    progress = the_plan.options.progress
    outer = None
    if progress and not search.done:
        from tqdm import tqdm

        outer = tqdm(total=total, initial=search.generation, desc=task.describe(), unit="gen", dynamic_ncols=True)
    try:
        while not search.done:
            inner = None
            if progress:
                from tqdm import tqdm

                inner = tqdm(
                    total=search.settings["population"], desc=f"generation {search.generation + 1}/{total}",
                    unit="eval", leave=False, dynamic_ncols=True,
                )
                fitness.on_evaluation = lambda config: inner.update(1)
            before, start = fitness.evaluations, time.perf_counter()
            try:
                entry = search.step()
            finally:
                fitness.on_evaluation = None
                if inner is not None:
                    inner.close()
            _save(task, search, the_plan, None)
            rate = (fitness.evaluations - before) / max(time.perf_counter() - start, 1e-9)
            if outer is not None:
                outer.set_postfix(best=f"{entry['best_fitness']:.4f}", evals=entry["evaluations"], eval_s=f"{rate:.1f}")
                outer.update(1)
            else:
                log(
                    f"{task.describe()} generation {entry['generation'] + 1}/{total}: "
                    f"best {entry['best_fitness']:.4f}, mean {entry['mean_fitness']:.4f}, "
                    f"{entry['evaluations']} evaluations ({rate:.1f}/s)"
                )
            if stop.requested:
                return
    finally:
        if outer is not None:
            outer.close()


def _save(task: Task, search: EvolutionSearch, the_plan: SearchPlan, result: dict | None) -> None:
    state = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "settings": the_plan.options.search_settings(),
        "metric": _plain(task.budget.metric.to_dict()),
        "budget": task.budget.value,
        "init": task.init,
        "checkpoint": os.path.basename(the_plan.checkpoint),
        "fitness": {"fitness_data": the_plan.fitness_data, "fitness_examples": the_plan.fitness_examples},
        "search": search.state(),
        "result": result,
    }
    atomic_write_json(task.state_file, state)
    task.saved = _plain(state)


def _entry(task: Task, search: EvolutionSearch, result: dict, the_plan: SearchPlan) -> dict:
    from pss_tf.space.cost import count_flops, param_counts

    config, fitness = search.best
    costs = the_plan.job.cost_kwargs()
    history = search.history
    return {
        "name": task.name,
        "metric": task.budget.metric.name,
        "budget": task.budget.value,
        "alpha": task.budget.alpha,
        "init": task.init,
        "seed": search.settings["seed"],
        "config": config.to_dict(),
        "value": task.budget.cost(config),
        "flops": count_flops(config, **costs),
        "params": param_counts(config, **costs),
        "search_top1": fitness,
        "val_top1": result["val_top1"],
        "val_top5": result["val_top5"],
        "fitness_data": the_plan.fitness_data,
        "fitness_examples": the_plan.fitness_examples,
        "calibration_batches": the_plan.calibration_batches,
        "evaluations": search.evaluations,
        "generations": len(history),
        "seeds": len(search.seeds),
        "best_per_generation": [h["best_fitness"] for h in history],
        "mean_per_generation": [h["mean_fitness"] for h in history],
        "evaluations_per_generation": [h["evaluations"] for h in history],
    }


def _summary(entry: dict, metric: Metric) -> str:
    return (
        f"{entry['name']}: {metric.format(entry['value'])} (budget {metric.format(entry['budget'])}), "
        f"held-out top-1 {entry['search_top1']:.4f}, val top-1 {entry['val_top1']:.4f}, "
        f"{entry['evaluations']} evaluations"
    )


# --- results ------------------------------------------------------------------------


def _entry_key(entry: dict) -> tuple:
    return (entry["metric"], entry["budget"], entry["init"])


def write_results(the_plan: SearchPlan, entries: list[dict]) -> list[str]:
    """Merges `entries` into OUT/searched.json and redraws the plots; returns the files written."""
    from pss_tf.search import plots

    out_dir = the_plan.out_dir
    try:
        kept = read_searched(out_dir)
    except ValueError:
        kept = []
    mine = {_entry_key(e) for e in entries}
    order = {init: i for i, init in enumerate(INITS)}
    merged = [e for e in kept if _entry_key(e) not in mine] + entries
    merged.sort(key=lambda e: (e["metric"], e["budget"], order.get(e["init"], len(order))))
    searched = os.path.join(out_dir, SEARCHED_FILE)
    atomic_write_json(searched, merged)
    files = [searched]
    metric = the_plan.metric
    try:
        winners = [entry for entry, _ in the_plan.job.winners() if entry["metric"] == metric.name]
    except ConfigError:
        winners = []  # A stopped run has no winners yet.
    mine_metric = [e for e in merged if e["metric"] == metric.name]
    fitness_png = os.path.join(out_dir, f"fitness_{metric.name}.png")
    plots.plot_fitness(mine_metric, fitness_png, metric.unit)
    pareto_png = os.path.join(out_dir, f"pareto_{metric.name}.png")
    plots.plot_pareto(mine_metric, winners, pareto_png, f"{metric.name} ({metric.unit})")
    return files + [fitness_png, pareto_png]

