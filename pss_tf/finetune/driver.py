"""`tools/finetune.py`: plan every check, then fine-tune each subnet, resumably.

    OUT/                      (default JOB_DIR/finetune)
      finetuned.json          one entry per finished subnet
      <name>/state.json       the subnet, its settings and recipe (a resume must match)
      <name>/checkpoints/     model, optimizer and step
      <name>/tensorboard/     loss and learning rate per step, accuracies at the end
      <name>/weights.npz      the fine-tuned weights, by extracted layer name

The same command resumes: finished subnets are kept, an interrupted one
continues from its last checkpoint, and a subnet directory written with other
settings is refused, naming the flag. The run itself is only read.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from pss_tf.errors import ConfigError
from pss_tf.export import subnets as subnets_lib
from pss_tf.finetune.options import ALL_SEARCHED, ALL_WINNERS, FinetuneOptions
from pss_tf.io_utils import atomic_write_json, check_header, read_json
from pss_tf.run.job import Job
from pss_tf.run.outputs import FINETUNED_FILE, finished_entries, save_weights, searched_subnets

STATE_FILE = "state.json"
STATE_FORMAT = "pss_tf.finetune"
STATE_VERSION = 1


@dataclasses.dataclass
class FinetunePlan:
    options: FinetuneOptions
    job: Job
    subnets: list  # export.subnets.Subnet
    recipe: dict
    out_dir: str
    finished: dict  # name -> finetuned.json entry already written with these settings


@dataclasses.dataclass
class FinetuneRun:
    out_dir: str
    finished: bool
    entries: list[dict]


def split_subnet_flags(values) -> tuple[list[str], list[str]]:
    """(names, config JSON texts) of `--subnets`: JSON as given, names comma-separated."""
    names, configs = [], []
    for value in values:
        value = value.strip()
        if value.startswith("{"):
            configs.append(value)
        else:
            names.extend(part.strip() for part in value.split(",") if part.strip())
    return names, configs


def resolve_subnets(job: Job, values) -> list:
    """The `Subnet`s `--subnets` names, in the order given; ConfigError naming the flag."""
    names, texts = split_subnet_flags(values)
    configs = []
    for text in texts:
        try:
            configs.append(subnets_lib.parse_config(text, job.space))
        except ConfigError as e:
            raise ConfigError("subnets", e.message) from None
    wants_searched = ALL_SEARCHED in names
    winners = job.winners() if [n for n in names if n != ALL_SEARCHED] else None
    searched = searched_subnets(job, "") if wants_searched else None
    try:
        available = subnets_lib.select(winners, configs, job.metrics, job.cost_kwargs(), searched)
    except ConfigError as e:
        raise ConfigError("subnets", e.message) from None
    by_name = {s.name: s for s in available}
    chosen = []
    for name in names:
        if name == ALL_WINNERS:
            chosen.extend(s for s in available if s.source == subnets_lib.WINNER)
        elif name == ALL_SEARCHED:
            chosen.extend(s for s in available if s.source == subnets_lib.SEARCHED)
        elif name in by_name and by_name[name].source == subnets_lib.WINNER:
            chosen.append(by_name[name])
        else:
            known = sorted(s.name for s in available if s.source == subnets_lib.WINNER)
            raise ConfigError(
                "subnets", f"{job.path} has no winner named {name!r}; its winners are {', '.join(known)} "
                f"(or say {ALL_WINNERS}, {ALL_SEARCHED}, or give a config as JSON)",
            )
    chosen.extend(s for s in available if s.source == subnets_lib.CONFIG)
    unique = list({s.name: s for s in chosen}.values())
    if not unique:
        raise ConfigError("subnets", f"{job.path}: nothing to fine-tune (no winners)")
    return unique


def plan(options: FinetuneOptions) -> FinetunePlan:
    """Every check that needs no model; raises ConfigError naming the field. Writes nothing."""
    options.validate()
    job = Job(options.job_dir, options.data_dir)
    job.info  # Checks the (possibly moved) data.
    if job.dir.latest_checkpoint() is None:
        raise ConfigError("job_dir", f"{job.path} has no checkpoint; train the run first")
    subnets = resolve_subnets(job, options.subnets)
    batch = options.batch_size or job.run_config.optimization.global_batch_size
    steps_per_epoch = options.steps_per_epoch or job.data.steps_per_epoch(batch)
    if steps_per_epoch < 1:
        raise ConfigError("batch_size", f"{batch} is larger than the run's {job.info.num_train} training examples")
    recipe = options.recipe(job.run_config, steps_per_epoch)
    out_dir = options.out_dir
    written = finished_entries(out_dir)
    finished = {}
    for subnet in subnets:
        saved = read_state(out_dir, subnet.name)
        if saved is None:
            continue
        if saved["config"] != subnet.config.to_dict():
            raise ConfigError(
                "out", f"{subnet_dir(out_dir, subnet.name)} fine-tuned another config under the name {subnet.name}; "
                f"choose another --out",
            )
        _check_same_settings(saved, options, subnet_dir(out_dir, subnet.name))
        entry = written.get(subnet.name)
        if entry is not None:
            finished[subnet.name] = entry
    return FinetunePlan(options, job, subnets, recipe, out_dir, finished)


def _check_same_settings(saved: dict, options: FinetuneOptions, where: str) -> None:
    mine = options.settings()
    for name, value in saved["settings"].items():
        if mine.get(name) != value:
            raise ConfigError(
                name, f"{where} was fine-tuned with {name}={value!r}, not {mine.get(name)!r}; run the same command "
                "to resume it, or choose another --out",
            )


def subnet_dir(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, name)


def read_state(out_dir: str, name: str) -> dict | None:
    path = os.path.join(subnet_dir(out_dir, name), STATE_FILE)
    if not os.path.exists(path):
        if os.path.isdir(subnet_dir(out_dir, name)) and os.listdir(subnet_dir(out_dir, name)):
            raise ConfigError("out", f"{subnet_dir(out_dir, name)} exists but holds no {STATE_FILE}; choose another --out")
        return None
    state = read_json(path, STATE_FILE)
    try:
        check_header(state, STATE_FORMAT, STATE_VERSION, {"config", "settings", "recipe"})
    except ValueError as e:
        raise ConfigError("out", f"{path}: {e}") from None
    return state


def run(options: FinetuneOptions, log: Callable[[str], None] = print) -> FinetuneRun:
    return execute(plan(options), log)


def execute(the_plan: FinetunePlan, log: Callable[[str], None] = print) -> FinetuneRun:
    """Fine-tunes every planned subnet not finished yet; writes finetuned.json after each."""
    from pss_tf.finetune import training
    from pss_tf.stop import StopRequest
    from pss_tf.data.settings import calibration_stream
    from pss_tf.training.evaluation import evaluate_model, make_evaluator

    options, job, recipe = the_plan.options, the_plan.job, the_plan.recipe
    todo = [s for s in the_plan.subnets if s.name not in the_plan.finished]
    if not todo:
        return FinetuneRun(the_plan.out_dir, True, [the_plan.finished[s.name] for s in the_plan.subnets])
    log(f"restoring {job.dir.latest_checkpoint()}")
    supernet = job.restore_supernet()
    evaluator = make_evaluator(supernet, job.run_config, job.data, options.calibration_batches or None)
    validation = job.data.validation(job.run_config.evaluation.eval_batch_size)
    teacher = _teacher(supernet, evaluator, job) if options.distill else None
    log(
        f"fine-tuning {len(todo)} subnet(s), {recipe['mode']}{' with distillation' if options.distill else ''}: "
        f"{recipe['epochs']} epoch(s) of {recipe['steps_per_epoch']} steps, batch {recipe['batch_size']}, "
        f"learning rate {recipe['learning_rate']:g}"
    )
    message = "stopping after this step; a checkpoint is saved and the same command resumes"
    with StopRequest(message) as stop:
        for subnet in todo:
            directory = subnet_dir(the_plan.out_dir, subnet.name)
            before = evaluator.evaluate(subnet.config)  # Calibrates: the inherited weights as they ship.
            model = supernet.extract(subnet.config, name=subnet.name, weights=supernet.subnet_weights(subnet.config))
            if options.from_scratch:
                training.reinitialise(model, options.seed)
            _write_state(directory, subnet, options, recipe)
            finetuning = training.SubnetFinetuning(model, job.data, recipe, directory, teacher, options.progress)
            result = finetuning.run(stop)
            if not result.finished:
                return FinetuneRun(the_plan.out_dir, False, list(the_plan.finished.values()))
            stale_top1 = evaluate_model(model, validation).top1  # BN statistics as training's momentum left them
            calibrated = training.recalibrate_bn(
                model, calibration_stream(job.run_config, job.data), evaluator.calibration_batches
            )
            after = evaluate_model(model, validation)
            top1, top5, examples = after.top1, after.top5, after.examples
            save_weights(finetuning.weights_file, training.model_weights(model))
            entry = _entry(subnet, recipe, before, (top1, top5, examples), result, the_plan.out_dir)
            entry.update(val_top1_after_uncalibrated=stale_top1, bn_calibration_batches=calibrated)
            the_plan.finished[subnet.name] = entry
            _write_finetuned(the_plan)
            log(
                f"{subnet.name}: val top-1 {before.top1:.4f} -> {top1:.4f} "
                f"({result.wall_seconds / 60:.1f} min, {result.steps} steps; BN re-estimated on {calibrated} "
                f"batches, {stale_top1:.4f} before)"
                + ("" if top1 >= before.top1 else "; below the inherited weights: export keeps those by default")
            )
    return FinetuneRun(the_plan.out_dir, True, [the_plan.finished[s.name] for s in the_plan.subnets])


def _teacher(supernet, evaluator, job):
    """The supernet's max net, BN-calibrated, as a standalone model (inference mode)."""
    config = job.space.max_config()
    evaluator.calibrate(config)
    return supernet.extract(config, name="teacher", weights=supernet.subnet_weights(config))


def _write_state(directory: str, subnet, options: FinetuneOptions, recipe: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        atomic_write_json(path, {
            "format": STATE_FORMAT, "version": STATE_VERSION, "name": subnet.name,
            "config": subnet.config.to_dict(), "settings": options.settings(), "recipe": recipe,
        })


def _entry(subnet, recipe: dict, before, after, result, out_dir: str) -> dict:
    top1, top5, examples = after
    return {
        "name": subnet.name,
        "source": subnet.source,
        "metric": subnet.metric,
        "target": subnet.target,
        "config": subnet.config.to_dict(),
        "value": subnet.values[subnet.metric] if subnet.metric else subnet.macs_m,
        "macs_m": subnet.macs_m,
        "mode": recipe["mode"],
        "distill": recipe["distill"],
        "epochs": recipe["epochs"],
        "steps": result.steps,
        "learning_rate": recipe["learning_rate"],
        "val_top1_before": before.top1,
        "val_top5_before": before.top5,
        "val_top1_after": top1,
        "val_top5_after": top5,
        "val_examples": examples,
        "wall_seconds": round(result.wall_seconds, 1),
        "weights": os.path.relpath(os.path.join(subnet_dir(out_dir, subnet.name), "weights.npz"), out_dir),
    }


def _write_finetuned(the_plan: FinetunePlan) -> None:
    kept = finished_entries(the_plan.out_dir)
    kept.update(the_plan.finished)
    atomic_write_json(os.path.join(the_plan.out_dir, FINETUNED_FILE), list(kept.values()))


def describe(entries: list[dict]) -> str:
    """A Markdown table of fine-tuned subnets: before, after, gain and minutes."""
    lines = ["| subnet | mode | epochs | val top-1 before | after | gain (points) | minutes |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        mode = e["mode"] + (" + distill" if e["distill"] else "")
        gain = 100 * (e["val_top1_after"] - e["val_top1_before"])
        lines.append(
            f"| {e['name']} | {mode} | {e['epochs']} | {100 * e['val_top1_before']:.2f} | "
            f"{100 * e['val_top1_after']:.2f} | {gain:+.2f} | {e['wall_seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)
