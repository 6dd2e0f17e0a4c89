"""Training objectives, written once and shared by every recipe.

GAN objectives take the discriminator's raw output (logits, any shape) and say which
side of the game is being scored: `gan_loss(pred, target_is_real)` for the
generator and for the discriminator's real/fake halves. Pixel losses are the plain
L1 / MSE of the reference implementations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gancolor.errors import ConfigError

GAN_MODES = ("vanilla", "lsgan", "hinge")
PIXEL_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


class GANLoss(nn.Module):
    """The adversarial objective, by the names pytorch-CycleGAN-and-pix2pix uses.

    vanilla: the original cross-entropy GAN (non-saturating for G), on logits.
    lsgan:   least squares (Mao et al. 2017): real -> 1, fake -> 0.
    hinge:   Lim & Ye 2017 / SAGAN. The discriminator's terms are max(0, 1 -+ D); the
             generator's term is -D(fake), which is why `for_discriminator` matters.
    """

    def __init__(self, gan_mode: str = "vanilla") -> None:
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ConfigError(f"loss.gan_mode must be one of {', '.join(GAN_MODES)}, got {gan_mode!r}")
        self.gan_mode = gan_mode

    def forward(self, pred: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        pred = pred.float()  # the loss is reduced in fp32 whatever the autocast dtype
        if self.gan_mode == "vanilla":
            target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
            return F.binary_cross_entropy_with_logits(pred, target)
        if self.gan_mode == "lsgan":
            target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
            return F.mse_loss(pred, target)
        if not for_discriminator:  # hinge, generator side
            return -pred.mean()
        return F.relu(1.0 - pred).mean() if target_is_real else F.relu(1.0 + pred).mean()


def pixel_loss(name: str):
    """The per-pixel loss function by name: 'l1' or 'mse'."""
    try:
        return PIXEL_LOSSES[name]
    except KeyError:
        raise ConfigError(f"pixel loss must be one of {', '.join(PIXEL_LOSSES)}, got {name!r}") from None
