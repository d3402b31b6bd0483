"""Cost-model throughput: configs counted per second, scalar and vectorised.

    python bench/cost_model.py [--n 50000]

Prints one JSON object. The scalar figure counts fresh configs (the lru cache
is bypassed) including the channel rounding, as the sampler sees them.
"""

import argparse
import json
import platform
import random
import time

import numpy as np

from pss_tf import SearchSpace, count_flops, count_params
from pss_tf.space.cost import count_flops_array


def _rate(fn, n):
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    args = parser.parse_args()
    results = {"benchmark": "cost_model", "machine": platform.processor() or platform.machine(), "n": args.n}
    for model in ("mobilenet_v1", "mobilenet_v2"):
        space = SearchSpace(model)
        rng = random.Random(0)
        configs = [space.random_config(rng) for _ in range(args.n)]
        resolutions, widths = space.sample_arrays(np.random.default_rng(0), args.n)
        results[model] = {
            "count_flops_per_s": round(_rate(lambda: [count_flops.__wrapped__(c) for c in configs], args.n)),
            "count_params_per_s": round(_rate(lambda: [count_params.__wrapped__(c) for c in configs], args.n)),
            "count_flops_array_per_s": round(
                _rate(lambda: count_flops_array(model, resolutions, widths), args.n)
            ),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
