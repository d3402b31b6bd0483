"""Can the supernet be trusted? Subnets trained alone against their accuracy inside the supernet.

    python bench/ranking.py --job_dir=runs/fmnist --subnets=8

PSE-Net's "estimator" claim (issue 13, item 5): the supernet ranks subnets the
way training them alone would. For a finished run, `--subnets` configs are
chosen spread over the run's MACs range (`--draws` random configs of the run's
space drawn with `--seed`, sorted by MACs, taken at evenly spaced quantiles from
the cheapest to the dearest; the same configs for the same flags). Each is then

* evaluated inside the trained supernet: restored from the run's latest
  checkpoint, BN-calibrated on the run's calibration batches, top-1 on the
  validation split (`make_evaluator`, the run's own protocol);
* trained alone from scratch with the run's recipe: a fresh supernet of the
  run's settings (`pss_tf.job.build_supernet`, initialised with the run's seed),
  of which only this subnet trains, as a group of one through
  `ParallelLabelsStep` (cross-entropy on the labels, no teacher), on the run's
  training stream (held-out examples excluded), with its batch, steps per epoch,
  epochs, cosine schedule with warm-up, Nesterov momentum and weight decay
  (run.json); then BN-calibrated and evaluated on the validation split by the
  same protocol.

Output (atomic): a JSON file (default docs/bench/ranking_<run name>.json) with
each subnet's config, MACs, parameters, standalone and supernet top-1 and
top-5, training seconds and seconds per step, Kendall's tau-b and Spearman's
rho between the two accuracy lists, the recipe and the machine's state; and a
PNG (default docs/ranking_<run name>.png) of supernet top-1 against standalone
top-1 with the identity line.

Resumable: the chosen configs, the supernet accuracies and every finished
subnet are kept in a state file (default RUN/ranking/state.json), written after
each subnet; a re-run with the same flags skips what is done, so Ctrl-C loses
at most the subnet in training (a second Ctrl-C stops at once).
`--epochs` trains for fewer (or more) epochs than the run did, for a cheaper
check; the output records it, and the run's own epochs are the default.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

from scipy import stats

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

STATE_FORMAT = "bench.ranking"
STATE_VERSION = 1


# --- choosing subnets -----------------------------------------------------------


def choose_subnets(space, cost, count: int, draws: int, seed: int) -> list:
    """`count` distinct networks at evenly spaced MACs quantiles of `draws` random configs."""
    from common import spread_over_cost

    try:
        return spread_over_cost(space, cost, count, draws, seed)
    except ValueError as e:
        raise SystemExit(f"error: --subnets: {e}; ask fewer") from None


# --- training one subnet alone -------------------------------------------------


def recipe(job, epochs: int = 0) -> dict:
    """The run's training recipe (run.json), with `epochs` if given."""
    opt = job.config.optimization
    batch = opt.global_batch_size
    steps_per_epoch = opt.steps_per_epoch or job.data.steps_per_epoch(batch)
    epochs = epochs or opt.epochs
    return {
        "epochs": epochs,
        "run_epochs": opt.epochs,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps_per_epoch * epochs,
        "warmup_steps": round(opt.warmup_epochs * steps_per_epoch),
        "global_batch_size": batch,
        "learning_rate": opt.learning_rate,
        "warmup_epochs": opt.warmup_epochs,
        "momentum": opt.momentum,
        "nesterov": True,
        "weight_decay": opt.weight_decay,
        "dropout_rate": opt.dropout_rate,
        "mixed_precision": opt.mixed_precision,
        "synchronized_bn": opt.synchronized_bn,
        "seed": job.config.runtime.seed,
        "holdout_examples": job.data.holdout_examples,
        "calibration_batches": job.config.evaluation.calibration_batches,
        "step": "ParallelLabelsStep, a group of one (cross-entropy on the labels)",
    }


def train_alone(job, config, rec: dict, strategy, stop, progress: bool):
    """Trains `config` alone from scratch; returns its result dict, or None if a stop was requested."""
    import keras
    import tensorflow as tf

    from pss_tf.job import build_supernet
    from pss_tf.supernet import encode_group
    from pss_tf.training.evaluation import make_evaluator
    from pss_tf.training.optimization import build_optimizer, learning_rate_schedule
    from pss_tf.training.step import NONFINITE_WEIGHTS, ParallelLabelsStep

    keras.utils.set_random_seed(rec["seed"])  # The same initial weights for every subnet (the run's seed).
    with strategy.scope():
        supernet = build_supernet(job.config, job.info, synchronized_bn=rec["synchronized_bn"])
        schedule = learning_rate_schedule(rec["learning_rate"], rec["total_steps"], rec["warmup_steps"])
        optimizer = build_optimizer(schedule, rec["momentum"], loss_scale=rec["mixed_precision"] == "float16")
        optimizer.build(supernet.trainable_variables)
    step = ParallelLabelsStep(supernet, optimizer, strategy, rec["global_batch_size"], rec["weight_decay"])
    input_fn = job.data.input_fn(rec["global_batch_size"], rec["seed"])
    iterator = iter(strategy.distribute_datasets_from_function(input_fn))
    group = tf.constant(encode_group([config]))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=rec["total_steps"], desc=f"  {config.resolution} px", unit="step", leave=False,
                   dynamic_ncols=True, mininterval=1.0)
    times, loss = [], float("nan")
    started = time.perf_counter()
    try:
        for index in range(rec["total_steps"]):
            if stop.requested:
                return None
            begin = time.perf_counter()
            outputs = step(next(iterator), group)
            loss = float(outputs["loss"])
            times.append(time.perf_counter() - begin)
            if not math.isfinite(loss) or float(outputs[NONFINITE_WEIGHTS]):
                raise RuntimeError(
                    f"{config}: the loss or the weights became NaN or infinite at step {index + 1} "
                    "(the run's learning rate diverges for this subnet alone); nothing of it was kept"
                )
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    train_seconds = time.perf_counter() - started
    accuracy = make_evaluator(supernet, job.config, job.data).evaluate(config)
    return {
        "standalone_top1": accuracy.top1,
        "standalone_top5": accuracy.top5,
        "final_loss": loss,
        "train_seconds": round(train_seconds, 2),
        # The first step traces the step function; the median is the steady state.
        "first_step_seconds": round(times[0], 3),
        "median_step_seconds": round(statistics.median(times[1:] or times), 4),
        "steps": len(times),
    }


# --- the benchmark --------------------------------------------------------------


def _fail(message: str):
    raise SystemExit(f"error: {message}")


def _open_run(args):
    from pss_tf.errors import ConfigError
    from pss_tf.job import Job

    if not os.path.isdir(args.job_dir):
        _fail(f"--job_dir: {args.job_dir} is not a directory (train a run with tools/train.py first)")
    try:
        job = Job(args.job_dir)
        _ = job.info  # Checks the data is readable.
    except ConfigError as e:
        _fail(f"--{e.field or 'job_dir'}: {e.message}")
    checkpoint = job.dir.latest_checkpoint()
    if checkpoint is None:
        _fail(f"--job_dir: {args.job_dir} has no checkpoint; train the run (to the end) first")
    return job, checkpoint


def _read_state(path: str, wanted: dict) -> dict | None:
    """The saved state if it matches `wanted` (the settings); refuses one that does not."""
    if not os.path.exists(path):
        return None
    from pss_tf.io_utils import read_json

    try:
        state = read_json(path, "ranking state")
    except ValueError as e:
        _fail(f"--state: {e}; remove it to start again")
    if not isinstance(state, dict) or (state.get("format"), state.get("version")) != (STATE_FORMAT, STATE_VERSION):
        _fail(f"--state: {path} is not a version {STATE_VERSION} ranking state; remove it or choose another --state")
    for name, value in wanted.items():
        old = state.get("settings", {}).get(name)
        if json.dumps(old, sort_keys=True) == json.dumps(value, sort_keys=True):
            continue
        if isinstance(old, dict) and isinstance(value, dict):  # Name the first differing entry.
            key = next(k for k in sorted(set(old) | set(value)) if old.get(k) != value.get(k))
            name, old, value = f"{name}.{key}", old.get(key), value.get(key)
        elif name == "configs":
            old, value = "other subnets", "these"
        _fail(
            f"the state in {path} was made with other settings ({name}: was {old!r}, now {value!r}); give the same "
            "flags to resume it, remove it to start again, or choose another --state"
        )
    return state


def run(args) -> int:
    from common import machine_state

    from pss_tf.io_utils import atomic_write_json
    from pss_tf.space.cost import count_flops, count_params
    from pss_tf.stop import StopRequest

    job, checkpoint = _open_run(args)
    name = os.path.basename(os.path.normpath(args.job_dir))
    out = args.out or os.path.join(ROOT, "docs", "bench", f"ranking_{name}.json")
    png = args.png or os.path.join(ROOT, "docs", f"ranking_{name}.png")
    state_path = args.state or os.path.join(args.job_dir, "ranking", "state.json")
    costs = job.cost_kwargs()

    def flops(config):
        return count_flops(config, **costs)

    configs = choose_subnets(job.space, flops, args.subnets, args.draws, args.seed)
    rec = recipe(job, args.epochs)
    settings = {  # In the order a mismatch is reported.
        "checkpoint": os.path.basename(checkpoint),
        "selection": {"seed": args.seed, "draws": args.draws, "subnets": args.subnets},
        "recipe": rec,
        "configs": [c.to_dict() for c in configs],
    }
    state = _read_state(state_path, settings) or {
        "format": STATE_FORMAT, "version": STATE_VERSION, "settings": settings, "supernet": None, "standalone": {},
        "machine": [],
    }
    done = state["standalone"]
    print(
        f"{name}: {len(configs)} subnets from {flops(configs[0]):.2f} to {flops(configs[-1]):.2f} M MACs; "
        f"{len(done)} trained earlier; each trains {rec['total_steps']} steps ({rec['epochs']} epochs of "
        f"{rec['steps_per_epoch']}, batch {rec['global_batch_size']}); state in {state_path}",
        flush=True,
    )
    if args.subnets < 8:
        print("note: issue 13 asks for at least 8 subnets", flush=True)

    import tensorflow as tf

    from pss_tf.training import distribute, runtime

    tf.get_logger().setLevel("ERROR")  # Each fresh supernet retraces calibration: expected, not worth a warning.
    runtime.configure(job.config)  # The run's precision, determinism and seed.
    strategy_name = job.config.runtime.strategy
    strategy = distribute.create_strategy("mirrored" if strategy_name == "multi_worker" else strategy_name)
    state["machine"] = state.get("machine", []) + [machine_state()]

    message = "stopping: finished subnets are kept, the one in training is dropped; the same command resumes"
    with StopRequest(message) as stop:
        if state["supernet"] is None:
            import gc

            from pss_tf.training.evaluation import make_evaluator

            print(f"evaluating the subnets inside the supernet ({checkpoint})", flush=True)
            supernet = job.restore_supernet()
            evaluator = make_evaluator(supernet, job.config, job.data)
            results = []
            for config in configs:
                if stop.requested:
                    break
                accuracy = evaluator.evaluate(config)
                results.append({"supernet_top1": accuracy.top1, "supernet_top5": accuracy.top5})
            del supernet, evaluator
            gc.collect()
            if len(results) < len(configs):
                print("stopped; the same command resumes", flush=True)
                return 130
            state["supernet"] = results
            atomic_write_json(state_path, state)

        outer = None
        if args.progress:
            from tqdm import tqdm

            outer = tqdm(total=len(configs), initial=len(done), desc="subnets", unit="subnet", dynamic_ncols=True)
        try:
            for index, config in enumerate(configs):
                if str(index) in done:
                    continue
                if stop.requested:
                    break
                result = train_alone(job, config, rec, strategy, stop, args.progress)
                if result is None:
                    break
                done[str(index)] = result
                atomic_write_json(state_path, state)
                line = (
                    f"subnet {index + 1}/{len(configs)}: {flops(config):.2f} M MACs, standalone top-1 "
                    f"{result['standalone_top1']:.4f}, supernet {state['supernet'][index]['supernet_top1']:.4f}, "
                    f"{result['train_seconds']:.0f} s ({1 / max(result['median_step_seconds'], 1e-9):.1f} steps/s)"
                )
                if outer is not None:
                    outer.write(line)
                    outer.update(1)
                else:
                    print(line, flush=True)
                import gc

                gc.collect()  # Not keras.backend.clear_session(): it would reset the precision policy.
        finally:
            if outer is not None:
                outer.close()
    if len(done) < len(configs):
        print(f"stopped with {len(done)} of {len(configs)} subnets trained; the same command resumes", flush=True)
        return 130

    subnets = []
    for index, config in enumerate(configs):
        subnets.append(
            {
                "index": index,
                "config": config.to_dict(),
                "flops": flops(config),
                "params": count_params(config, **costs),
                **state["supernet"][index],
                **done[str(index)],
            }
        )
    standalone = [s["standalone_top1"] for s in subnets]
    inside = [s["supernet_top1"] for s in subnets]
    summary = {
        "run": name,
        "job_dir": os.path.abspath(args.job_dir),
        "checkpoint": os.path.basename(checkpoint),
        "model": job.config.space.model,
        "dataset": job.config.data.dataset,
        "validation_examples": job.info.num_val,
        "selection": settings["selection"] | {"method": "evenly spaced MACs quantiles of the draws, min to max"},
        "recipe": rec,
        "kendall_tau_b": float(stats.kendalltau(standalone, inside).statistic),  # tau-b: ties count in neither
        "spearman": float(stats.spearmanr(standalone, inside).statistic),
        "mean_standalone_top1": statistics.fmean(standalone),
        "mean_supernet_top1": statistics.fmean(inside),
        "train_seconds_total": round(sum(s["train_seconds"] for s in subnets), 1),
        "machine": state["machine"],
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

    from pss_tf.io_utils import atomic_write

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
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png"), mode="wb")
    finally:
        plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job_dir", required=True, help="a finished training run")
    parser.add_argument("--subnets", type=int, default=8, help="subnets to train alone (at least 2; the issue asks 8)")
    parser.add_argument("--draws", type=int, default=3000, help="random configs the subnets are chosen among")
    parser.add_argument("--seed", type=int, default=0, help="seed of those draws")
    parser.add_argument("--epochs", type=int, default=0, help="training epochs of each subnet (0: the run's)")
    parser.add_argument("--out", default="", help="JSON (default docs/bench/ranking_<run name>.json)")
    parser.add_argument("--png", default="", help="plot (default docs/ranking_<run name>.png)")
    parser.add_argument("--state", default="", help="resumable state (default JOB_DIR/ranking/state.json)")
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
