"""What the command-line tools share: how they start, their options from flags,
and how they print progress and errors.

Every tool ends with `cli.run(main)`. Before absl parses the flags, a bare
`--flagfile` name that is not in the current directory is looked up in the
project's configs/ (`python tools/train.py --flagfile=mbv1.flags`); once they
are parsed, TensorFlow's native log lines are kept off stderr unless
`--verbosity` asks for them (`pss_tf.native_logs`). A tool's module imports
nothing that imports TensorFlow, so that this happens before its first line.

A tool whose last objects take long to tear down (the trainer's distributed
input iterator: see `exit_without_teardown`) ends with `cli.run(main,
skip_teardown=True)`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

from pss_tf.errors import ConfigError

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(PROJECT_ROOT, "configs")
USAGE_ERROR = 2  # The exit status of bad input, as absl's usage errors.
VERBOSITY_HELP = (
    "Not given: the tool's own output, Python warnings and TensorFlow's fatal lines only. Given, as absl's: "
    "0 shows TensorFlow's native INFO lines and Python's INFO logs, -1 from warnings, -2 from errors, 1 and "
    "up debug logs too."
)


def run(main: Callable[[list[str]], int | None], skip_teardown: bool = False) -> None:
    """Runs a tool's `main(argv)` under absl (flags parsed), its flagfiles found and TensorFlow quiet.

    With `skip_teardown`, a `main` that returns ends the process through
    `exit_without_teardown`; one that raises ends as usual (traceback included).
    """
    from absl import app, flags

    flags.FLAGS["verbosity"].help = VERBOSITY_HELP
    try:
        argv = resolve_flagfiles(sys.argv)
    except ConfigError as e:
        sys.exit(error(f"--{e.field}: {e.message}"))

    def tool(parsed):
        status = _main(main, parsed)
        if skip_teardown:
            exit_without_teardown(status)
        return status

    app.run(tool, argv=argv)


def exit_without_teardown(status: int | None) -> None:
    """Ends the process with `status` (None: 0) after everything an exit owes the user,
    without the interpreter's teardown of the objects still alive.

    The atexit handlers run (logging's flush, the native-log filter's drain, weakref
    finalizers, TensorFlow's own), then stdout and stderr are flushed, then the process
    ends. What is skipped is the garbage collection and module clearing that follow,
    where TensorFlow destroys a MirroredStrategy's input iterator: its per-device
    iterator waits for a tf.data autotuning thread to finish sleeping, up to a minute
    (docs/PERFORMANCE.md, "The idle tail at exit"). Call it only once every file the tool
    writes is closed (checkpoints, JSON files and summary writers are, when the
    trainer returns); library code never calls it.
    """
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0 if status is None else int(status))


def _main(main, argv):
    import logging

    from absl import app, flags
    from absl import logging as absl_logging

    from pss_tf import native_logs

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    given = flags.FLAGS["verbosity"].present
    native_logs.filter_stderr(flags.FLAGS.verbosity if given else None)
    if not given:
        absl_logging.set_verbosity(absl_logging.WARNING)  # TensorFlow's and absl's INFO chatter
        # TensorFlow's Python warnings speak to its developers (a new model's predict function
        # "triggered tf.function retracing"); its errors still show.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return main(argv)


def configs() -> list[str]:
    """The flagfiles in the project's configs/."""
    if not os.path.isdir(CONFIGS):
        return []
    return sorted(name for name in os.listdir(CONFIGS) if name.endswith(".flags"))


def find_flagfile(name: str) -> str:
    """The flagfile `--flagfile=name` means: `name` itself (`~` and $VARIABLES expanded) if it
    exists, else a bare name (with or without .flags) in configs/; ConfigError listing the configs."""
    from pss_tf.config_flags import expand_path

    path = expand_path(name)
    if os.path.exists(path):
        return path
    if os.path.basename(name) == name and name:
        for candidate in (name, f"{name}.flags"):
            if os.path.isfile(os.path.join(CONFIGS, candidate)):
                return os.path.join(CONFIGS, candidate)
    where = f"{path} (nor in {CONFIGS})" if os.path.basename(name) == name else path
    raise ConfigError("flagfile", f"no such file: {where}; the project's configs are {', '.join(configs())}")


def resolve_flagfiles(argv: list[str]) -> list[str]:
    """`argv` with every `--flagfile` given on the command line as the path it means
    (`find_flagfile`); says on stderr which file a name found in configs/ is."""
    resolved, i = [], 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=")
        if flag in ("--flagfile", "-flagfile") and (eq or i + 1 < len(argv)):
            if not eq:
                i += 1
                value = argv[i]
            path = find_flagfile(value)
            if os.path.dirname(path) == CONFIGS and not os.path.exists(value):
                print(f"flags: reading {os.path.relpath(path)} ({value} is not in {os.getcwd()})", file=sys.stderr)
            arg = f"--flagfile={path}"
        resolved.append(arg)
        i += 1
    return resolved


def timed_printer() -> Callable[[str], None]:
    """`log(message)`: prints `[ elapsed s] message` to stdout, flushed."""
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", flush=True)

    return log


def error(e: ConfigError | str, status: int = USAGE_ERROR) -> int:
    """Prints `error: ...` on stderr, a ConfigError's field as its flag (`--job_dir: ...`); returns `status`."""
    if isinstance(e, ConfigError):
        from absl import flags

        from pss_tf import config_flags

        e = config_flags.flag_message(e, flags.FLAGS)
    print(f"error: {e}", file=sys.stderr)
    return status


def plan_from_flags(options_class, plan: Callable):
    """`plan(options)` for the options the flags give, or None after printing the
    ConfigError as a flag (`--field: message`) on stderr."""
    from pss_tf import config_flags

    try:
        return plan(config_flags.from_flags(options_class))
    except ConfigError as e:
        error(e)
        return None


def show_library_logs() -> None:
    """pss_tf's own log messages at INFO on stderr, timestamped, once each (not through absl's handler)."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    library = logging.getLogger("pss_tf")
    library.setLevel(logging.INFO)
    library.handlers[:] = [handler]
    library.propagate = False
