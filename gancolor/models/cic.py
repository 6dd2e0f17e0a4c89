"""Colorful Image Colorization (Zhang, Isola & Efros 2016) as a gancolor recipe.

Colourisation as classification: the ab plane is cut into Q bins (color.gamut_bins, or
the published centres with model.bins=PATH) and the net G predicts, per pixel, a
distribution Z^ over them from L. Training minimises the rebalanced multinomial
cross-entropy against soft-encoded ground truth:

    L_cl(Z^, Z) = -sum_{h,w} v(Z_hw) sum_q Z_hwq log Z^_hwq                       (eq. 2)
    v(Z_hw) = w_{q*},  q* = argmax_q Z_hwq,
    w ~ ((1 - lambda) p~ + lambda / Q)^-1,  E_p~[w] = 1                           (eqs. 3-4)

Z spreads each true ab over its 5 nearest bins with a Gaussian (sigma 5); p~ is the
training set's empirical ab distribution smoothed with a Gaussian (sigma 5), lambda 0.5.
Rebalancing stops the loss being won by desaturated colours, which dominate photos.
Prediction decodes Z^ with the annealed mean H(Z) = E[f_T(Z)] at T = 0.38 (eq. 5).

The prior is computed once per data set, before the first step (`on_fit_start`), from
one pass over the training images on the device, cached as cic_prior.pt in the run
folder and kept in buffers, so checkpoints carry everything `colorize` needs.

Optional, by config (loss.lambda_gan > 0): an adversarial term on the decoded colours.
A PatchGAN D sees (L, ab) with ab the (differentiable) annealed mean of Z^, and G adds
lambda_gan times the non-saturating GAN loss to L_cl, as in pix2pix. With lambda_gan
0 there is no D at all: every phase is the cross-entropy step alone.

With model.hints the net sees L, hint colours and their mask (Zhang et al. 2017, whose
user-guided network is this recipe's successor: gancolor.hints); D, when there is one,
still judges (L, ab).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from gancolor import color, hints as user_hints
from gancolor.augment import discriminator_augment
from gancolor.checkpoint import atomic_save
from gancolor.errors import ConfigError
from gancolor.losses import GANLoss, conditional_discriminator_loss, rebalanced_cross_entropy
from gancolor.models.base import Recipe, Step, adam

log = logging.getLogger("gancolor.cic")

PRIOR_FILE = "cic_prior.pt"
NetFactory = Callable[..., nn.Module]


def bins_from_setting(bins) -> torch.Tensor:
    """model.bins: null (the computed rule, color.gamut_bins), a path to a Q x 2 .npy, or
    the centres themselves as a Q x 2 list (what a rebuild from a checkpoint can pass,
    from the checkpoint's own `bins` buffer, when the original file is not at hand)."""
    if bins is None:
        return color.gamut_bins()
    if isinstance(bins, (str, os.PathLike)):
        return color.load_ab_bins(bins, "model.bins")
    if isinstance(bins, ListConfig):
        bins = OmegaConf.to_container(bins)
    return color.check_ab_bins(bins, "model.bins")


class CIC(Recipe):
    def __init__(
        self,
        generator: NetFactory,
        discriminator: NetFactory | nn.Module | None,
        loss: DictConfig | dict,
        name: str = "cic",
        bins: str | list | None = None,
        lr: float = 3.16e-5,
        beta1: float = 0.9,
        beta2: float = 0.99,
        weight_decay: float = 1e-3,
        d_lr_mult: float = 1.0,
        d_beta1: float = 0.5,
        d_beta2: float = 0.999,
        prior_max_images: int | None = None,
        hints=None,
    ) -> None:
        super().__init__()
        self.name = name
        self.hints = user_hints.HintSimulation.from_config(hints)  # None: the net sees L alone
        centres = bins_from_setting(bins)
        self.num_bins = centres.shape[0]
        # Buffers, so checkpoints carry the classes and the prior with the weights.
        self.register_buffer("bins", centres)
        self.register_buffer("prior", torch.full((self.num_bins,), 1.0 / self.num_bins))
        self.register_buffer("class_weights", torch.ones(self.num_bins))

        self.nearest = int(loss.get("nearest", 5))
        self.sigma = float(loss.get("sigma", 5.0))
        self.lambda_rebalance = float(loss.get("lambda_rebalance", 0.5))
        self.temperature = float(loss.get("temperature", 0.38))  # colorize's T: set it to decode differently
        self.train_temperature = self.temperature  # what the adversarial term decodes with
        self.lambda_gan = float(loss.get("lambda_gan", 0.0))
        checks = [
            (1 <= self.nearest <= self.num_bins, f"loss.nearest must be in [1, {self.num_bins}], got {self.nearest}"),
            (self.sigma > 0, f"loss.sigma must be > 0, got {self.sigma}"),
            (0.0 <= self.lambda_rebalance <= 1.0, f"loss.lambda_rebalance must be in [0, 1], got {self.lambda_rebalance}"),
            (self.temperature > 0, f"loss.temperature must be > 0, got {self.temperature}"),
            (self.lambda_gan >= 0, f"loss.lambda_gan must be >= 0, got {self.lambda_gan}"),
            (prior_max_images is None or prior_max_images >= 1, "model.prior_max_images must be >= 1 or null"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.prior_max_images = prior_max_images

        if isinstance(generator, nn.Module) or not callable(generator):
            raise ConfigError("generator: cic sizes its net to the Q bins; set generator._partial_=true (conf/model/cic.yaml does)")
        in_channels = 1 if self.hints is None else 1 + user_hints.HINT_CHANNELS
        self.generator = generator(in_channels=in_channels, out_channels=self.num_bins)
        if self.hints is not None:
            user_hints.zero_hint_weights(self.generator)

        self.discriminator: nn.Module | None = None
        if self.lambda_gan > 0:
            if discriminator is None:
                raise ConfigError("loss.lambda_gan > 0 needs a discriminator (discriminator=patchgan)")
            # D sees L and ab together, as pix2pix's conditional PatchGAN.
            self.discriminator = discriminator if isinstance(discriminator, nn.Module) else discriminator(in_channels=3)
            self.gan_loss = GANLoss(loss.get("gan_mode", "vanilla"))
        self.d_augment = discriminator_augment(loss.get("d_augment"))
        self.lr, self.betas, self.weight_decay = lr, (beta1, beta2), weight_decay
        self.d_lr, self.d_betas = lr * d_lr_mult, (d_beta1, d_beta2)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"G": adam(self.generator, self.lr, *self.betas, self.weight_decay)}
        if self.discriminator is not None:
            optimizers["D"] = adam(self.discriminator, self.d_lr, *self.d_betas)
        return optimizers

    # -- the class prior and rebalancing weights, once per data set --------------------
    def on_fit_start(self, trainer) -> None:
        if self.discriminator is None and getattr(trainer, "critic_pretrain_epochs", 0):
            raise ConfigError("trainer.critic_pretrain_epochs > 0 needs a discriminator: set loss.lambda_gan > 0 for cic")
        path = Path(trainer.run_dir) / PRIOR_FILE
        counts = self._cached_counts(path)
        if counts is None:
            counts, images = self.count_colors(trainer.data, trainer.device)
            atomic_save({"bins": self.bins.cpu(), "counts": counts.cpu(), "images": images}, path)
            log.info("cic: ab prior from %d training images (%d pixels), cached in %s", images, int(counts.sum()), path)
        self.set_prior(counts)
        w = self.class_weights
        log.info("cic: %d bins, rebalancing weights %.3g..%.3g (lambda %.2g)", self.num_bins, w.min(), w.max(), self.lambda_rebalance)

    def _cached_counts(self, path: Path) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a half-written or foreign file: the pass below replaces it
            log.warning("cic: cannot read %s; computing the prior again", path)
            return None
        if not isinstance(cached, dict) or cached.get("bins") is None or not torch.equal(cached["bins"], self.bins.cpu()):
            log.warning("cic: %s was computed for other bins; computing the prior again", path)
            return None
        log.info("cic: ab prior from %s", path)
        return cached["counts"]

    @torch.no_grad()
    def count_colors(self, data, device: torch.device | str) -> tuple[torch.Tensor, int]:
        """How many training pixels fall nearest to each bin: one pass over the
        training loader (its augmentation included), converted and counted on `device`."""
        counts = torch.zeros(self.num_bins, dtype=torch.long, device=device)
        images = 0
        for raw in data.train_loader():
            ab = data.device_batch(raw, device)["ab"]
            counts += color.ab_histogram(ab, self.bins)
            images += ab.shape[0]
            if self.prior_max_images is not None and images >= self.prior_max_images:
                break
        if counts.sum() == 0:
            raise ConfigError("cic: the training images hold no pixels to estimate the colour prior from")
        return counts, images

    def set_prior(self, counts: torch.Tensor) -> None:
        """p~ and the rebalancing weights from per-bin pixel counts."""
        prior = color.smooth_prior(counts.to(self.bins.device), self.bins, self.sigma)
        self.prior.copy_(prior)
        self.class_weights.copy_(color.rebalance_weights(prior, self.lambda_rebalance))

    # -- the objective ------------------------------------------------------------------
    def classification_loss(self, logits: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        indices, weights = color.soft_encode(ab, self.bins, self.nearest, self.sigma)
        pixel_weights = self.class_weights[indices[:, 0]]  # v(Z): the weight of the nearest bin
        return rebalanced_cross_entropy(logits, indices, weights, pixel_weights)

    def classification_step(self, batch: dict, state: dict):
        loss = self.classification_loss(self.generator(self.generator_input(batch)), batch["ab"])
        return loss, {"loss": loss.detach(), "ce": loss.detach()}

    def generator_input(self, batch: dict) -> torch.Tensor:
        """L, or with model.hints L + the batch's hint maps (none: an empty mask)."""
        if self.hints is None:
            return batch["L"]
        return user_hints.generator_input(batch["L"], batch.get("hints"))

    def decode_soft(self, logits: torch.Tensor) -> torch.Tensor:
        """The differentiable ab a discriminator judges: the annealed mean."""
        return color.annealed_mean(logits, self.bins, self.train_temperature)

    def pretrain_steps(self) -> list[Step]:
        # CIC has no separate pixel-loss stage: its pretraining is its own objective.
        return [Step("G", self.classification_step, optimizer="G")]

    def critic_steps(self) -> list[Step]:
        if self.discriminator is None:
            raise ConfigError("cic has no discriminator (loss.lambda_gan is 0): no critic phase")
        return [Step("D", self.discriminator_step, optimizer="D", frozen=("generator",))]

    def adversarial_steps(self) -> list[Step]:
        if self.discriminator is None:
            return [Step("G", self.classification_step, optimizer="G")]
        return [
            Step("D", self.discriminator_step, optimizer="D"),
            Step("G", self.generator_step, optimizer="G", frozen=("discriminator",)),
        ]

    def discriminator_step(self, batch: dict, state: dict):
        L, real_ab = batch["L"], batch["ab"]
        state["logits"] = logits = self.generator(self.generator_input(batch))
        state["fake_ab"] = fake_ab = self.decode_soft(logits)
        return conditional_discriminator_loss(self.discriminator, self.gan_loss, L, real_ab, fake_ab, self.d_augment)

    def generator_step(self, batch: dict, state: dict):
        L, real_ab = batch["L"], batch["ab"]
        logits, fake_ab = state["logits"], state["fake_ab"]
        loss_ce = self.classification_loss(logits, real_ab)
        pred_fake = self.discriminator(self.d_augment(torch.cat([L, fake_ab], 1)))
        loss_gan = self.gan_loss(pred_fake, True, for_discriminator=False)
        loss = loss_ce + self.lambda_gan * loss_gan
        return loss, {"loss": loss.detach(), "ce": loss_ce.detach(), "gan": loss_gan.detach()}

    # -- inference ----------------------------------------------------------------------
    @torch.no_grad()
    def colorize(self, L: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        """Annealed mean at `self.temperature` (0.38 by default; <= 0 gives the mode);
        `hints` (N, 3, H, W) maps for a hints model (gancolor.hints)."""
        if self.hints is None:
            if hints is not None:
                raise ConfigError("this model was trained without hints (model.hints); it cannot take any")
            return color.annealed_mean(self.generator(L), self.bins, self.temperature)
        return color.annealed_mean(self.generator(user_hints.generator_input(L, hints)), self.bins, self.temperature)

    def generator_modules(self) -> list[nn.Module]:
        return [self.generator]
