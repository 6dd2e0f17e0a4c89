"""Errors that are the user's to fix.

A UserError is reported as one line (`gancolor: error: ...`) with a non-zero exit, never
as a traceback: a bad config value, a missing folder, an unreadable image, a checkpoint
of the wrong kind. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in what the user asked for; the message says what and where."""

    exit_code = 2


class ConfigError(UserError):
    """A config value that cannot work (unknown option, out of range)."""


class DataError(UserError):
    """A data folder that is missing, empty or holds nothing usable."""


class CheckpointError(UserError):
    """A checkpoint that is unreadable, truncated or of another kind."""
