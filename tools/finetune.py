"""Fine-tunes (or retrains from scratch) subnets of a trained run as the standalone models that ship.

    python tools/finetune.py --job_dir=runs/fashion_mnist --subnets=winners
    python tools/finetune.py --job_dir=runs/fashion_mnist --subnets=flops_6M,flops_9M --distill
    python tools/finetune.py --job_dir=runs/fashion_mnist --subnets=searched --from_scratch --epochs=4 \\
        --out=runs/fashion_mnist/retrained

Each subnet is extracted (standard Keras layers), BN-calibrated and evaluated as
it would ship, then trained on the run's training stream (held-out examples
excluded) with SGD + Nesterov, cosine decay and the release's weight decay:
from its inherited weights, or re-initialised with --from_scratch; from the
labels, or with --distill from the supernet's max net. Writes OUT/finetuned.json
(before and after accuracies, wall time) and OUT/<name>/ (weights, checkpoints,
TensorBoard); OUT defaults to JOB_DIR/finetune. Ctrl-C saves; the same command
resumes. `tools/export.py --finetuned` exports the fine-tuned weights. Every
flag is a field of `pss_tf.finetune.options.FinetuneOptions`.
"""

import os

from pss_tf import cli, config_flags
from pss_tf.errors import TrainingDiverged
from pss_tf.finetune.options import FinetuneOptions
from pss_tf.run.outputs import FINETUNED_FILE

config_flags.define_flags(FinetuneOptions)


def main(argv):
    del argv
    from pss_tf.finetune import driver

    the_plan = cli.plan_from_flags(FinetuneOptions, driver.plan)
    if the_plan is None:
        return 2
    try:
        result = driver.execute(the_plan, log=cli.timed_printer())
    except TrainingDiverged as e:
        return cli.error(str(e), status=1)
    if not result.finished:
        print(f"stopped; continue with the same command (outputs in {os.path.abspath(result.out_dir)})")
        return 0
    print(driver.describe(result.entries))
    print(f"wrote {os.path.join(os.path.abspath(result.out_dir), FINETUNED_FILE)}")
    return 0


if __name__ == "__main__":
    cli.run(main)
