"""The one exception type for bad input from a user.

Library code raises `ConfigError` when a setting, a file or a job directory is
wrong, naming the configuration field at fault (`min_width`, `data_dir`, ...),
never a command-line flag: the tools translate fields into their flags
(`pss_tf.config_flags.flag_message`). Anything else that goes wrong is a bug,
and the tools let its traceback through.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input. `field` names the setting (or file) to fix; None if no one field."""

    def __init__(self, field: str | None, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite; nothing was saved after `step`."""

    def __init__(self, step: int, message: str):
        self.step = step
        super().__init__(message)


class UncalibratedStatisticsWarning(UserWarning):
    """A subnet ran in inference mode on BN statistics that were never estimated for it."""
