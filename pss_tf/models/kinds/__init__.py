"""The Keras side of the block kinds (`pss_tf.space.kinds` holds their costs and keys).

    base               `SlimBlock`, the static layer helpers, the activations
    conv               `ConvBNReLU`: stems and the last 1x1 conv
    max_pool           `MaxPoolBlock`
    separable          `SeparableBlock`
    inverted_residual  `InvertedResidualBlock` (with squeeze-and-excite)
    bottleneck         `BottleneckBlock`
    head               `static_head`, `head_weights`

`pss_tf.models.blocks` finds a kind's class by the path its registry entry names.
"""
