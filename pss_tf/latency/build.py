"""Building a lookup table: measure what is missing, save as you go, resume.

`build_table` measures the variants a `SpaceSpec` needs that the table at
`path` lacks, writing the file atomically every `save_every_s` seconds and when
interrupted (Ctrl-C or SIGTERM), so running the same command again continues
where it stopped. A table is only ever extended by measurements of the same
set-up (device, runtime, threads); anything else is refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import time
from typing import Callable

from pss_tf import checks
from pss_tf.errors import ConfigError
from pss_tf.latency import grid as grid_lib
from pss_tf.latency.lut import SETUP_FIELDS, LatencyTable, SpaceSpec
from pss_tf.latency.variants import Variant, space_variants
from pss_tf.stop import StopRequest

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class BuildResult:
    table: LatencyTable
    needed: int  # Variants the spec needs (measured or interpolated).
    measured_now: int
    interrupted: bool
    seconds: float


def busy_check(pattern: str) -> Callable[[], bool] | None:
    """A test for "another heavy process is running": any process whose command
    line matches `pattern` (a regex), other than this one. None if no pattern."""
    if not pattern:
        return None
    try:
        re.compile(pattern)
    except re.error as e:
        raise ConfigError("wait_while_running", f"not a regular expression ({e})") from None

    def busy() -> bool:
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        return any(int(pid) != os.getpid() for pid in found)

    return busy


def wait_until_quiet(busy: Callable[[], bool] | None, poll_s: float = 5.0) -> float:
    """Blocks while `busy()`; returns the seconds waited."""
    waited = 0.0
    while busy is not None and busy():
        if waited == 0.0:
            logger.info("Another heavy process is running; measuring pauses until it ends.")
        time.sleep(poll_s)
        waited += poll_s
    return waited


def open_table(path: str, setup: dict) -> LatencyTable:
    """The table at `path` to extend, or a new one; refuses another set-up's file."""
    if not os.path.exists(path):
        return LatencyTable(setup)
    table = LatencyTable.load(path, "out")
    for name in SETUP_FIELDS:
        if table.header.get(name) != setup.get(name):
            raise ConfigError(
                "out",
                f"{path} was measured with {name}={table.header.get(name)!r}, this run has "
                f"{setup.get(name)!r}; latencies of different set-ups must not share a table, choose another `out`"
            )
    if table.padding != setup.get("padding", "same"):
        raise ConfigError(
            "padding",
            f"{path} times blocks with {table.padding} padding, this run {setup.get('padding', 'same')}; "
            "choose another `out`",
        )
    if table.channel_step != setup.get("channel_step", 0):
        raise ConfigError(
            "channel_step",
            f"{path} was built with channel_step={table.channel_step}; pass the same value "
            "or choose another `out`"
        )
    return table


def build_table(
    path: str,
    spec: SpaceSpec,
    setup: dict,
    measure: Callable[[Variant], float],
    overhead: Callable[[], float] | None = None,
    save_every_s: float = 30.0,
    progress: bool = True,
    limit: int = 0,
    busy: Callable[[], bool] | None = None,
    prepare: Callable[[Variant], object] | None = None,
    passes: int = 1,
    chunk: int = 64,
) -> BuildResult:
    """Measures what `spec` needs and `path` lacks; returns the saved table.

    Args:
        setup: header fields of the table: device, runtime, threads, protocol,
            channel_step. Must match an existing file's.
        measure: prepare(variant) -> latency in ms (one standalone model's
            invoke); with no `prepare`, it gets the variant itself.
        overhead: () -> ms of invoking a trivial model, measured once per table.
        limit: stop after measuring this many variants (0: no limit), as if
            interrupted; for tests and for spreading a long build over sessions.
        busy: () -> True while other work competes for the cores; measuring
            pauses until it is False, and a block that finds it True once
            measured is measured again (see `busy_check`).
        prepare: variant -> what `measure` times (e.g. a converted model),
            made once per variant however many passes time it.
        passes: timings per variant, spread in time: variants go in chunks
            of `chunk`, and each pass times the whole chunk once, so the
            passes of one variant lie seconds apart. The table keeps the
            fastest pass: on a shared or virtual machine a pass can land in
            a stretch where a core is taken away, which only ever adds time.
    """
    checks.integer("passes", passes, 1)
    prepare = prepare or (lambda variant: variant)
    chunk = 1 if passes == 1 else max(1, int(chunk))
    started = time.perf_counter()
    table = open_table(path, setup)
    step = int(setup.get("channel_step", 0))
    needed = space_variants(spec.space, spec.small_input, spec.in_channels, spec.num_classes)
    to_measure = grid_lib.grid_variants(spec.space, step, spec.small_input, spec.in_channels, spec.num_classes)
    todo = [v for v in to_measure if v.key not in table.measured]
    spaces = table.header.setdefault("spaces", [])
    if str(spec) not in spaces:
        spaces.append(str(spec))
    logger.info(
        "%s: %d block variants needed, %d to measure, %d already measured.",
        path, len(needed), len(to_measure), len(to_measure) - len(todo),
    )
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="block", desc="measuring", dynamic_ncols=True, mininterval=1.0)
    measured_now, interrupted, last_save = 0, False, time.perf_counter()
    try:
        with StopRequest("stopping after this block; the table is saved and the same command resumes") as stop:
            if "invoke_overhead_ms" not in table.header:
                table.header["invoke_overhead_ms"] = round(float(when_quiet(overhead, busy)), 6) if overhead else 0.0
            start = 0
            while start < len(todo):
                if stop.requested or (limit and measured_now >= limit):
                    interrupted = True
                    break
                size = min(chunk, limit - measured_now) if limit else chunk
                group = [(v, prepare(v)) for v in todo[start : start + size]]
                start += size
                fastest = _time_chunk(group, passes, measure, busy, stop)
                if fastest is None:
                    interrupted = True  # Stopped inside the chunk: keep none of it.
                    break
                table.measured.update(fastest)
                measured_now += len(group)
                if bar is not None:
                    bar.set_postfix_str(group[-1][0].key, refresh=False)
                    bar.update(len(group))
                if time.perf_counter() - last_save >= save_every_s:
                    table.save(path)
                    last_save = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        if not interrupted:
            table.interpolated.update(grid_lib.interpolate_space(
                table.measured, spec.space, step, spec.small_input, spec.in_channels, spec.num_classes
            ))
        table.save(path)
    return BuildResult(table, len(needed), measured_now, interrupted, time.perf_counter() - started)


def _time_chunk(group, passes: int, measure, busy, stop) -> dict[str, float] | None:
    """The fastest of `passes` timings of every (variant, model) in `group`,
    passes spread over the chunk; None if a stop came before all were timed."""
    timings = {variant.key: [] for variant, _ in group}
    for _ in range(passes):
        for variant, model in group:
            ms = when_quiet(lambda: measure(model), busy, stop)
            if ms is None:
                return None
            timings[variant.key].append(float(ms))
    return {key: round(min(values), 6) for key, values in timings.items()}


def when_quiet(fn, busy, stop=None):
    """`fn()` measured while nothing else runs: waits for quiet, and measures
    again if something started meanwhile. None if a stop was requested."""
    while True:
        wait_until_quiet(busy)
        if stop is not None and stop.requested:
            return None
        value = fn()
        if busy is None or not busy():
            return value
