"""Starting a run from another run's supernet (`init_from`): a warm start.

A user with a trained supernet (pss_tf's own, or the authors' ImageNet ones
imported) trains it on their own data. The new run takes the source's weights
and BN statistics, never its optimizer, step or schedule. The rules:

* the same architecture (model, input layout and padding), or a refusal naming both;
* the new search space inside the source's (widths and resolutions it
  trained), or a refusal naming the field; a narrower space is fine;
* another class count: the classifier starts from the release's
  initialisation, and the run says so;
* another input channel count: an RGB stem feeds grey images with its kernel
  summed over the three colour channels, and a grey stem feeds RGB images with
  its kernel divided by three on each (exact when the grey image is fed as three
  equal channels, as the data sources do; per-channel normalisation such as
  ImageNet mean/std makes it an approximation);
* `init_pools` seeds the new run's pools with the source's members that lie in
  the new space and fall in a pool of the new grid, each scored afresh on the
  new run's first training batch (the source's scores measured another task).

Nothing of the source run is written. `run.json` records the source's path,
checkpoint step and a checksum of its checkpoint files (`WarmStart.record`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from pss_tf.errors import ConfigError
from pss_tf.io_utils import hash_file

# The architecture fields a source must share with the new run.
ARCHITECTURE_FIELDS = ("model", "small_input", "padding")


@dataclasses.dataclass
class WarmStart:
    """A checked source run (see the module docstring); cheap to make."""

    job: object  # pss_tf.run.job.Job
    checkpoint: str
    step: int
    checksum: str
    notes: list[str]

    @property
    def record(self) -> dict:
        """What run.json keeps of the source."""
        return {"path": os.path.abspath(self.job.path), "step": self.step, "checkpoint": os.path.basename(self.checkpoint),
                "sha256": self.checksum}


def plan(run_config, info) -> WarmStart:
    """Opens and checks `run_config.warm_start.init_from` against the new run (`run_config`, its
    dataset `info`); ConfigError naming the field. Reads only."""
    from pss_tf.run.job import Job

    path = run_config.warm_start.init_from
    if not os.path.isdir(path):
        raise ConfigError("init_from", f"{path} is not a directory holding a pss_tf run")
    try:
        source = Job(path)
    except ConfigError as e:
        raise ConfigError("init_from", e.message) from None
    checkpoint = source.dir.latest_checkpoint()
    if checkpoint is None:
        raise ConfigError("init_from", f"{path} has no checkpoint to start from")
    mine, theirs = run_config.space, source.run_config.space
    for field in ARCHITECTURE_FIELDS:
        if getattr(mine, field) != getattr(theirs, field):
            raise ConfigError(
                field, f"the run in {path} has {field}={getattr(theirs, field)!r}, this run "
                f"{getattr(mine, field)!r}: a warm start needs the same architecture",
            )
    _check_space_inside(run_config.search_space(), source.space, path)
    source_info = source.info
    notes = []
    if source_info.num_classes != info.num_classes:
        notes.append(
            f"the classifier starts afresh: {path} has {source_info.num_classes} classes, this run {info.num_classes}"
        )
    if source_info.channels != info.channels:
        rule = "summed over its colour channels" if info.channels == 1 else "divided by three on each colour channel"
        notes.append(
            f"the stem's kernel is {rule}: {path} reads {source_info.channels}-channel images, this run "
            f"{info.channels}-channel ones"
        )
    try:  # Reads the index only: a damaged or truncated checkpoint is refused before any model is built.
        import tensorflow as tf

        tf.train.list_variables(checkpoint)
    except (tf.errors.OpError, ValueError) as e:
        raise ConfigError("init_from", f"{checkpoint} cannot be read ({type(e).__name__}: {e})") from None
    step = int(checkpoint.rsplit("-", 1)[-1]) if checkpoint.rsplit("-", 1)[-1].isdigit() else -1
    return WarmStart(source, checkpoint, step, checkpoint_checksum(checkpoint), notes)


def _check_space_inside(space, source_space, path: str) -> None:
    resolutions = set(source_space.resolutions)
    outside = [r for r in space.resolutions if r not in resolutions]
    if outside:
        field = "min_resolution" if min(outside) < min(resolutions) else (
            "max_resolution" if max(outside) > max(resolutions) else "resolution_step")
        raise ConfigError(
            field, f"resolutions {outside} were never trained by the run in {path} "
            f"(it trained {min(resolutions)}..{max(resolutions)} step {source_space.resolution_step})",
        )
    if space.min_width < source_space.min_width:
        raise ConfigError("min_width", f"{space.min_width} is below the {source_space.min_width} the run in {path} trained")
    if space.max_width > source_space.max_width:
        raise ConfigError("max_width", f"{space.max_width} is above the {source_space.max_width} the run in {path} trained")


def checkpoint_checksum(checkpoint: str) -> str:
    """SHA-256 over a checkpoint's files (index and data shards), in name order."""
    directory, prefix = os.path.split(checkpoint)
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.startswith(prefix + "."):
            digest.update(name.encode())
            hash_file(os.path.join(directory, name), digest)
    return digest.hexdigest()


def copy_weights(source_supernet, target_supernet) -> None:
    """Assigns the source's weights and BN statistics to the target, by variable path,
    with the classifier and stem rules of the module docstring."""
    source = {v.path: v for v in source_supernet.weights}
    target = {v.path: v for v in target_supernet.weights}
    if set(source) != set(target):
        missing, extra = sorted(set(target) - set(source)), sorted(set(source) - set(target))
        raise ConfigError("init_from", f"the source supernet's variables differ: missing {missing[:3]}, extra {extra[:3]}")
    stem_kernel = target_supernet.stem.conv.kernel.path
    classifier = {v.path for v in target_supernet.classifier.weights}
    for path, variable in target.items():
        value = source[path].numpy()
        if path in classifier and value.shape != tuple(variable.shape):
            continue  # Another class count: the new run's own initialisation stays.
        if path == stem_kernel and value.shape != tuple(variable.shape):
            value = stem_for_channels(value, variable.shape[2])
        variable.assign(value)


def stem_for_channels(kernel: np.ndarray, channels: int) -> np.ndarray:
    """A (k, k, C_in, C_out) stem kernel for `channels` input channels (rules above)."""
    have = kernel.shape[2]
    if channels == 1 and have == 3:
        return kernel.sum(axis=2, keepdims=True)
    if channels == 3 and have == 1:
        return np.repeat(kernel / 3.0, 3, axis=2)
    raise ConfigError("init_from", f"no rule maps a {have}-channel stem to {channels} channels")


def seed_pools(source_job, pools, pools_keys, metrics, space, score) -> int:
    """Adds the source's pool members that lie in `space` and whose value under one of
    the new run's `metrics` falls in one of its pools (`pools_keys`).

    `score(config) -> float` gives each its fresh score. Returns how many joined.
    """
    joined = 0
    keys = set(pools_keys)
    source_pools = source_job.pools()
    for key in source_pools.keys():
        for config, _ in source_pools.members(key):
            if space.violations(config):
                continue
            for name, metric in metrics.items():
                target = metric.grid.snap(metric.value(config))
                if (name, target) in keys and pools.score((name, target), config) is None:
                    pools.update((name, target), config, score(config))
                    joined += 1
    return joined
