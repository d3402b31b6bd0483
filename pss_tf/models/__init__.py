"""The Keras side: slimmable layers, blocks with static counterparts, the supernet.

    layers    `SlimConv2D`, `SlimDepthwiseConv2D`, `SlimBatchNormalization`, `SlimDense`
    kinds     one module per block kind: its slimmable block and the standard-layer
              twin extraction, latency tables and QAT build from
    blocks    `make_block` and `static_block`: a kind's class found through its registry entry
    supernet  `Supernet`, `build_supernet`, `encode`, `encode_group` (a group pass of
              several subnets); BN calibration and extraction
"""
