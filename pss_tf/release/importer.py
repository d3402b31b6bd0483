"""Turns a PSS-Net release checkpoint into a pss_tf job directory.

The directory holds what a pss_tf training run leaves (`pss_tf.run.job`): run.json
(the release's recipe and space for the checkpoint's model, symmetric padding,
the checkpoint's metrics and the release's target grids, and an `imported`
record: source file, epoch, SHA-256), checkpoints/ (the supernet's weights and
BN statistics), pools.json (every pool member with its EMA score) and
winners.json. Every tool then opens it as a trained run.

Winners: with data (`data_dir`), the top `top_k` members of every pool are
BN-calibrated on training batches and validated, and the best kept, as the
release picks them. Without data, each pool's top-scored member is written
unvalidated (no `val_top1`; `validated: false`); the adaptive signatures then
run the largest winner that fits, as for hand-given configs.

The import is atomic: everything is checked and written in a temporary
directory beside `job_dir`, which is renamed to `job_dir` only at the end. A
failed import leaves nothing; an existing `job_dir` is refused before any work.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
import time

import numpy as np

from pss_tf import checks
from pss_tf.errors import ConfigError
from pss_tf.io_utils import share
from pss_tf.models.supernet import supernet_for_run
from pss_tf.pareto import mark_pareto_front
from pss_tf.release.checkpoint import ReleaseCheckpoint, load_into_supernet, read_checkpoint
from pss_tf.run.config import IMPORTED_KEY, TrainConfig
from pss_tf.run.job import JobDir
from pss_tf.run.metrics import RELEASE_METRICS, kind, metrics_for_run
from pss_tf.sampling.pools import PoolManager
from pss_tf.space.targets import TargetGrid
from pss_tf.training.evaluation import evaluate_all, make_evaluator, validated_winners, winner_entry

logger = logging.getLogger(__name__)

RELEASE = "github.com/chenbong/PSS-Net f696d13"
# The release's target grids (scripts/train/pss-mbv{1,2}-{f,c,g,m}.sh), by model and release metric.
RELEASE_GRIDS = {
    "mobilenet_v1": {"flops": (110, 570, 10), "latency_gpu": (70, 240, 10), "latency_cpu": (10000, 31000, 1000)},
    "mobilenet_v2": {"flops": (70, 300, 10), "latency_gpu": (100, 270, 10), "latency_cpu": (12000, 28000, 1000)},
}


def data_settings(data_dir: str | None, dataset: str | None) -> tuple[str, str | None]:
    """(dataset, data_dir) of an imported run: an ImageFolder when `data_dir` has
    train/ and val/, else TFDS imagenet2012 (where `data_dir` points, or TFDS' default)."""
    if dataset:
        return dataset, data_dir
    if data_dir and all(os.path.isdir(os.path.join(data_dir, split)) for split in ("train", "val")):
        return "imagefolder", data_dir
    return "imagenet2012", data_dir


def release_config(checkpoint: ReleaseCheckpoint, job_dir: str, dataset: str, data_dir: str | None,
                   release_luts: str | None) -> TrainConfig:
    """The run.json of an imported checkpoint: pss_tf's defaults are the release's recipe
    (configs/mbv{1,2}.flags); the model, metrics, grids and padding come from the checkpoint."""
    changes = dict(
        job_dir=job_dir, model=checkpoint.model, padding="symmetric", dataset=dataset, data_dir=data_dir,
        metrics=tuple(checkpoint.metrics), pool_capacity=checkpoint.pool_capacity,
    )
    for release_metric, name in zip(checkpoint.pools, checkpoint.metrics):
        changes[f"{name}_targets"] = tuple(float(v) for v in RELEASE_GRIDS[checkpoint.model][release_metric])
    for name in checkpoint.metrics:
        if kind(name).table is not None:  # the release's tables (release_luts)
            changes[kind(name).table.field] = os.path.abspath(release_luts) if release_luts else None
    if checkpoint.model == "mobilenet_v1" and len(checkpoint.metrics) > 1:
        changes["sampler_samples"] = 1_000_000  # the -M scripts' population (configs/mbv1_multi.flags)
    config = TrainConfig().replace(**changes)
    config.validate()
    return config


def _check_targets(checkpoint: ReleaseCheckpoint, metrics: dict) -> None:
    """Every pool's target lies on its metric's grid (the release's scripts)."""
    for release_metric, name in zip(checkpoint.pools, checkpoint.metrics):
        grid: TargetGrid = metrics[name].grid
        for target in checkpoint.pools[release_metric]:
            if grid.snap(float(target)) != float(target):
                raise ConfigError(
                    "checkpoint",
                    f"{checkpoint.path}: key 'arch_pools.pools[{release_metric!r}][{target!r}]': target off the "
                    f"release's {name} grid {grid}",
                )


def pools_of(checkpoint: ReleaseCheckpoint) -> tuple[PoolManager, int]:
    """The release's pools as a PoolManager (members in the release's order), and how many
    MobileNetV2 members merged because they differed only in the ninth multiplier."""
    pools, merged = [], 0
    for release_metric, name in zip(checkpoint.pools, checkpoint.metrics):
        for target, members in checkpoint.pools[release_metric].items():
            seen = {}
            for member in members:  # best score first: a merged duplicate keeps the better score
                if member.config in seen:
                    merged += 1
                    continue
                seen[member.config] = member.score
            pools.append({
                "metric": name, "target": float(target),
                "members": [{"config": c.to_dict(), "score": s} for c, s in seen.items()],
            })
    data = {"format": "pss_tf.pools", "version": 1, "capacity": checkpoint.pool_capacity, "ema_momentum": 0.9,
            "pools": pools}
    return PoolManager.from_dict(data), merged


def import_release(
    checkpoint_path: str,
    job_dir: str,
    *,
    data_dir: str | None = None,
    dataset: str | None = None,
    release_luts: str | None = None,
    top_k: int = 5,
    calibration_batches: int | None = None,
    log=logger.info,
) -> dict:
    """Imports `checkpoint_path` into the new directory `job_dir`; returns the `imported` record."""
    start = time.perf_counter()
    if not job_dir:
        raise ConfigError("job_dir", "required")
    job_dir = os.path.abspath(job_dir)
    if os.path.lexists(job_dir):
        raise ConfigError("job_dir", f"{job_dir} exists; an import writes a new job directory")
    parent = os.path.dirname(job_dir)
    if not os.path.isdir(parent):
        raise ConfigError("job_dir", f"its parent {parent} is not a directory")
    checks.integer("top_k", top_k, 1)
    if data_dir and not os.path.isdir(data_dir):
        raise ConfigError("data_dir", f"{data_dir} is not a directory")

    checkpoint = read_checkpoint(checkpoint_path)
    log(f"read {checkpoint.path}: {checkpoint.model}, {checkpoint.num_classes} classes, epoch "
        f"{checkpoint.epoch}, pools of {', '.join(checkpoint.pools)} ({time.perf_counter() - start:.1f} s)")
    tabled = {m: name for m, name in zip(checkpoint.pools, checkpoint.metrics) if kind(name).table is not None}
    latency = list(tabled.values())
    if latency and not release_luts:
        names = ", ".join(f"arch_pools.pools[{m!r}]" for m in tabled)
        raise ConfigError(
            "release_luts",
            f"{checkpoint.path} has latency pools ({names}) chosen with the release's lookup tables; give the "
            f"release's scripts/lut directory to import them as {latency}",
        )
    imported_bn = bn = bn_statistics_record(checkpoint)
    if bn["layers_with_reset_channels"]:
        log(f"BN statistics: {bn['reset_channels']} of {bn['channels']} channels ({bn['layers_with_reset_channels']} of "
            f"{bn['layers']} layers) hold mean 0 / variance 1, the statistics of the subnet the release calibrated "
            "last: every subnet is calibrated before it is validated, searched or exported")
    dataset, data_dir = data_settings(data_dir, dataset)
    config = release_config(checkpoint, job_dir, dataset, data_dir, release_luts)
    imported = {
        "source": os.path.abspath(checkpoint.path),
        "sha256": checkpoint.sha256,
        "epoch": checkpoint.epoch,
        "release": RELEASE,
        "num_classes": checkpoint.num_classes,
        "release_metrics": {m: RELEASE_METRICS[m] for m in checkpoint.pools},
        "bn_statistics": imported_bn,
        "imported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(job_dir)}.", suffix=".importing", dir=parent)
    try:
        share(staging, directory=True)  # mkdtemp's 0700 would hide the run from a server or a colleague
        imported.update(_write_job(staging, job_dir, config, checkpoint, imported, data_dir is not None,
                                   top_k, calibration_batches, log))
        if os.path.lexists(job_dir):
            raise ConfigError("job_dir", f"{job_dir} appeared during the import; the import was not written")
        os.rename(staging, job_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"imported into {job_dir} in {time.perf_counter() - start:.1f} s")
    return imported


def _write_job(staging, job_dir, run_config, checkpoint, imported, validate, top_k, calibration_batches, log) -> dict:
    import tensorflow as tf

    from pss_tf.run.job import Job

    target = JobDir(staging)
    # The staging directory stands for job_dir: paths inside run.json name the final place.
    target.write_run_config(run_config, {IMPORTED_KEY: imported})
    job = Job(staging) if validate else None
    info = job.info if job is not None else imported_info(run_config, checkpoint.num_classes)
    if info.num_classes != checkpoint.num_classes:
        raise ConfigError(
            "data_dir", f"{run_config.data.data_dir} has {info.num_classes} classes, the checkpoint {checkpoint.num_classes}"
        )
    metrics = metrics_for_run(run_config, info.num_classes, info.channels)
    _check_targets(checkpoint, metrics)
    pools, merged = pools_of(checkpoint)
    supernet = supernet_for_run(run_config, info)
    load_into_supernet(supernet, checkpoint)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=supernet), target.checkpoints_dir, max_to_keep=1)
    manager.save(checkpoint_number=0)
    target.write_pools(pools, step=0)
    if validate:
        entries = _validated_winners(job, supernet, pools, metrics, top_k, calibration_batches, log)
    else:
        entries = _top_scored_winners(pools, metrics)
    _add_release_values(entries, checkpoint)
    target.write_winners(entries)
    # run.json last, with what the import found; it names the final directory.
    record = {"merged_members": merged, "winners": "validated" if validate else "top-scored, unvalidated"}
    target.write_run_config(run_config, {IMPORTED_KEY: {**imported, **record}})
    log(f"{sum(pools.size(k) for k in pools.keys())} pool members in {len(pools.keys())} pools, "
        f"{len(entries)} winners ({record['winners']})")
    return record


def bn_statistics_record(checkpoint: ReleaseCheckpoint) -> dict:
    """What the checkpoint's BN running statistics hold. The release's last epoch re-estimates them
    for the min net last (`reset_running_stats()` clears every channel, only the min net's are
    estimated again), so channels beyond it hold mean 0 and variance 1: no subnet but the one
    calibrated last may run on them."""
    layers = reset_layers = reset_channels = channels = 0
    for key, mean in checkpoint.state.items():
        if not key.endswith(".bn.running_mean"):
            continue
        var = checkpoint.state[key[: -len("running_mean")] + "running_var"]
        cleared = (mean == 0) & (var == 1)
        tail = len(cleared) - (int(np.flatnonzero(~cleared)[-1]) + 1 if (~cleared).any() else 0)
        layers += 1
        channels += len(cleared)
        reset_layers += tail > 0
        reset_channels += tail
    return {
        "layers": layers,
        "layers_with_reset_channels": reset_layers,
        "reset_channels": reset_channels,
        "channels": channels,
        "holds": (
            "the statistics of the subnet the release calibrated last (channels beyond it hold mean 0, variance 1)"
            if reset_layers else "statistics in every channel (no trailing channel holds mean 0, variance 1)"
        ),
        "calibrate_before_use": True,
    }


def imported_info(run_config: TrainConfig, num_classes: int):
    """What the supernet needs to know of the data when none is at hand: the checkpoint's classes, RGB."""
    from pss_tf.data.splits import DatasetInfo

    return DatasetInfo(run_config.data.dataset, num_classes, 3, 0, 0)


def _top_scored_winners(pools: PoolManager, metrics) -> list[dict]:
    entries = []
    for key in (k for k in pools.keys() if pools.size(k)):
        config, score = pools.winner(key)
        entries.append({**winner_entry(*key, config, score, metrics), "validated": False, "pareto": True})
    return entries


def _validated_winners(job, supernet, pools, metrics, top_k, calibration_batches, log) -> list[dict]:
    """The release's choice: each pool's top-k validated on the data (BN-calibrated), the best kept."""
    from tqdm import tqdm

    evaluator = make_evaluator(supernet, job.run_config, job.data, calibration_batches)
    keys = [k for k in pools.keys() if pools.size(k)]
    total = sum(min(top_k, pools.size(k)) for k in keys)
    log(f"validating the top {top_k} of {len(keys)} pools ({total} subnets, {evaluator.calibration_batches} BN "
        "calibration batches each)")
    with tqdm(total=total, desc="validating pool members", unit="subnet", dynamic_ncols=True) as bar:
        entries = validated_winners(pools, keys, metrics, top_k, lambda configs: evaluate_all(evaluator, configs, bar))
    for entry in entries:
        entry["validated"] = True
        log(f"{entry['name']}: top-1 {entry['val_top1']:.4f}")
    mark_pareto_front(entries)
    return entries


def _add_release_values(entries: list[dict], checkpoint: ReleaseCheckpoint) -> None:
    """Each winner's metric value as the release computed it (equal to `value` except for
    MobileNetV2 latencies, which the release charged at a ninth multiplier)."""
    by_name = {RELEASE_METRICS[m]: m for m in checkpoint.pools}
    for entry in entries:
        members = checkpoint.pools[by_name[entry["metric"]]]
        for target, listed in members.items():
            if float(target) != entry["target"]:
                continue
            for member in listed:
                if member.config.to_dict() == entry["config"]:
                    entry["release_value"] = member.release_value
                    if member.dropped_multiplier is not None:
                        entry["release_ninth_multiplier"] = member.dropped_multiplier
                    break
