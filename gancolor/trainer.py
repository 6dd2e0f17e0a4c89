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
import re
import signal
import threading
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from gancolor import distributed
from gancolor.checkpoint import CheckpointFolder, capture_rng, load_nets, make_checkpoint, restore_rng
from gancolor.color import gray_to_rgb, lab_normalized_to_rgb
from gancolor.data import lab_batch
from gancolor.errors import CheckpointError, ConfigError
from gancolor.loggers import Logger
from gancolor.metrics import image_metrics, summarize
from gancolor.models.base import Recipe, Step

log = logging.getLogger("gancolor.trainer")

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}
PHASES = ("pretrain", "critic", "adversarial")


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
        critic_pretrain_epochs: int = 0,
        freeze_epochs: dict[str, int] | None = None,
        max_steps: int | None = None,
        precision: str = "32",
        device: str = "auto",
        log_every_n_steps: int = 10,
        val_every_n_epochs: int = 1,
        num_samples: int = 8,
        lr_decay_epochs: int = 0,
        save_every_n_epochs: int = 1,
        save_every_n_steps: int = 0,
        keep_last: int = 1,
        monitor: str = "val/psnr",
        monitor_mode: str = "max",
        progress_bar: bool = True,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
        cudnn_benchmark: bool = True,
        strategy: str = "auto",
        sync_batchnorm: bool = False,
        find_unused_parameters: bool = False,
        check_ranks_agree: bool = False,
    ) -> None:
        self.max_epochs = _int_at_least("trainer.max_epochs", max_epochs, 1)
        self.pretrain_epochs = _int_at_least("trainer.pretrain_epochs", pretrain_epochs, 0)
        self.critic_pretrain_epochs = _int_at_least("trainer.critic_pretrain_epochs", critic_pretrain_epochs, 0)
        self.freeze_epochs = {str(k): _int_at_least(f"trainer.freeze_epochs.{k}", v, 0) for k, v in (freeze_epochs or {}).items()}
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
        self.save_every_n_steps = _int_at_least("trainer.save_every_n_steps", save_every_n_steps, 0)
        self.keep_last = _int_at_least("trainer.keep_last", keep_last, 1)
        if not str(monitor).startswith("val/"):
            raise ConfigError(f"trainer.monitor must name a validation metric such as val/psnr, got {monitor!r}")
        if monitor_mode not in ("max", "min"):
            raise ConfigError(f"trainer.monitor_mode must be max or min, got {monitor_mode!r}")
        self.monitor, self.monitor_mode = str(monitor), monitor_mode
        self.progress_bar = bool(progress_bar)
        self.channels_last = bool(channels_last)
        if strategy not in ("auto", "single", "ddp"):
            raise ConfigError(f"trainer.strategy must be auto, single or ddp, got {strategy!r}")
        if strategy == "single" and distributed.launched_by_torchrun():
            raise ConfigError("trainer.strategy=single but torchrun started several processes; use trainer=ddp")
        self.ddp = distributed.active()
        self.sync_batchnorm = bool(sync_batchnorm)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.check_ranks_agree = bool(check_ranks_agree)
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        if self.ddp and self.device_name == "auto" and torch.cuda.is_available():
            self.device_name = f"cuda:{distributed.local_rank()}"
        self.device = resolve_device(self.device_name)
        if self.sync_batchnorm and self.device.type != "cuda":
            raise ConfigError("trainer.sync_batchnorm needs CUDA (NCCL); on CPUs leave it false")
        self.ddp_nets: dict[str, nn.Module] = {}
        if compile_mode not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ConfigError(f"trainer.compile_mode must be a torch.compile mode, got {compile_mode!r}")
        self.compile, self.compile_mode = bool(compile), compile_mode
        if self.device.type == "cuda":
            # Fixed training shapes: let cuDNN pick its fastest kernels once.
            torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
        # Where training stands; all of it goes into every checkpoint.
        self.global_step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of `epoch` already trained on (non-zero mid-epoch)
        self.best: float | None = None
        self.log_sums: dict[str, torch.Tensor] = {}
        self.log_counts: dict[str, int] = {}  # per key: a step with every > 1 logs less often
        self.stop_signal: int | None = None

    # -- schedule ---------------------------------------------------------------------
    def phase(self, epoch: int) -> str:
        """pretrain (G alone on a pixel loss), then critic (D alone against the frozen,
        pretrained G: DeOldify's NoGAN), then adversarial."""
        if epoch < self.pretrain_epochs:
            return "pretrain"
        if epoch < self.pretrain_epochs + self.critic_pretrain_epochs:
            return "critic"
        return "adversarial"

    def check_phases(self, recipe: Recipe) -> None:
        """Ask the recipe for the steps of every phase this schedule will run, so that a
        phase it does not have fails now, in one line, not epochs into the run."""
        self.recipe = recipe
        for phase in sorted({self.phase(e) for e in range(self.max_epochs)}, key=PHASES.index):
            try:
                self.steps_for(phase)
            except NotImplementedError as exc:
                raise ConfigError(f"{recipe.name}: {exc}") from None

    def steps_for(self, phase: str) -> list[Step]:
        return {
            "pretrain": self.recipe.pretrain_steps,
            "critic": self.recipe.critic_steps,
            "adversarial": self.recipe.adversarial_steps,
        }[phase]()

    def apply_freeze_schedule(self, epoch: int) -> None:
        """trainer.freeze_epochs {submodule: K}: hold e.g. generator.encoder fixed for the
        first K epochs (a pretrained encoder is not wrecked by a random decoder's early
        gradients), then train it (at its own learning rate, see the recipe's optimiser)."""
        with self.unwrapped():
            for path, epochs in self.freeze_epochs.items():
                try:
                    module = self.recipe.get_submodule(path)
                except AttributeError:
                    raise ConfigError(f"trainer.freeze_epochs: {self.recipe.name} has no submodule {path!r}") from None
                module.requires_grad_(epoch >= epochs)

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
        if self.compile:
            # In place (nn.Module.compile): parameter names, checkpoints and the freezing
            # of nets by attribute stay exactly as without compilation.
            for net in recipe.children():
                if any(True for _ in net.parameters()):
                    net.compile(mode=self.compile_mode)
        self.optimizers = recipe.configure_optimizers()
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor) for name, opt in self.optimizers.items()
        }
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16-mixed")

    def fit(
        self, recipe: Recipe, data, run_dir: str | Path, logger: Logger, config: dict, resume: dict | None = None
    ) -> dict[str, float]:
        """Train until max_epochs or max_steps, or until SIGTERM/SIGINT asks to stop
        (then `self.stop_signal` is set and a resumable checkpoint has been written).
        `resume` is a checkpoint to continue from exactly."""
        self.run_dir = Path(run_dir)
        self.checkpoints = CheckpointFolder(self.run_dir / "checkpoints", self.keep_last)
        self.checkpoints.folder.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
        self.recipe, self.data, self.logger, self.config = recipe, data, logger, config

        self.setup(recipe)
        if self.freeze_epochs:  # a misspelt module fails now, not epochs later
            self.apply_freeze_schedule(self.epoch)
        recipe.on_fit_start(self)
        train_loader = data.train_loader(rank=self.rank, world_size=self.world_size)
        val_loader = data.val_loader() if self.val_every_n_epochs and self.is_main else None
        if resume is not None:
            self.load_state(resume)  # after building: it restores the RNGs that building drew from
            if self.best is not None:  # a worse value after the resume must not replace it
                self.logger.log_summary({f"best/{self.monitor}": self.best})
        self.wrap_ddp()
        log.info(
            "training %s on %s (%s precision): %d train / %d val images, %d steps per epoch, run folder %s%s%s",
            recipe.name, self.device, self.precision, data.train_size, data.val_size, len(train_loader), self.run_dir,
            f"; {self.world_size} processes, effective batch {data.batch_size * self.world_size}" if self.ddp else "",
            f"; resumed at epoch {self.epoch + 1}, step {self.global_step}" if resume is not None else "",
        )

        last_metrics: dict[str, float] = {}
        with self.stop_signals():
            while self.epoch < self.max_epochs and not self.reached_max_steps():
                epoch, phase = self.epoch, self.phase(self.epoch)
                self.apply_freeze_schedule(epoch)
                train_loader.sampler.set_epoch(epoch, start=self.batch_in_epoch * data.batch_size)
                if not self.train_epoch(train_loader, phase, epoch):
                    self.save(phase)  # stopped by a signal, mid-epoch
                    return last_metrics
                # The epoch is over (or max_steps hit inside it: then it ends there).
                with warnings.catch_warnings():
                    # Schedules count epochs; an optimiser idle in this phase (D during
                    # pretraining) still moves along its schedule, which torch warns about.
                    warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                    for scheduler in self.schedulers.values():
                        scheduler.step()
                self.epoch, self.batch_in_epoch = epoch + 1, 0
                last = self.epoch == self.max_epochs or self.reached_max_steps()
                improved = False
                if self.val_every_n_epochs and (self.epoch % self.val_every_n_epochs == 0 or last):
                    # Rank 0 validates; every rank needs the result to agree on saving.
                    last_metrics = self.validate(val_loader, epoch) if val_loader is not None else {}
                    last_metrics = distributed.all_gather_object(last_metrics)[0]
                    improved = self.update_best(last_metrics) if last_metrics else False
                if last or improved or (self.save_every_n_epochs and self.epoch % self.save_every_n_epochs == 0):
                    path = self.save(phase)
                    if improved and self.is_main:
                        self.checkpoints.mark_best(path)
                    self.logger.log_checkpoint(  # uploads only with logger.log_checkpoints=true
                        self.checkpoints.last,
                        aliases=["latest", f"epoch-{self.epoch}", *(["best"] if improved else [])],
                        metadata={"epoch": self.epoch, "step": self.global_step, self.monitor: last_metrics.get(self.monitor)},
                    )
        if self.ddp and self.check_ranks_agree:
            self.assert_ranks_agree()
        log.info("done: %d steps, %d epochs; checkpoint %s", self.global_step, self.epoch, self.checkpoints.last)
        return last_metrics

    def reached_max_steps(self) -> bool:
        return self.max_steps is not None and self.global_step >= self.max_steps

    def train_epoch(self, loader, phase: str, epoch: int) -> bool:
        """Train on the rest of the epoch. False when a stop signal cut it short."""
        recipe = self.recipe
        recipe.train()
        steps = self.steps_for(phase)
        total = self.batch_in_epoch + len(loader)
        images, tick = 0, time.perf_counter()
        bar = tqdm(loader, desc=f"{phase} {epoch + 1}/{self.max_epochs}", initial=self.batch_in_epoch, total=total,
                   disable=not self.progress_bar, leave=False, dynamic_ncols=True)
        try:
            for raw in bar:
                batch = self.data.device_batch(raw, self.device)
                if self.channels_last:
                    batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
                # The global step decides steps with every > 1 (StarGAN's n_critic): it
                # runs across epoch boundaries and is restored on resume.
                logs = self.train_iteration(steps, batch, self.global_step)
                self.accumulate(logs)
                images += len(raw["path"])
                self.global_step += 1
                self.batch_in_epoch += 1
                if self.global_step % self.log_every_n_steps == 0:
                    means = self.flush_logs(epoch, phase, images / max(time.perf_counter() - tick, 1e-9))
                    bar.set_postfix({k.split("/", 1)[1]: f"{v:.3g}" for k, v in means.items() if k.startswith("train/")})
                    images, tick = 0, time.perf_counter()
                if self.stop_requested():
                    return False
                if self.reached_max_steps():
                    return True
                # A periodic save on an epoch's last batch is left to the epoch-end save
                # just after it, so the two never disagree about where the epoch ended.
                if self.save_every_n_steps and self.global_step % self.save_every_n_steps == 0 and self.batch_in_epoch < total:
                    self.save(phase)
        except Exception:
            # Ctrl-C also reaches DataLoader workers, which then die: the next fetch
            # fails. With a stop requested that is expected; save instead of crashing.
            if self.stop_signal is None:
                raise
            return False
        finally:
            bar.close()
        return not self.stop_requested()

    def train_iteration(self, steps: list[Step], batch: dict, iteration: int) -> dict[str, torch.Tensor]:
        state: dict = {}
        logs: dict[str, torch.Tensor] = {}
        for step in steps:
            if (iteration + 1) % step.every:
                continue
            optimizer = self.optimizers[step.optimizer]
            with self.holding(step.frozen):
                with self.autocast():
                    loss, values = step.fn(batch, state)
                optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(optimizer)
            logs.update({f"{step.name}/{k}": v for k, v in values.items()})
        self.scaler.update()
        return logs

    # -- logging ----------------------------------------------------------------------
    def accumulate(self, logs: dict[str, torch.Tensor]) -> None:
        """Sum losses on the device; no host sync until the next log interval."""
        for key, value in logs.items():
            value = value.detach().float()
            self.log_sums[key] = self.log_sums[key] + value if key in self.log_sums else value.clone()
            self.log_counts[key] = self.log_counts.get(key, 0) + 1

    def flush_logs(self, epoch: int, phase: str, images_per_sec: float) -> dict[str, float]:
        means = {f"train/{k}": float(v) / self.log_counts[k] for k, v in self.log_sums.items()}  # the one sync
        means.update({f"lr/{k}": opt.param_groups[0]["lr"] for k, opt in self.optimizers.items()})
        # Epochs are numbered from 1 in logs, as in train.log and samples/epoch_NNNN.png.
        means.update({"train/images_per_sec": images_per_sec, "epoch": epoch + 1, "phase": PHASES.index(phase)})
        self.logger.log_metrics(means, step=self.global_step)
        self.log_sums, self.log_counts = {}, {}
        return means

    # -- several processes ------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap_ddp(self) -> None:
        """Wrap each of the recipe's trainable nets in DistributedDataParallel.

        The recipe keeps calling self.generator(...); the trainer swaps the attribute for
        its wrapper. Checkpoints and frozen steps see the plain nets (`unwrapped`).
        """
        if not self.ddp:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        # DDP only ever synchronises the parameters that required grad when it was built,
        # so build it with everything trainable and freeze again afterwards. A net with
        # frozen parts (freeze_epochs) has parameters without gradients in some steps,
        # which DDP only tolerates when it looks for them.
        find_unused = self.find_unused_parameters or bool(self.freeze_epochs)
        flags = {p: p.requires_grad for p in self.recipe.parameters()}
        self.recipe.requires_grad_(True)
        try:
            for name, net in list(self.recipe.named_children()):
                if not any(True for _ in net.parameters()):
                    continue
                if self.sync_batchnorm:
                    net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.ddp_nets[name] = DDP(net, device_ids=ids, find_unused_parameters=find_unused)
                setattr(self.recipe, name, self.ddp_nets[name])
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)

    @contextlib.contextmanager
    def unwrapped(self, names: Iterable[str] | None = None):
        """The plain nets in place of their DDP wrappers, for the duration."""
        names = [n for n in (self.ddp_nets if names is None else names) if n in self.ddp_nets]
        for name in names:
            setattr(self.recipe, name, self.ddp_nets[name].module)
        try:
            yield
        finally:
            for name in names:
                setattr(self.recipe, name, self.ddp_nets[name])

    @contextlib.contextmanager
    def holding(self, names: Iterable[str]):
        """Freeze the named nets for one step. Under DDP they are also called unwrapped:
        a wrapped net that gets no gradients would leave DDP waiting for them."""
        names = tuple(names)
        with self.unwrapped(names), frozen(self.recipe, names):
            yield

    def assert_ranks_agree(self) -> None:
        """Every rank must end with the same weights; say so in the log, or fail."""
        with self.unwrapped():
            checksum = float(sum(p.detach().double().sum() for p in self.recipe.parameters()))
        sums = distributed.all_gather_object(checksum)
        if max(sums) - min(sums) > 1e-9 * max(1.0, abs(sums[0])):
            raise RuntimeError(f"DDP ranks disagree on the weights: checksums {sums}")
        log.info("all %d ranks hold identical weights (checksum %.10g)", self.world_size, checksum)

    def stop_requested(self) -> bool:
        """A signal reached this process (or, under DDP, any rank): stop at this step."""
        if self.ddp:
            stop = distributed.any_rank(self.stop_signal is not None, self.device)
            if stop and self.stop_signal is None:
                self.stop_signal = signal.SIGTERM
            return stop
        return self.stop_signal is not None

    # -- stopping on signals ------------------------------------------------------------
    @contextlib.contextmanager
    def stop_signals(self):
        """SIGTERM (cluster preemption) and SIGINT (Ctrl-C) ask for a checkpoint at the
        next step boundary and a clean exit; a second Ctrl-C aborts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            if self.stop_signal == signal.SIGINT and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_signal = signum
            log.warning("%s received: saving a checkpoint at the end of this step", signal.Signals(signum).name)

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- validation -------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, loader, epoch: int) -> dict[str, float]:
        with self.unwrapped():  # rank 0 alone: no DDP collectives in its forward passes
            return self._validate(loader, epoch)

    def _validate(self, loader, epoch: int) -> dict[str, float]:
        self.recipe.eval()
        per_image: dict[str, list[torch.Tensor]] = defaultdict(list)
        rows: list[torch.Tensor] = []
        table: list[dict] = []  # the sample images with their own metrics (a W&B Table)
        for batch in loader:
            L, ab = lab_batch(batch, self.device)
            with self.autocast():
                fake_ab = self.recipe.colorize(L)
            pred = lab_normalized_to_rgb(L, fake_ab.float())
            truth = lab_normalized_to_rgb(L, ab)
            values = {name: v.cpu() for name, v in image_metrics(pred, truth).items()}
            for name, v in values.items():
                per_image[name].append(v)
            for i in range(min(L.shape[0], self.num_samples - len(rows) // 3)):
                gray = gray_to_rgb(L[i : i + 1])[0].cpu()
                rows += [gray, pred[i].cpu(), truth[i].cpu()]
                table.append({"gray": gray, "generated": pred[i].cpu(), "truth": truth[i].cpu(),
                              **{name: float(v[i]) for name, v in values.items() if v.dim() == 1}})
        self.recipe.train()
        metrics = {f"val/{k}": v for k, v in summarize(per_image).items()}
        self.logger.log_metrics({**metrics, "epoch": epoch + 1}, step=self.global_step)
        if rows:
            path = self.save_samples(rows, epoch)
            self.logger.log_image("val/samples", path, step=self.global_step, caption="gray | generated | truth")
            self.logger.log_validation_table(table, step=self.global_step)
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
    def update_best(self, metrics: dict[str, float]) -> bool:
        if self.monitor not in metrics:
            raise ConfigError(
                f"trainer.monitor={self.monitor} is not a validation metric; "
                f"choose one of {', '.join(sorted(metrics))}"
            )
        value = metrics[self.monitor]
        better = self.best is None or (value > self.best if self.monitor_mode == "max" else value < self.best)
        if better:
            self.best = value
        return better

    def state(self, phase: str) -> dict:
        return make_checkpoint(
            self.config,
            recipe=self.recipe.name,
            nets=self.recipe.state_dict(),
            optimizers={k: opt.state_dict() for k, opt in self.optimizers.items()},
            schedulers={k: s.state_dict() for k, s in self.schedulers.items()},
            scaler=self.scaler.state_dict(),
            global_step=self.global_step,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            phase=phase,
            best={"monitor": self.monitor, "mode": self.monitor_mode, "value": self.best},
            log_sums=dict(self.log_sums),
            log_counts=dict(self.log_counts),
            rng=distributed.all_gather_object(capture_rng()),  # one entry per rank
            logger_run_id=getattr(self.logger, "run_id", None),
        )

    def save(self, phase: str) -> Path:
        """Every rank takes part (RNG states are gathered); rank 0 writes; all wait for it."""
        with self.unwrapped():
            state = self.state(phase)
        path = self.checkpoints.save(state) if self.is_main else self.checkpoints.last
        distributed.barrier()
        return path

    def load_state(self, ckpt: dict) -> None:
        """Continue exactly where `ckpt` stopped (after `setup`)."""
        if ckpt.get("recipe") != self.recipe.name:
            raise CheckpointError(f"cannot resume a {ckpt.get('recipe')} checkpoint with recipe {self.recipe.name}")
        load_nets(self.recipe, ckpt["nets"], "resume checkpoint")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(ckpt["schedulers"][name])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.global_step, self.epoch = ckpt["global_step"], ckpt["epoch"]
        self.batch_in_epoch = ckpt.get("batch_in_epoch", 0)
        self.best = ckpt.get("best", {}).get("value")
        self.log_sums = {k: v.to(self.device) for k, v in ckpt.get("log_sums", {}).items()}
        self.log_counts = dict(ckpt.get("log_counts", {}))
        rng = ckpt["rng"]
        if isinstance(rng, list):  # one state per rank of the run that saved it
            if len(rng) != self.world_size:
                log.warning("the checkpoint has RNG states of %d processes, this run has %d: "
                            "the continuation is not bit-exact", len(rng), self.world_size)
            rng = rng[self.rank % len(rng)]
        restore_rng(rng)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
