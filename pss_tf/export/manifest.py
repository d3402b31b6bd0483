"""manifest.json: what an export holds, for an application choosing a subnet.

One entry per subnet, sorted by the run's first metric, with everything needed
to pick one for a budget: config, MACs, parameters (trainable and all weights), validation top-1, its
signature name, its .tflite files with sizes and measured latencies, and
accuracies of the exported files where they were measured. Paths are
relative to the export directory. `markdown_table` renders the numbers for
docs/RESULTS.md.
"""

from __future__ import annotations

import datetime
import os
import platform

FORMAT_VERSION = 2  # 2: a subnet's `params` holds both counts, `trainable` and `all_weights`.


def environment() -> dict:
    import importlib.metadata

    versions = {}
    for package in ("tensorflow", "keras", "ai-edge-litert", "tensorflow-model-optimization", "tf_keras"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"python": platform.python_version(), "packages": versions}


def build(
    *,
    model_name: str,
    version: int,
    job,
    subnet_entries: list[dict],
    signatures: dict,
    saved_model_path: str,
    bundles: dict,
    latency: dict | None,
    qat: dict | None,
) -> dict:
    info, data = job.info, job.data
    size = data.image_size
    return {
        "format": FORMAT_VERSION,
        "model_name": model_name,
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "job_dir": os.path.abspath(job.path),
        "model": job.run_config.space.model,
        "dataset": job.run_config.data.dataset,
        "num_classes": info.num_classes,
        "metrics": {name: metric.unit for name, metric in job.metrics.items()},
        "input": {
            "name": "images",
            "dtype": "uint8",
            "channels": info.channels,
            "saved_model_shape": [None, None, None, info.channels],
            "tflite_shape": [None, size, size, info.channels],
            "preprocessing": (
                f"in the graph: resize the shorter side to {size}/{data.crop_fraction:g}, centre-crop "
                f"{size}x{size}, {data.normalization_text}; each subnet then resizes to its own resolution"
            ),
            "image_size": size,
            "crop_fraction": data.crop_fraction,
        },
        "outputs": {
            "probabilities": "float32 (N, num_classes), softmax",
            "classes": "int64 (N,), argmax",
            "subnet_name": "adaptive signatures only: string (N,), the subnet that ran",
            "subnet_value": "adaptive signatures only: float32 (N,), its value under the signature's metric",
        },
        "saved_model": {"path": saved_model_path, "signatures": signatures},
        "tflite_bundles": bundles,
        "latency": latency,
        "qat": qat,
        "subnets": subnet_entries,
        "environment": environment(),
    }


def markdown_table(manifest: dict) -> str:
    """One row per subnet: cost, accuracies (training, Keras, TFLite) and files."""
    kinds = sorted({k for s in manifest["subnets"] for k in s.get("tflite", {})}, key=_kind_order)
    header = ["subnet", "res", "M MACs", "params (trainable)", "val top-1 (run)", "Keras top-1"]
    header += [f"{k} top-1" for k in kinds] + [f"{k} KiB" for k in kinds] + [f"{k} ms" for k in kinds]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in manifest["subnets"]:
        accuracy = s.get("accuracy", {})
        files = s.get("tflite", {})
        cells = [
            s["name"], str(s["resolution"]), f"{s['macs_m']:.2f}", f"{s['params']['trainable']:,}",
            _percent(s.get("val_top1")), _percent(accuracy.get("keras")),
        ]
        cells += [_percent(accuracy.get(f"tflite_{k}")) for k in kinds]
        cells += [f"{files[k]['bytes'] / 1024:.0f}" if k in files else "" for k in kinds]
        cells += [f"{files[k]['latency_ms']['median']:.3f}" if k in files and files[k].get("latency_ms") else "" for k in kinds]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _kind_order(kind: str) -> tuple:
    order = ("float32", "dynamic_range", "int8", "int8_qat")
    return (order.index(kind) if kind in order else len(order), kind)


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.2f}"
