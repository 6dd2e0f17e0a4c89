"""Faults a long run must survive or report in one line, never die of silently.

    CheckpointWriteError   a checkpoint could not be written (disk full, quota, I/O
                           error): the run stops; the previous checkpoint is intact
    KeepLogging            a logger whose writes may fail (metrics.jsonl on a full disk):
                           the run warns once and goes on
    NonFiniteWatch         losses that became NaN or inf, noticed on the device without a
                           host sync per step; read where the trainer syncs anyway
    TrainingDiverged       what the trainer raises then: one line, exit status 1, the
                           last checkpoint kept (nothing is saved after the divergence)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from gancolor.errors import CheckpointError, UserError
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


class TrainingDiverged(UserError):
    """A loss or the weights became NaN/inf: exit status 1, no checkpoint of that state."""

    exit_code = 1


class NonFiniteWatch:
    """The first step at which each loss was not finite, kept on the device: `see` adds
    a few tiny kernels to a step and no host sync; `first` reads it all back at once."""

    def __init__(self) -> None:
        self.steps: dict[str, torch.Tensor] = {}  # loss name -> first bad step (0: none yet)
        self.values: dict[str, torch.Tensor] = {}  # loss name -> its value then

    def see(self, name: str, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().float()
        new = ~torch.isfinite(loss)
        if name in self.steps:
            new = new & (self.steps[name] == 0)
            self.steps[name] = torch.where(new, step, self.steps[name])
            self.values[name] = torch.where(new, loss, self.values[name])
        else:
            self.steps[name] = torch.where(new, step, 0)
            self.values[name] = loss.clone()

    def first(self) -> tuple[str, int, float] | None:
        """(loss name, step, value) of the earliest non-finite loss seen, or None; forgets
        what it has seen."""
        if not self.steps:
            return None
        names = list(self.steps)
        steps = torch.stack([self.steps[n] for n in names]).tolist()  # the one sync
        self.steps, values, self.values = {}, self.values, {}
        bad = [(step, name) for step, name in zip(steps, names) if step]
        if not bad:
            return None
        step, name = min(bad)
        return name, int(step), float(values[name])
