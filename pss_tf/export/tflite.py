"""TFLite models of the exported subnets, and running them with LiteRT.

Three kinds per subnet, all converted from one fixed-size SavedModel whose
signatures match the serving ones (uint8 `images` of the training image size
S in, float32 `probabilities` and int64 `classes` out), so every file has the
same interface and an app swaps them freely:

    float32         plain conversion (BN folded, ReLU6 fused)
    dynamic_range   int8 weights, float activations: 4x smaller, no data needed
    int8            full-integer: int8 weights and activations, calibrated on a
                    representative set of training images; only the float
                    `probabilities` are dequantized at the very end

A bundle holds every subnet in one file as one signature each, so an app loads
the model once and switches subnets through `get_signature_runner(name)`.

TensorFlow's own `tf.lite.Interpreter` is deprecated; files are run with the
LiteRT interpreter (`ai_edge_litert`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from pss_tf.errors import ConfigError
from pss_tf.export.options import KINDS  # noqa: F401 - the kinds, where the flags declare them
IMAGES = "images"


def _interpreter_class():
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError("tflite_kinds", f"unknown kind(s) {unknown}; expected some of {list(KINDS)}")
    return kinds


def representative_dataset(images: np.ndarray, signature_keys: list[str]):
    """The converter's calibration feed: every image through every signature."""

    def generate():
        for image in images:
            sample = {IMAGES: image[None]}
            if len(signature_keys) == 1:
                yield sample
            else:
                for key in signature_keys:
                    yield key, sample

    return generate


def convert(
    saved_model_dir: str, signature_keys: list[str], kind: str, representative_images: np.ndarray | None = None
) -> bytes:
    """Flatbuffer holding `signature_keys` of a SavedModel, quantized as `kind`."""
    check_kinds([kind])
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=list(signature_keys))
    if kind != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "int8":
        if representative_images is None or not len(representative_images):
            raise ValueError("int8: needs representative images")
        converter.representative_dataset = representative_dataset(representative_images, list(signature_keys))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        # The converter's own calibration step still runs tf.lite.Interpreter.
        warnings.filterwarnings("ignore", message=r"(?s).*tf.lite.Interpreter is deprecated")
        return converter.convert()


def signature_runner(content: bytes, signature_key: str | None = None, threads: int | None = None):
    interpreter = _interpreter_class()(model_content=content, num_threads=threads)
    keys = list(interpreter.get_signature_list())
    if signature_key is None:
        if len(keys) != 1:
            raise ValueError(f"signature: name one of {keys}")
        signature_key = keys[0]
    return interpreter.get_signature_runner(signature_key)


def predict(runner, images: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Outputs of a signature runner over `images`, in batches."""
    outputs: dict[str, list] = {}
    for start in range(0, len(images), batch_size):
        result = runner(**{IMAGES: images[start : start + batch_size]})
        for key, value in result.items():
            outputs.setdefault(key, []).append(np.array(value))
    return {key: np.concatenate(values) for key, values in outputs.items()}


def top1(content: bytes, batches, signature_key: str | None = None, batch_size: int = 64) -> float:
    """Top-1 of a TFLite model over (uint8 images, labels) batches."""
    runner = signature_runner(content, signature_key)
    correct = total = 0
    for images, labels in batches:
        classes = predict(runner, images, batch_size)["classes"]
        correct += int(np.sum(classes == labels))
        total += len(labels)
    if not total:
        raise ValueError("evaluation: no examples")
    return correct / total


def latency_ms(content: bytes, threads: int = 1) -> dict:
    """Batch-1 invoke time on this machine, with the latency tables' protocol."""
    from pss_tf.latency.measure import Timer

    timing = Timer(threads).time(content)
    return {"median": round(timing.median_ms, 4), "spread": round(timing.spread_ms, 4), "invokes": timing.invokes}
