"""The Hydra task: build everything a run needs from the composed config, then hand it
to the trainer.

Everything that can fail because of a user's choice (a bad value, a missing folder)
is built and checked before the first step, and reported as one line. What a resumed
run keeps of its checkpoint and what init_from= takes is gancolor.resume's to say.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gancolor import distributed, hints, run_folder
from gancolor.build import build
from gancolor.errors import UserError, fail
from gancolor.faults import KeepLogging
from gancolor.loggers import JsonlLogger, Logger, MultiLogger
from gancolor.models.base import check_input_kind
from gancolor.multirun import mark_failed
from gancolor.resume import check_resume_continues, checkpoint_to_resume, drop_metrics_after, recipe_for_run, resume_config
from gancolor.resume import init_weights_from  # noqa: F401  (its home before gancolor.resume)

log = logging.getLogger("gancolor")


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and CUDA); DataLoader workers derive theirs from it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Presets sized for a GPU (their yaml says so): on a CPU a step takes minutes.
GPU_PRESETS = {"experiment": ("cic_zhang2016",)}


def warn_if_gpu_preset_on_cpu(device: torch.device) -> None:
    if device.type != "cpu" or not distributed.is_main():
        return
    choices = HydraConfig.get().runtime.choices
    for group, names in GPU_PRESETS.items():
        if choices.get(group) in names:
            log.warning(
                "%s=%s is a GPU preset and this run is on the CPU: expect minutes per step and several GB of "
                "memory (see conf/%s/%s.yaml for a smaller setting)", group, choices[group], group, choices[group],
            )


def build_logger(cfg: DictConfig, run_dir: Path, config: dict, run_id: str | None = None) -> Logger:
    return with_metrics_file(run_dir, build_tracker(cfg, run_dir, config, run_id))


def build_tracker(cfg: DictConfig, run_dir: Path, config: dict, run_id: str | None = None) -> Logger:
    """What logger= chose (W&B), started; a Logger that does nothing for logger=none and
    on ranks other than 0 (rank 0 alone logs, writes samples and talks to W&B)."""
    if not distributed.is_main() or cfg.logger is None or not cfg.logger.get("_target_"):
        return Logger()
    # Partial first: handed to instantiate, the config's own _target_ keys would be built.
    make_logger = build(cfg.logger, "logger", _partial_=True)
    extra = {"run_id": run_id} if run_id else {}
    return make_logger(run_dir=str(run_dir), run_config=config, **extra)


def with_metrics_file(run_dir: Path, tracker: Logger) -> Logger:
    """metrics.jsonl in front of the tracker, on rank 0."""
    if not distributed.is_main():
        return tracker
    return MultiLogger([JsonlLogger(run_dir / "metrics.jsonl"), tracker])


def train(cfg: DictConfig) -> float | None:
    """The Hydra task: returns the monitored validation metric (for sweepers)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not distributed.is_main():
        quiet_secondary_rank()
    started = False
    resume = None
    try:
        resume = checkpoint_to_resume(cfg)
        if resume is not None:
            _keep_resumed_run_record(run_dir)
            cfg = resume_config(cfg, resume["config"], list(HydraConfig.get().overrides.task))
            check_resume_continues(cfg, resume, distributed.world_size())
        seed_everything(int(cfg.seed))
        trainer = build(cfg.trainer, "trainer")
        warn_if_gpu_preset_on_cpu(trainer.device)
        data = build(cfg.data, "data")
        recipe = recipe_for_run(cfg, resume)
        hints.connect(recipe, data)  # model.hints: the training batches carry simulated hints
        trainer.check_phases(recipe)  # a phase the recipe lacks fails before any work
        check_input_kind(recipe, data)  # NIR data with a gray recipe, or the reverse
        data.setup()  # finds and checks the images: a bad folder fails here, not mid-run
        config = OmegaConf.to_container(cfg, resolve=True)
        # The tracker starts before the run folder gains anything: one that cannot start
        # (W&B online without a key or a server) is refused like a bad data folder, which
        # leaves no run behind, so the same command can simply be run again.
        logger = build_tracker(cfg, run_dir, config, run_id=resume.get("logger_run_id") if resume else None)
        try:
            if not distributed.is_main():
                pass
            elif resume is None:
                (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
            else:
                drop_metrics_after(run_dir / "metrics.jsonl", resume["global_step"])
            started = True
            logger = KeepLogging(with_metrics_file(run_dir, logger))  # metrics.jsonl opens after the rows are dropped
            metrics = trainer.fit(recipe, data, run_dir, logger, config, resume=resume)
        finally:
            logger.finish()
    except UserError as exc:
        log_to_file_only(logging.ERROR, str(exc))  # the console gets it once, from fail()
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed and runs the others; the summary says which
        if not started and distributed.is_main():
            if cfg.get("resume"):
                _put_back_resumed_run_dir(run_dir)
            else:
                _remove_unused_run_dir(run_dir)
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        # Ctrl-C before training, or a second one during it (which let a checkpoint being
        # written complete first): one line and the shell's status for Ctrl-C.
        if distributed.is_main():
            saved = started and (run_dir / "checkpoints" / "last.pt").is_file()
            where = f" at step {trainer.global_step}" if started else ""
            hint = f"; resume from its last checkpoint with: {distributed.resume_command(run_dir)}" if saved else ""
            print(f"gancolor: aborted by Ctrl-C{where}{hint}", file=sys.stderr, flush=True)
        sys.exit(130)
    if trainer.stop_signal is not None:
        name = signal.Signals(trainer.stop_signal).name
        message = f"stopped by {name} at step {trainer.global_step}; resume with: {distributed.resume_command(run_dir)}"
        if distributed.is_main():  # every rank stops; one says so
            log.warning("%s", message)
            print(f"gancolor: {message}", file=sys.stderr, flush=True)
        # Preemption is an expected, clean end; Ctrl-C keeps the shell's convention.
        sys.exit(0 if trainer.stop_signal == signal.SIGTERM else 130)
    return metrics.get(trainer.monitor)


def train_job(cfg: DictConfig) -> float | None:
    """One job of a multirun: a job that fails is marked failed (its folder, the
    summary, one line on the console) and the multirun goes on with the next."""
    try:
        return train(cfg)
    except Exception as exc:  # noqa: BLE001 - a bug in one job must not cost the others
        job = HydraConfig.get()
        user_error = isinstance(exc, UserError)
        message = str(exc) if user_error else f"{type(exc).__name__}: {exc}"
        if not user_error:
            log_to_file_only(logging.ERROR, traceback.format_exc())
        print(f"gancolor: error: multirun job {job.job.num}: {' '.join(message.split())}", file=sys.stderr, flush=True)
        mark_failed(Path(job.runtime.output_dir), job.job.num, job.sweep.dir, message, exc.exit_code if user_error else 1)
        return None


def quiet_secondary_rank() -> None:
    """Ranks other than 0 write nothing to train.log, and keep on the console only
    errors and other libraries' warnings: gancolor's own warnings (a skipped image, a
    checkpoint fallback) are the same on every rank, and rank 0 says them."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
        else:
            handler.addFilter(_not_gancolor_below_error)
    root.setLevel(logging.WARNING)


def _not_gancolor_below_error(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or not (record.name == "gancolor" or record.name.startswith("gancolor."))


def log_to_file_only(level: int, message: str) -> None:
    """Put a line in train.log without echoing it on the console."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _keep_resumed_run_record(run_dir: Path) -> None:
    """A resume in the run's own folder keeps the run's .hydra/ record of how it started
    (Hydra has just rewritten it with this command's); this command's overrides go to
    train.log instead."""
    resumed = run_folder.RESUMED
    if resumed is None or not distributed.is_main() or resumed.folder.resolve() != run_dir.resolve():
        return
    resumed.keep_own_record()
    from gancolor import resume as resuming

    typed = [o for o in HydraConfig.get().overrides.task if o not in resuming.ADDED_CHOICES]  # the user's command line
    log.info("resumed with: %s", " ".join(typed))


def _put_back_resumed_run_dir(run_dir: Path) -> None:
    """A resume refused before its first step leaves its run's folder as it was."""
    resumed = run_folder.RESUMED
    if resumed is not None and resumed.folder.resolve() == run_dir.resolve():
        for handler in logging.getLogger().handlers:
            handler.flush()
        resumed.put_back()


def _remove_unused_run_dir(run_dir: Path) -> None:
    """A run that stopped before its first step leaves no folder behind, but only if
    the folder holds nothing except what Hydra wrote when it started this job."""
    hydra_only = {".hydra", "train.log", run_folder.LOCK_FILE}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_only:
        for handler in logging.getLogger().handlers:
            handler.flush()
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in (run_dir.parent, run_dir.parent.parent):  # runs/<model>/, then runs/
            if parent.is_dir() and not os.listdir(parent):
                parent.rmdir()
