"""The PSS training run: a thin loop over library pieces.

`Trainer(run_config)` checks everything cheap first (settings, job directory,
data), then builds the pure-Python side (metrics, pools, the training mode's
sampling) and the TensorFlow side (supernet, optimizer, the mode's step,
checkpoint) under the strategy. `run()` records the run in its job directory
(`pss_tf.run.job`), lets the mode (`pss_tf.training.modes`) draw and train each
step's subnets, files the scores where the mode says, evaluates at epoch ends
and writes the winners at the end. Process-wide settings (precision, determinism, seeds) are
the driver's: `pss_tf.training.runtime`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time

import tensorflow as tf

from pss_tf import allocator, cpu_kernels
from pss_tf.errors import ConfigError, TrainingDiverged
from pss_tf.models.supernet import supernet_for_run
from pss_tf.pareto import mark_pareto_front
from pss_tf.run import compat
from pss_tf.run.config import INIT_SOURCE, TrainConfig
from pss_tf.run.job import JobDir
from pss_tf.run.metrics import metrics_for_run
from pss_tf.run.records import TrainingRecords
from pss_tf.sampling.pools import PoolManager
from pss_tf.stop import StopRequest
from pss_tf.training import distribute, modes, warm_start
from pss_tf.training.evaluation import evaluate_all, make_evaluator, validated_winners
from pss_tf.training.optimization import build_optimizer, learning_rate_schedule
from pss_tf.training.step import cross_entropy

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    job_dir: str
    steps: int
    finished: bool
    winners: list


class _HostState(tf.train.experimental.PythonState):
    """The host side of a run (pools, the mode's random state, training
    records, evaluations), saved and restored inside each TF checkpoint with the
    weights, so a resumed run continues exactly."""

    def __init__(self, trainer: "Trainer"):
        self._trainer = trainer

    def serialize(self) -> str:
        trainer = self._trainer
        return json.dumps(
            {
                "pools": trainer.pools.to_dict(),
                "sampler": trainer.mode.get_state(),
                "records": trainer.records.to_dict(),
                "evaluations": trainer.evaluations,
            }
        )

    def deserialize(self, string) -> None:
        state = json.loads(string.numpy() if hasattr(string, "numpy") else string)
        trainer = self._trainer
        trainer.pools = PoolManager.from_dict(state["pools"])
        trainer.mode.use_pools(trainer.pools)
        trainer.mode.set_state(state["sampler"])
        trainer.records = TrainingRecords.from_dict(state["records"])
        trainer.evaluations = state["evaluations"]


class Trainer:
    """Holds the state of one run; `run()` trains until done or interrupted."""

    def __init__(self, run_config: TrainConfig, strategy=None):
        run_config.validate()
        self.run_config = run_config
        self.job = JobDir(run_config.job_dir)
        if run_config.runtime.strategy != "multi_worker" or distribute.is_chief_task():
            self.job.check_start(run_config)
        self.data = run_config.data_settings()
        self.info = self.data.info
        self.space = run_config.search_space()
        self.warm_start = None
        if run_config.warm_start.init_from and not run_config.runtime.resume:  # A resumed run has its own weights.
            self.warm_start = warm_start.plan(run_config, self.info)
        batch, parallel = run_config.optimization.global_batch_size, run_config.sampling.parallel_subnets
        self.steps_per_epoch = run_config.optimization.steps_per_epoch or self.data.steps_per_epoch(batch)
        if self.steps_per_epoch < 1:
            raise ConfigError("global_batch_size", f"{batch} is larger than the training split ({self.info.num_train} examples)")
        self.total_steps = self.steps_per_epoch * run_config.optimization.epochs
        # What needs only the settings and the data is checked above; what needs the replicas, below.
        self.strategy = strategy or distribute.create_strategy(run_config.runtime.strategy)
        self.is_chief = distribute.is_chief(self.strategy)
        self.class_warnings = self.data.class_warnings()
        for warning in self.class_warnings.values():
            self._report(f"warning: {warning}", logging.WARNING)
        self.replicas = self.strategy.num_replicas_in_sync
        if (batch // parallel) % self.replicas:  # The config checked that `parallel` slices divide the batch.
            raise ConfigError(
                "global_batch_size",
                f"{batch} does not split over {self.replicas} replicas"
                + (f" in each of its {parallel} slices (`parallel_subnets`)" if parallel > 1 else ""),
            )
        self.evaluations = []
        self.records = TrainingRecords()
        self._build_sampling()
        self._build_model()
        self._build_checkpoint()
        if self.warm_start is not None:
            self._start_from_source()

    # Pure-Python side: metrics, pools, the training mode's sampling.

    def _build_sampling(self):
        run_config = self.run_config
        self.metrics = metrics_for_run(run_config, self.info.num_classes, self.info.channels)
        for name, metric in self.metrics.items():
            if run_config.targets.grid_form(name) != "range":  # Chosen from the space: say which.
                grid = metric.grid
                self._report(f"{name} targets: {grid.start:g} to {grid.stop:g} {metric.unit} every {grid.step:g} "
                             f"({len(grid.targets)} targets, chosen from the space)")
        self.pools = PoolManager(run_config.sampling.pool_capacity, run_config.sampling.score_momentum)
        self.mode = modes.create(run_config, self.space, self.metrics, self.pools, self.job)
        self.pool_keys = self.mode.pool_keys
        self.max_config = self.space.max_config()
        self.min_config = self.space.min_config()

    # TensorFlow side: supernet, optimizer, step, checkpoint.

    def _build_model(self):
        optimization = self.run_config.optimization
        warmup = int(round(optimization.warmup_epochs * self.steps_per_epoch))
        with self.strategy.scope():
            self.supernet = supernet_for_run(self.run_config, self.info, synchronized_bn=optimization.synchronized_bn)
            self.schedule = learning_rate_schedule(optimization.learning_rate, self.total_steps, warmup)
            self.optimizer = build_optimizer(
                self.schedule, optimization.momentum, loss_scale=optimization.mixed_precision == "float16"
            )
            self.optimizer.build(self.supernet.trainable_variables)
        self.mode.build(self.supernet, self.optimizer, self.strategy)
        self._agree = None
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # A stop must happen at the same step on every worker, or the others
            # die in their next all-reduce: each step, the workers sum their flags.
            strategy = self.strategy

            def agree(flag):
                per_replica = strategy.run(tf.identity, args=(flag,))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

            self._agree = tf.function(agree, autograph=False)

    def _build_checkpoint(self):
        runtime = self.run_config.runtime
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.checkpoint = tf.train.Checkpoint(
            model=self.supernet, optimizer=self.optimizer, step=self.global_step, host=_HostState(self)
        )
        if runtime.resume:
            self._restore()
        directory = self.job.checkpoints_dir
        if not self.is_chief:  # Other workers write a throwaway copy (all must save).
            directory = self.job.file(f".worker{distribute.task_id(self.strategy)}_checkpoints")
        self.checkpoint_manager = tf.train.CheckpointManager(
            self.checkpoint,
            directory,
            max_to_keep=runtime.keep_checkpoints,
            step_counter=self.global_step,
            checkpoint_interval=runtime.checkpoint_every_steps or None,
            last_checkpoint_step=self.step,
        )

    def _restore(self):
        # Every worker resumes from the chief's checkpoints (the others keep none).
        latest = tf.train.latest_checkpoint(self.job.checkpoints_dir)
        if latest is None:
            raise ConfigError("resume", f"{self.job.path} has no checkpoint to resume from")
        if compat.checkpoint_is_0_1(latest):
            raise ConfigError(
                "resume",
                f"{latest} was written by pss_tf 0.1, which kept the pools in another form: it cannot be "
                "resumed; export or search the run as it is, or start a new one",
            )
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        # A run killed between its last checkpoint and the files beside it left them
        # a checkpoint behind (or ahead): they follow the checkpoint again.
        self._write_host_files()
        logger.info("Resumed %s at step %d.", latest, self.step)

    def _start_from_source(self):
        """The source run's weights (and, with init_pools, its pool members): see `warm_start`."""
        source = self.warm_start
        self._report(f"warm start from {source.checkpoint} (step {source.step})")
        for note in source.notes:
            self._report(note)
        try:
            source_supernet = source.job.restore_supernet()
        except (tf.errors.OpError, AssertionError, ValueError) as e:  # Damaged data shards.
            raise ConfigError("init_from", f"{source.checkpoint} cannot be restored ({type(e).__name__}: {e})") from None
        warm_start.copy_weights(source_supernet, self.supernet)
        if self.run_config.warm_start.init_pools:
            images, labels = next(iter(self.data.training(self.run_config.optimization.global_batch_size,
                                                          seed=self.run_config.runtime.seed)))
            forward = tf.function(lambda x, v: self.supernet(x, v, training=True), reduce_retracing=True, autograph=False)

            def score(config):
                logits = forward(images, tf.constant(self.supernet.encode(config)))
                return -float(tf.reduce_mean(cross_entropy(labels, logits)))

            joined = warm_start.seed_pools(source.job, self.pools, self.pool_keys, self.metrics, self.space, score)
            self._report(f"{joined} pool members of {source.job.path} seed the pools (scored on the first batch)")

    def _record_start(self):
        """Writes run.json and the sampler caches: from here on the directory holds a run."""
        if not self.is_chief:
            return
        if not self.job.holds_run():
            self.job.write_run_config(self.run_config, {INIT_SOURCE: self.warm_start.record} if self.warm_start else None)
        for name, sampler in self.mode.conditional_samplers.items():
            if not os.path.exists(self.job.sampler_cache(name)):
                sampler.save(self.job.sampler_cache(name))

    def _write_host_files(self):
        """pools.json and records.json of the current step (chief only)."""
        if self.is_chief:
            self.job.write_pools(self.pools, self.step)
            self.records.save(self.job.records_file)

    def save_checkpoint(self, force: bool = True):
        """Saves a checkpoint named by the step (unless `force` is False and the
        checkpoint_every_steps interval has not passed, or there is none)."""
        if not force and not self.run_config.runtime.checkpoint_every_steps:
            return
        if self.checkpoint_manager.save(checkpoint_number=self.step, check_interval=not force) is None:
            return
        self._write_host_files()
        if not self.is_chief:
            shutil.rmtree(self.checkpoint_manager.directory, ignore_errors=True)
        logger.debug("Checkpoint at step %d.", self.step)

    # The loop.

    def run(self) -> TrainResult:
        self.evaluator = make_evaluator(self.supernet, self.run_config, self.data)
        self._iterator = self._train_iterator(self.step)
        self._record_start()  # Only a run that gets this far holds the directory.
        writer = (
            tf.summary.create_file_writer(self.job.tensorboard_dir) if self.is_chief else tf.summary.create_noop_writer()
        )
        logger.info("Training from step %d of %d.", self.step, self.total_steps)
        logger.info("%s.", cpu_kernels.describe())
        batch_norm = cpu_kernels.flat_batch_norm(self.run_config.runtime.batch_norm_kernel)
        logger.info(
            "Training batch norm's kernel sees the maps as %s (%s).",
            "(N*H*W, 1, 1, C)" if self.supernet.flat_bn_kernel else "(N, H, W, C)", batch_norm["reason"],
        )
        try:
            return self._train(writer)
        finally:
            writer.close()  # Its events are on disk when run() returns, whatever the caller does next.

    def _train(self, writer) -> TrainResult:
        stopping = "stopping after this step; a checkpoint is saved, resume the run to continue"
        with writer.as_default(), StopRequest(stopping) as stop:
            while self.step < self.total_steps:
                epoch = self.step // self.steps_per_epoch
                if not self.train_epoch(epoch, stop):
                    self.save_checkpoint()
                    logger.info("Stopped at step %d of %d; continue with resume.", self.step, self.total_steps)
                    return TrainResult(self.job.path, self.step, False, [])
                if (epoch + 1) % self.run_config.evaluation.eval_every_epochs == 0 or self.step == self.total_steps:
                    self.evaluate_epoch(epoch + 1)
                self.save_checkpoint()
            winners = self.final_winners()
        return TrainResult(self.job.path, self.step, True, winners)

    @property
    def step(self) -> int:
        return int(self.global_step.numpy())

    def _train_iterator(self, start_step: int):
        input_fn = self.data.input_fn(
            self.run_config.optimization.global_batch_size, self.run_config.runtime.seed, start_step=start_step
        )
        iterator = iter(self.strategy.distribute_datasets_from_function(input_fn))
        allocator.keep_freed_memory(again=True)  # The iterator's GeneratorDataset reset glibc's malloc settings.
        return iterator

    def train_epoch(self, epoch: int, stop) -> bool:
        """Trains to the end of `epoch`; False when stopped (max_steps or a signal) before it."""
        runtime = self.run_config.runtime
        stop_at = runtime.max_steps or self.total_steps
        end = (epoch + 1) * self.steps_per_epoch
        bar = self._progress_bar(
            f"epoch {epoch + 1}/{self.run_config.optimization.epochs}", self.steps_per_epoch, "step",
            initial=self.step % self.steps_per_epoch,
        )
        window_start, window_images = time.perf_counter(), 0
        try:
            while self.step < end:
                if self.step >= stop_at or self._stop_requested(stop):
                    return False
                losses = self.train_step(epoch)
                step = self.step
                window_images += self.run_config.optimization.global_batch_size
                rate = window_images / max(time.perf_counter() - window_start, 1e-9)
                if bar is not None:
                    bar.set_postfix(loss=f"{losses['loss']:.3f}", img_s=f"{rate:.0f}")
                    bar.update(1)
                if step % runtime.log_every_steps == 0:
                    self._log_step(step, epoch, losses, rate)
                    window_start, window_images = time.perf_counter(), 0
                self.save_checkpoint(force=False)
        finally:
            if bar is not None:
                bar.close()
        return True

    def _stop_requested(self, stop) -> bool:
        """Whether to stop before the next step; the workers of a multi-worker run agree."""
        if self._agree is None:
            return stop.requested
        return float(self._agree(tf.constant(1.0 if stop.requested else 0.0))) > 0

    def train_step(self, epoch: int) -> dict:
        """One step of the mode on the next batch; its scores go where the mode says."""
        subnets = self.mode.draw(epoch)
        result = self.mode.step(next(self._iterator), subnets)
        scores = {f"slice_ce_{i}": v for i, v in enumerate(result.scores)}
        self._check_finite({**result.losses, **scores}, result.nonfinite_weights)
        for key, config, ce in self.mode.pool_updates(result):
            self.pools.update(key, config, -ce)
        self.global_step.assign_add(1)
        for config, ce in self.mode.record_updates(result):
            self.records.add(config, self.step, ce)
        return result.losses

    def _check_finite(self, losses: dict, nonfinite_weights: float) -> None:
        """Stops a diverged run before anything of the bad step is kept or saved."""
        step = self.step + 1
        bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
        if bad:
            values = ", ".join(f"{k}={v}" for k, v in bad.items())
            self._diverged(step, f"the training loss became {values} at step {step}")
        if nonfinite_weights:
            self._diverged(step, f"the weights became NaN or infinite at step {step}")

    def _diverged(self, step: int, what: str):
        latest = tf.train.latest_checkpoint(self.job.checkpoints_dir)
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was saved"
        raise TrainingDiverged(
            step,
            f"{what}; nothing of that step was saved and {kept}. Start again with a lower learning rate, "
            "or check the data",
        )

    def _progress_bar(self, description: str, total: int, unit: str, initial: int = 0):
        """A progress bar on the chief when progress is on, else None."""
        if not (self.run_config.runtime.progress and self.is_chief):
            return None
        from tqdm import tqdm

        return tqdm(
            total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True, mininterval=1.0
        )

    def _log_step(self, step, epoch, losses, images_per_second):
        for name, value in losses.items():
            tf.summary.scalar(f"train/{name}", value, step=step)
        tf.summary.scalar("train/learning_rate", float(self.schedule(step - 1)), step=step)
        tf.summary.scalar("train/images_per_second", images_per_second, step=step)
        for name, value in self.mode.summaries(epoch).items():
            tf.summary.scalar(name, value, step=step)
        capacity = self.run_config.sampling.pool_capacity * len(self.pool_keys)
        if capacity:
            tf.summary.scalar("pools/fill", sum(self.pools.fill().values()) / capacity, step=step)
        for (metric, target), (_, score) in self.pools.winners().items():
            tf.summary.scalar(f"pools/best_score/{self.metrics[metric].label(target)}", score, step=step)

    # Evaluation.

    def _evaluated_keys(self) -> list:
        """The pools whose winners are evaluated at epoch ends: evenly spread."""
        keys = [k for k in self.pool_keys if self.pools.size(k)]
        n = self.run_config.evaluation.eval_winners_per_epoch
        if n == 0 or not keys:
            return []
        if len(keys) <= n:
            return keys
        return [keys[round(i * (len(keys) - 1) / (n - 1))] for i in range(n)] if n > 1 else [keys[-1]]

    def _evaluate(self, configs: list, description: str) -> list:
        """Validation accuracies of `configs` (each BN-calibrated first), with a progress bar."""
        bar = self._progress_bar(description, len(configs), "subnet")
        try:
            return evaluate_all(self.evaluator, configs, bar)
        finally:
            if bar is not None:
                bar.close()

    def evaluate_epoch(self, epoch: int):
        step = self.step
        results = {"epoch": epoch, "step": step}
        subnets = {"max": self.max_config, "min": self.min_config}
        for metric, target in self._evaluated_keys():
            subnets[self.metrics[metric].label(target)] = self.pools.winner((metric, target))[0]
        accuracies = self._evaluate(list(subnets.values()), f"evaluating epoch {epoch}")
        for name, accuracy in zip(subnets, accuracies):
            results[name] = {"top1": accuracy.top1, "top5": accuracy.top5}
            tf.summary.scalar(f"val_top1/{name}", accuracy.top1, step=step)
            tf.summary.scalar(f"val_top5/{name}", accuracy.top5, step=step)
        self.evaluations.append(results)
        summary = ", ".join(f"{k} {v['top1']:.4f}" for k, v in results.items() if isinstance(v, dict))
        self._report(f"epoch {epoch}: val top-1 {summary}")
        if self.is_chief:
            self.job.write_evaluations(self.evaluations)

    def _report(self, message: str, level: int = logging.INFO) -> None:
        """One line for whoever watches: on stdout beside the progress bars, else in the log."""
        if self.run_config.runtime.progress and self.is_chief:
            print(message, flush=True)
        else:
            logger.log(level, message)

    def final_winners(self) -> list:
        """Evaluates the top-k of every pool and keeps the best by validation top-1."""
        entries = validated_winners(
            self.pools, self.pool_keys, self.metrics, self.run_config.evaluation.final_top_k,
            lambda configs: self._evaluate(configs, "final evaluation of the pools' best"),
        )
        mark_pareto_front(entries)
        if self.is_chief:
            self.job.write_winners(entries)
            for e in entries:
                value = self.metrics[e["metric"]].format(e["value"])
                front = "" if e["pareto"] else " (not on the Pareto front: a cheaper winner is as accurate)"
                self._report(f"winner {e['name']}: {value}, val top-1 {e['val_top1']:.4f}{front}")
            if "untrained" in self.class_warnings:  # Said before training; again beside the results.
                self._report(f"warning: {self.class_warnings['untrained']}", logging.WARNING)
        return entries
