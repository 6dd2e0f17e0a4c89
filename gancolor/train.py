"""Build everything a run needs from the composed config, then hand it to the trainer.

Everything that can fail because of a user's choice (a bad value, a missing folder)
is built and checked before the first step, and reported as one line.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gancolor import distributed
from gancolor.build import build, build_recipe, config_for_rebuilding
from gancolor.checkpoint import find_resume_checkpoint, load_checkpoint, load_nets
from gancolor.errors import CheckpointError, ConfigError, UserError, fail
from gancolor.loggers import JsonlLogger, Logger, MultiLogger

log = logging.getLogger("gancolor")


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and CUDA); DataLoader workers derive theirs from it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_logger(cfg: DictConfig, run_dir: Path, config: dict, run_id: str | None = None) -> Logger:
    if not distributed.is_main():
        return Logger()  # rank 0 alone logs, writes samples and talks to W&B
    loggers: list[Logger] = [JsonlLogger(run_dir / "metrics.jsonl")]
    if cfg.logger is not None and cfg.logger.get("_target_"):
        # Partial first: handed to instantiate, the config's own _target_ keys would be built.
        make_logger = build(cfg.logger, "logger", _partial_=True)
        extra = {"run_id": run_id} if run_id else {}
        loggers.append(make_logger(run_dir=str(run_dir), run_config=config, **extra))
    return MultiLogger(loggers)


# What may change on a resume command line: where and how long to run, how to log.
# Anything else would make the continued run a different experiment.
RESUME_ALLOWED = (
    "resume",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.device",
    "trainer.progress_bar",
    "trainer.log_every_n_steps",
    "trainer.save_every_n_steps",
    "trainer.keep_last",
    "data.num_workers",
    "logger",
    "hydra",
)


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume_config(cfg: DictConfig, stored: dict, overrides: list[str]) -> DictConfig:
    """The stored config of the run being resumed, with the allowed overrides applied."""
    refused = [
        o for o in overrides
        if not any(override_key(o) == a or override_key(o).startswith(a + ".") for a in RESUME_ALLOWED)
    ]
    if refused:
        raise ConfigError(
            f"resume continues a run with its own config; cannot change {', '.join(refused)} "
            f"(allowed: {', '.join(a for a in RESUME_ALLOWED if a not in ('resume', 'hydra'))}, logger.*)"
        )
    merged = OmegaConf.create(stored)
    for o in overrides:
        key = override_key(o)
        if key.startswith("hydra"):
            continue
        if key == "logger":  # a group choice: take the whole newly composed node
            merged.logger = cfg.logger
        else:
            OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)
    return merged


def train(cfg: DictConfig) -> float | None:
    """The Hydra task: returns the monitored validation metric (for sweepers)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not distributed.is_main():
        quiet_secondary_rank()
    started = False
    resume = None
    try:
        if cfg.get("resume") and cfg.get("init_from"):
            raise ConfigError("resume and init_from exclude each other: resume continues a run, init_from starts one")
        if cfg.get("resume"):
            resume, path = find_resume_checkpoint(cfg.resume, log)
            log.info("resuming from %s (step %d, epoch %d)", path, resume["global_step"], resume["epoch"] + 1)
            cfg = resume_config(cfg, resume["config"], list(HydraConfig.get().overrides.task))
        seed_everything(int(cfg.seed))
        trainer = build(cfg.trainer, "trainer")
        data = build(cfg.data, "data")
        if resume is None:
            recipe = build_recipe(cfg)
        else:  # its weights come from the checkpoint, not from pretrained or bins files
            recipe = build_recipe(OmegaConf.create(config_for_rebuilding(OmegaConf.to_container(cfg), resume["nets"])))
        if cfg.get("init_from"):
            init_weights_from(recipe, cfg.init_from)
        trainer.check_phases(recipe)  # a phase the recipe lacks fails before any work
        data.setup()  # finds and checks the images: a bad folder fails here, not mid-run
        config = OmegaConf.to_container(cfg, resolve=True)
        if not distributed.is_main():
            pass
        elif resume is None:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
        else:
            drop_metrics_after(run_dir / "metrics.jsonl", resume["global_step"])
        started = True
        logger = build_logger(cfg, run_dir, config, run_id=resume.get("logger_run_id") if resume else None)
        try:
            metrics = trainer.fit(recipe, data, run_dir, logger, config, resume=resume)
        finally:
            logger.finish()
    except UserError as exc:
        log_to_file_only(logging.ERROR, str(exc))  # the console gets it once, from fail()
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed and runs the others; the summary says which
        if not started and resume is None and distributed.is_main():
            _remove_unused_run_dir(run_dir)
        fail(str(exc), exc.exit_code)
    if trainer.stop_signal is not None:
        name = signal.Signals(trainer.stop_signal).name
        message = f"stopped by {name} at step {trainer.global_step}; resume with: python -m gancolor resume={run_dir}"
        log.warning("%s", message)
        if distributed.is_main():
            print(f"gancolor: {message}", file=sys.stderr, flush=True)
        # Preemption is an expected, clean end; Ctrl-C keeps the shell's convention.
        sys.exit(0 if trainer.stop_signal == signal.SIGTERM else 130)
    return metrics.get(trainer.monitor)


def quiet_secondary_rank() -> None:
    """Ranks other than 0 keep warnings on the console and write nothing to train.log."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def init_weights_from(recipe, path: str) -> None:
    """init_from=PATH: another run's weights, nothing else (fresh optimisers, step 0)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("recipe") != recipe.name:
        raise CheckpointError(f"init_from: {path} is a {ckpt.get('recipe')} checkpoint; this run trains {recipe.name}")
    load_nets(recipe, ckpt["nets"], f"init_from: {path}")
    log.info("initialised the nets from %s (step %d of its run)", path, ckpt.get("global_step", 0))


def drop_metrics_after(path: Path, step: int) -> None:
    """A run killed after its last checkpoint logged steps it will now redo: drop those
    rows so metrics.jsonl reads as one uninterrupted run."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines(keepends=True) if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def log_to_file_only(level: int, message: str) -> None:
    """Put a line in train.log without echoing it on the console."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _remove_unused_run_dir(run_dir: Path) -> None:
    """A run that stopped before its first step leaves no folder behind, but only if
    the folder holds nothing except what Hydra wrote when it started this job."""
    hydra_only = {".hydra", "train.log"}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_only:
        for handler in logging.getLogger().handlers:
            handler.flush()
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in (run_dir.parent, run_dir.parent.parent):  # runs/<model>/, then runs/
            if parent.is_dir() and not os.listdir(parent):
                parent.rmdir()
