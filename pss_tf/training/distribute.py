"""Choosing the tf.distribute strategy for a training run."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from pss_tf.errors import ConfigError

STRATEGIES = ("mirrored", "multi_worker", "one_device")


def create_strategy(name: str, devices: list[str] | None = None) -> tf.distribute.Strategy:
    """Returns the strategy `name`.

    mirrored: every local GPU, else the CPU (or the given `devices`).
    multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG; create
        it before any other TensorFlow work in the process.
    one_device: the default strategy (no replication).
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices or None)
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("strategy", "set TF_CONFIG (cluster and task) in every worker's environment")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise ConfigError("strategy", f"TF_CONFIG is not valid JSON ({e})") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "one_device":
        return tf.distribute.get_strategy()
    raise ConfigError("strategy", f"unknown strategy {name!r}; expected one of {list(STRATEGIES)}")


def is_chief_task() -> bool:
    """True unless TF_CONFIG names this process as a non-chief task (read before
    any strategy exists, so start-up checks can leave other workers alone)."""
    try:
        task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except json.JSONDecodeError:
        return True
    if not task:
        return True
    kind, index = task.get("type"), int(task.get("index", 0))
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes the job directory's files."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def task_id(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0
