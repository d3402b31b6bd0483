"""Ctrl-C and SIGTERM as a request to stop at the next safe point.

Long jobs (training, latency tables, search) check `requested` between units
of work, save, and return; the same command resumes. A flag rather than an
exception: TensorFlow's converter and tf.data may swallow an exception raised
inside them. A second Ctrl-C interrupts at once (KeyboardInterrupt), for a
job stuck inside one unit.
"""

from __future__ import annotations

import logging
import signal

logger = logging.getLogger(__name__)


class StopRequest:
    """A context manager that turns SIGINT and SIGTERM into `requested = True`.

    Args:
        message: logged on the first signal, e.g. what will be saved.
    """

    def __init__(self, message: str = "Stopping at the next safe point; the same command resumes."):
        self.message = message
        self.requested = False
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # Not the main thread: signals stay with the caller.
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        logger.warning("%s: %s", self.signal_name, self.message)
        self.requested = True

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
