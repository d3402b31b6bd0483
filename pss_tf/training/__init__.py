"""Training a supernet: the step, the run.

The run's configuration (`TrainConfig`), its metrics and modes' table, and its
job directory are `pss_tf.run`'s.

    runtime       process-wide settings (precision, determinism, seeds); `run(config)`
    distribute    tf.distribute strategies and the chief
    optimization  SGD, learning-rate schedule, weight decay
    step          the traced steps: `SandwichStep` (max net, chosen subnet and min net in
                  one update), `ParallelSandwichStep`, `ParallelLabelsStep`
    modes         one object per training mode (sandwich, pse, plain)
    evaluation    BN calibration and accuracy of subnets
    trainer       `Trainer`: the loop, checkpoints, evaluations and winners
"""
