"""The one training loop, for every recipe.

It owns what recipes must not: the device, precision (autocast, and a GradScaler for
fp16), the phase schedule (generator pretraining on a pixel loss, then the
adversarial alternation), freezing the nets a step names, LR schedules, validation
with the shared metric functions, sample grids, checkpoints and logging.

Losses stay on the device during an iteration; they are read back (one host sync)
only every `log_every_n_steps` iterations.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from gancolor.checkpoint import atomic_save, make_checkpoint
from gancolor.color import gray_to_rgb, lab_normalized_to_rgb
from gancolor.data import lab_batch
from gancolor.errors import ConfigError
from gancolor.loggers import Logger
from gancolor.metrics import image_metrics, summarize
from gancolor.models.base import Recipe, Step

log = logging.getLogger("gancolor.trainer")

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}
PHASES = ("pretrain", "adversarial")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available on this machine")
    return device


def _int_at_least(name: str, value, minimum: int) -> int:
    try:
        ivalue = int(value)
        if ivalue != value and not (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if ivalue < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {ivalue}")
    return ivalue


@contextlib.contextmanager
def frozen(recipe: nn.Module, names: Iterable[str]):
    """Hold the named nets fixed: gradients still flow *through* them to the nets
    being trained, but none accumulate in their parameters (the G step against D)."""
    params = [p for name in names for p in getattr(recipe, name).parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class Trainer:
    def __init__(
        self,
        max_epochs: int = 20,
        pretrain_epochs: int = 0,
        max_steps: int | None = None,
        precision: str = "32",
        device: str = "auto",
        log_every_n_steps: int = 10,
        val_every_n_epochs: int = 1,
        num_samples: int = 8,
        lr_decay_epochs: int = 0,
        save_every_n_epochs: int = 1,
        progress_bar: bool = True,
        channels_last: bool = False,
    ) -> None:
        self.max_epochs = _int_at_least("trainer.max_epochs", max_epochs, 1)
        self.pretrain_epochs = _int_at_least("trainer.pretrain_epochs", pretrain_epochs, 0)
        self.max_steps = None if max_steps is None else _int_at_least("trainer.max_steps", max_steps, 1)
        if str(precision) not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = str(precision)
        self.device_name = str(device)
        self.log_every_n_steps = _int_at_least("trainer.log_every_n_steps", log_every_n_steps, 1)
        self.val_every_n_epochs = _int_at_least("trainer.val_every_n_epochs", val_every_n_epochs, 0)
        self.num_samples = _int_at_least("trainer.num_samples", num_samples, 0)
        self.lr_decay_epochs = _int_at_least("trainer.lr_decay_epochs", lr_decay_epochs, 0)
        if self.lr_decay_epochs > self.max_epochs:
            raise ConfigError(
                f"trainer.lr_decay_epochs ({self.lr_decay_epochs}) exceeds trainer.max_epochs ({self.max_epochs})"
            )
        self.save_every_n_epochs = _int_at_least("trainer.save_every_n_epochs", save_every_n_epochs, 0)
        self.progress_bar = bool(progress_bar)
        self.channels_last = bool(channels_last)
        self.device = resolve_device(self.device_name)
        self.global_step = 0
        self.epoch = 0

    # -- schedule ---------------------------------------------------------------------
    def phase(self, epoch: int) -> str:
        return "pretrain" if epoch < self.pretrain_epochs else "adversarial"

    def lr_factor(self, epoch: int) -> float:
        """Constant, then linear decay to 0 over the last lr_decay_epochs (the
        reference's n_epochs / n_epochs_decay policy, counted within max_epochs)."""
        if self.lr_decay_epochs == 0:
            return 1.0
        decay_start = self.max_epochs - self.lr_decay_epochs
        return 1.0 - max(0, epoch - decay_start + 1) / (self.lr_decay_epochs + 1)

    def autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    # -- the loop ---------------------------------------------------------------------
    def setup(self, recipe: Recipe) -> None:
        """Put the recipe on its device and create optimisers, schedules and the scaler."""
        self.recipe = recipe
        recipe.to(self.device)
        if self.channels_last:
            recipe.to(memory_format=torch.channels_last)
        self.optimizers = recipe.configure_optimizers()
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor) for name, opt in self.optimizers.items()
        }
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16-mixed")

    def fit(self, recipe: Recipe, data, run_dir: str | Path, logger: Logger, config: dict) -> dict[str, float]:
        self.run_dir = Path(run_dir)
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
        self.recipe, self.data, self.logger, self.config = recipe, data, logger, config

        self.setup(recipe)
        train_loader = data.train_loader()
        val_loader = data.val_loader() if self.val_every_n_epochs else None
        log.info(
            "training %s on %s (%s precision): %d train / %d val images, %d steps per epoch, run folder %s",
            recipe.name, self.device, self.precision, data.train_size, data.val_size, len(train_loader), self.run_dir,
        )

        last_metrics: dict[str, float] = {}
        for epoch in range(self.epoch, self.max_epochs):
            self.epoch = epoch
            phase = self.phase(epoch)
            finished = self.train_epoch(train_loader, phase, epoch)
            for scheduler in self.schedulers.values():
                scheduler.step()
            validate = self.val_every_n_epochs and ((epoch + 1) % self.val_every_n_epochs == 0 or finished or epoch + 1 == self.max_epochs)
            if val_loader is not None and validate:
                last_metrics = self.validate(val_loader, epoch)
            self.epoch = epoch + 1
            if finished or self.epoch == self.max_epochs or (self.save_every_n_epochs and self.epoch % self.save_every_n_epochs == 0):
                self.save(self.run_dir / "checkpoints" / "last.pt", phase)
            if finished:
                break
        log.info("done: %d steps, %d epochs; checkpoint %s", self.global_step, self.epoch, self.run_dir / "checkpoints" / "last.pt")
        return last_metrics

    def train_epoch(self, loader, phase: str, epoch: int) -> bool:
        """One pass over the training set. Returns True when max_steps is reached."""
        recipe = self.recipe
        recipe.train()
        steps: list[Step] = recipe.pretrain_steps() if phase == "pretrain" else recipe.adversarial_steps()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        count, images, tick = 0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"{phase} {epoch + 1}/{self.max_epochs}", disable=not self.progress_bar, leave=False, dynamic_ncols=True)
        for iteration, raw in enumerate(bar):
            batch = self.data.device_batch(raw, self.device)
            if self.channels_last:
                batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
            logs = self.train_iteration(steps, batch, iteration)
            for key, value in logs.items():
                sums[key] += value.float()
            count += 1
            images += len(raw["path"])
            self.global_step += 1
            if self.global_step % self.log_every_n_steps == 0:
                elapsed = time.perf_counter() - tick
                means = {f"train/{k}": float(v) / count for k, v in sums.items()}  # the one sync per interval
                means.update({f"lr/{k}": opt.param_groups[0]["lr"] for k, opt in self.optimizers.items()})
                means.update({"train/images_per_sec": images / max(elapsed, 1e-9), "epoch": epoch, "phase": PHASES.index(phase)})
                self.logger.log_metrics(means, step=self.global_step)
                bar.set_postfix({k.split("/", 1)[1]: f"{v:.3g}" for k, v in means.items() if k.startswith("train/")})
                sums.clear()
                count, images, tick = 0, 0, time.perf_counter()
            if self.max_steps is not None and self.global_step >= self.max_steps:
                bar.close()
                return True
        bar.close()
        return False

    def train_iteration(self, steps: list[Step], batch: dict, iteration: int) -> dict[str, torch.Tensor]:
        state: dict = {}
        logs: dict[str, torch.Tensor] = {}
        for step in steps:
            if iteration % step.every:
                continue
            optimizer = self.optimizers[step.optimizer]
            with frozen(self.recipe, step.frozen):
                with self.autocast():
                    loss, values = step.fn(batch, state)
                optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(optimizer)
            logs.update({f"{step.name}/{k}": v for k, v in values.items()})
        self.scaler.update()
        return logs

    # -- validation -------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, loader, epoch: int) -> dict[str, float]:
        self.recipe.eval()
        per_image: dict[str, list[torch.Tensor]] = defaultdict(list)
        rows: list[torch.Tensor] = []
        for batch in loader:
            L, ab = lab_batch(batch, self.device)
            with self.autocast():
                fake_ab = self.recipe.colorize(L)
            pred = lab_normalized_to_rgb(L, fake_ab.float())
            truth = lab_normalized_to_rgb(L, ab)
            for name, values in image_metrics(pred, truth).items():
                per_image[name].append(values.cpu())
            for i in range(min(L.shape[0], self.num_samples - len(rows) // 3)):
                rows += [gray_to_rgb(L[i : i + 1])[0].cpu(), pred[i].cpu(), truth[i].cpu()]
        self.recipe.train()
        metrics = {f"val/{k}": v for k, v in summarize(per_image).items()}
        self.logger.log_metrics({**metrics, "epoch": epoch}, step=self.global_step)
        if rows:
            path = self.save_samples(rows, epoch)
            self.logger.log_image("val/samples", path, step=self.global_step, caption="gray | generated | truth")
        log.info(
            "epoch %d: val psnr %.2f dB, ssim %.3f, mae %.4f, colourfulness ratio %.2f",
            epoch + 1, metrics["val/psnr"], metrics["val/ssim"], metrics["val/mae"], metrics["val/colorfulness_ratio"],
        )
        return metrics

    def save_samples(self, rows: list[torch.Tensor], epoch: int) -> Path:
        from torchvision.utils import save_image  # imported late: only validation needs it

        path = self.run_dir / "samples" / f"epoch_{epoch + 1:04d}.png"
        save_image(torch.stack(rows), path, nrow=3, padding=2, pad_value=1.0)
        return path

    # -- checkpoints ------------------------------------------------------------------
    def save(self, path: Path, phase: str) -> Path:
        ckpt = make_checkpoint(
            self.config,
            recipe=self.recipe.name,
            nets=self.recipe.state_dict(),
            optimizers={k: opt.state_dict() for k, opt in self.optimizers.items()},
            schedulers={k: s.state_dict() for k, s in self.schedulers.items()},
            scaler=self.scaler.state_dict(),
            global_step=self.global_step,
            epoch=self.epoch,
            phase=phase,
        )
        atomic_save(ckpt, path)
        return path


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
