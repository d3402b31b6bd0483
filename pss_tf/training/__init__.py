"""Training a supernet: configuration, the step, the run.

    config        `TrainConfig`: nested groups, one flag per leaf, run.json's form
    runtime       process-wide settings (precision, determinism, seeds); `run(config)`
    distribute    tf.distribute strategies and the chief
    optimization  SGD, learning-rate schedule, weight decay
    step          the traced steps: `SandwichStep` (max net, chosen subnet and min net in
                  one update), `ParallelSandwichStep`, `ParallelLabelsStep`
    modes         one object per training mode (sandwich, pse, plain) and their registry
    evaluation    BN calibration and accuracy of subnets
    trainer       `Trainer`: the loop, checkpoints, evaluations and winners
"""
