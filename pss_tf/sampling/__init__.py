"""Which subnets are trained (pure Python): PSS's pools and samplers.

    conditional_sampler  drawing a random subnet for a target (design note section 3)
    pools                the pools: EMA scores, eviction, softmax draws (section 4)
    schedules            p_e and t_e decay over epochs (section 6)
    samplers             `PrioritizedSampler` (PSS) and the uniform baseline
"""
