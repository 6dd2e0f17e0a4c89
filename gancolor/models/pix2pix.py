"""pix2pix for colourisation (Isola et al. 2017, "Image-to-Image Translation with
Conditional Adversarial Networks"), with x = L and y = ab:

    G* = arg min_G max_D  L_cGAN(G, D) + lambda_L1 * L_L1(G)                (eq. 4)
    L_cGAN(G, D) = E[log D(x, y)] + E[log(1 - D(x, G(x)))]                   (eq. 1)
    L_L1(G)      = E[ ||y - G(x)||_1 ]                                       (eq. 3)

D is conditional: it sees L concatenated with real or generated ab. As in the paper,
the D objective is halved "to slow down the rate at which D learns relative to G",
and G is trained on the non-saturating form (maximise log D(x, G(x))).

With model.target=lab (or rgb) x is a near-infrared image instead (data=nir), which has
no visible-light lightness to keep: y is the whole colour image, in normalised Lab (or
sRGB in [-1, 1]), so G has 3 output channels and D sees 1 + 3.

Before the adversarial phase, the trainer may run pretrain_epochs of G alone on a
pixel loss (DeOldify's NoGAN, Antic 2019: a pretrained G keeps early GAN training from
collapsing).

With model.hints (Zhang et al. 2017, user-guided colourisation; gancolor.hints), G
sees L, a map of hint colours and their mask (4 channels) and training shows it
simulated hints; D is unchanged and still judges (L, ab): the paper's network has no
discriminator, so conditioning D on the hints would be our invention. A hints model
given no hint colourises automatically.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from gancolor import color, hints as user_hints
from gancolor.augment import discriminator_augment
from gancolor.errors import ConfigError
from gancolor.losses import GANLoss, PerceptualLoss, colorfulness_loss, conditional_discriminator_loss, pixel_loss
from gancolor.models.base import Recipe, Step, adam

# What G predicts: ab from gray L (the usual colourisation), or the whole colour image,
# in normalised Lab or sRGB in [-1, 1] (color.encode's spaces), from an NIR image.
TARGETS = {"ab": 2, "lab": 3, "rgb": 3}


class Pix2Pix(Recipe):
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: DictConfig | dict,
        name: str = "pix2pix",
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        d_lr_mult: float = 1.0,
        weight_decay: float = 0.0,
        target: str = "ab",
        hints=None,
    ) -> None:
        super().__init__()
        self.name = name
        if target not in TARGETS:
            raise ConfigError(f"model.target must be one of {', '.join(TARGETS)}, got {target!r}")
        self.target = target
        self.input_kind = "gray" if target == "ab" else "nir"
        _check_discriminator_channels(discriminator, 1 + TARGETS[target], target)
        self.hints = user_hints.HintSimulation.from_config(hints)  # None: G sees L alone
        if self.hints is not None:
            if target != "ab":
                raise ConfigError(f"model.hints needs model.target=ab (hints are colour points on a gray photo), got {target}")
            user_hints.check_hint_generator(generator)
            user_hints.zero_hint_weights(generator)
        self.generator = generator
        self.discriminator = discriminator
        self.gan_loss = GANLoss(loss["gan_mode"])
        self.d_augment = discriminator_augment(loss.get("d_augment"))
        # Terms against desaturation, off unless set (configs written before them have none).
        self.lambda_perceptual = float(loss.get("lambda_perceptual") or 0.0)
        self.lambda_colorfulness = float(loss.get("lambda_colorfulness") or 0.0)
        for key in ("lambda_perceptual", "lambda_colorfulness"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loss.{key} must be >= 0, got {getattr(self, key)}")
        self.perceptual_weights = loss.get("perceptual_weights")
        self.perceptual_net = str(loss.get("perceptual_net") or "vgg16")
        # Not a registered submodule: checkpoints carry no VGG weights, and colourising
        # with one needs no weights file. Built when training starts.
        object.__setattr__(self, "perceptual", None)
        self.lambda_L1 = float(loss["lambda_L1"])
        self.pixel_loss = pixel_loss(loss.get("pretrain_loss", "l1"))
        self.l1 = nn.L1Loss()
        self.lr, self.betas, self.weight_decay = lr, (beta1, beta2), weight_decay
        self.d_lr = lr * d_lr_mult  # TTUR (Heusel et al. 2017): D may learn faster than G

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "G": adam(self.generator, self.lr, *self.betas, self.weight_decay),
            "D": adam(self.discriminator, self.d_lr, *self.betas, self.weight_decay),
        }

    def on_fit_start(self, trainer) -> None:
        if self.lambda_perceptual > 0:
            self.perceptual_term()

    def perceptual_term(self) -> PerceptualLoss:
        if self.perceptual is None:
            if self.perceptual_weights is None:
                raise ConfigError("loss.lambda_perceptual > 0 needs loss.perceptual_weights=PATH (a torchvision VGG state dict)")
            object.__setattr__(self, "perceptual", PerceptualLoss(self.perceptual_weights, self.perceptual_net))
        return self.perceptual

    # -- phase 1: the generator alone ------------------------------------------------
    def pretrain_steps(self) -> list[Step]:
        return [Step("G", self.generator_pixel_step, optimizer="G")]

    def generator_input(self, x: torch.Tensor, hints: torch.Tensor | None) -> torch.Tensor:
        """x (L or NIR), or with model.hints L + the hint maps (none: an empty mask)."""
        if self.hints is None:
            return x
        return user_hints.generator_input(x, hints)

    def generator_pixel_step(self, batch: dict, state: dict):
        x, y = self.pair(batch, state)
        fake = self.generate(x, batch.get("hints"))
        loss = self.pixel_loss(fake.float(), y)
        return loss, {"pixel": loss.detach()}

    def pair(self, batch: dict, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(G's input, the target G should give) of the batch: (L, ab), or (NIR, the colour
        image in the target's space), encoded once per iteration."""
        if self.target == "ab":
            return batch["L"], batch["ab"]
        if "pair" not in state:
            state["pair"] = (batch["nir"], color.encode(batch["rgb"], self.target))
        return state["pair"]

    def generate(self, x: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        out = self.generator(self.generator_input(x, hints))
        if out.shape[1] != TARGETS[self.target]:
            raise ConfigError(
                f"the generator gives {out.shape[1]} channels, model.target={self.target} needs {TARGETS[self.target]}: "
                f"set generator.out_channels={TARGETS[self.target]} (experiment=nir_pix2pix does)"
            )
        return out

    def to_rgb(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """G's output (with its input x) -> sRGB in [0, 1]."""
        return color.lab_normalized_to_rgb(x, out) if self.target == "ab" else color.decode(out, self.target)

    # -- optional: the critic alone against the pretrained G (NoGAN) ------------------
    def critic_steps(self) -> list[Step]:
        return [Step("D", self.discriminator_step, optimizer="D", frozen=("generator",))]

    # -- phase 3: D on real and detached fake, then G against a frozen D ----------------
    def adversarial_steps(self) -> list[Step]:
        return [
            Step("D", self.discriminator_step, optimizer="D"),
            Step("G", self.generator_step, optimizer="G", frozen=("discriminator",)),
        ]

    def discriminator_step(self, batch: dict, state: dict):
        L, real_ab = self.pair(batch, state)  # (NIR, Lab / RGB) with model.target=lab / rgb
        state["fake_ab"] = fake_ab = self.generate(L, batch.get("hints"))  # reused by the G step
        return conditional_discriminator_loss(self.discriminator, self.gan_loss, L, real_ab, fake_ab, self.d_augment)

    def generator_step(self, batch: dict, state: dict):
        L, real_ab = self.pair(batch, state)
        fake_ab = state["fake_ab"]
        pred_fake = self.discriminator(self.d_augment(torch.cat([L, fake_ab], 1)))
        loss_gan = self.gan_loss(pred_fake, True, for_discriminator=False)
        loss_l1 = self.l1(fake_ab.float(), real_ab)
        loss = loss_gan + self.lambda_L1 * loss_l1
        logs = {"gan": loss_gan.detach(), "L1": loss_l1.detach()}
        if self.lambda_perceptual > 0 or self.lambda_colorfulness > 0:
            fake_rgb = self.to_rgb(L, fake_ab)
        if self.lambda_perceptual > 0:
            perceptual = self.perceptual_term().to(L.device)
            loss_perceptual = perceptual(fake_rgb, self.to_rgb(L, real_ab))
            loss = loss + self.lambda_perceptual * loss_perceptual
            logs["perceptual"] = loss_perceptual.detach()
        if self.lambda_colorfulness > 0:
            loss_colorfulness = colorfulness_loss(fake_rgb)
            loss = loss + self.lambda_colorfulness * loss_colorfulness
            logs["colorfulness"] = loss_colorfulness.detach()
        return loss, {"loss": loss.detach(), **logs}

    # -- inference --------------------------------------------------------------------
    @torch.no_grad()
    def colorize(self, L: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        """ab of normalised L; with model.target=lab / rgb, the colour image of an NIR input;
        `hints` (N, 3, H, W) maps (gancolor.hints) for a hints model."""
        if self.hints is None and hints is not None:
            raise ConfigError("this model was trained without hints (model.hints); it cannot take any")
        return self.generator(self.generator_input(L, hints))

    def generator_modules(self) -> list[nn.Module]:
        return [self.generator]


def _check_discriminator_channels(discriminator: nn.Module, wanted: int, target: str) -> None:
    # D is conditional: it sees G's input (1 channel) with a real or generated target.
    first = next((m for m in discriminator.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != wanted:
        raise ConfigError(
            f"the discriminator takes {first.in_channels} channels, model.target={target} gives it {wanted} "
            f"(1 input + {wanted - 1} predicted): set discriminator.in_channels={wanted}"
        )
