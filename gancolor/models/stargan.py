"""StarGAN (Choi et al. 2018, "StarGAN: Unified Generative Adversarial Networks for
Multi-Domain Image-to-Image Translation"): one generator G(x, c) translates an image x
into any target domain c; one discriminator D has two heads, D_src (real or fake, per
patch) and D_cls (which domain). With source domain c' and target domain c:

    L_D = -L_adv + lambda_cls * L_cls^r                                         (eq. 5)
    L_G =  L_adv + lambda_cls * L_cls^f + lambda_rec * L_rec
    L_adv   = E_x[D_src(x)] - E_{x,c}[D_src(G(x, c))]
              - lambda_gp * E_x^[(||grad_x^ D_src(x^)||_2 - 1)^2]               (eq. 8, WGAN-GP)
    L_cls^r = E_{x,c'}[-log D_cls(c' | x)]            real images, their own domain  (eq. 2)
    L_cls^f = E_{x,c}[-log D_cls(c | G(x, c))]        fakes, the target domain      (eq. 3)
    L_rec   = E_{x,c,c'}[ ||x - G(G(x, c), c')||_1 ]  back to the source domain    (eq. 4)

Domains (`domain_mode`):
    single  each image is in one of K domains (RaFD's expressions; gancolor's colour
            looks, data=domains); c is a domain index and L_cls a softmax cross-entropy.
    multi   each image has K binary attributes (CelebA's hair colour, gender, age;
            data=attributes, experiment=stargan_attributes); c is a 0/1 vector and L_cls
            a binary cross-entropy per attribute, summed over the attributes and averaged
            over the batch, as yunjey/stargan's CelebA mode.

Each iteration trains D; G is trained every `n_critic` iterations (Step.every), on
iteration i when (i + 1) % n_critic == 0 as in yunjey/stargan, so only after D has
trained n_critic times, with the same target domains D saw in that iteration: the
batch's labels shuffled across it. Images are in `color_space` ("rgb": sRGB in [-1, 1], the
reference's; "lab": normalised (L, ab)); the batch holds sRGB in [0, 1] and labels.

The failure the seed reports (after long training StarGAN "reproduces the images
from the input in both cases") is made visible: each G step also logs, per target
domain k, the translation strength mean |G(x, k) - x| (sRGB in [0, 1], over images
not already in k) and the accuracy of D's classifier on G(x, k) (`G/strength/<k>`,
`G/fake_acc/<k>`). A strength near 0 with a low fake accuracy is that failure.

colorize(L) translates the gray image with lightness L into `target_domain` ("color");
in multi mode into the attribute vector with only `target_domain` on (null: all off).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from gancolor import color
from gancolor.augment import discriminator_augment
from gancolor.errors import ConfigError
from gancolor.losses import GANLoss, attribute_bce, gradient_penalty
from gancolor.models.base import Recipe, Step, adam

log = logging.getLogger("gancolor.trainer")  # train.log names these lines after the trainer

NetFactory = Callable[..., nn.Module]
# What a batch calls its labels in each domain mode, and the data that gives them.
LABELS = {"single": ("domain", "data=domains"), "multi": ("attributes", "data=attributes (experiment=stargan_attributes)")}


class StarGAN(Recipe):
    def __init__(
        self,
        generator: NetFactory,
        discriminator: NetFactory,
        loss: DictConfig | dict,
        domains: Sequence[str],
        target_domain: str | None = "color",
        name: str = "stargan",
        domain_mode: str = "single",
        color_space: str = "rgb",
        n_critic: int = 5,
        g_lr: float = 1e-4,
        d_lr: float = 1e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        log_domains: bool = True,
    ) -> None:
        super().__init__()
        self.name = name
        self.domains = [str(d) for d in domains]
        if len(self.domains) < 2:
            raise ConfigError(f"model.domains needs at least 2 domains, got {self.domains}")
        if domain_mode not in LABELS:
            raise ConfigError(f"model.domain_mode must be one of {', '.join(LABELS)}, got {domain_mode!r}")
        self.domain_mode = domain_mode
        # In multi mode colorize() may target "every attribute off" (null).
        if target_domain not in self.domains and not (target_domain is None and domain_mode == "multi"):
            raise ConfigError(f"model.target_domain {target_domain!r} is not one of the domains {self.domains}")
        self.target = None if target_domain is None else self.domains.index(target_domain)
        self.color_space = color.check_net_space(color_space)
        for part, where in ((generator, "generator"), (discriminator, "discriminator")):
            if isinstance(part, nn.Module) or not callable(part):
                raise ConfigError(
                    f"{where}: stargan sizes it to the domains; set {where}._partial_=true (conf/model/stargan.yaml does)"
                )
        n = len(self.domains)
        self.G = generator(n_domains=n, in_channels=3, out_channels=3)
        self.D = discriminator(n_domains=n, in_channels=3)
        self.lambda_cls = float(loss["lambda_cls"])
        self.lambda_rec = float(loss["lambda_rec"])
        self.lambda_gp = float(loss["lambda_gp"])
        if loss["gan_mode"] == "wgan-gp" and self.lambda_gp <= 0:
            raise ConfigError("loss.gan_mode=wgan-gp needs loss.lambda_gp > 0 (a critic without the penalty diverges)")
        self.gan_loss = GANLoss(loss["gan_mode"], penalized=self.lambda_gp > 0)
        self.d_augment = discriminator_augment(loss.get("d_augment"))
        if int(n_critic) < 1:
            raise ConfigError(f"model.n_critic must be >= 1, got {n_critic}")
        self.n_critic = int(n_critic)
        self.g_lr, self.d_lr, self.betas = g_lr, d_lr, (beta1, beta2)
        self.log_domains = bool(log_domains)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "G": adam(self.G.parameters(), self.g_lr, *self.betas),
            "D": adam(self.D.parameters(), self.d_lr, *self.betas),
        }

    def real_images(self, batch: dict, state: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (in the colour space), its labels c' and this iteration's targets c: domain
        indices (N,) in single mode, 0/1 attribute vectors (N, K) in multi mode."""
        if "x_real" not in state:
            key, data = LABELS[self.domain_mode]
            if "image" not in batch or key not in batch:
                raise ConfigError(
                    f"{self.name} with model.domain_mode={self.domain_mode} trains on batches with {key!r} labels: "
                    f"use {data} (data.root=DIR for your photos); this batch has {sorted(batch)}"
                )
            state["x_real"] = color.encode(batch["image"], self.color_space)
            c_org = batch[key].float() if self.domain_mode == "multi" else batch[key]
            state["c_org"] = c_org
            # yunjey/stargan: the targets are the batch's own labels, shuffled.
            state["c_trg"] = c_org[torch.randperm(len(c_org), device=c_org.device)]
        return state["x_real"], state["c_org"], state["c_trg"]

    def classification_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.domain_mode == "multi":
            return attribute_bce(logits, target)
        return F.cross_entropy(logits.float(), target)

    def classifier_accuracy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Single: how often the top logit is the domain. Multi: the share of attributes
        whose logit has the target's sign."""
        if self.domain_mode == "multi":
            return ((logits.detach() > 0).float() == target).float().mean()
        return (logits.detach().argmax(1) == target).float().mean()

    # -- pretraining: none ---------------------------------------------------------------
    def pretrain_steps(self) -> list[Step]:
        # The only pixel loss StarGAN has is reconstruction, which G = identity satisfies:
        # pretraining on it would teach exactly the failure the seed reports.
        raise ConfigError(
            f"{self.name} has no generator-only pretraining (the paper has none): set trainer.pretrain_epochs=0"
        )

    # -- adversarial: D every iteration, G every n_critic ----------------------------------
    def adversarial_steps(self) -> list[Step]:
        return [
            Step("D", self.discriminator_step, optimizer="D"),
            Step("G", self.generator_step, optimizer="G", frozen=("D",), every=self.n_critic),
        ]

    def double_backward_nets(self) -> tuple[str, ...]:
        return ("D",) if self.lambda_gp > 0 else ()

    def discriminator_step(self, batch: dict, state: dict):
        x_real, c_org, c_trg = self.real_images(batch, state)
        out_src, out_cls = self.D(self.d_augment(x_real))
        loss_real = self.gan_loss(out_src, True)
        loss_cls = self.classification_loss(out_cls, c_org)  # L_cls^r

        with torch.no_grad():
            x_fake = self.G(x_real, c_trg)
        out_src_fake, _ = self.D(self.d_augment(x_fake))
        loss_fake = self.gan_loss(out_src_fake, False)
        loss_gp = torch.zeros((), device=x_real.device)
        if self.lambda_gp > 0:
            # Under fp16 the trainer's GradScaler scale comes in `state`: the penalty's
            # inner backward runs at that scale too, as the final one does.
            loss_gp = gradient_penalty(lambda x: self.D(x)[0], x_real, x_fake, state.get("loss_scale"))

        loss = loss_real + loss_fake + self.lambda_cls * loss_cls + self.lambda_gp * loss_gp
        return loss, {
            "loss": loss.detach(),
            "real": loss_real.detach(),
            "fake": loss_fake.detach(),
            "cls": loss_cls.detach(),
            "gp": loss_gp.detach(),
            "out_real": out_src.detach().float().mean(),
            "out_fake": out_src_fake.detach().float().mean(),
            "real_acc": self.classifier_accuracy(out_cls, c_org),
        }

    def generator_step(self, batch: dict, state: dict):
        x_real, c_org, c_trg = self.real_images(batch, state)
        x_fake = self.G(x_real, c_trg)
        out_src, out_cls = self.D(self.d_augment(x_fake))
        loss_fake = self.gan_loss(out_src, True, for_discriminator=False)
        loss_cls = self.classification_loss(out_cls, c_trg)  # L_cls^f
        x_rec = self.G(x_fake, c_org)  # back to where it came from
        loss_rec = F.l1_loss(x_rec.float(), x_real)

        loss = loss_fake + self.lambda_rec * loss_rec + self.lambda_cls * loss_cls
        logs = {"loss": loss.detach(), "fake": loss_fake.detach(), "cls": loss_cls.detach(), "rec": loss_rec.detach()}
        if self.log_domains:
            logs.update(self.translation_report(batch["image"], x_real, c_org))
        return loss, logs

    @torch.no_grad()
    def translation_report(self, rgb: torch.Tensor, x: torch.Tensor, c_org: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per domain k, for the translation towards k: mean |G(x, c) - x| in sRGB [0, 1]
        over the images it changes, and how often D's classifier gets k right on G(x, c).
        Single mode: c = k, which changes the images not already in k. Multi mode: c is
        each image's attributes with k flipped (yunjey/stargan's test-time targets), which
        changes every image."""
        logs: dict[str, torch.Tensor] = {}
        for k, name in enumerate(self.domains):
            target, moved = self.towards(c_org, k)
            fake = self.G(x, target)
            diff = (color.decode(fake, self.color_space) - rgb.float()).abs().flatten(1).mean(1)
            # A batch holding only domain k has no image to move: the mean over all of them
            # (near 0 when G is right to keep them) is then the only figure there is.
            strength = torch.where(moved.sum() > 0, (diff * moved).sum() / moved.sum().clamp_min(1), diff.mean())
            logs[f"strength/{name}"] = strength
            logits = self.D(fake)[1]
            if self.domain_mode == "multi":
                logs[f"fake_acc/{name}"] = ((logits[:, k] > 0).float() == target[:, k]).float().mean()
            else:
                logs[f"fake_acc/{name}"] = (logits.argmax(1) == k).float().mean()
        return logs

    def towards(self, c_org: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The targets that translate each image towards domain k, and which images
        they change (1.0) or leave where they are (0.0)."""
        if self.domain_mode == "multi":
            target = c_org.clone()
            target[:, k] = 1 - target[:, k]
            return target, torch.ones(len(c_org), device=c_org.device)
        return torch.full_like(c_org, k), (c_org != k).float()

    def on_fit_start(self, trainer) -> None:
        # Validation translates gray into the fixed target domain, so its metrics change
        # only when G does, and G trains on every n_critic-th iteration only (counted over
        # the run). Fewer iterations than that between two validations leave some of them
        # with no G step: they repeat the previous metrics to the last digit.
        if not trainer.val_every_n_epochs:
            return
        steps = len(trainer.data.train_loader(rank=trainer.rank, world_size=trainer.world_size))
        between = steps * trainer.val_every_n_epochs
        if between < self.n_critic:
            log.warning(
                "%s: G trains once every %d iterations (model.n_critic) but validation comes every %d (%d per epoch, "
                "trainer.val_every_n_epochs=%d): a validation after no G step repeats the previous metrics exactly, "
                "because G did not change",
                self.name, self.n_critic, between, steps, trainer.val_every_n_epochs,
            )

    # -- inference --------------------------------------------------------------------
    @torch.no_grad()
    def colorize(self, L: torch.Tensor) -> torch.Tensor:
        x = color.gray_from_lightness(L, self.color_space)
        batch = L.shape[0]  # not len(L): an exported graph (gancolor.export) keeps it symbolic
        if self.domain_mode == "multi":
            target = torch.zeros(batch, len(self.domains), device=L.device)
            if self.target is not None:
                target[:, self.target] = 1
        else:
            target = torch.full((batch,), self.target, dtype=torch.long, device=L.device)
        return color.ab_from_net(self.G(x, target), self.color_space)

    def generator_modules(self) -> list[nn.Module]:
        return [self.G]
