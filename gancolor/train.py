"""Build everything a run needs from the composed config, then hand it to the trainer.

Everything that can fail because of a user's choice (a bad value, a missing folder)
is built and checked before the first step, and reported as one line.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gancolor.build import build, build_recipe
from gancolor.cli import fail
from gancolor.errors import UserError
from gancolor.loggers import JsonlLogger, Logger, MultiLogger

log = logging.getLogger("gancolor")


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and CUDA); DataLoader workers derive theirs from it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_logger(cfg: DictConfig, run_dir: Path, config: dict) -> Logger:
    loggers: list[Logger] = [JsonlLogger(run_dir / "metrics.jsonl")]
    if cfg.logger is not None and cfg.logger.get("_target_"):
        # Partial first: handed to instantiate, the config's own _target_ keys would be built.
        make_logger = build(cfg.logger, "logger", _partial_=True)
        loggers.append(make_logger(run_dir=str(run_dir), run_config=config))
    return MultiLogger(loggers)


def train(cfg: DictConfig) -> float | None:
    """The Hydra task: returns the monitored validation metric (for sweepers)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    started = False
    try:
        seed_everything(int(cfg.seed))
        trainer = build(cfg.trainer, "trainer")
        data = build(cfg.data, "data")
        recipe = build_recipe(cfg)
        data.setup()  # finds and checks the images: a bad folder fails here, not mid-run
        config = OmegaConf.to_container(cfg, resolve=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
        started = True
        logger = build_logger(cfg, run_dir, config)
        try:
            metrics = trainer.fit(recipe, data, run_dir, logger, config)
        finally:
            logger.finish()
    except UserError as exc:
        log.error("%s", exc)
        if not started:
            _remove_unused_run_dir(run_dir)
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    return metrics.get("val/psnr")


def _remove_unused_run_dir(run_dir: Path) -> None:
    """A run that stopped before its first step leaves no folder behind, but only if
    the folder holds nothing except what Hydra wrote when it started this job."""
    hydra_only = {".hydra", "train.log"}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_only:
        for handler in logging.getLogger().handlers:
            handler.flush()
        shutil.rmtree(run_dir, ignore_errors=True)
        parent = run_dir.parent
        if parent.is_dir() and not os.listdir(parent):
            parent.rmdir()
