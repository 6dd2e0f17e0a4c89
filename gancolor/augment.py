"""Data-efficient discriminator augmentation (`loss.d_augment`).

With a few hundred photos a discriminator memorises the real set and stops teaching G.
DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training") shows D only randomly translated and cut-out images, real and fake alike, in
the D step and in the G step, through differentiable ops so G still gets gradients.
Colour jitter, the third of DiffAugment's policies, is left out on purpose: the colours
are what G predicts, and D must judge them as they are.

Translation (up to 1/8 of each side, zero fill) and cutout (a square of half each side,
zero fill) come from kornia; nearest sampling moves whole pixels, so every output value
is an input value or the fill. Draws are independent per sample. The augmentation works
on whatever D sees: a conditional pair (L and ab concatenated) moves as one image, so
L and its ab stay aligned.
"""

from __future__ import annotations

from typing import Callable

import kornia.augmentation as K
import torch

from gancolor.errors import ConfigError

D_AUGMENTS = ("none", "diffaugment")
TRANSLATION_RATIO = 0.125  # DiffAugment's translation: +- 1/8 of the image side
CUTOUT_AREA = 0.25  # DiffAugment's cutout: a square of half the side


def no_augment(images: torch.Tensor) -> torch.Tensor:
    return images


class DiffAugment:
    """Translation + cutout, differentiable, drawn per sample. Holds no weights, so
    recipes keep the same state_dict with or without it."""

    def __init__(self) -> None:
        self.transform = K.AugmentationSequential(
            K.RandomAffine(
                degrees=0.0,
                translate=(TRANSLATION_RATIO, TRANSLATION_RATIO),
                padding_mode="zeros",
                resample="nearest",
                p=1.0,
            ),
            K.RandomErasing(scale=(CUTOUT_AREA, CUTOUT_AREA), ratio=(1.0, 1.0), value=0.0, p=1.0),
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # kornia samples its grids in float32; the result goes back to the autocast dtype.
        return self.transform(images.float()).to(images.dtype)


def discriminator_augment(name: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """What a recipe applies to every image its discriminator sees, by loss.d_augment."""
    name = "none" if name is None else str(name)
    if name == "none":
        return no_augment
    if name == "diffaugment":
        return DiffAugment()
    raise ConfigError(f"loss.d_augment must be one of {', '.join(D_AUGMENTS)}, got {name!r}")
