"""Measures a latency lookup table for the `latency_cpu` metric on this machine.

    python tools/build_lut.py --model=mobilenet_v1 --out=LUT.json
    python tools/build_lut.py --out=luts/smoke.json --threads=2 \\
        --space=model=mobilenet_v2,min_resolution=24,max_resolution=32,resolution_step=4,min_width=0.35,max_width=0.5,small_input=true,num_classes=4
    python tools/build_lut.py --model=mobilenet_v1 --out=LUT.json --channel_step=32   # coarse: grid + interpolation
    python tools/build_lut.py --model=mobilenet_v1 --out=LUT.json --dry_run           # count and time estimate

Every block variant the search space can produce is converted to a tiny TFLite
model and timed with the LiteRT interpreter (XNNPACK, --threads threads).
Ctrl-C (or SIGTERM) saves what was measured; the same command resumes. Running
it with a larger --space on an existing table measures only what is new.
Measure on a quiet machine: other processes inflate every entry.
"""

import json
import os
import random
import sys
import time

from absl import flags

from pss_tf import cli, config_flags
from pss_tf.errors import ConfigError
from pss_tf.latency.options import LutOptions

FLAGS = flags.FLAGS
config_flags.define_flags(LutOptions)


def _spec():
    from pss_tf.latency.lut import SpaceSpec

    spec = SpaceSpec.parse(FLAGS.space, FLAGS.model or None)
    if FLAGS.model and spec.space.model != FLAGS.model:
        raise ConfigError("model", f"{FLAGS.model} disagrees with model={spec.space.model} in `space`")
    return spec


def _dry_run(spec, timer, step) -> dict:
    from pss_tf.latency import grid as grid_lib
    from pss_tf.latency.lut import LatencyTable
    from pss_tf.latency.variants import space_variants

    needed = space_variants(spec.space, spec.small_input, spec.in_channels, spec.num_classes)
    to_measure = grid_lib.grid_variants(spec.space, step, spec.small_input, spec.in_channels, spec.num_classes)
    done = set()
    if FLAGS.out and os.path.exists(FLAGS.out):
        done = set(LatencyTable.load(FLAGS.out, "out").measured)
    todo = [v for v in to_measure if v.key not in done]
    sample = random.Random(0).sample(todo, min(8, len(todo)))
    started = time.perf_counter()
    for variant in sample:
        timer.time_variant(variant)
    per_block = (time.perf_counter() - started) / max(1, len(sample))
    return {
        "space": str(spec),
        "channel_step": step,
        "variants_needed": len(needed),
        "variants_to_measure": len(to_measure),
        "already_measured": len(to_measure) - len(todo),
        "seconds_per_block_sampled": round(per_block, 3),
        "estimated_hours": round(per_block * len(todo) / 3600, 2),
    }


def main(argv):
    del argv
    cli.show_library_logs()
    try:
        config_flags.from_flags(LutOptions).validate()
        spec = _spec()
        from pss_tf.latency import measure
        from pss_tf.latency.build import build_table, busy_check, open_table

        protocol = measure.Protocol(FLAGS.warmup_s, 3, FLAGS.repeats, FLAGS.min_repeat_s)
        timer = measure.Timer(FLAGS.threads, protocol)
        setup = {
            "unit": "ms",
            "device": measure.device_info(),
            "runtime": measure.runtime_info(),
            "threads": FLAGS.threads,
            "protocol": {
                **protocol.to_dict(),
                "passes": FLAGS.passes,
                "statistic": "fastest of `passes` passes (seconds apart) of the median of `repeats` repeats' "
                "mean invoke time",
            },
            "channel_step": FLAGS.channel_step,
            "padding": FLAGS.padding,
        }
        if FLAGS.dry_run:
            print(json.dumps(_dry_run(spec, timer, FLAGS.channel_step), indent=2))
            return 0
        open_table(FLAGS.out, setup)  # Refuse a mismatched file before any work.
        busy = busy_check(FLAGS.wait_while_running)
    except ConfigError as e:
        return cli.error(e)
    result = build_table(
        FLAGS.out,
        spec,
        setup,
        measure=lambda content: timer.time(content).median_ms,
        prepare=lambda v: measure.to_tflite(measure.block_model(v, FLAGS.padding)),
        passes=FLAGS.passes,
        chunk=FLAGS.chunk,
        overhead=timer.invoke_overhead_ms,
        save_every_s=FLAGS.save_every_s,
        progress=FLAGS.progress,
        limit=FLAGS.limit,
        busy=busy,
    )
    table = result.table
    summary = {
        "out": os.path.abspath(FLAGS.out),
        "space": str(spec),
        "variants_needed": result.needed,
        "measured_now": result.measured_now,
        "measured_total": len(table.measured),
        "interpolated_total": len(table.interpolated),
        "missing": len(table.missing(_needed(spec))),
        "seconds": round(result.seconds, 1),
        "threads": table.threads,
        "runtime": table.runtime,
        "invoke_overhead_ms": table.invoke_overhead_ms,
    }
    print(json.dumps(summary, indent=2))
    if result.interrupted:
        print(f"interrupted: run the same command to resume ({FLAGS.out} is saved)", file=sys.stderr)
        return 130
    return 0


def _needed(spec):
    from pss_tf.latency.variants import space_variants

    return space_variants(spec.space, spec.small_input, spec.in_channels, spec.num_classes)


if __name__ == "__main__":
    cli.run(main)
