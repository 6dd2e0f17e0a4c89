"""The one training loop, for every recipe.

It owns what recipes must not: the device, precision (autocast, and a GradScaler for
fp16), the phase schedule (generator pretraining on a pixel loss, then the
adversarial alternation), freezing the nets a step names, LR schedules, validation
with the shared metric functions, sample grids, checkpoints and logging. The parts
with a job of their own live next door: validation.py, checkpoint.py (trainer
state), distributed.py (DDP wrappers), stopping.py (signals), device.py,
lr_policy.py (trainer.lr_policy).

Losses stay on the device during an iteration; they are read back (one host sync)
only every `log_every_n_steps` iterations.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gancolor import distributed
from gancolor.checkpoint import CheckpointFolder, preserved_rng, restore_trainer_state, trainer_state
from gancolor.device import PRECISIONS, autocast, check_precision, resolve_device
from gancolor.ema import GeneratorEMA
from gancolor.errors import ConfigError
from gancolor.faults import KeepLogging, NonFiniteWatch, TrainingDiverged, checkpoint_write_error
from gancolor.loggers import Logger
from gancolor.lr_policy import LRPolicy
from gancolor.models.base import Recipe, Step
from gancolor.options import bool_option, int_option
from gancolor.stopping import StopRequest
from gancolor.validation import metric_names as validation_metric_names
from gancolor.validation import validate

log = logging.getLogger("gancolor.trainer")

PHASES = ("pretrain", "critic", "adversarial")
# Why a run can have no validation images: a train/ + val/ layout splits by its folders,
# any other by data.val_fraction.
NO_VALIDATION_CAUSES = "an empty val/ folder beside train/, data.val_fraction=0, or too few photos"



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
        lr_policy: str = "linear",
        lr_decay_epochs: int | None = 0,
        lr_decay_iters: int = 50,
        lr_step_gamma: float = 0.1,
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
        on_nonfinite: str = "stop",
        max_skipped_steps: int = 10,
        val_use_ema: bool = True,
    ) -> None:
        self.max_epochs = int_option("trainer.max_epochs", max_epochs, 1)
        self.pretrain_epochs = int_option("trainer.pretrain_epochs", pretrain_epochs, 0)
        self.critic_pretrain_epochs = int_option("trainer.critic_pretrain_epochs", critic_pretrain_epochs, 0)
        if not isinstance(freeze_epochs, (Mapping, type(None))):
            raise ConfigError(f"trainer.freeze_epochs must map parts to epochs, e.g. '{{encoder: 2}}', got {freeze_epochs!r}")
        self.freeze_epochs = {str(k): int_option(f"trainer.freeze_epochs.{k}", v, 0) for k, v in (freeze_epochs or {}).items()}
        self.max_steps = None if max_steps is None else int_option("trainer.max_steps", max_steps, 1)
        self.precision = check_precision(precision, "trainer.precision", PRECISIONS)
        self.device_name = str(device)
        self.log_every_n_steps = int_option("trainer.log_every_n_steps", log_every_n_steps, 1)
        self.val_every_n_epochs = int_option("trainer.val_every_n_epochs", val_every_n_epochs, 0)
        self.num_samples = int_option("trainer.num_samples", num_samples, 0)
        self.save_every_n_epochs = int_option("trainer.save_every_n_epochs", save_every_n_epochs, 0)
        self.save_every_n_steps = int_option("trainer.save_every_n_steps", save_every_n_steps, 0)
        self.keep_last = int_option("trainer.keep_last", keep_last, 1)
        if str(monitor) not in validation_metric_names():  # said now, not after the first epoch
            raise ConfigError(f"trainer.monitor={monitor} is not a validation metric; choose one of "
                              f"{', '.join(sorted(validation_metric_names()))}")
        if monitor_mode not in ("max", "min"):
            raise ConfigError(f"trainer.monitor_mode must be max or min, got {monitor_mode!r}")
        self.monitor, self.monitor_mode = str(monitor), monitor_mode
        decay_epochs = int_option("trainer.lr_decay_epochs", lr_decay_epochs, 0, allow_none=True)
        if decay_epochs is None:
            # The reference's n_epochs_decay = n_epochs (CycleGAN 100 + 100, StarGAN's paper
            # too): the second half of whatever max_epochs this run has, a resume's raised one too.
            decay_epochs = self.max_epochs // 2
        self.lr_policy = LRPolicy(
            lr_policy, self.max_epochs, decay_epochs,
            int_option("trainer.lr_decay_iters", lr_decay_iters, 1), lr_step_gamma, monitor_mode,
            validates=self.val_every_n_epochs > 0,
        )
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
        if on_nonfinite not in ("stop", "skip_step"):
            raise ConfigError(f"trainer.on_nonfinite must be stop or skip_step, got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.max_skipped_steps = int_option("trainer.max_skipped_steps", max_skipped_steps, 1)
        self.val_use_ema = bool_option("trainer.val_use_ema", val_use_ema)
        self.ema: GeneratorEMA | None = None  # model.ema_decay: made in setup
        self.ema_optimizers: frozenset[str] = frozenset()
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        if self.ddp and self.device_name == "auto" and torch.cuda.is_available():
            self.device_name = f"cuda:{distributed.local_rank()}"
        self.device = resolve_device(self.device_name, "trainer.device")
        if self.sync_batchnorm and self.device.type != "cuda":
            raise ConfigError("trainer.sync_batchnorm needs CUDA (NCCL); on CPUs leave it false")
        if compile_mode not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ConfigError(f"trainer.compile_mode must be a torch.compile mode, got {compile_mode!r}")
        self.compile, self.compile_mode = bool(compile), compile_mode
        if self.device.type == "cuda":
            # Fixed training shapes: let cuDNN pick its fastest kernels once.
            torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
            # What still runs in float32 (all of precision=32, the parts autocast keeps in
            # fp32) may use TF32 tensor cores: GAN training does not need fp32's last bits.
            torch.set_float32_matmul_precision("high")
        # Where training stands; all of it goes into every checkpoint.
        self.global_step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of `epoch` already trained on (non-zero mid-epoch)
        self.best: float | None = None
        self.log_sums: dict[str, torch.Tensor] = {}
        self.log_counts: dict[str, int] = {}  # per key: a step with every > 1 logs less often
        self.data_wait = 0.0  # seconds the host waited for batches since the last log step
        self.stop = StopRequest()
        self.nonfinite = NonFiniteWatch()
        self.skipped_in_a_row: dict[str, int] = {}  # on_nonfinite=skip_step, per step name

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
        with self.nets.unwrapped():
            for path, epochs in self.freeze_epochs.items():
                try:
                    module = self.recipe.get_submodule(path)
                except AttributeError:
                    raise ConfigError(f"trainer.freeze_epochs: {self.recipe.name} has no submodule {path!r}") from None
                module.requires_grad_(epoch >= epochs)

    def autocast(self):
        return autocast(self.device, self.precision)

    # -- the loop ---------------------------------------------------------------------
    def setup(self, recipe: Recipe) -> None:
        """Put the recipe on its device and create optimisers, schedules and the scaler."""
        self.recipe = recipe
        recipe.to(self.device)
        if self.channels_last:
            recipe.to(memory_format=torch.channels_last)
        self.setup_ema(recipe)  # before compiling: the averaged copies stay plain modules
        self.nets = distributed.WrappedNets(recipe)
        if self.compile and not self.ddp:
            # In place (nn.Module.compile): parameter names, checkpoints and the freezing
            # of nets by attribute stay exactly as without compilation. Under DDP the
            # wrappers are compiled instead (in `fit`), so gradients still travel while
            # the backward pass runs.
            self.nets.compile(self.compile_mode, self.eager_nets(recipe))
        self.optimizers_setup(recipe)

    def eager_nets(self, recipe: Recipe) -> tuple[str, ...]:
        """The nets torch.compile must leave alone: those a step differentiates twice (a
        gradient penalty's create_graph), which compiled graphs cannot do."""
        eager = tuple(recipe.double_backward_nets())
        if eager and self.compile and self.is_main:
            log.info("trainer.compile: %s stays uncompiled (its gradient penalty needs a double backward, "
                     "which torch.compile does not support)", ", ".join(eager))
        return eager

    def optimizers_setup(self, recipe: Recipe) -> None:
        """Optimisers, LR schedules, the GradScaler, which optimisers move an EMA'd net."""
        self.optimizers = recipe.configure_optimizers()
        self.schedulers = {name: self.lr_policy.scheduler(opt) for name, opt in self.optimizers.items()}
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16-mixed")
        if self.ema is not None:
            # The optimisers that move a generator: after each of their steps, the average follows.
            generator_params = {id(p) for name in self.ema.averaged for p in getattr(recipe, name).parameters()}
            self.ema_optimizers = frozenset(
                name for name, opt in self.optimizers.items()
                if any(id(p) in generator_params for group in opt.param_groups for p in group["params"])
            )

    def setup_ema(self, recipe: Recipe) -> None:
        """model.ema_decay: averaged copies of the recipe's generators (they start equal)."""
        decay = getattr(recipe, "ema_decay", None)
        nets = {n: getattr(recipe, n) for n in recipe.generator_names()}
        self.ema = None if not decay else GeneratorEMA(nets, decay, warmup=bool(getattr(recipe, "ema_warmup", False)))

    def update_ema(self) -> None:
        self.ema.update({name: self.nets.plain(name) for name in self.ema.averaged})

    def weights_to_validate(self):
        """The generators' EMA in place of their raw weights, where there is one and
        trainer.val_use_ema (call it with the nets unwrapped)."""
        if self.ema is None or not self.val_use_ema:
            return contextlib.nullcontext()
        return self.ema.in_place_of(self.recipe)

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
        self.logger = logger if isinstance(logger, KeepLogging) else KeepLogging(logger)
        self.recipe, self.data, self.config = recipe, data, config

        self.setup(recipe)
        if self.freeze_epochs:  # a misspelt module fails now, not epochs later
            self.apply_freeze_schedule(self.epoch)
        recipe.on_fit_start(self)
        train_loader = data.train_loader(rank=self.rank, world_size=self.world_size)
        val_loader = data.val_loader() if self.validates(data) and self.is_main else None
        if resume is not None:
            restore_trainer_state(self, resume)  # after building: it restores the RNGs that building drew from
            self.lr_policy.reapply(self.schedulers.values())  # max_epochs may have been raised
            if self.best is not None:  # a worse value after the resume must not replace it
                self.logger.log_summary({f"best/{self.monitor}": self.best})
        if self.ddp:
            # A net with frozen parts (freeze_epochs) has parameters without gradients in
            # some steps, which DDP only tolerates when it looks for them.
            self.nets.wrap(self.device, self.sync_batchnorm, self.find_unused_parameters or bool(self.freeze_epochs))
            if self.compile:
                self.nets.compile(self.compile_mode, self.eager_nets(recipe))
        log.info(
            "training %s on %s (%s precision): %d train / %d val images, %d steps per epoch, run folder %s%s%s",
            recipe.name, self.device, self.precision, data.train_size, data.val_size, len(train_loader), self.run_dir,
            f"; {self.world_size} processes, effective batch {data.batch_size * self.world_size}" if self.ddp else "",
            f"; resumed at epoch {self.epoch + 1}, step {self.global_step}" if resume is not None else "",
        )

        last_metrics: dict[str, float] = {}
        with self.stop.catching_signals():
            while self.epoch < self.max_epochs and not self.reached_max_steps():
                epoch, phase = self.epoch, self.phase(self.epoch)
                self.apply_freeze_schedule(epoch)
                train_loader.sampler.set_epoch(epoch, start=self.batch_in_epoch * data.batch_size)
                epoch_done = self.train_epoch(train_loader, phase, epoch)
                if self.stop_signal is not None:
                    self.save(phase)  # mid-epoch: the resume continues this epoch
                    return last_metrics
                if not epoch_done:  # max_steps inside the epoch
                    last_metrics = self.stop_mid_epoch(epoch, phase, val_loader) or last_metrics
                    break
                last_metrics = self.end_epoch(epoch, phase, val_loader) or last_metrics
        if self.ddp and self.check_ranks_agree:
            self.nets.assert_ranks_agree()
        log.info("done: %d steps, %d epochs%s; checkpoint %s", self.global_step, self.epoch,
                 f" and {self.batch_in_epoch} steps of epoch {self.epoch + 1}" if self.batch_in_epoch else "",
                 self.checkpoints.last)
        return last_metrics

    def end_epoch(self, epoch: int, phase: str, val_loader) -> dict[str, float]:
        """Count the epoch, validate when due, step the LR schedules, save when due."""
        self.check_finite()
        self.epoch, self.batch_in_epoch = epoch + 1, 0
        last = self.epoch == self.max_epochs or self.reached_max_steps()
        due = bool(self.val_every_n_epochs) and self.epoch % self.val_every_n_epochs == 0
        metrics = self.validation_metrics(val_loader, epoch) if due or last else {}
        # Only the validations a longer run makes as well reach the plateau policy: a
        # run stopped here and resumed must continue as if it had never stopped.
        self.lr_policy.step(self.schedulers.values(), metrics.get(self.monitor) if due else None)
        periodic = bool(self.save_every_n_epochs) and self.epoch % self.save_every_n_epochs == 0
        self.checkpoint(phase, metrics, always=last or periodic, alias=f"epoch-{self.epoch}")
        return metrics

    def stop_mid_epoch(self, epoch: int, phase: str, val_loader) -> dict[str, float]:
        """max_steps reached inside an epoch: validate and save where training stands.
        The epoch does not end (no epoch count, no LR step): a resume that raises
        max_steps or max_epochs trains the rest of it, exactly as a longer run would."""
        self.check_finite()
        metrics = self.validation_metrics(val_loader, epoch, mid_epoch=True)
        self.checkpoint(phase, metrics, always=True, alias=f"step-{self.global_step}")
        return metrics

    def validation_metrics(self, val_loader, epoch: int, mid_epoch: bool = False) -> dict[str, float]:
        """The val/ metrics ({} without validation). Rank 0 validates; every rank gets
        the result, to agree on saving."""
        if not self.val_every_n_epochs:
            return {}
        metrics = validate(self, val_loader, epoch, mid_epoch) if val_loader is not None else {}
        return distributed.all_gather_object(metrics)[0]

    def checkpoint(self, phase: str, metrics: dict[str, float], always: bool, alias: str) -> None:
        """Save when `always` or when `metrics` improve on the best (then also best.pt)."""
        improved = self.update_best(metrics) if metrics else False
        if not (always or improved):
            return
        self.save(phase, best=improved)
        self.logger.log_checkpoint(  # uploads only with logger.log_checkpoints=true
            self.checkpoints.last,
            aliases=["latest", alias, *(["best"] if improved else [])],
            metadata={"epoch": self.epoch, "step": self.global_step, self.monitor: metrics.get(self.monitor)},
        )

    def validates(self, data) -> bool:
        """Whether this run validates: trainer.val_every_n_epochs > 0 and images to
        validate on (a folder of one photo, or data.val_fraction=0, has none)."""
        if not self.val_every_n_epochs:
            return False
        if data.val_size:
            return True
        if self.lr_policy.name == "plateau":
            raise ConfigError(f"trainer.lr_policy=plateau follows trainer.monitor, but there are no validation images "
                              f"({NO_VALIDATION_CAUSES}): choose another trainer.lr_policy")
        if self.is_main:
            log.warning("no validation images (%s): this run is not validated, so it "
                        "logs no val/ metrics, writes no sample grids and no best.pt; checkpoints/last.pt is saved as usual",
                        NO_VALIDATION_CAUSES)
        return False

    def reached_max_steps(self) -> bool:
        return self.max_steps is not None and self.global_step >= self.max_steps

    def train_epoch(self, loader, phase: str, epoch: int) -> bool:
        """Train on the rest of the epoch. False when a stop signal or max_steps cut it
        short (`batch_in_epoch` then says where)."""
        recipe = self.recipe
        recipe.train()
        steps = self.steps_for(phase)
        total = self.batch_in_epoch + len(loader)
        images, tick, self.data_wait = 0, time.perf_counter(), 0.0
        # A loader without a torch.Generator of its own draws a seed from torch's global RNG
        # as its iteration starts: at the epoch's start in one run, mid-epoch in a resumed
        # one. Kept out of the training's random stream, the two stay identical.
        with preserved_rng():
            batches = iter(loader)
        bar = tqdm(batches, desc=f"{phase} {epoch + 1}/{self.max_epochs}", initial=self.batch_in_epoch, total=total,
                   disable=not self.progress_bar, leave=False, dynamic_ncols=True)
        stepping = False
        try:
            for raw in self.timed(bar):
                stepping = True
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
                stepping = False
                log_step = self.global_step % self.log_every_n_steps == 0
                if log_step:
                    means = self.flush_logs(epoch, phase, images, tick)
                    bar.set_postfix({k.split("/", 1)[1]: f"{v:.3g}" for k, v in means.items() if k.startswith("train/")})
                    images, tick, self.data_wait = 0, time.perf_counter(), 0.0
                # Under DDP the ranks vote on stopping at log steps only (a vote is an
                # all-reduce the host waits for): a signal is acted on within
                # trainer.log_every_n_steps steps, on every rank at the same one.
                if self.stop_requested(vote=log_step):
                    return False
                if self.reached_max_steps():
                    return self.batch_in_epoch == total
                # A periodic save on an epoch's last batch is left to the epoch-end save
                # just after it, so the two never disagree about where the epoch ended.
                if self.save_every_n_steps and self.global_step % self.save_every_n_steps == 0 and self.batch_in_epoch < total:
                    self.save(phase)
        except Exception:
            # A fetch failing once a stop is requested (a loader worker that died of the
            # signal all the same; datamodule.init_worker has them ignore it) ends the
            # epoch where the last step did: save instead of crashing.
            # An error inside a step is raised whatever: saving then would store half a
            # step (a forward's BatchNorm statistics, one net stepped and not the other),
            # and the last checkpoint is the state to resume from.
            if self.stop_signal is None or stepping:
                raise
            return False
        finally:
            bar.close()
        return not self.stop_requested()

    def timed(self, batches):
        """The batches, adding the time the host waits for each to `self.data_wait`
        (host clocks only: no device sync)."""
        batches = iter(batches)
        while True:
            start = time.perf_counter()
            try:
                raw = next(batches)
            except StopIteration:
                return
            self.data_wait += time.perf_counter() - start
            yield raw

    def loss_scale(self):
        """The GradScaler's scale under fp16 (a device tensor once it has one: reading it
        would sync), for steps that differentiate twice (StarGAN's gradient penalty)."""
        scale = self.scaler._get_scale_async()
        return self.scaler.get_scale() if scale is None else scale  # before the first step: the initial float

    def train_iteration(self, steps: list[Step], batch: dict, iteration: int) -> dict[str, torch.Tensor]:
        state: dict = {"loss_scale": self.loss_scale()} if self.scaler.is_enabled() else {}
        logs: dict[str, torch.Tensor] = {}
        for step in steps:
            if (iteration + 1) % step.every:
                continue
            optimizer = self.optimizers[step.optimizer]
            with self.holding(step.frozen):
                with self.autocast():
                    loss, values = step.fn(batch, state)
                if self.on_nonfinite == "skip_step":
                    skipped = self.skip_if_nonfinite(step.name, loss, iteration + 1)
                    logs[f"{step.name}/skipped"] = torch.tensor(float(skipped))
                    if skipped:
                        continue
                optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(optimizer)
            if step.optimizer in self.ema_optimizers:
                self.update_ema()
            self.nonfinite.see(f"{step.name}/loss", loss, iteration + 1)
            logs.update({f"{step.name}/{k}": v for k, v in values.items()})
        self.scaler.update()
        return logs

    # -- divergence ---------------------------------------------------------------------
    def skip_if_nonfinite(self, name: str, loss: torch.Tensor, step: int) -> bool:
        """on_nonfinite=skip_step: True (drop the update) for a NaN/inf loss. The one
        mode that reads a value back every step: the update must wait for the answer."""
        if bool(torch.isfinite(loss.detach()).all()):
            self.skipped_in_a_row[name] = 0
            return False
        self.skipped_in_a_row[name] = self.skipped_in_a_row.get(name, 0) + 1
        if self.skipped_in_a_row[name] >= self.max_skipped_steps:
            raise self.diverged(f"the {name}/loss loss was {float(loss.detach()):g} in {self.max_skipped_steps} steps in a row, "
                                f"the last at step {step} (trainer.max_skipped_steps)")
        return True

    def check_finite(self, weights: bool = False) -> None:
        """Stop with TrainingDiverged if a loss (or, with `weights`, a weight) went
        NaN/inf since the last check. Called where the host reads values anyway (log
        steps) and before every validation and save, so no such state is ever saved."""
        problem = None
        first = self.nonfinite.first()
        if first is not None:
            name, step, value = first
            problem = f"the {name} loss was {value:g} at step {step}"
        elif weights:
            with self.nets.unwrapped():
                nets = {name: net for name, net in self.recipe.named_children() if any(True for _ in net.parameters())}
                finite = torch.stack([torch.stack([torch.isfinite(p).all() for p in net.parameters()]).all()
                                      for net in nets.values()]).tolist()
            bad = [name for name, ok in zip(nets, finite) if not ok]
            if bad:
                problem = f"the weights of {', '.join(bad)} are not finite at step {self.global_step}"
        # Under DDP every rank must stop together, whichever saw it.
        if self.ddp and distributed.any_rank(problem is not None, self.device) and problem is None:
            problem = f"another process saw a non-finite value by step {self.global_step}"
        if problem is not None:
            raise self.diverged(problem)

    def diverged(self, what: str) -> TrainingDiverged:
        kept = (f"{self.checkpoints.last} (saved before it) is kept" if self.checkpoints.last.is_file()
                else "no checkpoint was saved before it")
        hint = "lower the learning rate" + (", or set trainer.on_nonfinite=skip_step" if self.on_nonfinite == "stop" else "")
        return TrainingDiverged(f"training diverged: {what}; {kept}; {hint}")

    # -- logging ----------------------------------------------------------------------
    def accumulate(self, logs: dict[str, torch.Tensor]) -> None:
        """Sum losses on the device; no host sync until the next log interval."""
        for key, value in logs.items():
            value = value.detach().float()
            self.log_sums[key] = self.log_sums[key] + value if key in self.log_sums else value.clone()
            self.log_counts[key] = self.log_counts.get(key, 0) + 1

    def flush_logs(self, epoch: int, phase: str, images: int, tick: float) -> dict[str, float]:
        """Log the means since the last log step, and the speed: `images` trained on since
        `tick`, timed once the device has finished them (the loss read-back waits for
        it), and train/data_wait, the share of that time the host waited for batches."""
        self.check_finite()  # the host syncs here anyway
        means = {f"train/{k}": float(v) / self.log_counts[k] for k, v in self.log_sums.items()}  # the one sync
        if self.device.type == "cuda":  # the same sync, should no loss have been read
            torch.cuda.synchronize(self.device)
        elapsed = max(time.perf_counter() - tick, 1e-9)
        means.update({f"lr/{k}": opt.param_groups[0]["lr"] for k, opt in self.optimizers.items()})
        # Epochs are numbered from 1 in logs, as in train.log and samples/epoch_NNNN.png.
        means.update({"train/images_per_sec": images / elapsed, "train/data_wait": min(self.data_wait / elapsed, 1.0),
                      "epoch": epoch + 1, "phase": PHASES.index(phase)})
        self.logger.log_metrics(means, step=self.global_step)
        self.log_sums, self.log_counts = {}, {}
        return means

    def update_best(self, metrics: dict[str, float]) -> bool:
        value = metrics[self.monitor]  # one of validation_metric_names(), checked in __init__
        better = self.best is None or (value > self.best if self.monitor_mode == "max" else value < self.best)
        if better:
            self.best = value
        return better

    def save(self, phase: str, best: bool = False) -> Path:
        """Every rank takes part (RNG states are gathered); rank 0 writes (and, with
        `best`, points best.pt at it); all wait for it. A second Ctrl-C waits for the
        write to complete; a write the disk refuses stops the run with one line."""
        self.check_finite(weights=True)  # never a NaN state over the last good checkpoint
        with self.stop.uninterrupted():
            with self.nets.unwrapped():
                state = self.state(phase)
            path, error = self.checkpoints.last, None
            if self.is_main:
                try:
                    path = self.checkpoints.save(state)
                    if best:
                        self.checkpoints.mark_best(path)
                except OSError as exc:  # the temporary file is gone; the previous checkpoint is untouched
                    error = exc
            failed = distributed.any_rank(error is not None, self.device)  # also: all wait for rank 0
        if failed:
            hint = f"free some space, then resume with: {distributed.resume_command(self.run_dir)}"
            raise checkpoint_write_error(error or OSError("rank 0 could not write it"), self.checkpoints.folder, hint)
        return path

    def state(self, phase: str) -> dict:
        """The checkpoint of this moment (the nets must be unwrapped)."""
        return trainer_state(self, phase)

    # -- several processes, stopping --------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def holding(self, names):
        return self.nets.holding(names)

    def stop_requested(self, vote: bool = True) -> bool:
        return self.stop.requested(self.device, vote)

    @property
    def stop_signal(self) -> int | None:
        """The signal that stopped training (None when it ran to its end)."""
        return self.stop.signal
