"""The export directory: TF Serving's versioned layout and its models.config.

    OUT/models.config                ModelServerConfig (text format), one entry per model
    OUT/manifest.json                the latest export's manifest
    OUT/serving/<model>/<version>/   SavedModels; TF Serving serves the highest version
    OUT/tflite/<version>/            that version's .tflite files

Versions are integers counted over the whole directory, so a TFLite folder
and a SavedModel of one export share a number. An export is built in a
staging folder and moved into place by renames, so TF Serving (which polls
`serving/<model>/`) never sees a half-written version, and an export that
fails leaves the directory as it was. A new export never writes into an
existing version: a fresh export needs a new (or empty) OUT; `--new_version`
adds version N+1 beside the old ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from pss_tf.errors import ConfigError
from pss_tf.io_utils import atomic_write_json, atomic_write_text

MODELS_CONFIG = "models.config"
MANIFEST = "manifest.json"
SERVING = "serving"
TFLITE = "tflite"


def _versions(directory: str) -> list[int]:
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def model_names(export_dir: str) -> list[str]:
    root = os.path.join(export_dir, SERVING)
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)) and not n.startswith("."))


def existing_versions(export_dir: str) -> list[int]:
    versions = set(_versions(os.path.join(export_dir, TFLITE)))
    for name in model_names(export_dir):
        versions.update(_versions(os.path.join(export_dir, SERVING, name)))
    return sorted(versions)


def is_export(export_dir: str) -> bool:
    return os.path.isfile(os.path.join(export_dir, MODELS_CONFIG)) and os.path.isdir(os.path.join(export_dir, SERVING))


def plan_version(export_dir: str, new_version: bool) -> int:
    """The version this export will write, or ValueError if `export_dir` forbids it."""
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ConfigError("export_dir", f"{export_dir} is a file")
    occupied = os.path.isdir(export_dir) and bool(os.listdir(export_dir))
    if not occupied:
        return 1
    if not new_version:
        raise ConfigError(
            "export_dir",
            f"{export_dir} already exists and is not empty; nothing was changed. "
            "Pass `new_version` to add a version beside the existing ones, or choose a new directory"
        )
    if not is_export(export_dir):
        raise ConfigError(
            "export_dir",
            f"{export_dir} is not an export directory (no {MODELS_CONFIG} and {SERVING}/); "
            "nothing was changed"
        )
    return (existing_versions(export_dir) or [0])[-1] + 1


def models_config_text(names: list[str], container_dir: str) -> str:
    """A ModelServerConfig listing `names`, for a server that mounts OUT at `container_dir`."""
    entries = []
    for name in names:
        base_path = f"{container_dir.rstrip('/')}/{SERVING}/{name}"
        entries.append(
            "  config {\n"
            f'    name: "{name}"\n'
            f'    base_path: "{base_path}"\n'
            '    model_platform: "tensorflow"\n'
            "  }\n"
        )
    return "model_config_list {\n" + "".join(entries) + "}\n"


def staging_dir(export_dir: str, fresh: bool) -> str:
    """A new folder on the export's file system, where this export is built."""
    export_dir = os.path.abspath(export_dir)
    if not fresh:
        return tempfile.mkdtemp(dir=export_dir, prefix=".staging-")
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(export_dir)}.staging-")


def serving_path(root: str, model_name: str, version: int) -> str:
    return os.path.join(root, SERVING, model_name, str(version))


def tflite_path(root: str, version: int) -> str:
    return os.path.join(root, TFLITE, str(version))


def commit(
    staging: str, export_dir: str, model_name: str, version: int, manifest: dict, container_dir: str, fresh: bool
) -> None:
    """Moves a finished staging folder's export into `export_dir`.

    A fresh export (version 1 into a new or empty OUT) renames the whole
    staging folder to `export_dir`; a new version renames its SavedModel and
    TFLite folders into place, then rewrites models.config and manifest.json
    atomically.
    """
    export_dir = os.path.abspath(export_dir)
    if fresh:
        names = sorted({model_name} | set(model_names(staging)))
        atomic_write_text(os.path.join(staging, MODELS_CONFIG), models_config_text(names, container_dir))
        atomic_write_json(os.path.join(staging, MANIFEST), manifest)
        if os.path.isdir(export_dir):
            try:
                os.rmdir(export_dir)
            except OSError:
                raise ConfigError("export_dir", f"{export_dir} was filled while exporting; nothing was changed") from None
        os.rename(staging, export_dir)
        return
    moves = [
        (serving_path(staging, model_name, version), serving_path(export_dir, model_name, version)),
        (tflite_path(staging, version), tflite_path(export_dir, version)),
    ]
    for source, target in moves:
        if os.path.exists(target):
            raise ConfigError("export_dir", f"{target} appeared while exporting; nothing was changed")
    for source, target in moves:
        if os.path.isdir(source):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.rename(source, target)
    names = sorted(set(model_names(export_dir)) | {model_name})
    atomic_write_text(os.path.join(export_dir, MODELS_CONFIG), models_config_text(names, container_dir))
    atomic_write_json(os.path.join(export_dir, MANIFEST), manifest)
    shutil.rmtree(staging, ignore_errors=True)
