"""Where numbers and images go: metrics.jsonl (always), W&B (logger=wandb), nowhere else.

The trainer talks to one `Logger`; `build_logger` puts metrics.jsonl in front of
whatever `logger=` chose, so a run folder is complete even without W&B.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

log = logging.getLogger("gancolor.loggers")


class Logger:
    """Interface, and the `logger=none` choice: every call does nothing."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_image(self, key: str, path: Path, step: int, caption: str = "") -> None: ...

    def finish(self) -> None: ...


NullLogger = Logger


class JsonlLogger(Logger):
    """One JSON object per line: {"step": ..., "train/G/loss": ..., ...}; flushed per line
    so a killed run keeps everything it logged."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file = self.path.open("a", encoding="utf-8")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def finish(self) -> None:
        self.file.close()


def _jsonable(value: Any):
    value = float(value) if not isinstance(value, (int, str)) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


class WandbLogger(Logger):
    """Weights & Biases. Online when an API key is configured, else offline with one
    line on how to sync; WANDB_MODE (or logger.mode) always wins."""

    def __init__(
        self,
        run_dir: str | Path,
        run_config: dict | None = None,
        project: str = "gancolor",
        entity: str | None = None,
        group: str | None = None,
        tags: Iterable[str] = (),
        name: str | None = None,
        mode: str | None = None,
        run_id: str | None = None,
    ) -> None:
        import wandb  # imported here: logger=none should not pay for it

        self.wandb = wandb
        run_dir = Path(run_dir)
        mode = mode or os.environ.get("WANDB_MODE") or ("online" if wandb_api_key_configured() else "offline")
        self.run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            tags=list(tags) or None,
            name=name or run_dir.name,
            config=run_config,
            dir=str(run_dir),
            id=run_id,
            resume="allow" if run_id else None,
            mode=mode,
        )
        if mode == "offline":
            log.info("W&B is offline (no API key or WANDB_MODE=offline); upload later with: wandb sync %s", self.run.dir.rsplit("/files", 1)[0])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_image(self, key: str, path: Path, step: int, caption: str = "") -> None:
        self.run.log({key: self.wandb.Image(str(path), caption=caption)}, step=step)

    def finish(self) -> None:
        self.run.finish()


def wandb_api_key_configured() -> bool:
    """True when `wandb login` or WANDB_API_KEY gave this machine a key; never asks."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class MultiLogger(Logger):
    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    def log_metrics(self, metrics, step):
        for logger in self.loggers:
            logger.log_metrics(metrics, step)

    def log_image(self, key, path, step, caption=""):
        for logger in self.loggers:
            logger.log_image(key, path, step, caption)

    def finish(self):
        for logger in self.loggers:
            logger.finish()
