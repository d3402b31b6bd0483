"""What the tools leave in a run, read in one place.

    JOB_DIR/search/searched.json        tools/search.py: one entry per budget and init
    JOB_DIR/finetune/finetuned.json     tools/finetune.py: one entry per fine-tuned subnet
    JOB_DIR/finetune/<name>/weights.npz its weights, by extracted layer name

The tools write these files; export, fine-tuning and the studies read them
through the functions here, which check what they read. (What training leaves,
run.json, pools, records, evaluations and winners, `pss_tf.run.job` reads.)
"""

from __future__ import annotations

import os

import numpy as np

from pss_tf.errors import ConfigError
from pss_tf.io_utils import atomic_write, read_json
from pss_tf.space.config import SubnetConfig, in_space

SEARCHED_FILE = "searched.json"
FINETUNED_FILE = "finetuned.json"
WEIGHTS_FILE = "weights.npz"


def read_searched(out_dir: str) -> list[dict]:
    """The entries of OUT/searched.json (none if it does not exist)."""
    path = os.path.join(out_dir, SEARCHED_FILE)
    if not os.path.exists(path):
        return []
    entries = read_json(path, SEARCHED_FILE)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of entries")
    return entries


def searched_subnets(job, searched_dir: str = "") -> list:
    """The searched subnets of the run (tools/search.py's searched.json in `searched_dir`, default
    JOB_DIR/search), checked to lie in its space."""
    directory = searched_dir or job.dir.file("search")
    entries = read_searched(directory)
    if not entries:
        raise ConfigError(
            "searched", f"{directory} holds no searched.json: search the run with tools/search.py first"
        )
    found = []
    for entry in entries:
        config = in_space(SubnetConfig.from_dict(entry["config"]), job.space, "searched", entry["name"])
        found.append((entry, config))
    return found


def read_finetuned(out_dir: str) -> list[dict]:
    """The entries of OUT/finetuned.json; ConfigError if it is missing or damaged."""
    path = os.path.join(out_dir, FINETUNED_FILE)
    if not os.path.exists(path):
        raise ConfigError("finetuned", f"{out_dir} holds no {FINETUNED_FILE}: fine-tune with tools/finetune.py first")
    entries = read_json(path, FINETUNED_FILE)
    required = {"name", "config", "mode", "val_top1_after", "weights"}
    if not isinstance(entries, list) or any(not isinstance(e, dict) or required - set(e) for e in entries):
        raise ConfigError("finetuned", f"{path} is not a list of fine-tuned subnets (each with {sorted(required)})")
    return entries


def finished_entries(out_dir: str) -> dict:
    """`{name: entry}` of OUT/finetuned.json (empty if none)."""
    path = os.path.join(out_dir, FINETUNED_FILE)
    if not os.path.exists(path):
        return {}
    return {e["name"]: e for e in read_finetuned(out_dir)}


def weights_of(out_dir: str, entry: dict) -> str:
    """The path of a finetuned.json entry's weights."""
    return os.path.join(out_dir, entry["weights"])


def finetuned_subnets(job, finetuned_dir: str = "") -> list:
    """(entry, config, weights file) of tools/finetune.py's subnets (finetuned.json in
    `finetuned_dir`, default JOB_DIR/finetune), checked to lie in the run's space."""
    directory = finetuned_dir or job.dir.file("finetune")
    found = []
    for entry in read_finetuned(directory):
        config = in_space(SubnetConfig.from_dict(entry["config"]), job.space, "finetuned", entry["name"])
        path = weights_of(directory, entry)
        if not os.path.exists(path):
            raise ConfigError("finetuned", f"{path} is missing: fine-tune {entry['name']} again")
        found.append((entry, config, path))
    return found


def save_weights(path: str, weights: dict[str, list[np.ndarray]]) -> None:
    """An .npz of `{layer}/{index}` arrays, written atomically (read back without pickle)."""
    arrays = {f"{name}/{i}": array for name, layer in weights.items() for i, array in enumerate(layer)}
    atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")


def load_weights(path: str) -> dict[str, list[np.ndarray]]:
    """The weights `save_weights` wrote (no pickled objects allowed)."""
    found: dict[str, dict[int, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            name, _, index = key.rpartition("/")
            if not name or not index.isdigit():
                raise ValueError(f"{path}: unexpected entry {key!r}")
            found.setdefault(name, {})[int(index)] = data[key]
    return {name: [parts[i] for i in sorted(parts)] for name, parts in found.items()}
