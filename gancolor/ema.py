"""An exponential moving average of the generators' weights (model.ema_decay).

The BasicSR / StyleGAN convention: after every optimiser step that moves a generator,

    ema = decay * ema + (1 - decay) * weights        (buffers, e.g. BatchNorm's running
                                                      statistics, are copied as they are)

The average is smoother than the last step's weights, which an adversarial game keeps
shaking, and is what validation, colorize and evaluate use where a checkpoint has it
(use_ema=false: the raw weights). It starts as a copy of the generators, so it tracks
them from the first step, generator pretraining included. The averaging itself is
torch's (AveragedModel with get_ema_multi_avg_fn); this module says which nets, when,
and how the copies go into checkpoints.

Warm-up (model.ema_warmup, on by default): the t-th update uses
min(decay, (1 + t) / (10 + t)), tf.train.ExponentialMovingAverage's num_updates rule
(timm's ModelEmaV3 warm-up does the same job). Without it, after t updates the average
still holds decay^t of the weights it started from: 0.999^400 = 67% of a net that had
taken one step, which bench/quality.py measured as grayer, blurrier colours in a short run.
With it, the decay given applies only from update (10 d - 1) / (1 - d) on (890 for 0.99,
8990 for 0.999): before that every decay above the warm-up's gives the same average, so
0.99 and 0.995 gave identical 400-step runs in bench/quality.py.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gancolor.errors import ConfigError


def ema_decay_option(value) -> float | None:
    """model.ema_decay: a number in [0, 1), where 0 (or null) turns the average off."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"model.ema_decay must be a number in [0, 1) (e.g. 0.999) or null, got {value!r}")
    try:
        decay = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"model.ema_decay must be a number in [0, 1) (e.g. 0.999) or null, got {value!r}") from None
    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"model.ema_decay must be in [0, 1) (e.g. 0.999; 0 or null: off), got {value!r}")
    return decay or None


class GeneratorEMA:
    """The averaged copies of a recipe's generators, by attribute name."""

    def __init__(self, nets: dict[str, nn.Module], decay: float, warmup: bool = False) -> None:
        self.decay, self.warmup = decay, warmup
        self._updates = 0  # counted on the host too: reading n_averaged back would sync a GPU
        self.averaged: dict[str, AveragedModel] = {}
        for name, net in nets.items():
            averaged = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
            averaged.requires_grad_(False).eval()  # never trained; always in inference mode
            self.averaged[name] = averaged

    def decay_at(self, updates: int) -> float:
        """The decay of the update after `updates` of them."""
        return min(self.decay, (1 + updates) / (10 + updates)) if self.warmup else self.decay

    def update(self, nets: dict[str, nn.Module]) -> None:
        """One averaging step towards the plain (not DDP-wrapped) nets' current weights."""
        average = get_ema_multi_avg_fn(self.decay_at(self._updates))
        for name, averaged in self.averaged.items():
            averaged.multi_avg_fn = average
            averaged.update_parameters(nets[name])
        self._updates += 1

    def nets(self) -> dict[str, nn.Module]:
        return {name: averaged.module for name, averaged in self.averaged.items()}

    @contextlib.contextmanager
    def in_place_of(self, recipe: nn.Module):
        """The averaged nets stand in for the recipe's own for the duration."""
        own = {name: getattr(recipe, name) for name in self.averaged}
        for name, net in self.nets().items():
            setattr(recipe, name, net)
        try:
            yield
        finally:
            for name, net in own.items():
                setattr(recipe, name, net)

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """{net name: its state dict}, as the recipe's own nets would give it."""
        return {name: net.state_dict() for name, net in self.nets().items()}

    def updates(self) -> int:
        """How many averaging steps were taken (all the nets take them together)."""
        return self._updates

    def set_updates(self, updates: int) -> None:
        """How many updates the restored averages have had (checkpoint.load_ema_weights
        restores their weights)."""
        self._updates = int(updates)
        for averaged in self.averaged.values():
            averaged.n_averaged.fill_(updates)
