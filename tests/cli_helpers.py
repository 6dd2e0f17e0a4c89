"""Running `python -m gancolor` as a user does, for the end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_gancolor(args: list[str], cwd: Path, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """One training command in a subprocess: sample photos cached under `cache`, W&B offline."""
    env = {**os.environ, "GANCOLOR_CACHE": str(cache), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "-m", "gancolor", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def read_metrics(run: Path) -> list[dict]:
    """The rows of a run folder's metrics.jsonl."""
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]
