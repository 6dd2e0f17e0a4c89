"""Training objectives, written once and shared by every recipe.

GAN objectives take the discriminator's raw output (logits, any shape) and say which
side of the game is being scored: `gan_loss(pred, target_is_real)` for the
generator and for the discriminator's real/fake halves. Pixel losses are the plain
L1 / MSE of the reference implementations. `gradient_penalty` is WGAN-GP's
Lipschitz penalty (Gulrajani et al. 2017), which StarGAN trains with, and
`attribute_bce` its multi-label domain classification.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gancolor.errors import ConfigError

GAN_MODES = ("vanilla", "lsgan", "hinge", "wgan-gp")
# A Wasserstein critic without its gradient penalty has no Lipschitz constraint and
# diverges, so "wgan-gp" is only offered by recipes that apply `gradient_penalty`.
UNPENALIZED_GAN_MODES = GAN_MODES[:3]
PIXEL_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


class GANLoss(nn.Module):
    """The adversarial objective, by the names pytorch-CycleGAN-and-pix2pix uses.

    vanilla: the original cross-entropy GAN (non-saturating for G), on logits.
    lsgan:   least squares (Mao et al. 2017): real -> 1, fake -> 0.
    hinge:   Lim & Ye 2017 / SAGAN. The discriminator's terms are max(0, 1 -+ D); the
             generator's term is -D(fake), which is why `for_discriminator` matters.
    wgan-gp: Wasserstein critic (Arjovsky et al. 2017; Gulrajani et al. 2017): real ->
             -mean D, fake -> +mean D, generator -> -mean D(fake). Only with
             `penalized=True`: the caller adds `gradient_penalty` to the critic's loss.
    """

    def __init__(self, gan_mode: str = "vanilla", penalized: bool = False) -> None:
        super().__init__()
        modes = GAN_MODES if penalized else UNPENALIZED_GAN_MODES
        if gan_mode not in modes:
            raise ConfigError(f"loss.gan_mode must be one of {', '.join(modes)}, got {gan_mode!r}")
        self.gan_mode = gan_mode

    def forward(self, pred: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        pred = pred.float()  # the loss is reduced in fp32 whatever the autocast dtype
        if self.gan_mode == "vanilla":
            target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
            return F.binary_cross_entropy_with_logits(pred, target)
        if self.gan_mode == "lsgan":
            target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
            return F.mse_loss(pred, target)
        if self.gan_mode == "wgan-gp":
            return -pred.mean() if target_is_real else pred.mean()
        if not for_discriminator:  # hinge, generator side
            return -pred.mean()
        return F.relu(1.0 - pred).mean() if target_is_real else F.relu(1.0 + pred).mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017, eq. 3): E[(||grad_x^ D(x^)||_2 - 1)^2], where
    x^ = a * real + (1 - a) * fake with a ~ U(0, 1) drawn per sample.

    `critic` maps images to raw scores (any shape; summed per sample, so a patch critic
    is penalised on the gradient of its total score). The graph is kept
    (create_graph) so the penalty trains the critic. `fake` is detached here.
    """
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.float().sum(), mixed, create_graph=True)
    norms = grad.float().flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


def pixel_loss(name: str):
    """The per-pixel loss function by name: 'l1' or 'mse'."""
    try:
        return PIXEL_LOSSES[name]
    except KeyError:
        raise ConfigError(f"pixel loss must be one of {', '.join(PIXEL_LOSSES)}, got {name!r}") from None


def rebalanced_cross_entropy(
    logits: torch.Tensor, target_indices: torch.Tensor, target_weights: torch.Tensor, pixel_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Zhang et al.'s multinomial cross-entropy with class rebalancing (CIC, eq. 2):

        L = -1/(NHW) sum_{n,h,w} v(Z_nhw) sum_q Z_nhwq log softmax(logits)_nhwq

    logits: (N, Q, H, W). The soft target Z is sparse, as `color.soft_encode` gives it:
    target_indices (N, K, H, W) long and target_weights (N, K, H, W) summing to 1 over K.
    pixel_weights (N, H, W) is v(Z), the rebalancing weight of each pixel's nearest bin
    (None: 1). Averaged over pixels, not summed, so the loss does not grow with the
    image size. Reduced in float32 whatever the autocast dtype.
    """
    log_probs = torch.log_softmax(logits.float(), dim=1)
    per_pixel = -(log_probs.gather(1, target_indices) * target_weights.float()).sum(dim=1)
    if pixel_weights is not None:
        per_pixel = per_pixel * pixel_weights.float()
    return per_pixel.mean()


def conditional_discriminator_loss(
    discriminator: nn.Module,
    gan_loss: GANLoss,
    L: torch.Tensor,
    real_ab: torch.Tensor,
    fake_ab: torch.Tensor,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """pix2pix's D objective on (L, ab) pairs: real pairs -> real, (L, G(L)) -> fake, the
    sum halved "to slow down the rate at which D learns relative to G" (Isola et al.).
    `fake_ab` is detached here: this objective never trains the generator. `augment`
    (loss.d_augment) transforms each whole pair, real and fake alike, before D sees it.

    Also returns what to log, including the mean raw D outputs on real and fake pairs:
    when they drift far apart, D is overpowering G.
    """
    augment = augment or (lambda pair: pair)
    pred_fake = discriminator(augment(torch.cat([L, fake_ab.detach()], 1)))
    pred_real = discriminator(augment(torch.cat([L, real_ab], 1)))
    loss_fake = gan_loss(pred_fake, False)
    loss_real = gan_loss(pred_real, True)
    loss = 0.5 * (loss_fake + loss_real)
    return loss, {
        "loss": loss.detach(),
        "real": loss_real.detach(),
        "fake": loss_fake.detach(),
        "out_real": pred_real.detach().float().mean(),
        "out_fake": pred_fake.detach().float().mean(),
    }


def attribute_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-label classification (StarGAN on CelebA's attributes): binary cross-entropy
    on logits per attribute, summed over the attributes and averaged over the batch, as
    yunjey/stargan (size_average=False, then divided by the batch size)."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="sum") / len(logits)
