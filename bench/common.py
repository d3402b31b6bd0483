"""What every benchmark records about the machine it ran on.

Speed figures are only comparable when nothing else competes for the cores,
so each benchmark's JSON says how busy the machine was when it started.
"""

import os
import subprocess
import time

# Other heavy jobs of this project that would skew timings.
HEAVY = r"tools/(train|export)\.py|pytest"


def machine_state() -> dict:
    """Cores, load average and the other heavy processes running right now."""
    try:
        found = subprocess.run(["pgrep", "-f", HEAVY], capture_output=True, text=True).stdout.split()
    except OSError:
        found = []
    others = [pid for pid in found if int(pid) != os.getpid()]
    from pss_tf.latency.measure import device_info

    return {
        "cpu": device_info()["cpu"],
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "other_heavy_processes": len(others),
        # Training and test runs use every core they can get.
        "cores_in_use_by_others": os.cpu_count() if others else 0,
    }


def lscpu_model_name() -> str:
    """`lscpu`'s "Model name": what every speed figure is specific to."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    for line in out.splitlines():
        if line.strip().startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def report_json(results: dict, out: str | None) -> None:
    """Prints `results` as JSON and, with `out`, writes the same text there atomically."""
    import json

    text = json.dumps(results, indent=2)
    if out:
        with open(out + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(out + ".tmp", out)
    print(text)


def one_scalar_of(outputs):
    """One scalar that depends on every tensor in `outputs` (gradients included).

    Timing a tf.function that returns only the loss measures the forward pass
    alone: ops no output depends on are pruned, the backward pass among them.
    """
    import tensorflow as tf

    tensors = [t for t in tf.nest.flatten(outputs) if t is not None]
    return tf.add_n([tf.reduce_sum(tf.reshape(tf.cast(t, tf.float32), [-1])[:1]) for t in tensors])


def time_calls(fn, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `fn`, after `warmup` untimed calls (tracing, caches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def spread_over_cost(space, cost, count: int, draws: int, seed: int) -> list:
    """`count` distinct networks at evenly spaced quantiles of the cost of `draws` random configs.

    The same arguments give the same subnets, so studies can share a fixed set.
    """
    import random

    from pss_tf.search.genes import network_key

    rng = random.Random(seed)
    pool = sorted((space.random_config(rng) for _ in range(draws)), key=cost)  # Stable: reproducible.
    distinct = len({network_key(c) for c in pool})
    if distinct < count:
        raise ValueError(f"the {draws} draws hold only {distinct} distinct networks")
    chosen, keys = [], set()
    for i in range(count):
        index = round(i * (len(pool) - 1) / (count - 1))
        # A network drawn twice is one subnet: take the nearest unused neighbour.
        nearest = sorted(range(len(pool)), key=lambda j: (abs(j - index), j))
        config = next(pool[j] for j in nearest if network_key(pool[j]) not in keys)
        keys.add(network_key(config))
        chosen.append(config)
    return sorted(chosen, key=cost)


def run_tool(tool: str, *args: str) -> str:
    """Runs `tools/<tool>` to the end; its stdout and stderr, or SystemExit with the error's tail."""
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, os.path.join(root, "tools", tool), *args], cwd=root, capture_output=True,
                            text=True)
    if result.returncode:
        raise SystemExit(f"{tool} failed:\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr
