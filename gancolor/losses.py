"""Training objectives, written once and shared by every recipe.

GAN objectives take the discriminator's raw output (logits, any shape) and say which
side of the game is being scored: `gan_loss(pred, target_is_real)` for the
generator and for the discriminator's real/fake halves. Pixel losses are the plain
L1 / MSE of the reference implementations. `gradient_penalty` is WGAN-GP's
Lipschitz penalty (Gulrajani et al. 2017), which StarGAN trains with, and
`attribute_bce` its multi-label domain classification.
"""

from __future__ import annotations

import os
from pathlib import Path
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


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, loss_scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017, eq. 3): E[(||grad_x^ D(x^)||_2 - 1)^2], where
    x^ = a * real + (1 - a) * fake with a ~ U(0, 1) drawn per sample.

    `critic` maps images to raw scores (any shape; summed per sample, so a patch critic
    is penalised on the gradient of its total score). The graph is kept
    (create_graph) so the penalty trains the critic. `fake` is detached here.

    `loss_scale`: under fp16 autocast, the GradScaler's current scale. The inner
    backward through the critic then starts from each score at the magnitude the
    scaler's own backward gives a mean loss over those scores (scale / their number),
    so small gradients do not flush to zero in fp16; the gradient is unscaled (in
    float32) before its norm. An overflow gives an inf penalty, and the scaler skips the
    step and lowers its scale, as for any other inf gradient.
    """
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    scale = 1.0 if loss_scale is None else loss_scale / scores.numel()
    (grad,) = torch.autograd.grad(scores.float().sum() * scale, mixed, create_graph=True)
    norms = (grad.float() / scale).flatten(1).norm(2, dim=1)
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


# -- terms against desaturation (options of recipes that decode RGB) ---------------------
# torchvision's VGG `features` indices of relu1_2, relu2_2, relu3_3 (3_4) and relu4_3 (4_4).
VGG_TAPS = {"vgg16": (3, 8, 15, 22), "vgg19": (3, 8, 17, 26)}
VGG_LAYOUTS = {"vgg16": "D", "vgg19": "E"}  # torchvision's names of their layer lists
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualLoss(nn.Module):
    """Feature reconstruction loss (Johnson et al. 2016): the mean L1 distance between
    VGG features of two sRGB batches in [0, 1], summed over relu1_2 .. relu4_x.

    The weights are a torchvision vgg16 / vgg19 state dict on disk (.pth or
    .safetensors; `features.*` is what is used, the classifier may be absent); nothing
    is ever downloaded. Frozen and always in eval mode.
    """

    def __init__(self, weights: str | os.PathLike, net: str = "vgg16") -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        from gancolor.metrics import MetricUnavailable, read_state_dict

        if net not in VGG_TAPS:
            raise ConfigError(f"loss.perceptual_net must be one of {', '.join(VGG_TAPS)}, got {net!r}")
        path = Path(os.path.expanduser(str(weights)))
        if not path.is_file():
            raise ConfigError(f"loss.perceptual_weights: no file at {path} (a torchvision {net} state dict)")
        self.taps = VGG_TAPS[net]
        # The convolutional part only: the classifier (100M+ weights) is never used.
        self.features = make_layers(cfgs[VGG_LAYOUTS[net]])[: self.taps[-1] + 1]
        try:
            state = read_state_dict(path)
        except MetricUnavailable as exc:
            raise ConfigError(f"loss.perceptual_weights: {str(exc).removeprefix('unavailable: ')}") from None
        own = {k: v for k, v in state.items() if k.startswith("features.")}
        wanted = {f"features.{k}" for k in self.features.state_dict()}
        if not wanted <= set(own) or any(own[k].shape != v.shape for k, v in self.features.state_dict(prefix="features.").items()):
            raise ConfigError(f"loss.perceptual_weights: {path} is not a torchvision {net} state dict")
        self.features.load_state_dict({k.removeprefix("features."): own[k] for k in wanted})
        self.features.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)

    def forward(self, fake_rgb: torch.Tensor, real_rgb: torch.Tensor) -> torch.Tensor:
        x = (torch.cat([fake_rgb, real_rgb]).float() - self.mean) / self.std
        loss = x.new_zeros(())
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                fake, real = x.chunk(2)
                loss = loss + F.l1_loss(fake, real.detach())
        return loss


def colorfulness_loss(rgb: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """DDColor's colourfulness term (Kang et al. 2023): 1 - M / scale, averaged over the
    batch, where M = sigma_rgyb + 0.3 mu_rgyb is Hasler & Suesstrunk's colourfulness on
    the 0..255 scale. Lower for more colourful outputs; the small constant under the
    roots keeps the gradient finite for a gray image, where the term pushes hardest."""
    rgb = rgb.float() * 255.0
    red, green, blue = rgb.unbind(1)
    opponent_rg, opponent_yb = (red - green).flatten(1), (0.5 * (red + green) - blue).flatten(1)
    spread = (opponent_rg.var(1, unbiased=False) + opponent_yb.var(1, unbiased=False) + 1e-6).sqrt()
    offset = (opponent_rg.mean(1).square() + opponent_yb.mean(1).square() + 1e-6).sqrt()
    return (1.0 - (spread + 0.3 * offset) / scale).mean()
