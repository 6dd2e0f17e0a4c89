"""CycleGAN for colourisation (Zhu et al. 2017, "Unpaired Image-to-Image Translation
using Cycle-Consistent Adversarial Networks"), with A = grayscale and B = colour photos
that are never pairs. The paper's objective, with the reference code's term names
(junyanz/pytorch-CycleGAN-and-pix2pix, whose G_A and G_B are G_AB and G_BA here):

    L = L_GAN(G_AB, D_B, A, B) + L_GAN(G_BA, D_A, B, A)                            (eq. 3)
        + lambda_A * cycle_A + lambda_B * cycle_B
        + lambda_identity * (lambda_B * idt_A + lambda_A * idt_B)      (sec. 5.2, as the code)
    cycle_A = E_a[ ||G_BA(G_AB(a)) - a||_1 ],  cycle_B = E_b[ ||G_AB(G_BA(b)) - b||_1 ]  (eq. 2)
    idt_A   = E_b[ ||G_AB(b) - b||_1 ],        idt_B   = E_a[ ||G_BA(a) - a||_1 ]
    G* = arg min_{G_AB, G_BA} max_{D_A, D_B} L                                      (eq. 4)

L_GAN is least squares (sec. 4: "we replace the negative log likelihood objective by a
least-squares loss"): G minimises (D(G(x)) - 1)^2, D minimises (D(y) - 1)^2 + D(G(x))^2,
halved "to slow down the rate at which D learns relative to G". D sees fakes drawn
from a history of 50 (ImagePool). D_A judges images of domain A and D_B of domain B
(the reference code names them the other way round, after the generator they judge).

Colour spaces (`color_space`):
    rgb: the paper's formulation: a and b are sRGB in [-1, 1] (a gray image has three
         equal channels) and every term is as above. colorize() turns L into gray RGB,
         translates it and keeps the ab.
    lab (the default): a = L (1 channel), b = (L, ab). G_AB maps L to ab and the fake
         colour image is (a, G_AB(a)); G_BA maps (L, ab) to L.

What the Lab formulation keeps and loses:
  - It keeps content by construction. L is carried through exactly, so every fake
    colour image has its input's structure: the constraint that cycle consistency
    exists for in the paper (sec. 3.2: adversarial losses alone cannot make each input
    map to a matching output) is built in, and D_B, judging L and ab together, asks for
    colours that fit that structure.
  - cycle_A becomes trivial: G_BA((a, G_AB(a))) = a holds for a G_BA that reads its L
    channel and ignores ab, whatever G_AB predicts, so it gives G_AB no signal.
  - idt_A is no longer unpaired: G_AB sees only L, so "G_AB applied to b" compares G_AB(L
    of b) with b's own ab, an L1 fit of each colour photo's own (L, ab) pair, as in
    pix2pix. The default leaves it out.
  - What keeps G_AB from ignoring the content or giving every photo the same palette
    (mode collapse) is then D_B, which sees ab next to its L, and cycle_B: from G_BA's
    gray rendering of a colour photo, G_AB must give back that photo's ab. This is the
    paper's eq. 2, the one way an unpaired colour photo teaches G_AB which colours go
    with which gray. G_AB's input there is G_BA's rendering, trained to look like A's
    photos, not the photo's own L. With real B&W photos in A (trainA/) that is the
    paper's unpaired setting. With A made by desaturating colour photos (the one-folder
    split of data=unpaired), G_BA's best rendering is the photo's exact L, and cycle_B
    then tends to the same L1 fit, weighted lambda_B. loss.lambda_B=0 leaves no term
    that compares an output with a photo's own colours (adversarial terms, cycle_A and
    idt_B only).

The objective (`loss.identity_mode`):
    unpaired (default)
        lab: gan_AB + gan_BA + lambda_A cycle_A + lambda_B cycle_B
             + lambda_identity lambda_A idt_B, where idt_B feeds G_BA a gray image as
             (L, ab = 0) and asks for its L back. No idt_A.
        rgb: the paper's, both identity terms (G_AB fed b sees b's colours).
    supervised
        idt_A feeds G_AB each colour photo's own gray version (Lab: its L; RGB: the
        gray image with its lightness) and fits the output to the photo's colours,
        weighted lambda_identity lambda_B: a paired term, off by default. A Lab loss
        config without identity_mode (a run from before the option) trained with it.

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
from gancolor.augment import discriminator_augment
from gancolor.errors import ConfigError
from gancolor.losses import GANLoss
from gancolor.models.base import Recipe, Step, adam
from gancolor.models.image_pool import ImagePool

NetFactory = Callable[..., nn.Module]
IDENTITY_MODES = ("unpaired", "supervised")


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
        self.d_augment = discriminator_augment(_get(loss, "d_augment", "none"))
        self.lambda_cycle = float(loss["lambda_cycle"])
        # Per direction, as the reference's --lambda_A / --lambda_B; unset, both are
        # lambda_cycle (so configs written before these options keep their meaning).
        self.lambda_A = float(_get(loss, "lambda_A", self.lambda_cycle))
        self.lambda_B = float(_get(loss, "lambda_B", self.lambda_cycle))
        self.lambda_identity = float(loss["lambda_identity"])
        for key in ("lambda_cycle", "lambda_A", "lambda_B", "lambda_identity"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loss.{key} must be >= 0, got {getattr(self, key)}")
        # A loss config without identity_mode was written before the option existed:
        # it trained with the identity term of its colour space, which a resumed run keeps.
        self.identity_mode = str(_get(loss, "identity_mode", "supervised" if lab else "unpaired"))
        if self.identity_mode not in IDENTITY_MODES:
            raise ConfigError(f"loss.identity_mode must be one of {', '.join(IDENTITY_MODES)}, got {self.identity_mode!r}")
        self.lr, self.betas = lr, (beta1, beta2)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        # One Adam for both generators and one for both discriminators, as the reference.
        return {
            "G": adam([*self.G_AB.parameters(), *self.G_BA.parameters()], self.lr, *self.betas),
            "D": adam([*self.D_A.parameters(), *self.D_B.parameters()], self.lr, *self.betas),
        }

    # -- the two mappings, in the recipe's colour space -------------------------------
    def colorize_gray(self, a: torch.Tensor) -> torch.Tensor:
        """A -> B with G_AB: in Lab the colour image keeps a's lightness, G_AB adds ab."""
        if self.color_space == "lab":
            return torch.cat([a.to(torch.float32), self.G_AB(a).float()], dim=1)
        return self.G_AB(a)

    def decolorize(self, b: torch.Tensor) -> torch.Tensor:
        """B -> A with G_BA."""
        return self.G_BA(b)

    def gray_version(self, b: torch.Tensor) -> torch.Tensor:
        """A colour image's own gray version in A's format (Lab: its L; RGB: the gray
        image with its lightness): the supervised identity term's input."""
        if self.color_space == "lab":
            return b[:, :1]
        return color.gray_from_lightness(color.encode_lightness(color.decode(b, "rgb")), "rgb")

    def gray_as_color(self, a: torch.Tensor) -> torch.Tensor:
        """A gray image in B's format, as G_BA takes it in idt_B (Lab: L with ab = 0)."""
        return color.gray_from_lightness(a, "lab") if self.color_space == "lab" else a

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
        fake_B = self.colorize_gray(real_A)
        fake_A = self.decolorize(real_B)
        rec_A = self.decolorize(fake_B)  # A -> B -> A
        rec_B = self.colorize_gray(fake_A)  # B -> A -> B

        # Least squares against frozen discriminators: G_AB must fool D_B, G_BA must fool D_A.
        loss_G_AB = self.gan_loss(self.D_B(self.d_augment(fake_B)), True, for_discriminator=False)
        loss_G_BA = self.gan_loss(self.D_A(self.d_augment(fake_A)), True, for_discriminator=False)
        loss_cycle_A = F.l1_loss(rec_A.float(), real_A)
        loss_cycle_B = F.l1_loss(rec_B.float(), real_B)
        loss = loss_G_AB + loss_G_BA + self.lambda_A * loss_cycle_A + self.lambda_B * loss_cycle_B
        logs = {
            "gan_AB": loss_G_AB.detach(),
            "gan_BA": loss_G_BA.detach(),
            "cycle_A": loss_cycle_A.detach(),
            "cycle_B": loss_cycle_B.detach(),
        }

        if self.lambda_identity > 0:
            loss, idt = self.identity_terms(real_A, real_B, loss)
            logs.update(idt)

        state["fake_A"], state["fake_B"] = fake_A.detach(), fake_B.detach()
        return loss, {"loss": loss.detach(), **logs}

    def identity_terms(self, real_A: torch.Tensor, real_B: torch.Tensor, loss: torch.Tensor):
        """The identity terms this colour space and identity_mode allow, added to `loss`.

        Named as the reference: idt_A is G_AB applied to B, idt_B is G_BA applied to A.
        Fed an image already in its output domain, a generator should leave it be.
        """
        logs: dict[str, torch.Tensor] = {}
        if self.identity_mode == "supervised":
            idt_A = self.colorize_gray(self.gray_version(real_B))
        elif self.color_space == "rgb":
            idt_A = self.G_AB(real_B)
        else:
            idt_A = None  # G_AB sees only L: comparing with b would fit b's own colours
        if idt_A is not None:
            loss_idt_A = F.l1_loss(idt_A.float(), real_B)
            loss = loss + self.lambda_identity * self.lambda_B * loss_idt_A
            logs["idt_A"] = loss_idt_A.detach()
        loss_idt_B = F.l1_loss(self.decolorize(self.gray_as_color(real_A)).float(), real_A)
        loss = loss + self.lambda_identity * self.lambda_A * loss_idt_B
        logs["idt_B"] = loss_idt_B.detach()
        return loss, logs

    def discriminator_step(self, batch: dict, state: dict):
        real_A, real_B = self.real_images(batch, state)
        loss_D_A, logs_A = self.discriminator_loss(self.D_A, real_A, self.pool_A(state["fake_A"]))
        loss_D_B, logs_B = self.discriminator_loss(self.D_B, real_B, self.pool_B(state["fake_B"]))
        loss = loss_D_A + loss_D_B
        logs = {f"A_{k}": v for k, v in logs_A.items()} | {f"B_{k}": v for k, v in logs_B.items()}
        return loss, {"loss": loss.detach(), **logs}

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor):
        pred_real, pred_fake = D(self.d_augment(real)), D(self.d_augment(fake))
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

    def generator_names(self) -> tuple[str, ...]:
        return ("G_AB", "G_BA")


def _get(loss: DictConfig | dict, key: str, default):
    value = loss.get(key)
    return default if value is None else value
