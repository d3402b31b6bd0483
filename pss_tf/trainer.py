"""The PSS training run: a thin loop over library pieces.

`train(config)` validates everything cheap first (flags, job directory, data),
then builds the supernet under the strategy, draws a subnet per step from the
pure-Python sampler, runs the traced sandwich step, feeds the returned score to
the pools, evaluates at epoch ends, and leaves behind in the job directory:

    run.json            the TrainConfig (a resumed run must match it)
    sampler_<metric>.npz the conditional sampler's cache
    checkpoints/        model, optimizer, step and the host state (pools and
                        every random state) in one TF checkpoint
    pools.json          the pools, rewritten atomically at every checkpoint
    evaluations.json    per-epoch validation results
    winners.json        one entry per pool winner, written at the end
    tensorboard/        scalars
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import time

import numpy as np

from pss_tf import data as data_lib
from pss_tf.conditional_sampler import ConditionalSampler
from pss_tf.config import SearchSpace, SubnetConfig
from pss_tf.io_utils import atomic_write_json, read_json
from pss_tf.metrics import FlopsMetric, Metric
from pss_tf.pools import PoolManager
from pss_tf.schedules import ExponentialSchedule
from pss_tf.subnet_sampling import PrioritizedSampler, UniformSampler
from pss_tf.targets import TargetGrid
from pss_tf.train_config import TrainConfig

logger = logging.getLogger(__name__)

METRIC_UNITS = {"flops": "m", "latency_cpu": "ms", "latency_gpu": "us"}
RUN_FILE = "run.json"
POOLS_FILE = "pools.json"
WINNERS_FILE = "winners.json"
EVALUATIONS_FILE = "evaluations.json"


def pool_label(metric: str, target: float) -> str:
    """A pool's name in signatures, logs and plots, e.g. `flops_300m`."""
    return f"{metric}_{target:g}{METRIC_UNITS.get(metric, '')}".replace(".", "p")


@dataclasses.dataclass
class TrainResult:
    job_dir: str
    steps: int
    finished: bool
    winners: list


# --- checks before heavy work ---------------------------------------------------


def prepare_job_dir(config: TrainConfig) -> None:
    """Refuses to mix two runs in one directory; checks a resumed run matches."""
    run_file = os.path.join(config.job_dir, RUN_FILE)
    if os.path.exists(run_file):
        if not config.resume:
            raise ValueError(
                f"--job_dir: {config.job_dir} holds another run ({RUN_FILE}); pass --resume to continue it "
                "or choose a new directory"
            )
        previous = TrainConfig.from_dict(read_json(run_file, RUN_FILE))
        changed = config.differences(previous)
        if changed:
            raise ValueError(
                f"--resume: flags differ from the run in {config.job_dir}: "
                + ", ".join(f"--{k} (was {previous.to_dict()[k]!r}, now {config.to_dict()[k]!r})" for k in changed)
            )
    elif config.resume:
        raise ValueError(f"--resume: {config.job_dir} holds no run to resume ({RUN_FILE} is missing)")
    elif os.path.isdir(config.job_dir) and os.listdir(config.job_dir):
        raise ValueError(f"--job_dir: {config.job_dir} exists and is not empty; choose a new directory")


def make_metrics(config: TrainConfig, info: data_lib.DatasetInfo, space: SearchSpace) -> dict[str, Metric]:
    metrics = {}
    for name in config.metrics:
        grid = config.targets.get(name) or ()
        kwargs = dict(num_classes=info.num_classes, small_input=config.small_input, in_channels=info.channels)
        if name == "flops":
            if not grid:
                grid = auto_grid(FlopsMetric(config.model, TargetGrid(0, 1, 1), **kwargs), space)
            metrics[name] = FlopsMetric(config.model, TargetGrid(*grid), **kwargs)
        elif name == "latency_cpu":
            from pss_tf.latency.predictor import load_latency_metric

            metric = load_latency_metric(
                config.latency_cpu_lut, config.model, TargetGrid(*(grid or (0, 1, 1))), space, name=name, **kwargs
            )
            metrics[name] = metric if grid else metric.with_grid(TargetGrid(*auto_grid(metric, space)))
        else:
            raise ValueError(f"--metrics: unknown metric {name!r}")
    return metrics


def auto_grid(metric: Metric, space: SearchSpace, targets: int = 10) -> tuple[float, float, float]:
    """About `targets` evenly spaced round targets across the space's metric range."""
    resolutions, widths = space.sample_arrays(np.random.default_rng(0), 20_000)
    values = metric.values(resolutions, widths)
    low, high = float(np.percentile(values, 0.5)), float(np.percentile(values, 99.5))
    raw = max((high - low) / targets, 1e-9)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(s - raw))
    start = math.ceil(low / step) * step
    stop = max(start, math.floor(high / step) * step)
    return (round(start, 6), round(stop, 6), round(step, 6))


# --- the run --------------------------------------------------------------------


class _StopRequest:
    """Turns SIGTERM into a clean stop at the next step (a checkpoint is saved)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        logger.warning("SIGTERM: stopping after this step and saving a checkpoint.")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Trainer:
    """Holds the state of one run; `run()` trains until done or interrupted."""

    def __init__(self, config: TrainConfig, strategy=None):
        import tensorflow as tf

        from pss_tf import distribute

        config.validate()
        if config.strategy != "multi_worker" or distribute.is_chief_task():
            prepare_job_dir(config)
        self.info = data_lib.check_dataset(
            config.dataset, config.data_dir, synthetic=self._synthetic_spec(config)
        )
        self.config = config
        self.space = config.search_space()
        self.tf = tf
        self.strategy = strategy or distribute.create_strategy(config.strategy)
        self.is_chief = distribute.is_chief(self.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        if config.global_batch_size % self.replicas:
            raise ValueError(
                f"--global_batch_size: {config.global_batch_size} does not split over {self.replicas} replicas"
            )
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        import keras

        keras.utils.set_random_seed(config.seed)
        self.steps_per_epoch = config.steps_per_epoch or data_lib.steps_per_epoch(self.info, config.global_batch_size)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"--global_batch_size: {config.global_batch_size} is larger than the training split "
                f"({self.info.num_train} examples)"
            )
        self.total_steps = self.steps_per_epoch * config.epochs
        os.makedirs(config.job_dir, exist_ok=True)
        self._build_sampling()
        if not config.resume and self.is_chief:
            atomic_write_json(os.path.join(config.job_dir, RUN_FILE), config.to_dict())
        self._build_model()

    @staticmethod
    def _synthetic_spec(config: TrainConfig):
        return data_lib.SyntheticSpec(
            num_classes=config.synthetic_classes,
            num_train=config.synthetic_train_examples,
            num_val=config.synthetic_val_examples,
        )

    # Pure-Python side: metrics, conditional samplers, pools, subnet sampler.

    def _build_sampling(self):
        config = self.config
        self.metrics = make_metrics(config, self.info, self.space)
        self.pools = PoolManager(config.pool_capacity, config.score_momentum)
        if config.sampler == "pss":
            samplers = {}
            for name, metric in self.metrics.items():
                cache = os.path.join(config.job_dir, f"sampler_{name}.npz") if self.is_chief else None
                samplers[name] = ConditionalSampler.build_or_load(
                    cache, self.space, metric, config.sampler_samples, config.seed
                )
                if not samplers[name].targets:
                    raise ValueError(
                        f"--{name}_targets: no subnet of the search space reaches any target of {metric.grid}"
                    )
            self.sampler = PrioritizedSampler(
                self.pools,
                samplers,
                ExponentialSchedule(config.p_fresh_start, config.p_fresh_end, config.epochs),
                ExponentialSchedule(config.temperature_start, config.temperature_end, config.epochs),
                seed=config.seed,
            )
            self.pool_keys = list(self.sampler.keys)
        else:
            self.sampler = UniformSampler(self.space, list(self.metrics.values()), seed=config.seed)
            self.pool_keys = [(m.name, t) for m in self.metrics.values() for t in m.grid.targets]
        self.max_config = self.space.max_config()
        self.min_config = self.space.min_config()

    # TensorFlow side: supernet, optimizer, step, checkpoint.

    def _build_model(self):
        import keras

        from pss_tf.optimization import build_optimizer, learning_rate_schedule
        from pss_tf.supernet import build_supernet
        from pss_tf.train_step import SandwichStep

        tf, config = self.tf, self.config
        if config.mixed_precision != "none":
            keras.mixed_precision.set_global_policy(f"mixed_{config.mixed_precision}")
        warmup = int(round(config.warmup_epochs * self.steps_per_epoch))
        with self.strategy.scope():
            self.supernet = build_supernet(
                config.model,
                num_classes=self.info.num_classes,
                small_input=config.small_input,
                in_channels=self.info.channels,
                dropout_rate=config.dropout_rate,
                synchronized_bn=config.synchronized_bn,
            )
            self.schedule = learning_rate_schedule(config.learning_rate, self.total_steps, warmup)
            self.optimizer = build_optimizer(
                self.schedule, config.momentum, loss_scale=config.mixed_precision == "float16"
            )
            self.optimizer.build(self.supernet.trainable_variables)
        self.step_fn = SandwichStep(
            self.supernet, self.optimizer, self.strategy, config.global_batch_size, config.weight_decay
        )
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.host_state = tf.Variable("", dtype=tf.string, trainable=False, name="host_state")
        self.checkpoint = tf.train.Checkpoint(
            model=self.supernet, optimizer=self.optimizer, step=self.global_step, host_state=self.host_state
        )
        directory = os.path.join(config.job_dir, "checkpoints")
        if not self.is_chief:  # other workers write a throwaway copy (all must save)
            from pss_tf.distribute import task_id

            directory = os.path.join(config.job_dir, f".worker{task_id(self.strategy)}_checkpoints")
        self.checkpoint_manager = tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=config.keep_checkpoints
        )
        self.evaluations = []
        if config.resume:
            self._restore()

    def _restore(self):
        latest = self.checkpoint_manager.latest_checkpoint
        if latest is None:
            raise ValueError(f"--resume: {self.config.job_dir} has no checkpoint to resume from")
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        state = json.loads(self.host_state.numpy().decode())
        self.pools = PoolManager.from_dict(state["pools"])
        self.sampler.pools = self.pools
        self.sampler.set_state(state["sampler"])
        self.evaluations = state.get("evaluations", [])
        logger.info("Resumed %s at step %d.", latest, int(self.global_step.numpy()))

    def save_checkpoint(self):
        step = int(self.global_step.numpy())
        state = {"pools": self.pools.to_dict(), "sampler": self.sampler.get_state(), "evaluations": self.evaluations}
        self.host_state.assign(json.dumps(state))
        self.checkpoint_manager.save(checkpoint_number=step)
        if self.is_chief:
            self.pools.save(os.path.join(self.config.job_dir, POOLS_FILE))
        else:
            shutil.rmtree(self.checkpoint_manager.directory, ignore_errors=True)

    # Data.

    def _input_kwargs(self):
        config = self.config
        return dict(
            channels=self.info.channels,
            synthetic=self._synthetic_spec(config),
            crop_scale=(config.crop_scale_min, 1.0),
            flip=config.flip,
        )

    def _train_iterator(self, start_step: int):
        input_fn = data_lib.make_input_fn(
            self.config.dataset,
            self.config.data_dir,
            "train",
            self.space.max_resolution,
            self.config.global_batch_size,
            training=True,
            seed=self.config.seed,
            start_step=start_step,
            **self._input_kwargs(),
        )
        return iter(self.strategy.distribute_datasets_from_function(input_fn))

    def _make_evaluator(self):
        from pss_tf.evaluation import SubnetEvaluator

        config = self.config
        kwargs = self._input_kwargs()
        calibration = data_lib.load(
            config.dataset, config.data_dir, "train", self.space.max_resolution,
            min(config.global_batch_size, config.eval_batch_size), training=True, seed=config.seed + 1, **kwargs,
        )
        validation = data_lib.load(
            config.dataset, config.data_dir, "val", self.space.max_resolution, config.eval_batch_size,
            training=False, **kwargs,
        )
        return SubnetEvaluator(self.supernet, calibration, validation, config.calibration_batches)

    # Loop.

    def run(self) -> TrainResult:
        tf, config = self.tf, self.config
        if self.is_chief:
            writer = tf.summary.create_file_writer(os.path.join(config.job_dir, "tensorboard"))
        else:
            writer = tf.summary.create_noop_writer()
        self.evaluator = self._make_evaluator()
        step = int(self.global_step.numpy())
        iterator = self._train_iterator(step)
        max_vector = tf.constant(self.supernet.encode(self.max_config))
        min_vector = tf.constant(self.supernet.encode(self.min_config))
        stop_at = config.max_steps or self.total_steps
        interrupted = False
        with writer.as_default(), _StopRequest() as stop:
            while step < self.total_steps:
                epoch = step // self.steps_per_epoch
                bar = self._progress_bar(epoch, step % self.steps_per_epoch)
                window_start, window_images = time.perf_counter(), 0
                while step < (epoch + 1) * self.steps_per_epoch:
                    if step >= stop_at or stop.requested:
                        interrupted = True
                        break
                    draw = self.sampler.draw(epoch)
                    losses = self.step_fn(
                        next(iterator), max_vector, tf.constant(self.supernet.encode(draw.config)), min_vector
                    )
                    losses = {k: float(v) for k, v in losses.items()}
                    if draw.key is not None:
                        self.pools.update(draw.key, draw.config, -losses["chosen_ce"])
                    step += 1
                    self.global_step.assign(step)
                    window_images += config.global_batch_size
                    if bar is not None:
                        rate = window_images / max(time.perf_counter() - window_start, 1e-9)
                        bar.set_postfix(loss=f"{losses['loss']:.3f}", img_s=f"{rate:.0f}")
                        bar.update(1)
                    if step % config.log_every_steps == 0:
                        self._log_step(step, epoch, losses, window_images / max(time.perf_counter() - window_start, 1e-9))
                        window_start, window_images = time.perf_counter(), 0
                    if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
                        self.save_checkpoint()
                if bar is not None:
                    bar.close()
                if interrupted:
                    break
                if (epoch + 1) % config.eval_every_epochs == 0 or step == self.total_steps:
                    self._evaluate_epoch(epoch + 1, step)
                self.save_checkpoint()
            if interrupted:
                self.save_checkpoint()
                logger.info("Stopped at step %d of %d; continue with --resume.", step, self.total_steps)
                writer.flush()
                return TrainResult(config.job_dir, step, False, [])
            winners = self._final_winners(step)
            writer.flush()
        return TrainResult(config.job_dir, step, True, winners)

    def _progress_bar(self, epoch: int, done: int):
        if not (self.config.progress and self.is_chief):
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.steps_per_epoch,
            initial=done,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )

    def _log_step(self, step, epoch, losses, images_per_second):
        tf = self.tf
        for name, value in losses.items():
            tf.summary.scalar(f"train/{name}", value, step=step)
        tf.summary.scalar("train/learning_rate", float(self.schedule(step - 1)), step=step)
        tf.summary.scalar("train/images_per_second", images_per_second, step=step)
        if isinstance(self.sampler, PrioritizedSampler):
            tf.summary.scalar("sampling/p_fresh", self.sampler.p_fresh_schedule(epoch), step=step)
            tf.summary.scalar("sampling/temperature", self.sampler.temperature_schedule(epoch), step=step)
        fill = self.pools.fill()
        tf.summary.scalar(
            "pools/fill", sum(fill.values()) / (self.config.pool_capacity * len(self.pool_keys)), step=step
        )
        for (metric, target), (_, score) in self.pools.winners().items():
            tf.summary.scalar(f"pools/best_score/{pool_label(metric, target)}", score, step=step)

    def _evaluated_keys(self) -> list:
        """The pools whose winners are evaluated at epoch ends: evenly spread."""
        keys = [k for k in self.pool_keys if self.pools.size(k)]
        n = self.config.eval_winners_per_epoch
        if n == 0 or not keys:
            return []
        if len(keys) <= n:
            return keys
        return [keys[round(i * (len(keys) - 1) / (n - 1))] for i in range(n)] if n > 1 else [keys[-1]]

    def _evaluate_epoch(self, epoch: int, step: int):
        tf = self.tf
        results = {"epoch": epoch, "step": step}
        subnets = {"max": self.max_config, "min": self.min_config}
        for key in self._evaluated_keys():
            subnets[pool_label(*key)] = self.pools.winner(key)[0]
        for name, config in subnets.items():
            accuracy = self.evaluator.evaluate(config)
            results[name] = {"top1": accuracy.top1, "top5": accuracy.top5}
            tf.summary.scalar(f"val_top1/{name}", accuracy.top1, step=step)
            tf.summary.scalar(f"val_top5/{name}", accuracy.top5, step=step)
        self.evaluations.append(results)
        summary = ", ".join(f"{k} {v['top1']:.4f}" for k, v in results.items() if isinstance(v, dict))
        logger.info("epoch %d: val top-1 %s", epoch, summary)
        if self.config.progress and self.is_chief:
            print(f"epoch {epoch}: val top-1 {summary}", flush=True)
        if self.is_chief:
            atomic_write_json(os.path.join(self.config.job_dir, EVALUATIONS_FILE), self.evaluations)

    def _final_winners(self, step: int) -> list:
        """Evaluates the top-k of every pool and keeps the best by validation top-1."""
        entries = []
        keys = [k for k in self.pool_keys if self.pools.size(k)]
        for metric, target in keys:
            best = None
            for config, score in self.pools.top_k((metric, target), self.config.final_top_k):
                accuracy = self.evaluator.evaluate(config)
                if best is None or accuracy.top1 > best[2].top1:
                    best = (config, score, accuracy)
            config, score, accuracy = best
            entries.append(
                {
                    "metric": metric,
                    "target": target,
                    "name": pool_label(metric, target),
                    "config": config.to_dict(),
                    "value": self.metrics[metric].value(config),
                    "score": score,
                    "val_top1": accuracy.top1,
                    "val_top5": accuracy.top5,
                }
            )
        if self.is_chief:
            atomic_write_json(os.path.join(self.config.job_dir, WINNERS_FILE), entries)
            if self.config.progress:
                for e in entries:
                    print(f"winner {e['name']}: {e['value']:.2f} {e['metric']}, val top-1 {e['val_top1']:.4f}")
        return entries


def train(config: TrainConfig, strategy=None) -> TrainResult:
    """Runs (or resumes) the training described by `config`."""
    return Trainer(config, strategy).run()


def load_winners(job_dir: str) -> list[tuple[dict, SubnetConfig]]:
    """The entries of `JOB_DIR/winners.json` with their configs parsed."""
    path = os.path.join(job_dir, WINNERS_FILE)
    if not os.path.exists(path):
        raise ValueError(f"--job_dir: {job_dir} has no {WINNERS_FILE}; train to the end first")
    entries = read_json(path, WINNERS_FILE)
    return [(e, SubnetConfig.from_dict(e["config"])) for e in entries]


def load_job(job_dir: str):
    """The trained supernet of a job directory, with its TrainConfig and DatasetInfo.

    Restores the model weights of the latest checkpoint (optimizer state is
    skipped). The BN statistics are whatever the last calibration left: calibrate
    each subnet before evaluating or exporting it.
    """
    import tensorflow as tf

    from pss_tf.supernet import build_supernet

    run_file = os.path.join(job_dir, RUN_FILE)
    if not os.path.exists(run_file):
        raise ValueError(f"--job_dir: {job_dir} holds no training run ({RUN_FILE} is missing)")
    config = TrainConfig.from_dict(read_json(run_file, RUN_FILE))
    info = data_lib.check_dataset(config.dataset, config.data_dir, synthetic=Trainer._synthetic_spec(config))
    supernet = build_supernet(
        config.model,
        num_classes=info.num_classes,
        small_input=config.small_input,
        in_channels=info.channels,
        dropout_rate=config.dropout_rate,
    )
    latest = tf.train.latest_checkpoint(os.path.join(job_dir, "checkpoints"))
    if latest is None:
        raise ValueError(f"--job_dir: {job_dir} has no checkpoint")
    # The optimizer's variable list also references every trainable weight, which
    # restores them even from checkpoints written before blocks were attributes.
    from pss_tf.optimization import build_optimizer, learning_rate_schedule

    optimizer = build_optimizer(
        learning_rate_schedule(1.0, 2), config.momentum, loss_scale=config.mixed_precision == "float16"
    )
    optimizer.build(supernet.trainable_variables)
    status = tf.train.Checkpoint(model=supernet, optimizer=optimizer).restore(latest)
    status.expect_partial()
    saved = {name for name, _ in tf.train.list_variables(latest)}
    if not any(name.startswith("model/stem/") for name in saved):
        logger.warning("%s predates block tracking: BN statistics are not restored (calibrate anyway).", latest)
    else:
        status.assert_existing_objects_matched()
    return supernet, config, info
