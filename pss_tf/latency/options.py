"""What `tools/build_lut.py` is told: one flag per field, each with its range.

Validation raises `ConfigError` naming the field before anything is converted
or timed; the table file itself is checked by `pss_tf.latency.build.open_table`.
"""

from __future__ import annotations

import dataclasses
import os

from pss_tf import config_flags
from pss_tf.config_flags import option
from pss_tf.errors import ConfigError
from pss_tf.space import architectures


@dataclasses.dataclass(frozen=True)
class LutOptions(config_flags.Declared):
    """Everything `tools/build_lut.py` is told (one flag per field)."""

    out: str = option("", help="The table (JSON). An existing one is extended / resumed.", path=True)
    model: str = option(
        "",
        help=f"Supernet: one of {', '.join(architectures.MODEL_NAMES)}, or one at a base width as <model>_<w>x "
        "(or model= in space).",
    )
    space: str = option(
        "",
        help="key=value,... restricting the search space: min_resolution, max_resolution, resolution_step, "
        "min_width, max_width, small_input, in_channels, num_classes, model. Unset keys keep the ImageNet "
        "defaults (128..224 step 8, widths 0.75..1, 3 channels, 1000 classes).",
    )
    threads: int = option(os.cpu_count() or 1, help="Interpreter threads (recorded in the table).", minimum=1)
    channel_step: int = option(
        0,
        help="0: measure every variant. N, a multiple of 8: measure widths that are multiples of N (plus each "
        "stage's extremes) and interpolate the rest.",
        minimum=0,
    )
    repeats: int = option(9, help="Timed repeats per block; the table keeps their median.", minimum=1)
    warmup_s: float = option(0.02, help="Warm-up time per block before timing.", minimum=0.0)
    min_repeat_s: float = option(
        0.004, help="Each repeat invokes the block until this much time has passed.", above=0.0
    )
    passes: int = option(
        3, help="Timings per block, seconds apart; the table keeps the fastest (see docs).", minimum=1
    )
    chunk: int = option(64, help="Blocks converted and timed together, one pass over the chunk at a time.", minimum=1)
    limit: int = option(0, help="Measure at most this many blocks, then stop resumably (0: all).", minimum=0)
    save_every_s: float = option(30.0, help="Save the table this often while measuring.", above=0.0)
    wait_while_running: str = option(
        "",
        help="Regex of command lines (pgrep -f) whose processes skew timings, e.g. 'tools/train\\.py|pytest': "
        "measuring pauses while one runs, and a block timed while one started is timed again.",
    )
    padding: str = option(
        "same",
        help="How the blocks' strided convs pad: the run's `padding` (symmetric for imported release weights). "
        "Recorded in the table.",
        choices=("same", "symmetric"),
    )
    dry_run: bool = option(False, help="Count the blocks and estimate the time from a few samples; write nothing.")
    progress: bool = option(True, help="Show a progress bar.")

    def validate(self) -> None:
        config_flags.check_declared(self)  # Every field's kind, choices and range.
        if not self.out and not self.dry_run:
            raise ConfigError("out", "required (or `dry_run`)")
        if self.channel_step % 8:
            raise ConfigError("channel_step", f"must be 0 or a positive multiple of 8, got {self.channel_step}")
