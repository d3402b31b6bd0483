"""What the command-line tools share: their options from flags, checked before any work, and timed log lines."""

from __future__ import annotations

import sys
import time
from typing import Callable


def timed_printer() -> Callable[[str], None]:
    """`log(message)`: prints `[ elapsed s] message` to stdout, flushed."""
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", flush=True)

    return log


def plan_from_flags(options_class, plan: Callable):
    """`plan(options)` for the options the flags give, or None after printing the
    ConfigError as a flag (`--field: message`) on stderr."""
    from absl import flags

    from pss_tf import config_flags
    from pss_tf.errors import ConfigError

    try:
        return plan(config_flags.from_flags(options_class))
    except ConfigError as e:
        print(f"error: {config_flags.flag_message(e, flags.FLAGS)}", file=sys.stderr)
        return None
