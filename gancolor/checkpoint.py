"""Saving and loading checkpoints, safely.

Writes are atomic: the file is written next to its destination, fsync'ed, then
os.replace'd over it, so a crash or a kill during a save never leaves a broken
last.pt. Loads use torch.load(weights_only=True): a checkpoint shared by a stranger
can hold tensors, numbers, strings and containers, never code to run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from gancolor import __version__
from gancolor.errors import CheckpointError

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
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gancolor checkpoint")
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


def load_recipe(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """The recipe a checkpoint was trained with, weights loaded, in eval mode.

    Everything comes from the file (its stored config names the nets), so colorize
    and evaluate need nothing else.
    """
    from gancolor.build import recipe_from_stored_config

    ckpt = load_checkpoint(path)
    recipe = recipe_from_stored_config(ckpt["config"], str(path))
    load_nets(recipe, ckpt["nets"], path)
    return recipe.to(device).eval(), ckpt
