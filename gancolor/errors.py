"""Errors that are the user's to fix.

A UserError is reported as one line (`gancolor: error: ...`) with a non-zero exit, never
as a traceback: a bad config value, a missing folder, an unreadable image, a checkpoint
of the wrong kind. Everything else is a bug and keeps its traceback.

`fail` is where every command turns such an error into that line; this module imports
nothing of gancolor's (nor torch or Hydra), so any module may use it. Under torchrun
every rank meets the same mistake, and rank 0 alone says it.
"""

from __future__ import annotations

import os
import sys
import time


class UserError(Exception):
    """A mistake in what the user asked for; the message says what and where."""

    exit_code = 2


class ConfigError(UserError):
    """A config value that cannot work (unknown option, out of range)."""


class DataError(UserError):
    """A data folder that is missing, empty or holds nothing usable."""


class CheckpointError(UserError):
    """A checkpoint that is unreadable, truncated or of another kind."""


# How long a rank other than 0 waits before it says an error itself. Rank 0 meets the
# same mistake within moments and torchrun then ends the other ranks, so they stay quiet;
# one that exited at once could get rank 0 ended before its line was out.
OTHER_RANK_WAIT_S = 10.0


def fail(message: str, code: int = 2) -> None:
    """Print one line for the user and exit non-zero (under torchrun: rank 0's line)."""
    rank = os.environ.get("RANK", "0")
    if rank != "0" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        try:
            time.sleep(OTHER_RANK_WAIT_S)
        except KeyboardInterrupt:  # Ctrl-C reaches every rank: rank 0 says the error
            sys.exit(code)
        message = f"rank {rank}: {message}"  # still running: rank 0 did not fail, so this rank says why it did
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
