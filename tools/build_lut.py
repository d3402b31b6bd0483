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
import logging
import os
import random
import sys
import time

from absl import app, flags

from pss_tf import config_flags
from pss_tf.errors import ConfigError

FLAGS = flags.FLAGS

flags.DEFINE_string("out", None, "The table (JSON). An existing one is extended / resumed.")
flags.DEFINE_string("model", None, "Supernet: mobilenet_v1 or mobilenet_v2 (or model= in --space).")
flags.DEFINE_string(
    "space",
    "",
    "key=value,... restricting the search space: min_resolution, max_resolution, resolution_step, min_width, "
    "max_width, small_input, in_channels, num_classes, model. Unset keys keep the ImageNet defaults "
    "(128..224 step 8, widths 0.75..1, 3 channels, 1000 classes).",
)
flags.DEFINE_integer("threads", os.cpu_count() or 1, "Interpreter threads (recorded in the table).")
flags.DEFINE_integer("channel_step", 0, "0: measure every variant. N: measure widths that are multiples of N "
                     "(plus each stage's extremes) and interpolate the rest.")
flags.DEFINE_integer("repeats", 9, "Timed repeats per block; the table keeps their median.")
flags.DEFINE_float("warmup_s", 0.02, "Warm-up time per block before timing.")
flags.DEFINE_float("min_repeat_s", 0.004, "Each repeat invokes the block until this much time has passed.")
flags.DEFINE_integer("passes", 3, "Timings per block, seconds apart; the table keeps the fastest (see docs).")
flags.DEFINE_integer("chunk", 64, "Blocks converted and timed together, one pass over the chunk at a time.")
flags.DEFINE_integer("limit", 0, "Measure at most this many blocks, then stop resumably (0: all).")
flags.DEFINE_float("save_every_s", 30.0, "Save the table this often while measuring.")
flags.DEFINE_string(
    "wait_while_running",
    "",
    "Regex of command lines (pgrep -f) whose processes skew timings, e.g. 'tools/train\\.py|pytest': "
    "measuring pauses while one runs, and a block timed while one started is timed again.",
)
flags.DEFINE_enum("padding", "same", ["same", "symmetric"], "How the blocks' strided convs pad: the run's "
                  "`padding` (symmetric for imported release weights). Recorded in the table.")
flags.DEFINE_bool("dry_run", False, "Count the blocks and estimate the time from a few samples; write nothing.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def _spec():
    from pss_tf.latency.lut import SpaceSpec

    spec = SpaceSpec.parse(FLAGS.space, FLAGS.model)
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
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger("pss_tf").setLevel(logging.INFO)
    try:
        if not FLAGS.out and not FLAGS.dry_run:
            raise ConfigError("out", "required")
        if FLAGS.channel_step < 0 or FLAGS.channel_step % 8:
            raise ConfigError("channel_step", f"must be 0 or a positive multiple of 8, got {FLAGS.channel_step}")
        if FLAGS.repeats < 1:
            raise ConfigError("repeats", f"must be positive, got {FLAGS.repeats}")
        if FLAGS.passes < 1 or FLAGS.chunk < 1:
            raise ConfigError("passes", f"`passes` and `chunk` must be positive, got {FLAGS.passes} and {FLAGS.chunk}")
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
        print(f"error: {config_flags.flag_message(e, FLAGS)}", file=sys.stderr)
        return 2
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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    app.run(main)
