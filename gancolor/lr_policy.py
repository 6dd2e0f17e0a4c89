"""trainer.lr_policy: how the learning rates move over a run, with the policies of
pytorch-CycleGAN-and-pix2pix (its --lr_policy and the options that go with it).

    linear   constant, then a linear decay to 0 over the last lr_decay_epochs (its
             n_epochs / n_epochs_decay, counted within max_epochs)
    step     x lr_step_gamma every lr_decay_iters epochs
    plateau  x0.2 once trainer.monitor has not improved by 1 % for 5 validations
    cosine   half a cosine from the recipe's learning rate to 0 over max_epochs

Every optimiser of a recipe gets a scheduler of the one policy; the trainer steps them
once an epoch and saves them in every checkpoint.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable

import torch

from gancolor.errors import ConfigError

POLICIES = ("linear", "step", "plateau", "cosine")


class LRPolicy:
    def __init__(
        self,
        name: str = "linear",
        max_epochs: int = 1,
        decay_epochs: int = 0,
        decay_iters: int = 50,
        step_gamma: float = 0.1,
        monitor_mode: str = "max",
        validates: bool = True,
    ) -> None:
        if name not in POLICIES:
            raise ConfigError(f"trainer.lr_policy must be one of {', '.join(POLICIES)}, got {name!r}")
        if name == "linear" and decay_epochs > max_epochs:
            raise ConfigError(f"trainer.lr_decay_epochs ({decay_epochs}) exceeds trainer.max_epochs ({max_epochs})")
        if isinstance(step_gamma, bool) or not isinstance(step_gamma, (int, float)) or not step_gamma > 0:
            raise ConfigError(f"trainer.lr_step_gamma must be a number > 0, got {step_gamma!r}")
        if name == "plateau" and not validates:
            raise ConfigError("trainer.lr_policy=plateau follows trainer.monitor: it needs trainer.val_every_n_epochs >= 1")
        self.name, self.max_epochs, self.monitor_mode = name, max_epochs, monitor_mode
        self.decay_epochs, self.decay_iters, self.step_gamma = decay_epochs, decay_iters, float(step_gamma)

    def factor(self, epoch: int) -> float:
        """The learning rate of `epoch` (from 0) over the recipe's, for the policies
        that count epochs (all but plateau)."""
        if self.name == "step":
            return self.step_gamma ** (epoch // self.decay_iters)
        if self.name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * epoch / self.max_epochs))
        if self.decay_epochs == 0:
            return 1.0
        decay_start = self.max_epochs - self.decay_epochs
        return 1.0 - max(0, epoch - decay_start + 1) / (self.decay_epochs + 1)

    def scheduler(self, optimizer: torch.optim.Optimizer):
        if self.name == "plateau":
            # The reference's values.
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=self.monitor_mode, factor=0.2, threshold=0.01, patience=5
            )
        # A function of the epoch, not a state of its own: a resume that extends
        # max_epochs stretches the schedule to the new end.
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)

    def reapply(self, schedulers: Iterable) -> None:
        """On resume: the learning rate of the epoch each schedule stands in, from this
        run's policy. Unchanged settings give back exactly the saved rates; a raised
        max_epochs moves a decay (linear, cosine) to the new end from here on, instead
        of training on at the rate the old end had reached (0 after a finished decay).
        The plateau policy's rate is its own state, already restored."""
        if self.name == "plateau":
            return
        for scheduler in schedulers:
            rates = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
            for group, rate in zip(scheduler.optimizer.param_groups, rates):
                group["lr"] = rate
            scheduler._last_lr = rates  # what LambdaLR itself keeps after a step

    def step(self, schedulers: Iterable, monitored: float | None) -> None:
        """At the end of every epoch; `monitored` is the epoch's value of
        trainer.monitor, None when it was not validated (plateau then waits)."""
        with warnings.catch_warnings():
            # Schedules count epochs; an optimiser idle in this phase (D during
            # pretraining) still moves along its schedule, which torch warns about.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            for scheduler in schedulers:
                if self.name != "plateau":
                    scheduler.step()
                elif monitored is not None:
                    scheduler.step(monitored)
