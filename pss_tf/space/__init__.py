"""What a subnet is and what it costs, in pure Python (no TensorFlow).

    architectures  the MobileNet tables: blocks, strides, base channels, kernels
    config         `SubnetConfig` (resolution + width multipliers), `SearchSpace`
    cost           MACs and parameter counts, one config or arrays of many
    targets        `TargetGrid`: resource budgets and the rounding to them
    metrics        `Metric` (unit, labels, grid) and `FlopsMetric`
"""
