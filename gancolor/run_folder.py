"""Run folders are never clobbered.

A folder that already holds a run (what `python -m gancolor` writes there) is refused
to a new run unless the command says `overwrite=true`, which deletes that run first;
`resume=` continues a run in its own folder. While a run trains, a lock file in its
folder keeps a second command out; it is removed when the run ends, and a lock left by
a process that no longer exists (killed with SIGKILL, a crashed machine) is taken over.

Everything here happens before Hydra starts the job, because Hydra writes .hydra/ and
train.log into the folder as the job starts: a command refused later has already
overwritten them. Nothing here imports torch or Hydra.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from gancolor.errors import UserError

LOCK_FILE = ".gancolor.lock"

# What a run leaves in its folder (Hydra's files; gancolor's: metrics, checkpoints, sample
# grids, W&B's folder and id (gancolor.loggers.WANDB_ID_FILE), CIC's colour prior
# (gancolor.models.cic.PRIOR_FILE), evaluate's default output). overwrite=true deletes
# exactly these, so a folder the user pointed at by mistake keeps their own files.
RUN_FILES = (
    ".hydra", "train.log", "config.yaml", "metrics.jsonl", "checkpoints", "samples", "wandb", "wandb_id.txt",
    "cic_prior.pt", "eval",
)

# What a multirun folder holds besides its job folders (each one a run folder).
SWEEP_FILES = ("multirun.yaml", "summary.md", "summary.csv")


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def sweep_jobs_in(folder: Path) -> list[Path]:
    """The job folders of an earlier multirun in `folder` (each has .hydra/)."""
    return sorted(p.parent for p in folder.rglob(".hydra")) if folder.is_dir() else []


def refuse_occupied(folder: Path, overwrite: bool, sweep: bool = False) -> None:
    """Raise a UserError when `folder` holds an earlier run (or multirun) and the
    command did not say overwrite=true; with it, delete that run."""
    runs = sweep_jobs_in(folder) if sweep else ([folder] if holds_run(folder) else [])
    if not runs:
        return
    if not overwrite:
        if sweep:
            raise UserError(f"{folder} already holds an earlier multirun: choose a new hydra.sweep.dir, "
                            "or add overwrite=true to replace it")
        raise UserError(f"{folder} already holds a run: continue it with resume={folder}, choose a new folder, "
                        "or add overwrite=true to replace it")
    for run in runs:
        clear_run(run)
    if sweep:
        for name in SWEEP_FILES:
            _remove(folder / name)


def clear_run(folder: Path) -> None:
    for name in RUN_FILES:
        _remove(folder / name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class RunLock:
    """`folder`/.gancolor.lock, holding "PID HOST" of the run that trains there."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.created: list[Path] = []  # folders the lock made, removed again if left empty
        self.owner = f"{os.getpid()} {socket.gethostname()}"

    def acquire(self) -> "RunLock":
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.created = missing  # innermost first
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None:
                    self._give_back_folders()
                    pid, host = holder
                    raise UserError(
                        f"{self.folder} is in use by another run (pid {pid} on {host}); wait for it to end or "
                        f"use another folder (if that run is gone, delete {self.path})"
                    ) from None
                print(f"gancolor: removed a stale lock of a run that no longer exists: {self.path}", file=sys.stderr)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner + "\n")
            return self
        raise UserError(f"cannot lock {self.folder}: another command keeps taking {self.path}")

    def _holder(self) -> tuple[str, str] | None:
        """(pid, host) of a live holder; None when the lock is stale."""
        try:
            pid, host = self.path.read_text().split()[:2]
        except (OSError, ValueError):
            return None  # unreadable or half-written: its writer died mid-write
        if host != socket.gethostname():
            return pid, host  # another machine's process: cannot tell, so it stands
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return None
        except (PermissionError, ValueError):
            pass
        return pid, host

    def release(self) -> None:
        try:
            if self.path.read_text().strip() == self.owner:
                self.path.unlink()
        except OSError:
            pass  # already gone: the run folder of a refused run was removed
        self._give_back_folders()

    def _give_back_folders(self) -> None:
        for folder in self.created:
            try:
                folder.rmdir()  # only if empty: a run that started keeps its folder
            except FileNotFoundError:
                continue  # removed already, with the folder of a run that never started
            except OSError:
                break
        self.created = []

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class ResumedFolder:
    """What Hydra rewrites when a resume's job starts in the run's own folder (.hydra/'s
    files; train.log, which the job appends to), taken before it does, to be put back if
    the job is refused before its first step: a value only the job's constructors check
    (trainer.device=gpu) must leave the run as it was, like the checks before Hydra do."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        hydra_dir = self.folder / ".hydra"
        self.hydra = {p.name: p.read_bytes() for p in hydra_dir.iterdir() if p.is_file()} if hydra_dir.is_dir() else None
        log = self.folder / "train.log"
        self.log_size = log.stat().st_size if log.is_file() else None

    def keep_own_record(self) -> None:
        """Put the run's own .hydra/ files back over those Hydra wrote for this resume:
        they say how the run started (a multirun job's number, swept values and sweep),
        which `python -m gancolor.multirun` and the W&B group read after a resume too."""
        if self.hydra is None:
            return  # the run had none: Hydra's new ones are the only record
        hydra_dir = self.folder / ".hydra"
        hydra_dir.mkdir(exist_ok=True)
        for name, data in self.hydra.items():
            (hydra_dir / name).write_bytes(data)

    def put_back(self) -> None:
        hydra_dir = self.folder / ".hydra"
        if self.hydra is None:
            shutil.rmtree(hydra_dir, ignore_errors=True)
        elif hydra_dir.is_dir():
            for path in hydra_dir.iterdir():
                if path.is_file() and path.name not in self.hydra:
                    path.unlink()
            for name, data in self.hydra.items():
                (hydra_dir / name).write_bytes(data)
        log = self.folder / "train.log"
        if self.log_size is None:
            log.unlink(missing_ok=True)
        elif log.is_file():
            os.truncate(log, self.log_size)  # its handler appends (O_APPEND): later lines land at the new end


# The resumed run's folder as it was before Hydra started the job (gancolor.cli sets it).
RESUMED: ResumedFolder | None = None
