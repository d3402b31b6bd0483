"""What a subnet is and what it costs, in pure Python (no TensorFlow).

    architectures  the model tables: blocks, strides, base channels, kernels
    kinds          the block kinds, one module each: costs and latency keys, registered by name
    config         `SubnetConfig` (resolution + width multipliers), `SearchSpace`
    cost           MACs and parameter counts, one config or arrays of many
    targets        `TargetGrid`: resource budgets and the rounding to them
    metrics        `Metric` (unit, labels, grid) and `FlopsMetric`
"""
