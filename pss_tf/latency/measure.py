"""Timing block variants and whole subnets with the LiteRT (TFLite) interpreter.

Each variant becomes a tiny standalone model made of the standard Keras layers
that `Supernet.extract` writes (Conv2D / DepthwiseConv2D / BatchNormalization
/ ReLU6, BN folded by the converter), with a batch-1 input of the variant's
size and width. It runs on the interpreter's default CPU path (XNNPACK) with a
fixed thread count. A measurement is the median over repeats of the mean time
of one `invoke()`, after a warm-up: the median shrugs off the odd repeat that
another process or a page fault slows down.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import statistics
import time

import numpy as np

from pss_tf import checks
from pss_tf.latency.variants import Variant


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How one model is timed.

    A repeat runs `invoke()` enough times to last `min_repeat_s` (small blocks
    take microseconds, below the clock's resolution once Python overhead is in);
    the result is the median of `repeats` repeats' per-invoke means.
    """

    warmup_s: float = 0.02
    min_warmup_invokes: int = 3
    repeats: int = 9
    min_repeat_s: float = 0.004

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "statistic": "median of repeats of the mean invoke time"}


def device_info() -> dict:
    """What the latencies are specific to: CPU model, architecture, cores."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "machine": platform.machine(), "system": platform.system(), "logical_cores": os.cpu_count()}


def runtime_info() -> dict:
    """The interpreter's package and version, and the converter's TF version."""
    info = {"name": "ai-edge-litert", "delegate": "xnnpack (default CPU path)"}
    try:
        info["version"] = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        info.update(name="tensorflow.lite", version=None)
    try:
        info["converter"] = "tensorflow " + importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        pass
    if info["version"] is None:
        info["version"] = info.get("converter", "").removeprefix("tensorflow ")
    return info


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # Older set-ups: the interpreter bundled with TensorFlow.
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


# --- models ---------------------------------------------------------------------


def block_model(variant: Variant, padding: str = "same"):
    """A standalone Keras model running exactly `variant`'s ops: the static block
    that extraction writes (`pss_tf.models.blocks.static_block`), at batch 1,
    with the supernet's `padding` of strided convs."""
    import keras

    from pss_tf.models.blocks import static_block

    inputs = keras.Input((variant.size, variant.size, variant.cin), batch_size=1, name="x")
    outputs = static_block(inputs, variant, name="block", padding=padding)
    return keras.Model(inputs, outputs, name=variant.kind)


def trivial_model(channels: int = 8):
    """One ReLU on a tiny tensor: its invoke time is the interpreter's fixed overhead."""
    import keras

    inputs = keras.Input((1, 1, channels), batch_size=1, name="x")
    return keras.Model(inputs, keras.layers.ReLU(max_value=6.0)(inputs), name="trivial")


def to_tflite(model, direct: bool = True) -> bytes:
    """Float TFLite flatbuffer of a Keras model (BN folded, ReLU6 fused).

    `direct` freezes the model's inference function and converts that; the
    standard `from_keras_model` path (direct=False) first writes a SavedModel
    and costs about three times as long for the same ops, which matters for
    the thousands of tiny models of a table. The converter's page of logs per
    model is kept off the terminal unless it fails.
    """
    import tensorflow as tf

    with _captured_output() as captured:
        try:
            if not direct:
                return tf.lite.TFLiteConverter.from_keras_model(model).convert()
            from tensorflow.python.framework.convert_to_constants import (
                convert_variables_to_constants_v2,
            )

            specs = [tf.TensorSpec(t.shape, t.dtype) for t in model.inputs]
            function = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False), autograph=False)
            frozen = convert_variables_to_constants_v2(function.get_concrete_function(*specs))
            return tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert()
        except Exception:
            captured.replay()
            raise


class _captured_output:
    """Sends file descriptors 1 and 2 to a temporary file for a `with` block."""

    def __enter__(self):
        import sys
        import tempfile

        sys.stdout.flush()
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile(mode="w+b")
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        self._file.close()

    def replay(self):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        self._file.seek(0)
        os.write(self._saved[1], self._file.read()[-20000:])


# --- timing ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timing:
    median_ms: float
    spread_ms: float  # Interquartile range of the repeats.
    invokes: int
    repeats_ms: tuple[float, ...] = ()  # Each repeat's mean invoke time, for pooling several timings.


class Timer:
    """Times TFLite models with `threads` interpreter threads under `protocol`."""

    def __init__(self, threads: int, protocol: Protocol = Protocol()):
        self.threads = checks.integer("threads", threads, 1)
        self.protocol = protocol
        self._interpreter = _interpreter_class()

    def time(self, content: bytes, seed: int = 0) -> Timing:
        interpreter = self._interpreter(model_content=content, num_threads=self.threads)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(seed)
        for detail in interpreter.get_input_details():
            data = rng.uniform(-1.0, 1.0, size=detail["shape"]).astype(detail["dtype"])
            interpreter.set_tensor(detail["index"], data)
        invoke, clock, p = interpreter.invoke, time.perf_counter, self.protocol
        start, count = clock(), 0
        while count < p.min_warmup_invokes or clock() - start < p.warmup_s:
            invoke()
            count += 1
        per_invoke = (clock() - start) / count
        inner = max(1, int(np.ceil(p.min_repeat_s / max(per_invoke, 1e-7))))
        means = []
        for _ in range(p.repeats):
            start = clock()
            for _ in range(inner):
                invoke()
            means.append((clock() - start) / inner * 1e3)
        quartiles = statistics.quantiles(means, n=4) if len(means) > 1 else [means[0]] * 3
        return Timing(statistics.median(means), quartiles[2] - quartiles[0], inner * p.repeats + count, tuple(means))

    def time_keras(self, model, direct: bool = True) -> Timing:
        return self.time(to_tflite(model, direct))

    def time_variant(self, variant: Variant, padding: str = "same") -> Timing:
        return self.time_keras(block_model(variant, padding))

    def invoke_overhead_ms(self) -> float:
        return self.time_keras(trivial_model()).median_ms
