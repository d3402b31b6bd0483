"""The end of every subnet (`pss_tf.space.kinds.head`): global average pool and the
classifier, with MobileNetV3's hidden linear layer and activation between them."""

from __future__ import annotations

import keras
import numpy as np

from pss_tf.models.kinds.base import activation as static_activation
from pss_tf.models.layers import SlimDense

HIDDEN, CLASSIFIER = "head_hidden", "classifier"  # layer names


def static_head(x, num_classes: int, name: str = "", keras_module=keras, hidden: int = 0, activation: str = ""):
    """Pool, (hidden linear layer and `activation`,) classifier: the static form of every subnet's end."""
    prefix = f"{name}_" if name else ""
    x = keras_module.layers.GlobalAveragePooling2D(name=f"{prefix}pool")(x)
    if hidden:
        x = keras_module.layers.Dense(hidden, name=f"{prefix}{HIDDEN}")(x)
        x = static_activation(keras_module, x, activation, f"{prefix}{HIDDEN}")
    return keras_module.layers.Dense(num_classes, name=f"{prefix}{CLASSIFIER}")(x)


def head_weights(classifier: SlimDense, in_features: int, hidden: SlimDense | None = None) -> dict[str, list[np.ndarray]]:
    """The head's weights by `static_head`'s layer names."""
    if hidden is None:
        return {CLASSIFIER: classifier.sliced_weights(in_features)}
    return {HIDDEN: hidden.sliced_weights(in_features), CLASSIFIER: classifier.sliced_weights(hidden.units)}


class Head:
    """The head's static face for a latency variant (`hidden` and `activation` when it has a hidden layer)."""

    @classmethod
    def static_variant(cls, x, variant, name, keras_module=keras, padding="same"):
        hidden = variant.hidden if variant.activation else 0
        return static_head(x, variant.cout, name, keras_module, hidden, variant.activation)
