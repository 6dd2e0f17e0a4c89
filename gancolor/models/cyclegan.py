"""CycleGAN for colourisation (Zhu et al. 2017, "Unpaired Image-to-Image Translation
using Cycle-Consistent Adversarial Networks"), with A = grayscale and B = colour photos
that are never pairs:

    L(G_AB, G_BA, D_A, D_B) = L_GAN(G_AB, D_B, A, B) + L_GAN(G_BA, D_A, B, A)
                              + lambda_cycle * L_cyc(G_AB, G_BA)                  (eq. 3)
    L_cyc = E_a[ ||G_BA(G_AB(a)) - a||_1 ] + E_b[ ||G_AB(G_BA(b)) - b||_1 ]        (eq. 2)
    L_idt = E_b[ ||G_AB(b) - b||_1 ] + E_a[ ||G_BA(a) - a||_1 ]     (sec. 5.2, weighted
            lambda_identity * lambda_cycle, as in the reference code)
    G* = arg min_{G_AB, G_BA} max_{D_A, D_B} L                                   (eq. 4)

L_GAN is least squares (sec. 4: "we replace the negative log likelihood objective by a
least-squares loss"): G minimises (D(G(x)) - 1)^2, D minimises (D(y) - 1)^2 + D(G(x))^2,
halved "to slow down the rate at which D learns relative to G". D sees fakes drawn
from a history of 50 (ImagePool). D_A judges images of domain A and D_B of domain B
(the reference code names them the other way round, after the generator they judge).

Colour spaces (`color_space`):
    lab: a = L (1 channel); b = (L, ab). G_AB predicts ab only and the fake colour image
         keeps its input's lightness, (a, G_AB(a)): a colouriser must not change L.
         G_BA maps (L, ab) to L. Fed a colour image (identity term), G_AB sees its L.
    rgb: a and b are sRGB in [-1, 1] (a gray image has three equal channels), as in the
         reference; colorize() turns L into gray RGB, translates it and keeps the ab.

One iteration, in the reference's order: the G step (both generators, with D_A and
D_B frozen), then the D step (both discriminators, on pooled fakes).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from gancolor import color
from gancolor.errors import ConfigError
from gancolor.losses import GANLoss
from gancolor.models.base import Recipe, Step, adam
from gancolor.models.image_pool import ImagePool

NetFactory = Callable[..., nn.Module]


def _factory(part: NetFactory | nn.Module, where: str) -> NetFactory:
    # Two generators and two discriminators of different channel counts come from one
    # config each, so the config must hand over a constructor (`_partial_: true`).
    if isinstance(part, nn.Module) or not callable(part):
        raise ConfigError(
            f"{where}: cyclegan builds two nets from it; set {where}._partial_=true (conf/model/cyclegan.yaml does)"
        )
    return part


class CycleGAN(Recipe):
    def __init__(
        self,
        generator: NetFactory,
        discriminator: NetFactory,
        loss: DictConfig | dict,
        name: str = "cyclegan",
        color_space: str = "lab",
        pool_size: int = 50,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.name = name
        self.color_space = color.check_net_space(color_space)
        make_g, make_d = _factory(generator, "generator"), _factory(discriminator, "discriminator")
        lab = self.color_space == "lab"
        a_channels, b_channels = (1, 3) if lab else (3, 3)
        self.G_AB = make_g(in_channels=a_channels, out_channels=2 if lab else 3)
        self.G_BA = make_g(in_channels=b_channels, out_channels=a_channels)
        self.D_A = make_d(in_channels=a_channels)
        self.D_B = make_d(in_channels=b_channels)
        # Seeded apart, so the two pools do not make the same choices.
        self.pool_A = ImagePool(pool_size, seed=2 * int(seed))
        self.pool_B = ImagePool(pool_size, seed=2 * int(seed) + 1)
        self.gan_loss = GANLoss(loss["gan_mode"])
        self.lambda_cycle = float(loss["lambda_cycle"])
        self.lambda_identity = float(loss["lambda_identity"])
        if self.lambda_cycle < 0 or self.lambda_identity < 0:
            raise ConfigError("loss.lambda_cycle and loss.lambda_identity must be >= 0")
        self.lr, self.betas = lr, (beta1, beta2)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        # One Adam for both generators and one for both discriminators, as the reference.
        return {
            "G": adam([*self.G_AB.parameters(), *self.G_BA.parameters()], self.lr, *self.betas),
            "D": adam([*self.D_A.parameters(), *self.D_B.parameters()], self.lr, *self.betas),
        }

    # -- the two mappings, in the recipe's colour space -------------------------------
    def G_ab(self, a: torch.Tensor) -> torch.Tensor:
        """A -> B: in Lab the colour image keeps a's lightness, G_AB adds ab."""
        if self.color_space == "lab":
            return torch.cat([a.to(torch.float32), self.G_AB(a).float()], dim=1)
        return self.G_AB(a)

    def G_ba(self, b: torch.Tensor) -> torch.Tensor:
        return self.G_BA(b)

    def as_A_input(self, b: torch.Tensor) -> torch.Tensor:
        """A colour image as G_AB takes it (identity term): in Lab, its L."""
        return b[:, :1] if self.color_space == "lab" else b

    def as_B_input(self, a: torch.Tensor) -> torch.Tensor:
        """A gray image as G_BA takes it (identity term): in Lab, L with ab = 0."""
        if self.color_space == "lab":
            return torch.cat([a, torch.zeros_like(a).expand(-1, 2, -1, -1)], dim=1)
        return a

    def real_images(self, batch: dict, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's gray A and colour B (sRGB in [0, 1]) in the recipe's colour space."""
        if "real_A" not in state:
            if "A" not in batch or "B" not in batch:
                raise ConfigError(
                    f"{self.name} trains on unpaired gray/colour batches: use data=unpaired "
                    f"(data.root=DIR for your photos); this batch has {sorted(batch)}"
                )
            if self.color_space == "lab":
                state["real_A"] = color.encode_lightness(batch["A"])
            else:
                state["real_A"] = color.encode(batch["A"], "rgb")
            state["real_B"] = color.encode(batch["B"], self.color_space)
        return state["real_A"], state["real_B"]

    # -- pretraining: none ---------------------------------------------------------------
    def pretrain_steps(self) -> list[Step]:
        # Without an adversary, G_AB = G_BA = identity satisfies both the cycle and the
        # identity losses in RGB: a pixel-loss warm-up would teach the failure mode.
        raise ConfigError(
            f"{self.name} has no generator-only pretraining (the paper has none): set trainer.pretrain_epochs=0"
        )

    # -- adversarial: G step against frozen Ds, then D step on pooled fakes -------------
    def adversarial_steps(self) -> list[Step]:
        return [
            Step("G", self.generator_step, optimizer="G", frozen=("D_A", "D_B")),
            Step("D", self.discriminator_step, optimizer="D"),
        ]

    def generator_step(self, batch: dict, state: dict):
        real_A, real_B = self.real_images(batch, state)
        fake_B = self.G_ab(real_A)
        fake_A = self.G_ba(real_B)
        rec_A = self.G_ba(fake_B)  # A -> B -> A
        rec_B = self.G_ab(fake_A)  # B -> A -> B

        # Least squares against frozen discriminators: G_AB must fool D_B, G_BA must fool D_A.
        loss_G_AB = self.gan_loss(self.D_B(fake_B), True, for_discriminator=False)
        loss_G_BA = self.gan_loss(self.D_A(fake_A), True, for_discriminator=False)
        loss_cycle_A = F.l1_loss(rec_A.float(), real_A)
        loss_cycle_B = F.l1_loss(rec_B.float(), real_B)
        loss = loss_G_AB + loss_G_BA + self.lambda_cycle * (loss_cycle_A + loss_cycle_B)
        logs = {
            "gan_AB": loss_G_AB.detach(),
            "gan_BA": loss_G_BA.detach(),
            "cycle_A": loss_cycle_A.detach(),
            "cycle_B": loss_cycle_B.detach(),
        }

        if self.lambda_identity > 0:
            # Fed an image already in its output domain, a generator should leave it be.
            loss_idt_B = F.l1_loss(self.G_ab(self.as_A_input(real_B)).float(), real_B)
            loss_idt_A = F.l1_loss(self.G_ba(self.as_B_input(real_A)).float(), real_A)
            loss = loss + self.lambda_identity * self.lambda_cycle * (loss_idt_A + loss_idt_B)
            logs.update({"idt_A": loss_idt_A.detach(), "idt_B": loss_idt_B.detach()})

        state["fake_A"], state["fake_B"] = fake_A.detach(), fake_B.detach()
        return loss, {"loss": loss.detach(), **logs}

    def discriminator_step(self, batch: dict, state: dict):
        real_A, real_B = self.real_images(batch, state)
        loss_D_A, logs_A = self.discriminator_loss(self.D_A, real_A, self.pool_A(state["fake_A"]))
        loss_D_B, logs_B = self.discriminator_loss(self.D_B, real_B, self.pool_B(state["fake_B"]))
        loss = loss_D_A + loss_D_B
        logs = {f"A_{k}": v for k, v in logs_A.items()} | {f"B_{k}": v for k, v in logs_B.items()}
        return loss, {"loss": loss.detach(), **logs}

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor):
        pred_real, pred_fake = D(real), D(fake)
        loss = 0.5 * (self.gan_loss(pred_real, True) + self.gan_loss(pred_fake, False))
        # Mean raw outputs on real and on fake: when they drift far apart, D is winning.
        return loss, {
            "loss": loss.detach(),
            "out_real": pred_real.detach().float().mean(),
            "out_fake": pred_fake.detach().float().mean(),
        }

    # -- inference --------------------------------------------------------------------
    @torch.no_grad()
    def colorize(self, L: torch.Tensor) -> torch.Tensor:
        if self.color_space == "lab":
            return self.G_AB(L).float()
        fake = self.G_AB(color.gray_from_lightness(L, "rgb"))
        return color.ab_from_net(fake, "rgb")

    def generator_modules(self) -> list[nn.Module]:
        return [self.G_AB]
