"""Quantization-aware fine-tuning of one subnet before its int8 conversion.

tensorflow-model-optimization (tfmot) works on tf_keras (Keras 2) models
only, so the subnet is rebuilt in tf_keras from the same static blocks and
calibrated weights as its exported Keras model (`rebuild`). The rebuilt model
starts after the resize layer (a Keras 3 layer tfmot cannot take): it takes
images at the subnet's own resolution, and the serving function resizes
before it as the extracted model does. `quantize_model` then inserts fake-quantization, a few
epochs of training on the run's augmented training stream adapt the weights
to it (BN layers frozen, so the subnet's calibrated statistics stay), and the
converter turns the result into an int8 model.

Importing tfmot sets TF_USE_LEGACY_KERAS=1 in the process environment; the
import here puts the variable back, so the rest of the process keeps Keras 3.
"""

from __future__ import annotations

import os

import tensorflow as tf

from pss_tf.export.savedmodel import classify, images_spec


def import_tfmot():
    """(tfmot, tf_keras), or ImportError naming the `deploy` extra."""
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as e:
        raise ImportError(f"--qat needs tensorflow-model-optimization and tf_keras (pip install -e .[deploy]): {e}") from None
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous
    return tfmot, tf_keras


def unsupported(model: str) -> list[str]:
    """What of `model` the tf_keras rebuild cannot express, by name (empty: QAT works).

    tf_keras has no hard-swish activation and its hard sigmoid is another
    function than torchvision's, so MobileNetV3's hard-swish and
    squeeze-and-excite layers cannot be rebuilt for tensorflow-model-optimization.
    """
    from pss_tf.space import architectures

    arch = architectures.get_architecture(model)
    found = []
    if any(b.act == architectures.HARD_SWISH for b in arch.blocks) or arch.head_activation == architectures.HARD_SWISH:
        found.append("hard-swish")
    if any(b.se for b in arch.blocks):
        found.append("squeeze-and-excite")
    return found


def rebuild(supernet, config, weights: dict):
    """The subnet `config` as a tf_keras model with the given (calibrated) weights.

    Built by `Supernet.extract` from the same static blocks as the exported
    Keras model, without the resize layer (a Keras 3 layer tfmot cannot take):
    it takes normalised images at the subnet's own resolution.
    """
    _, tf_keras = import_tfmot()
    return supernet.extract(config, name=f"{config.model}_tf_keras", resize=False, keras_module=tf_keras, weights=weights)


def finetune(rebuilt, resolution: int, batches, epochs: int, steps_per_epoch: int, learning_rate: float):
    """A quantization-aware copy of the tf_keras model `rebuilt`, trained on (images, labels) `batches`.

    `batches` yields normalised images at any size (the training stream at
    the largest resolution); they are resized to `resolution` as the
    extracted model would.
    """
    tfmot, tf_keras = import_tfmot()
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"qat: epochs and steps per epoch must be positive, got {epochs}, {steps_per_epoch}")
    for layer in rebuilt.layers:
        # A frozen tf_keras BN layer runs in inference mode: the subnet's calibrated
        # statistics stay in place instead of drifting towards a few small batches'.
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.trainable = False
    quantized = tfmot.quantization.keras.quantize_model(rebuilt)
    quantized.compile(
        optimizer=tf_keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    resized = batches.map(
        lambda x, y: (tf.image.resize(x, [resolution, resolution], method="bilinear"), y),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    quantized.fit(resized, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0)
    return quantized


def write_saved_model(quantized, name: str, resolution: int, data, path: str):
    """A one-signature SavedModel of the fine-tuned model, interface as `tflite.py`'s.

    The module tracks the model's variables only: saving the tf_keras model
    itself would also trace and save every layer's call, which costs more than
    the conversion.
    """
    module = tf.Module()
    module.weights = list(quantized.variables)

    @tf.function(input_signature=[images_spec(data.info.channels, data.image_size)])
    def serve(images):
        x = data.prepare_batch(images)
        x = tf.image.resize(x, [resolution, resolution], method="bilinear")
        return classify(quantized(x, training=False))

    tf.saved_model.save(module, path, signatures={name: serve.get_concrete_function()})
