"""Block kinds, one module each, registered once by name (`get`, `names`).

    base               `BlockKind`, the registry, activations
    conv               stem (3x3), resnet_stem (7x7, ReLU), pointwise (1x1)
    max_pool           ResNet's max pool
    separable          MobileNetV1's depthwise-separable block
    inverted_residual  MobileNetV2/V3's block (squeeze-and-excite optional)
    bottleneck         ResNet's bottleneck
    head               pool and classifier (MobileNetV3: a hidden linear layer too)

Each module holds the kind's pure part (costs, latency key); its Keras part
lives in `pss_tf.models.kinds` under the module's name, and the models layer
imports it by the path the kind registers (`BlockKind.keras_block`). A new
kind: one module here, one there, and the architecture tables that use it.
"""

from pss_tf.space.kinds import bottleneck, conv, head, inverted_residual, max_pool, separable  # noqa: F401 (registers)
from pss_tf.space.kinds.base import ACTIVATIONS, HARD_SWISH, RELU, RELU6, BlockKind, get, names, parse_flag  # noqa: F401
