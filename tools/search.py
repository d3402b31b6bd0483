"""Searches a trained run for the best subnet of each budget (PSE-Net's prior-guided evolution).

    python tools/search.py --job_dir=runs/fashion_mnist --budgets=5,8,12
    python tools/search.py --job_dir=runs/fashion_mnist --budgets=8 --init=uniform,conditional,prior --seed=1 \\
        --population=20 --generations=10 --out=runs/fashion_mnist/search_seed1
    python tools/search.py --job_dir=runs/mbv1_multi --metric=latency_cpu --budgets=7.3

One evolutionary search per budget and init; candidates must cost within
[alpha B, B]; fitness is top-1 after BN calibration on the run's held-out
training examples (--holdout_examples at training; without them, a fixed
subset of the training split), never the validation split. Writes, under
--out (default JOB_DIR/search): searched.json (per budget and init: the
subnet, its cost, held-out and validation top-1, the per-generation best and
mean), fitness_<metric>.png, pareto_<metric>.png, and one resumable state file
per search. Ctrl-C stops after the current generation; the same command
resumes. Every flag is a field of `pss_tf.search.options.SearchOptions`.
"""

import os

from pss_tf import cli, config_flags
from pss_tf.search.options import SearchOptions

config_flags.define_flags(SearchOptions)


def main(argv):
    del argv
    from pss_tf.search import driver

    the_plan = cli.plan_from_flags(SearchOptions, driver.plan)
    if the_plan is None:
        return 2
    result = driver.execute(the_plan, log=cli.timed_printer())
    if not result.finished:
        print(f"stopped; continue with the same command (states in {os.path.abspath(result.out_dir)})")
        return 0
    for path in result.files:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
