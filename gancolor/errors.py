"""Errors that are the user's to fix.

A UserError is reported as one line (`gancolor: error: ...`) with a non-zero exit, never
as a traceback: a bad config value, a missing folder, an unreadable image, a checkpoint
of the wrong kind. Everything else is a bug and keeps its traceback.

`fail` is where every command turns such an error into that line; this module imports
nothing of gancolor's (nor torch or Hydra), so any module may use it.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """A mistake in what the user asked for; the message says what and where."""

    exit_code = 2


class ConfigError(UserError):
    """A config value that cannot work (unknown option, out of range)."""


class DataError(UserError):
    """A data folder that is missing, empty or holds nothing usable."""


class CheckpointError(UserError):
    """A checkpoint that is unreadable, truncated or of another kind."""


def fail(message: str, code: int = 2) -> None:
    """Print one line for the user and exit non-zero."""
    print(f"gancolor: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def one_line(exc: BaseException) -> str:
    """The informative part of an exception chain, on one line."""
    parts: list[str] = []
    while exc is not None:
        text = " ".join(str(exc).split())
        if text and text not in parts:
            parts.append(text)
        exc = exc.__cause__
    return "; ".join(parts) or "unknown error"
