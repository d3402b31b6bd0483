"""TensorFlow's native (C++) log lines, kept out of a tool's standard error.

TensorFlow and LiteRT log from C++ through absl, and absl writes every line to
stderr until a program initialises it, which Python never does: the
`I0000 ... loader.cc:220] Reading SavedModel ...` lines of every conversion
pass whatever TF_CPP_MIN_LOG_LEVEL says. So a tool's stderr goes through a
small filter process that drops the native lines below a chosen severity, and
the few banner lines TensorFlow prints around them; every other byte passes
unchanged and at once (progress bars included). Python's own log lines (absl's
`W1207 ... file.py:12]`) are not native lines and always pass.

The filter is a forked process rather than a thread so that it outlives a
crash of the tool and still delivers the fatal line that explains it.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys

SEVERITIES = "IWEF"  # absl's: info, warning, error, fatal.
# A native line: severity, date, time, thread, C++ file:line]. Python's absl lines name a .py file.
_NATIVE = re.compile(rb"(?P<severity>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \n]+\.(?:cc|cpp|c|h):\d+\] [^\n]*")
# Lines TensorFlow prints beside its INFO lines without the log prefix.
_BANNERS = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"To enable the following instructions:",  # the second line of cpu_feature_guard's INFO line
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    b"fully_quantize: ",  # the TFLite converter's settings, printed per conversion
)


def min_severity(verbosity: int | None) -> str:
    """The least severe native line shown at absl's `--verbosity` (None: not given).

    Given, it means what absl says (0 info, -1 warning, -2 error, -3 fatal);
    not given, a tool shows fatal lines only.
    """
    if verbosity is None or verbosity <= -3:
        return "F"
    return "I" if verbosity >= 0 else SEVERITIES[-verbosity]


def tf_cpp_min_log_level(severity: str) -> str:
    """TF_CPP_MIN_LOG_LEVEL of the same threshold (it quiets the lines logged after start-up)."""
    return str(SEVERITIES.index(severity))


def filter_line(line: bytes, shown: str) -> bytes | None:
    """`line` (without its newline) as it passes the filter: None if dropped, else what is left of it."""
    if shown == "I":
        return line
    if any(line.startswith(banner) for banner in _BANNERS):
        return None
    match = _NATIVE.search(line)
    if match is None or SEVERITIES.index(match["severity"].decode()) >= SEVERITIES.index(shown):
        return line
    kept = line[: match.start()]  # e.g. a progress bar's text the log line was written after
    return kept if kept.strip(b"\r ") else None


def _may_be_dropped(partial: bytes) -> bool:
    """Whether an unfinished line could still become one the filter drops (so it waits for its end)."""
    return len(partial) < 4096 and partial[:1] in (b"I", b"W", b"E", b"T", b"f")


def pump(source: int, target: int, shown: str) -> None:
    """Copies file descriptor `source` to `target` until end of file, dropping native lines below `shown`.

    Should filtering itself fail, the rest is copied unfiltered: a tool's output is never lost.
    """
    pending = b""
    while True:
        try:
            chunk = os.read(source, 1 << 16)
        except InterruptedError:
            continue
        if not chunk:
            break
        pending += chunk
        try:
            *lines, rest = pending.split(b"\n")
            out = b"".join(kept + b"\n" for kept in (filter_line(line, shown) for line in lines) if kept is not None)
            if rest and not _may_be_dropped(rest):
                out, rest = out + rest, b""
        except Exception:  # noqa: BLE001
            out, rest, shown = pending, b"", "I"
        _write_all(target, out)
        pending = rest
    if pending:
        _write_all(target, filter_line(pending, shown) or b"")


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def filter_stderr(verbosity: int | None) -> None:
    """Routes this process's stderr (file descriptor 2) through the filter, for `--verbosity`.

    Call it before TensorFlow is imported: its first lines are printed at import.
    Sets TF_CPP_MIN_LOG_LEVEL to match. Nothing is filtered at verbosity 0 or more.
    """
    shown = min_severity(verbosity)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = tf_cpp_min_log_level(shown)
    if verbosity is not None and verbosity > 0:
        os.environ["TF_CPP_MAX_VLOG_LEVEL"] = str(verbosity)
    if shown == "I" or not hasattr(os, "fork"):
        return
    if os.isatty(2):  # Progress bars read the width from stderr, which becomes a pipe.
        size = os.get_terminal_size(2)
        os.environ.setdefault("COLUMNS", str(size.columns))
        os.environ.setdefault("LINES", str(size.lines))
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # The filter: reads until every writer (the tool and its children) is gone.
        try:
            os.close(write_end)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the tool; its last words still pass.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            pump(read_end, 2, shown)
        except BaseException:  # noqa: BLE001 - the filter must never run the tool's code after the fork.
            pass
        finally:
            os._exit(0)
    os.close(read_end)
    original = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    atexit.register(_drain, child, original)


def _drain(child: int, original: int, timeout_s: float = 5.0) -> None:
    """At exit: stderr back to where it was, and the filter given time to pass the last lines,
    so that they come before the shell's next prompt."""
    import time

    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(original, 2)  # The filter sees the end of its input once the tool's children are gone too.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.waitpid(child, os.WNOHANG)[0]:
            return
        time.sleep(0.01)
