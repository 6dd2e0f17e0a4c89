"""Saving and loading checkpoints, safely.

Writes are atomic: the file is written next to its destination, fsync'ed, then
os.replace'd over it, so a crash or a kill during a save never leaves a broken
last.pt. Loads use torch.load(weights_only=True): a checkpoint shared by a stranger
can hold tensors, numbers, strings and containers, never code to run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from gancolor import __version__, distributed
from gancolor.errors import CheckpointError

log = logging.getLogger("gancolor.trainer")  # train.log names these lines after the trainer that asks for them

FORMAT = "gancolor-checkpoint"
FORMAT_VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is flushed.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_checkpoint(config: dict, **state: Any) -> dict:
    """The envelope every gancolor checkpoint has: format, versions, resolved config."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "gancolor_version": __version__, "config": config, **state}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a gancolor checkpoint, or raise CheckpointError naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code in it, not a torch file...
        with path.open("rb") as f:
            magic = f.read(2)
        if magic != b"PK" and magic[:1] != b"\x80":  # torch.save writes a zip (older torch: a pickle)
            raise CheckpointError(f"{path} is not a checkpoint file (a .pt that gancolor's training wrote)") from None
        text = str(exc)
        if "Weights only load failed" in text:
            reason = ("it holds objects other than tensors and plain data, which gancolor does not load "
                      "(weights_only=True: a checkpoint must not be able to run code)")
            if "Unsupported operand" in text or "could not find MARK" in text or "invalid load key" in text:
                reason = "not a PyTorch checkpoint file"
        else:
            from gancolor.nets.weights import load_failure

            # torch's own words run on for sentences (cut here mid-sentence) and may
            # advise weights_only=False: gancolor's instead.
            reason = load_failure(exc, path).replace("a safetensors file or a torch state dict", "a PyTorch checkpoint file")
        raise CheckpointError(f"cannot read checkpoint {path}: {reason[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gancolor checkpoint")
    from gancolor.build import check_config_targets  # before any caller builds what its config names
    check_config_targets(ckpt.get("config"), str(path))
    return ckpt


def load_nets(recipe, nets: dict, source: str | os.PathLike) -> None:
    """Load a checkpoint's net weights into `recipe`, or raise one CheckpointError that
    lists what does not match (missing, unexpected and differently shaped tensors)."""
    own = recipe.state_dict()
    missing = sorted(set(own) - set(nets))
    unexpected = sorted(set(nets) - set(own))
    reshaped = sorted(
        f"{k} {tuple(nets[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(nets)
        if hasattr(nets[k], "shape") and nets[k].shape != own[k].shape
    )
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("different shape", reshaped))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source} does not fit these nets: " + "; ".join(problems))
    recipe.load_state_dict(nets)


def load_recipe(path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True):
    """The recipe a checkpoint was trained with, weights loaded, in eval mode.

    Everything comes from the file (its stored config names the nets), so colorize,
    evaluate and exports need nothing else. `use_ema`: the generators' exponential
    moving average where the checkpoint has one (model.ema_decay), else the raw
    weights; `recipe.uses_ema` says which it got.
    """
    from gancolor.build import config_for_rebuilding, recipe_from_stored_config

    ckpt = load_checkpoint(path)
    recipe = recipe_from_stored_config(config_for_rebuilding(ckpt["config"], ckpt.get("nets")), str(path))
    load_nets(recipe, ckpt["nets"], path)
    recipe.uses_ema = bool(use_ema and ckpt.get("ema"))
    if recipe.uses_ema:
        load_ema_weights({name: getattr(recipe, name) for name in recipe.generator_names()}, ckpt["ema"], str(path))
    return recipe.to(device).eval(), ckpt


# -- where training stands ----------------------------------------------------------------


def trainer_state(trainer, phase: str) -> dict:
    """Everything a run needs to continue exactly: the plain nets' weights (call it with
    the nets unwrapped), optimisers, LR schedules, scaler, counters, unlogged loss sums
    and every rank's RNG states. Every rank must call it (the RNG states are gathered)."""
    return make_checkpoint(
        trainer.config,
        recipe=trainer.recipe.name,
        nets=trainer.recipe.state_dict(),
        optimizers={k: opt.state_dict() for k, opt in trainer.optimizers.items()},
        schedulers={k: s.state_dict() for k, s in trainer.schedulers.items()},
        scaler=trainer.scaler.state_dict(),
        global_step=trainer.global_step,
        epoch=trainer.epoch,
        batch_in_epoch=trainer.batch_in_epoch,
        phase=phase,
        best={"monitor": trainer.monitor, "mode": trainer.monitor_mode, "value": trainer.best},
        log_sums=dict(trainer.log_sums),
        log_counts=dict(trainer.log_counts),
        rng=distributed.all_gather_object(capture_rng()),  # one entry per rank
        logger_run_id=getattr(trainer.logger, "run_id", None),
        **_ema_state(getattr(trainer, "ema", None)),
    )


def _ema_state(ema) -> dict:
    """The generator EMA's entries of a checkpoint (none without one, so checkpoints of
    runs without model.ema_decay are as before)."""
    return {} if ema is None else {"ema": ema.state_dict(), "ema_updates": ema.updates()}


def restore_trainer_state(trainer, ckpt: dict) -> None:
    """Continue exactly where `ckpt` stopped (after the trainer's `setup`)."""
    recipe = trainer.recipe
    if ckpt.get("recipe") != recipe.name:
        raise CheckpointError(f"cannot resume a {ckpt.get('recipe')} checkpoint with recipe {recipe.name}")
    load_nets(recipe, ckpt["nets"], "resume checkpoint")
    for name, opt in trainer.optimizers.items():
        opt.load_state_dict(ckpt["optimizers"][name])
    for name, scheduler in trainer.schedulers.items():
        scheduler.load_state_dict(ckpt["schedulers"][name])
    trainer.scaler.load_state_dict(ckpt["scaler"])
    if getattr(trainer, "ema", None) is not None:
        if "ema" not in ckpt:
            raise CheckpointError("the resume checkpoint has no generator EMA, but this run keeps one (model.ema_decay)")
        load_ema_weights(trainer.ema.nets(), ckpt["ema"], "resume checkpoint")
        trainer.ema.set_updates(ckpt.get("ema_updates", 1))
    trainer.global_step, trainer.epoch = ckpt["global_step"], ckpt["epoch"]
    trainer.batch_in_epoch = ckpt.get("batch_in_epoch", 0)
    trainer.best = ckpt.get("best", {}).get("value")
    trainer.log_sums = {k: v.to(trainer.device) for k, v in ckpt.get("log_sums", {}).items()}
    trainer.log_counts = dict(ckpt.get("log_counts", {}))
    rng = ckpt["rng"]
    if isinstance(rng, list):  # one state per rank of the run that saved it
        if len(rng) != trainer.world_size:  # gancolor.resume refuses such a resume before this
            raise CheckpointError(f"the checkpoint is of a run of {len(rng)} processes; this one has {trainer.world_size}")
        rng = rng[trainer.rank]
    restore_rng(rng)


# -- the checkpoints/ folder of a run ------------------------------------------------------


class CheckpointFolder:
    """checkpoints/ of one run: last.pt always, the newest `keep_last` step files, best.pt.

    With keep_last == 1 each save simply replaces last.pt. With keep_last > 1 each save
    writes step_NNNNNNNN.pt and points last.pt at it (a hard link, so no second copy on
    disk), and the oldest step files beyond keep_last are removed: a checkpoint broken
    on disk then still leaves an older good one to resume from.
    """

    def __init__(self, folder: str | os.PathLike, keep_last: int = 1) -> None:
        self.folder = Path(folder)
        self.keep_last = keep_last

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def save(self, ckpt: dict) -> Path:
        if self.keep_last <= 1:
            return atomic_save(ckpt, self.last)
        path = atomic_save(ckpt, self.folder / f"step_{ckpt['global_step']:08d}.pt")
        _atomic_link(path, self.last)
        for old in self.step_files()[self.keep_last :]:
            old.unlink(missing_ok=True)
        return path

    def mark_best(self, path: Path) -> None:
        _atomic_link(path, self.best)

    def step_files(self) -> list[Path]:
        """Step checkpoints, newest first."""
        return sorted(self.folder.glob("step_*.pt"), reverse=True)

    def newest_good(self, log=None) -> tuple[dict, Path]:
        """The newest checkpoint that loads: last.pt, else the step files, newest first.
        Says (through `log`) when it had to fall back past a broken one."""
        first_error: CheckpointError | None = None
        candidates = [self.last] + [p for p in self.step_files() if not _same_file(p, self.last)]
        for path in candidates:
            if not path.exists():
                continue
            try:
                ckpt = load_checkpoint(path)
            except CheckpointError as exc:
                first_error = first_error or exc
                if log is not None:
                    log.warning("%s", exc)
                continue
            if first_error is not None and log is not None:
                log.warning("resuming from the newest good checkpoint instead: %s", path)
            return ckpt, path
        if first_error is not None:
            raise first_error
        raise CheckpointError(f"no checkpoint in {self.folder}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _atomic_link(source: Path, destination: Path) -> None:
    """Make `destination` name the same bytes as `source`, atomically (hard link, or a
    copy where the filesystem has no hard links)."""
    import shutil

    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, destination)


def run_dir_of(path: str | os.PathLike) -> Path | None:
    """The run folder a resume path belongs to: the folder itself, the parent of its
    checkpoints/, or None for a checkpoint file that lives outside any run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        return path.parent if path.name == "checkpoints" else path
    if path.parent.name == "checkpoints":
        return path.parent.parent
    return None


def find_resume_checkpoint(path: str | os.PathLike, log=None) -> tuple[dict, Path]:
    """resume=PATH: a .pt file (exactly that one) or a run folder (its newest good one)."""
    path = Path(path).expanduser()
    if path.is_file():
        return load_checkpoint(path), path
    if not path.exists():
        raise CheckpointError(f"resume: no such run folder or checkpoint: {path}")
    folder = path if path.name == "checkpoints" else path / "checkpoints"
    return CheckpointFolder(folder).newest_good(log)


# -- random number generators ------------------------------------------------------------


def capture_rng() -> dict:
    """Every RNG the training step may draw from (python, numpy, torch CPU and CUDA), in
    a form torch.load(weights_only=True) accepts (no numpy arrays)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


@contextlib.contextmanager
def preserved_rng():
    """Every RNG of `capture_rng` as it was before the block, after it: for work
    between training steps (validation) that must not shift the training's streams."""
    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


def restore_rng(state: dict) -> None:
    import random

    import numpy as np

    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_ema_weights(nets: dict[str, torch.nn.Module], state: dict, source: str) -> None:
    """A checkpoint's `ema` entry into `nets` ({name: module}), or one CheckpointError."""
    if set(state) != set(nets):
        raise CheckpointError(f"{source}: its EMA weights are of {', '.join(sorted(state)) or 'no net'}, "
                              f"the recipe's generators are {', '.join(sorted(nets))}")
    for name, net in nets.items():
        load_nets(net, state[name], f"{source} (EMA weights of {name})")
