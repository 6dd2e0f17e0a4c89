"""Faults a long run must survive or report in one line, never die of silently.

    CheckpointWriteError   a checkpoint could not be written (disk full, quota, I/O
                           error): the run stops; the previous checkpoint is intact
    KeepLogging            a logger whose writes may fail (metrics.jsonl on a full disk):
                           the run warns once and goes on
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from gancolor.errors import CheckpointError
from gancolor.loggers import Logger

log = logging.getLogger("gancolor.trainer")  # train.log names these lines after the trainer that asks for them


class CheckpointWriteError(CheckpointError):
    """The disk refused a checkpoint. Not a mistake in the command: exit status 1."""

    exit_code = 1


def checkpoint_write_error(exc: OSError, folder: Path, resume_hint: str) -> CheckpointWriteError:
    """The one line for a failed checkpoint write: what failed, and what is still there."""
    reason = exc.strerror or str(exc)
    last = folder / "last.pt"
    kept = f"the previous checkpoint {last} is intact; " if last.is_file() else "no earlier checkpoint exists; "
    return CheckpointWriteError(f"cannot write a checkpoint into {folder}: {reason}; {kept}{resume_hint}")


class KeepLogging(Logger):
    """`logger`, with a failed write (OSError: a full disk, a vanished folder) reported
    once per kind of record and otherwise ignored: a long run does not die of its logs."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self.failed: set[str] = set()

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return self.logger.run_id

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(self.logger, method)(*args, **kwargs)
        except OSError as exc:
            if what not in self.failed:
                self.failed.add(what)
                log.warning("cannot write %s (%s); training goes on, later failures of this kind are not reported",
                            what, exc.strerror or exc)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._call("metrics (metrics.jsonl)", "log_metrics", metrics, step)

    def log_image(self, key: str, path: Path, step: int, caption: str = "") -> None:
        self._call("images", "log_image", key, path, step, caption)

    def log_validation_table(self, rows: list[dict], step: int) -> None:
        self._call("validation tables", "log_validation_table", rows, step)

    def log_summary(self, values: dict[str, Any]) -> None:
        self._call("the run summary", "log_summary", values)

    def log_checkpoint(self, path: str | Path, aliases: Sequence[str] = ("latest",), metadata: dict | None = None) -> None:
        self._call("checkpoint uploads", "log_checkpoint", path, aliases, metadata)

    def finish(self) -> None:
        self._call("the last metrics (closing the logs)", "finish")
