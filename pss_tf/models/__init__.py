"""The Keras side: slimmable layers, blocks with static counterparts, the supernet.

    layers    `SlimConv2D`, `SlimDepthwiseConv2D`, `SlimBatchNormalization`, `SlimDense`
    blocks    slimmable blocks and the standard-layer blocks extraction, latency
              tables and QAT build from
    supernet  `Supernet`, `build_supernet`, `encode`, `encode_group` (a group pass of
              several subnets); BN calibration and extraction
"""
